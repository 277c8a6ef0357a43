use super::*;
use crate::config::Severity;

fn load(json: &str) -> Result<LoadedConfig, ConfigError> {
    ConfigLoader::new().with_json("test.json", json).load()
}

fn error_lines(error: &ConfigError) -> Vec<String> {
    error
        .diagnostics()
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

#[test]
fn no_file_gives_the_default_profile() {
    let loaded = ConfigLoader::new().load().unwrap();
    assert_eq!(loaded.config.profile, Profile::Sub1b);
}

#[test]
fn the_file_merges_over_its_profile() {
    let loaded = load(r#"{"profile":"tiny","scheduler":{"maxQueue":9}}"#).unwrap();
    assert_eq!(loaded.config.scheduler.max_queue, 9);
    assert_eq!(loaded.config.scheduler.concurrency, 1);
    assert_eq!(loaded.config.model.id, "tiny-dev");
}

#[test]
fn env_beats_the_file_and_overrides_beat_env() {
    let loaded = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny","scheduler":{"maxQueue":9}}"#)
        .with_env([("RAY_SCHEDULER_MAX_QUEUE", "12"), ("RAY_PORT", "4000")])
        .with_override("server.port", 0.into())
        .load()
        .unwrap();
    assert_eq!(loaded.config.scheduler.max_queue, 12);
    assert_eq!(loaded.config.server.port, 0);
}

#[test]
fn ray_profile_applies_only_without_a_file_profile() {
    let loaded = ConfigLoader::new()
        .with_env([("RAY_PROFILE", "1b")])
        .load()
        .unwrap();
    assert_eq!(loaded.config.profile, Profile::OneB);
    let loaded = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny"}"#)
        .with_env([("RAY_PROFILE", "1b")])
        .load()
        .unwrap();
    assert_eq!(loaded.config.profile, Profile::Tiny);
    assert!(loaded.warnings.iter().any(|w| w.path == "profile"));
}

#[test]
fn unknown_profile_is_an_error_naming_the_choices() {
    let error = load(r#"{"profile":"huge"}"#).unwrap_err();
    let lines = error_lines(&error);
    assert!(
        lines[0].starts_with("profile: unknown profile \"huge\""),
        "{lines:?}"
    );
    assert!(lines[0].contains("sub1b-cax11"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let error = load(
        r#"{"profile":"tiny","scheduler":{"maxQueue":0,"concurency":2},
            "cache":{"maxEntries":"many"},"rateLimit":{"maxKeys":0}}"#,
    )
    .unwrap_err();
    let lines = error_lines(&error);
    assert!(
        lines
            .contains(&"scheduler.concurency: unknown field; did you mean \"concurrency\"?".into()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cache.maxEntries: wrong type")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"scheduler.maxQueue: must be at least 1, got 0".into()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"rateLimit.maxKeys: must be at least 1, got 0".into()),
        "{lines:?}"
    );
}

#[test]
fn errors_inside_the_adapter_keep_their_path() {
    let error = load(
        r#"{"profile":"sub1b","model":{"adapter":{"kind":"llama.cpp","timeoutMs":"x",
            "launchProfile":{"parallel":0,"bogus":1}}}}"#,
    )
    .unwrap_err();
    let lines = error_lines(&error);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("model.adapter.timeoutMs: wrong type")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("model.adapter.launchProfile.bogus: unknown field")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"model.adapter.launchProfile.parallel: must be at least 1, got 0".into()),
        "{lines:?}"
    );
}

#[test]
fn env_errors_name_the_variable() {
    let error = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny"}"#)
        .with_env([
            ("RAY_SCHEDULER_MAX_QUEUE", "lots"),
            ("RAY_CACHE_MAX_ENTRIES", "0"),
        ])
        .load()
        .unwrap_err();
    let lines = error_lines(&error);
    assert!(
        lines.contains(&"scheduler.maxQueue: expected a whole number, got \"lots\" (set by env RAY_SCHEDULER_MAX_QUEUE)".into()),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"cache.maxEntries: must be at least 1, got 0 (set by env RAY_CACHE_MAX_ENTRIES)"
                .into()
        ),
        "{lines:?}"
    );
}

