//! The committed JSON Schema matches the code, and every example config loads.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ray_core::config::{ConfigLoader, ENV_VARS, json_schema};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Like rust-analyzer's `ensure_file_contents`: on drift, write the new contents and fail, so a
/// second run passes and the diff shows up in review.
fn ensure_file_contents(path: &Path, contents: &str) {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current == contents {
        return;
    }
    std::fs::write(path, contents).expect("write the regenerated file");
    panic!(
        "{} was out of date and has been regenerated; review and commit it",
        path.display()
    );
}

#[test]
fn committed_schema_matches_the_code() {
    let mut text = serde_json::to_string_pretty(&json_schema()).expect("schema serialises");
    text.push('\n');
    ensure_file_contents(&repo_root().join("docs/ray-config.schema.json"), &text);
}

/// A file is merged over its profile's defaults, so only fields with nothing under them are
/// required: those of list entries and of sections no profile sets, as the loader requires them.
#[test]
fn schema_requires_only_what_no_profile_fills() {
    let schema = json_schema();
    assert!(schema.get("required").is_none());
    let mut found: Vec<(String, Value)> = schema["$defs"]
        .as_object()
        .expect("$defs")
        .iter()
        .filter_map(|(name, def)| Some((name.clone(), def.get("required")?.clone())))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("ApiKeyPriority", json!(["id"])),
        (
            "ClusterConfig",
            json!(["natsUrls", "nodeId", "advertiseUrl", "clusterKeyEnv"]),
        ),
        ("JsonSchemaFormat", json!(["name", "schema"])),
        ("ResponseFormat", json!(["type"])),
        ("RoutingRule", json!(["model"])),
    ];
    let expected: Vec<(String, Value)> = expected
        .into_iter()
        .map(|(name, required)| (name.to_string(), required))
        .collect();
    assert_eq!(found, expected);
}

fn example_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/config"))
        .expect("examples/config")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_opens_with_its_schema_and_loads() {
    let files = example_configs();
    // One example per config of the reference list, and Ray's own beyond them.
    let reference = repo_root().join("ray-core/tests/fixtures/reference-configs");
    let mut references = 0;
    for entry in std::fs::read_dir(reference).expect("reference configs") {
        let name = entry.expect("entry").file_name();
        assert!(
            files
                .iter()
                .any(|f| f.file_name() == Some(name.as_os_str())),
            "no example for the reference config {name:?}"
        );
        references += 1;
    }
    assert_eq!(references, 19);
    assert!(files.len() > references, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let first_key = text.lines().nth(1).unwrap_or("").trim();
        assert!(
            first_key.starts_with("\"$schema\": \"../../docs/ray-config.schema.json\""),
            "{} must open with its $schema line",
            file.display()
        );
        let loaded = ConfigLoader::new()
            .with_file(&file)
            .load()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            loaded.warnings.is_empty(),
            "{}: {:?}",
            file.display(),
            loaded.warnings
        );
    }
}

#[test]
fn every_section_field_has_an_environment_variable() {
    // The reference promises a RAY_<SECTION>_<FIELD> variable for every field of these sections.
    let schema = json_schema();
    let defs = schema["$defs"].as_object().expect("$defs");
    for (section, definition) in [
        ("scheduler", "SchedulerConfig"),
        ("asyncQueue", "AsyncQueueConfig"),
        ("cache", "CacheConfig"),
        ("promptCompiler", "PromptCompilerConfig"),
        ("rateLimit", "RateLimitConfig"),
        ("adaptiveTuning", "AdaptiveTuningConfig"),
        ("gracefulDegradation", "GracefulDegradationConfig"),
        ("telemetry", "TelemetryConfig"),
        ("auth", "AuthConfig"),
    ] {
        let properties = defs[definition]["properties"]
            .as_object()
            .expect(definition);
        for field in properties.keys() {
            let path = format!("{section}.{field}");
            assert!(
                ENV_VARS.iter().any(|v| v.path == path),
                "{path} has no environment variable"
            );
        }
    }
}
