//! Every config file written for the existing Ray loads unchanged.
//!
//! The files are vendored under `tests/fixtures/reference-configs/` so a clean checkout can run
//! this test; when the shared reference data sits next to the repository (`../shared`), the
//! vendored copies are also checked against it so they cannot drift.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ray_core::config::{ConfigLoader, Profile};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-configs")
}

fn reference_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("vendored reference configs")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn all_nineteen_reference_configs_load_unchanged() {
    let files = reference_files();
    assert_eq!(files.len(), 19, "expected the 19 reference configs");
    for file in &files {
        let loaded = ConfigLoader::new()
            .with_file(file)
            .load()
            .unwrap_or_else(|e| panic!("{} failed to load:\n{e}", file.display()));
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        // Every value the file sets survives layering unchanged (paths excepted, which are
        // resolved against the working directory).
        assert_values_kept(&raw, &serde_json::to_value(&*loaded.config).unwrap(), "");
        assert!(
            !loaded.warnings.iter().any(|w| w.is_error()),
            "{}",
            file.display()
        );
    }
}

fn assert_values_kept(file: &serde_json::Value, effective: &serde_json::Value, path: &str) {
    match file {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let effective_child = effective
                    .get(key)
                    .unwrap_or_else(|| panic!("{child} is missing from the effective config"));
                assert_values_kept(value, effective_child, &child);
            }
        }
        other => {
            if path.ends_with("storageDir") || path.ends_with("modelPath") {
                return;
            }
            if let (Some(a), Some(b)) = (other.as_f64(), effective.as_f64()) {
                assert!(a == b, "{path} changed while loading: {a} != {b}");
            } else {
                assert_eq!(other, effective, "{path} changed while loading");
            }
        }
    }
}

#[test]
fn public_variants_turn_auth_and_the_async_queue_on() {
    for file in reference_files() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".public.json") {
            continue;
        }
        let config = ConfigLoader::new().with_file(&file).load().unwrap().config;
        assert!(config.auth.enabled, "{name}");
        assert!(config.async_queue.enabled, "{name}");
        assert_eq!(config.async_queue.storage_dir, "/var/lib/ray/async-queue");
    }
}

#[test]
fn partial_configs_take_the_rest_from_their_profile() {
    let config = ConfigLoader::new()
        .with_file(fixture_dir().join("ray.1b.json"))
        .load()
        .unwrap()
        .config;
    assert_eq!(config.profile, Profile::OneB);
    assert_eq!(config.model.max_output_tokens, 192);
    assert_eq!(config.scheduler.max_queue, 40);
    let launch = config.model.adapter.launch_profile().unwrap();
    assert_eq!((launch.ctx_size, launch.parallel), (2048, 1));
}

#[test]
fn vendored_copies_match_the_shared_reference_data() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference-data/configs");
    if !shared.is_dir() {
        eprintln!(
            "SKIPPED: {} is not present, so the vendored reference configs were not compared",
            shared.display()
        );
        return;
    }
    for file in reference_files() {
        let name = file.file_name().unwrap();
        let theirs = std::fs::read(shared.join(name)).expect("shared copy");
        let ours = std::fs::read(&file).unwrap();
        assert_eq!(
            ours, theirs,
            "{name:?} drifted from the shared reference data"
        );
    }
}