#[test]
fn the_critical_memory_guard_is_set_from_the_environment() {
    let loaded = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny"}"#)
        .with_env([
            ("RAY_DEGRADATION_REFUSE_ON_CRITICAL_MEMORY", "off"),
            ("RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO", "0.95"),
            ("RAY_DEGRADATION_CRITICAL_MEMORY_PSI_FULL_AVG10", "40"),
        ])
        .load()
        .unwrap();
    let g = &loaded.config.graceful_degradation;
    assert!(!g.refuse_on_critical_memory);
    assert_eq!(g.critical_cgroup_memory_ratio, 0.95);
    assert_eq!(g.critical_memory_psi_full_avg10, 40.0);
    let error = ConfigLoader::new()
        .with_env([("RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO", "2")])
        .load()
        .unwrap_err();
    assert!(
        error_lines(&error).contains(
            &"gracefulDegradation.criticalCgroupMemoryRatio: must be at most 1, got 2 (set by env \
          RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO)"
                .into()
        )
    );
}

#[test]
fn switching_away_from_the_mock_starts_from_that_kinds_defaults() {
    let loaded = load(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:8081"}}}"#,
    )
    .unwrap();
    let http = loaded.config.model.adapter.http().unwrap();
    assert_eq!(http.model_ref, "tiny-dev");
    assert_eq!(http.timeout_ms, 20_000);
}

#[test]
fn switching_between_http_adapters_inherits_the_profile_adapter_s_shared_fields() {
    // As the existing Ray's merge over the profile's adapter object does: the fields both
    // kinds have come from the profile's adapter, not from built-in constants.
    for (profile, kind, model_ref, timeout_ms) in [
        ("vps", "llama.cpp", "qwen2.5-3b-instruct-q4_k_m", 20_000),
        (
            "balanced",
            "llama.cpp",
            "mistral-7b-instruct-q4_k_m",
            25_000,
        ),
        (
            "sub1b",
            "openai-compatible",
            "qwen2.5-0.5b-instruct-q4_k_m",
            18_000,
        ),
        (
            "1b",
            "openai-compatible",
            "qwen2.5-1.5b-instruct-q4_k_m",
            28_000,
        ),
        (
            "1b-8gb",
            "openai-compatible",
            "qwen2.5-1.5b-instruct-q4_k_m",
            24_000,
        ),
    ] {
        let config = load(&format!(
            r#"{{"profile":"{profile}","model":{{"adapter":{{"kind":"{kind}"}}}}}}"#
        ))
        .unwrap_or_else(|e| panic!("{profile}: {e}"))
        .config;
        assert_eq!(config.model.adapter.kind(), kind);
        let http = config.model.adapter.http().unwrap();
        assert_eq!(http.model_ref, model_ref, "{profile}");
        assert_eq!(http.timeout_ms, timeout_ms, "{profile}");
        assert_eq!(http.base_url, "http://127.0.0.1:8081", "{profile}");
    }
    // Fields only llama.cpp has are left unset, as in the existing Ray, and the file
    // still wins over what is inherited.
    let config =
        load(r#"{"profile":"vps","model":{"adapter":{"kind":"llama.cpp","timeoutMs":9000}}}"#)
            .unwrap()
            .config;
    let AdapterConfig::LlamaCpp(llama) = &config.model.adapter else {
        panic!("llama.cpp adapter expected");
    };
    assert_eq!(llama.timeout_ms, 9_000);
    assert_eq!(
        (
            llama.cache_prompt,
            llama.slot_state_ttl_ms,
            llama.launch_profile.is_some()
        ),
        (None, None, false)
    );
}

#[test]
fn null_for_a_section_is_an_error() {
    let error = load(r#"{"scheduler":null}"#).unwrap_err();
    assert!(error_lines(&error)[0].starts_with("scheduler: must be an object, got null"));
}

#[test]
fn reserved_keys_are_refused() {
    let error = load(r#"{"profile":"tiny","tags":{"__proto__":"x"}}"#).unwrap_err();
    assert!(error_lines(&error)[0].starts_with("tags.__proto__: reserved key"));
}

#[test]
fn non_object_files_are_refused() {
    let error = load("[1,2]").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("must be a JSON object, got an array")
    );
    let error = load("{nope").unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }));
}

