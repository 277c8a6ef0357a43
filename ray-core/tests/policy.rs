//! The host policy (`policyFile`, or `RAY_POLICY_FILE` over it): a config asking for more than
//! the policy allows is clamped and each cut is reported with the field; a model file outside
//! the allowed folders and a hook to a host the policy does not allow are refused; a lifecycle
//! budget over `maxMemoryMiB` (less the reserve) is cut; a policy file that is missing or not
//! a policy is an error on `policyFile`.

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

/// A tiny config asking for six permits, naming `policy_file` when given.
fn asking_for_six(policy_file: Option<&str>) -> String {
    let mut config = serde_json::json!({
        "profile": "tiny",
        "scheduler": {"concurrency": 6},
        "model": {"adapter": {"kind": "mock"}},
    });
    if let Some(path) = policy_file {
        config["policyFile"] = path.into();
    }
    config.to_string()
}

#[test]
fn the_config_can_name_the_policy_file_and_the_environment_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.json");
    std::fs::write(&two, r#"{"maxConcurrency": 2}"#).unwrap();
    let two = two.display().to_string();
    let four = dir.path().join("four.json");
    std::fs::write(&four, r#"{"maxConcurrency": 4}"#).unwrap();
    let four = four.display().to_string();

    // Named by the config alone: applied, each cut naming the file.
    let loaded = ConfigLoader::new()
        .with_json("ray.json", asking_for_six(Some(&two)))
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.concurrency, 2);
    assert_eq!(loaded.config.policy_file.as_deref(), Some(two.as_str()));
    assert_eq!(
        loaded.config.policy.as_ref().unwrap().max_concurrency,
        Some(2)
    );
    let cut = loaded
        .warnings
        .iter()
        .find(|w| w.path == "scheduler.concurrency")
        .unwrap_or_else(|| panic!("{:?}", loaded.warnings));
    assert_eq!(
        cut.source.as_deref(),
        Some(format!("policy {two}").as_str())
    );
    assert!(cut.message.contains("cut from 6 to 2"), "{}", cut.message);

    // RAY_POLICY_FILE names another: the environment's is the one applied.
    let loaded = ConfigLoader::new()
        .with_json("ray.json", asking_for_six(Some(&two)))
        .with_env([(POLICY_FILE_ENV, four.as_str())])
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.concurrency, 4);
    assert_eq!(loaded.config.policy_file.as_deref(), Some(four.as_str()));
    let cut = loaded
        .warnings
        .iter()
        .find(|w| w.path == "scheduler.concurrency")
        .unwrap_or_else(|| panic!("{:?}", loaded.warnings));
    assert_eq!(
        cut.source.as_deref(),
        Some(format!("policy {four}").as_str())
    );

    // A blank RAY_POLICY_FILE is unset, as every blank variable is: the config's applies.
    let loaded = ConfigLoader::new()
        .with_json("ray.json", asking_for_six(Some(&two)))
        .with_env([(POLICY_FILE_ENV, " ")])
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.concurrency, 2);

    // Neither: no policy.
    let loaded = ConfigLoader::new()
        .with_json("ray.json", asking_for_six(None))
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.concurrency, 6);
    assert!(loaded.config.policy.is_none());
    assert!(loaded.config.policy_file.is_none());
}

/// The one error of a config that does not load, which must be on `policyFile`.
fn policy_file_error(loader: ConfigLoader) -> ray_core::config::Diagnostic {
    let error = loader.load().unwrap_err();
    let ConfigError::Invalid { diagnostics, .. } = &error else {
        panic!("{error}");
    };
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "policyFile", "{errors:?}");
    errors[0].clone()
}

#[test]
fn a_missing_or_invalid_policy_file_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json").display().to_string();
    let error = policy_file_error(
        ConfigLoader::new().with_json("ray.json", asking_for_six(Some(&missing))),
    );
    assert!(
        error
            .message
            .starts_with("the host policy file cannot be used: ")
            && error.message.contains(&missing),
        "{}",
        error.message
    );
    assert_eq!(error.source, None, "the field came from the file");
    assert!(error.to_string().starts_with("policyFile: "), "{error}");

    // Not JSON, and a field the policy does not have: both refused, naming the file.
    for (name, text, expected) in [
        ("broken.json", "{\"maxConcurrency\": ", "EOF while parsing"),
        (
            "unknown.json",
            r#"{"maxConcurency": 2}"#,
            "unknown field `maxConcurency`",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let path = path.display().to_string();
        let error = policy_file_error(
            ConfigLoader::new().with_json("ray.json", asking_for_six(Some(&path))),
        );
        assert!(
            error.message.contains(&path) && error.message.contains(expected),
            "{name}: {}",
            error.message
        );
    }

    // A blank path names no file.
    let error =
        policy_file_error(ConfigLoader::new().with_json("ray.json", asking_for_six(Some(""))));
    assert!(error.message.contains("names no file"), "{}", error.message);

    // Named by RAY_POLICY_FILE: the same field, with the variable as its source.
    let error = policy_file_error(
        ConfigLoader::new()
            .with_json("ray.json", asking_for_six(None))
            .with_env([(POLICY_FILE_ENV, missing.as_str())]),
    );
    assert_eq!(error.source.as_deref(), Some("env RAY_POLICY_FILE"));
    assert!(error.message.contains(&missing), "{}", error.message);
}

#[test]
fn a_relative_policy_file_resolves_against_the_base_directory_and_a_root_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.json"), r#"{"maxConcurrency": 3}"#).unwrap();
    let loaded = ConfigLoader::new()
        .with_json("ray.json", asking_for_six(Some("policy.json")))
        .with_base_dir(dir.path())
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.concurrency, 3);
    let resolved = dir.path().join("policy.json").display().to_string();
    assert_eq!(
        loaded.config.policy_file.as_deref(),
        Some(resolved.as_str())
    );

    // A host seen below a root: `/etc/ray/policy.json` is read there, and named as written.
    let root = dir.path().join("host");
    std::fs::create_dir_all(root.join("etc/ray")).unwrap();
    std::fs::write(root.join("etc/ray/policy.json"), r#"{"maxConcurrency": 1}"#).unwrap();
    let loaded = ConfigLoader::new()
        .with_json("ray.json", asking_for_six(Some("/etc/ray/policy.json")))
        .with_policy_root(&root)
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.concurrency, 1);
    let cut = loaded
        .warnings
        .iter()
        .find(|w| w.path == "scheduler.concurrency")
        .unwrap();
    assert_eq!(cut.source.as_deref(), Some("policy /etc/ray/policy.json"));
}
