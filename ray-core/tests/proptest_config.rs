//! Property tests of the config loader: whatever a file or the environment holds, loading never
//! panics, and every refusal names a path and a rule.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ray_core::config::{ConfigError, ConfigLoader, ENV_VARS};
use serde_json::Value;

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A path into a real config, to mutate.
fn config_path() -> impl Strategy<Value = String> {
    prop::sample::select(
        ENV_VARS
            .iter()
            .map(|v| v.path.to_string())
            .chain(["profile", "model.adapter.kind", "tags", "model.adapter"].map(String::from))
            .collect::<Vec<_>>(),
    )
}

fn set(root: &mut Value, path: &str, value: Value) {
    let mut current = root;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(Default::default());
        }
        let map = current.as_object_mut().unwrap();
        if i + 1 == segments.len() {
            map.insert((*segment).to_string(), value);
            return;
        }
        current = map
            .entry((*segment).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

fn check(result: Result<ray_core::config::LoadedConfig, ConfigError>) {
    match result {
        Ok(loaded) => {
            // A loaded config is valid by construction: re-validating finds no error.
            let again = ray_core::config::validate(&loaded.config);
            assert!(again.iter().all(|d| !d.is_error()), "{again:?}");
        }
        Err(ConfigError::Invalid { diagnostics, .. }) => {
            assert!(diagnostics.iter().any(|d| d.is_error()));
            for d in diagnostics {
                assert!(!d.message.is_empty());
            }
        }
        Err(ConfigError::Parse { .. }) => {}
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

/// `default_cases`, or `PROPTEST_CASES` for a long fuzzing run (docs/testing.md).
fn fuzz_config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(fuzz_config(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        check(ConfigLoader::new().with_json("fuzz.json", text).load());
    }

    #[test]
    fn arbitrary_bytes_in_a_config_file_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ray.json");
        std::fs::write(&path, &bytes).unwrap();
        let result = ConfigLoader::new().with_file(&path).load();
        match result {
            // Bytes that are not UTF-8 are refused as unreadable text, naming the file.
            Err(ConfigError::Read { path: named, .. }) => {
                prop_assert!(std::str::from_utf8(&bytes).is_err());
                prop_assert_eq!(named, path);
            }
            other => check(other),
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        check(ConfigLoader::new().with_json("fuzz.json", value.to_string()).load());
    }

    #[test]
    fn mutated_configs_never_panic(
        profile in prop::sample::select(vec!["tiny", "sub1b", "1b", "vps", "balanced"]),
        mutations in prop::collection::vec((config_path(), json_value()), 1..6),
    ) {
        let mut root = serde_json::json!({ "profile": profile });
        for (path, value) in mutations {
            set(&mut root, &path, value);
        }
        check(ConfigLoader::new().with_json("fuzz.json", root.to_string()).load());
    }

    #[test]
    fn arbitrary_environments_never_panic(
        vars in prop::collection::vec(
            (prop::sample::select(ENV_VARS.iter().map(|v| v.name).collect::<Vec<_>>()), ".{0,10}"),
            0..8,
        ),
    ) {
        check(ConfigLoader::new().with_env(vars).load());
    }
}