#[test]
fn duplicate_keys_are_an_error_naming_the_key_and_both_places() {
    let error = load("{\"profile\":\"tiny\",\n\"scheduler\":{\"maxQueue\":8,\"maxQueue\":9},\n\"profile\":\"sub1b\"}")
        .unwrap_err();
    let lines = error_lines(&error);
    assert_eq!(
        lines,
        vec![
            "scheduler.maxQueue: the key appears twice in one object, at line 2 column 14 and \
             line 2 column 27; keep one"
                .to_string(),
            "profile: the key appears twice in one object, at line 1 column 2 and line 3 \
             column 1; keep one"
                .to_string(),
        ]
    );
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let loaded = load("\u{feff}{\"profile\":\"tiny\"}").unwrap();
    assert_eq!(loaded.config.profile.as_str(), "tiny");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    std::fs::write(&path, b"\xef\xbb\xbf{\"profile\":\"tiny\"}").unwrap();
    let loaded = ConfigLoader::new().with_file(&path).load().unwrap();
    assert_eq!(loaded.config.profile.as_str(), "tiny");
}

#[test]
fn out_of_range_integers_name_the_range() {
    let error = load(r#"{"scheduler":{"maxQueue":18446744073709551615}}"#).unwrap_err();
    let lines = error_lines(&error);
    assert!(
        lines.iter().any(|l| l.starts_with("scheduler.maxQueue:")
            && l.contains("18446744073709551615")
            && l.contains("a whole number from 0 to 4294967295")),
        "{lines:?}"
    );
    let error = ConfigLoader::new()
        .with_env([("RAY_SCHEDULER_MAX_QUEUE", "18446744073709551615")])
        .load()
        .unwrap_err();
    let lines = error_lines(&error);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("a whole number from 0 to 4294967295")),
        "{lines:?}"
    );
}

#[test]
fn ray_model_id_names_the_backend_model_too() {
    let loaded = ConfigLoader::new()
        .with_json("t", r#"{"profile":"sub1b"}"#)
        .with_env([("RAY_MODEL_ID", "local-1b-q4")])
        .load()
        .unwrap();
    let http = loaded.config.model.adapter.http().unwrap();
    assert_eq!(http.model_ref, "local-1b-q4");
    let launch = loaded.config.model.adapter.launch_profile().unwrap();
    assert_eq!(launch.alias.as_deref(), Some("local-1b-q4"));
}

#[test]
fn moving_llama_server_moves_the_base_url() {
    let loaded = ConfigLoader::new()
        .with_env([("RAY_LLAMA_CPP_PORT", "8099")])
        .load()
        .unwrap();
    assert_eq!(
        loaded.config.model.adapter.http().unwrap().base_url,
        "http://127.0.0.1:8099"
    );
}

#[test]
fn misspelled_variables_warn() {
    let loaded = ConfigLoader::new()
        .with_env([("RAY_SCHEDULER_MAX_QUEUES", "3")])
        .load()
        .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.severity == Severity::Warning
                && w.message.contains("RAY_SCHEDULER_MAX_QUEUES"))
    );
}

#[test]
fn relative_storage_dir_is_resolved() {
    let loaded = ConfigLoader::new()
        .with_base_dir("/srv/ray")
        .load()
        .unwrap();
    assert_eq!(
        loaded.config.async_queue.storage_dir,
        "/srv/ray/.ray/async-queue"
    );
}

#[test]
fn headers_are_redacted() {
    let loaded = load(
        r#"{"profile":"vps","model":{"adapter":{"kind":"openai-compatible","headers":{"X-Token":"secret"}}}}"#,
    )
    .unwrap();
    let json = redacted_json(&loaded.config);
    assert_eq!(json["model"]["adapter"]["headers"]["X-Token"], "[redacted]");
}
