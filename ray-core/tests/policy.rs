//! The host policy (`RAY_POLICY_FILE`): a config asking for more than the policy allows is
//! clamped and each cut is reported with the field; a model file outside the allowed folders
//! and a hook to a host the policy does not allow are refused.

#![allow(clippy::unwrap_used)]

use ray_core::config::{ConfigError, ConfigLoader, POLICY_FILE_ENV};

fn policy(dir: &std::path::Path, json: serde_json::Value) -> String {
    let path = dir.join("policy.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn a_config_asking_for_more_is_clamped_and_each_cut_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy(
        dir.path(),
        serde_json::json!({"maxConcurrency": 2, "allowPublicBind": false, "maxMemoryMiB": 3072}),
    );
    let loaded = ConfigLoader::new()
        .with_json(
            "ray.json",
            r#"{"profile":"tiny","server":{"host":"0.0.0.0"},"scheduler":{"concurrency":6},
                "model":{"operational":{"memoryClassMiB":8192},"adapter":{"kind":"mock"}}}"#,
        )
        .with_env([(POLICY_FILE_ENV, path.as_str())])
        .load()
        .unwrap();
    let config = &loaded.config;
    assert_eq!(config.scheduler.concurrency, 2);
    assert_eq!(config.server.host, "127.0.0.1");
    assert_eq!(
        config.model.operational.as_ref().unwrap().memory_class_mib,
        Some(3072)
    );
    let cuts: Vec<(&str, &str)> = loaded
        .warnings
        .iter()
        .map(|w| (w.path.as_str(), w.source.as_deref().unwrap_or_default()))
        .collect();
    let source = format!("policy {path}");
    for field in [
        "scheduler.concurrency",
        "server.host",
        "model.operational.memoryClassMiB",
    ] {
        assert!(
            cuts.contains(&(field, source.as_str())),
            "{field}: {cuts:?}"
        );
    }
    let message = &loaded
        .warnings
        .iter()
        .find(|w| w.path == "scheduler.concurrency")
        .unwrap()
        .message;
    assert!(message.contains("cut from 6 to 2"), "{message}");
    // Without the policy the same config keeps its values.
    let free = ConfigLoader::new()
        .with_json(
            "ray.json",
            r#"{"profile":"tiny","scheduler":{"concurrency":6},"model":{"adapter":{"kind":"mock"}}}"#,
        )
        .load()
        .unwrap();
    assert_eq!(free.config.scheduler.concurrency, 6);
}

#[test]
fn a_model_outside_the_allowed_folders_and_a_hook_to_another_host_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy(
        dir.path(),
        serde_json::json!({"modelDirs": ["/var/lib/ray/models"], "allowedHosts": ["*.example.net"]}),
    );
    let error = ConfigLoader::new()
        .with_json(
            "ray.json",
            r#"{"profile":"sub1b","model":{"adapter":{"kind":"llama.cpp",
                "launchProfile":{"modelPath":"/home/me/evil.gguf"}}},
                "hooks":[{"url":"https://hooks.other.org/x"},{"url":"https://a.example.net/y"}]}"#,
        )
        .with_env([(POLICY_FILE_ENV, path.as_str())])
        .load()
        .unwrap_err();
    let ConfigError::Invalid { diagnostics, .. } = error else {
        panic!("{error}");
    };
    let paths: Vec<&str> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.path.as_str())
        .collect();
    assert!(
        paths.contains(&"model.adapter.launchProfile.modelPath"),
        "{paths:?}"
    );
    assert!(paths.contains(&"hooks[0].url"), "{paths:?}");
    assert!(!paths.contains(&"hooks[1].url"), "{paths:?}");
    // A policy file that cannot be read is an error, never ignored.
    let missing = ConfigLoader::new()
        .with_json("ray.json", r#"{"profile":"tiny"}"#)
        .with_env([(POLICY_FILE_ENV, "/nonexistent/policy.json")])
        .load();
    assert!(missing.is_err());
}
