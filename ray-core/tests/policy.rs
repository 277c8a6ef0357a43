//! The host policy (`RAY_POLICY_FILE`): a config asking for more than the policy allows is
//! clamped and each cut is reported with the field; a model file outside the allowed folders
//! and a hook to a host the policy does not allow are refused; a lifecycle budget over
//! `maxMemoryMiB` (less the reserve) is cut.

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

#[test]
fn a_lifecycle_budget_over_the_policy_is_cut_to_it_less_the_reserve_and_the_cut_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy(dir.path(), serde_json::json!({"maxMemoryMiB": 3072}));
    let config = |lifecycle: &str| {
        format!(
            r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock"}}}},"lifecycle":{lifecycle}}}"#
        )
    };
    let loaded = ConfigLoader::new()
        .with_json(
            "ray.json",
            config(r#"{"memoryBudgetMiB":8192,"reserveMiB":512}"#),
        )
        .with_env([(POLICY_FILE_ENV, path.as_str())])
        .load()
        .unwrap();
    let lifecycle = loaded.config.lifecycle.as_ref().unwrap();
    assert_eq!(lifecycle.memory_budget_mib, Some(3072 - 512));
    let cut = loaded
        .warnings
        .iter()
        .find(|w| w.path == "lifecycle.memoryBudgetMiB")
        .unwrap_or_else(|| panic!("no cut reported: {:?}", loaded.warnings));
    assert_eq!(
        cut.source.as_deref(),
        Some(format!("policy {path}").as_str())
    );
    assert!(
        cut.message.contains("cut from 8192 to 2560")
            && cut.message.contains("3072 MiB")
            && cut.message.contains("lifecycle.reserveMiB (512 MiB)"),
        "{}",
        cut.message
    );
    // A budget within the policy, and a budget left to its default, are not touched here (the
    // default is cut where it is computed, from the same policy).
    for lifecycle in [r#"{"memoryBudgetMiB":2048}"#, "{}"] {
        let loaded = ConfigLoader::new()
            .with_json("ray.json", config(lifecycle))
            .with_env([(POLICY_FILE_ENV, path.as_str())])
            .load()
            .unwrap();
        assert!(
            !loaded
                .warnings
                .iter()
                .any(|w| w.path == "lifecycle.memoryBudgetMiB"),
            "{lifecycle}: {:?}",
            loaded.warnings
        );
        assert_eq!(
            loaded.config.lifecycle.as_ref().unwrap().memory_budget_mib,
            serde_json::from_str::<serde_json::Value>(lifecycle).unwrap()["memoryBudgetMiB"]
                .as_u64()
        );
        assert_eq!(
            loaded.config.policy.as_ref().unwrap().max_memory_mib,
            Some(3072)
        );
    }
    // A reserve that leaves the models less than a budget's minimum cannot be clamped: an error
    // naming reserveMiB.
    let error = ConfigLoader::new()
        .with_json("ray.json", config(r#"{"reserveMiB":3040}"#))
        .with_env([(POLICY_FILE_ENV, path.as_str())])
        .load()
        .unwrap_err();
    let ConfigError::Invalid { diagnostics, .. } = error else {
        panic!("{error}");
    };
    let reserve = diagnostics
        .iter()
        .find(|d| d.is_error() && d.path == "lifecycle.reserveMiB")
        .unwrap_or_else(|| panic!("{diagnostics:?}"));
    assert!(
        reserve.message.contains("leaves 32 MiB"),
        "{}",
        reserve.message
    );
}
