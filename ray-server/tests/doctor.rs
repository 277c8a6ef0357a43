//! `ray-server doctor` against fabricated hosts: a healthy VPS passes every check, and each
//! check fails with its own code when one thing about the host or the config is wrong.
#![allow(clippy::unwrap_used)]

mod deploy_tools;

use deploy_tools::{FakeVps, GOOD_KEY, binary, chmod, skipped, write_executable};
use ray_server::ops::deploy::memory::LlamaEstimate;
use ray_server::ops::doctor::{CHECKS, Level, Report, diagnose};
use ray_server::ops::host::Host;
use serde_json::json;

fn run(vps: &FakeVps) -> Report {
    diagnose(&Host::new(&vps.root), &vps.doctor_args())
}

/// Asserts that `code` was reported at `level`, and returns its message.
fn expect(report: &Report, code: &str, level: Level) -> String {
    let finding = report
        .find(code)
        .unwrap_or_else(|| panic!("no {code} in\n{}", report.to_text()));
    assert_eq!(finding.level, level, "{code}: {}", finding.message);
    finding.message.clone()
}

fn failing(patch: serde_json::Value, code: &str, level: Level) -> String {
    let vps = FakeVps::with_config(patch);
    expect(&run(&vps), code, level)
}

#[test]
fn a_healthy_vps_passes_every_check() {
    let vps = FakeVps::healthy();
    let report = run(&vps);
    let problems: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.level != Level::Ok)
        .collect();
    assert!(problems.is_empty(), "{}", report.to_text());
    for check in CHECKS {
        let finding = report
            .findings
            .iter()
            .find(|f| f.check == *check)
            .unwrap_or_else(|| panic!("check {check} reported nothing:\n{}", report.to_text()));
        assert_eq!(finding.code, format!("{check}_ok"), "{check}");
    }
    assert!(report.passed());
}

// === config ===

#[test]
fn config_invalid_is_an_error_and_skips_the_config_checks() {
    let vps = FakeVps::with_config(json!({ "scheduler": { "maxQueue": 0 } }));
    let report = run(&vps);
    let message = expect(&report, "config_invalid", Level::Error);
    assert!(message.contains("scheduler.maxQueue"), "{message}");
    assert!(report.find("memory_fit_ok").is_none());
    // Host checks still run.
    expect(&report, "swap_ok", Level::Ok);
    assert!(!report.passed());
}

#[test]
fn config_warnings_are_reported() {
    let message = failing(
        json!({ "scheduler": { "concurrency": 3 } }),
        "config_warning",
        Level::Warn,
    );
    assert!(message.contains("scheduler.concurrency"), "{message}");
}

#[test]
fn the_host_policy_the_env_file_names_is_applied_and_its_cuts_and_refusals_named() {
    let vps = FakeVps::with_config(json!({ "lifecycle": {} }));
    // The policy the env file names, read below the root like every other host file.
    vps.write("/etc/ray/policy.json", r#"{"maxMemoryMiB":1024}"#);
    vps.write(
        "/etc/ray/ray.env",
        &format!("RAY_API_KEYS={GOOD_KEY}\nRAY_POLICY_FILE=/etc/ray/policy.json\n"),
    );
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let report = run(&vps);
    // A configured value over the policy: the loader's cut, with the field.
    assert!(
        report.findings.iter().any(|f| f.code == "config_warning"
            && f.message
                .contains("model.operational.memoryClassMiB: cut from")),
        "{}",
        report.to_text()
    );
    // The host's 3907 MiB less the 768 MiB reserve, cut to the policy's 1024 less the reserve.
    let cut = report
        .findings
        .iter()
        .find(|f| f.code == "config_warning" && f.message.contains("lifecycle.memoryBudgetMiB"))
        .unwrap_or_else(|| panic!("{}", report.to_text()));
    assert_eq!(cut.level, Level::Warn);
    assert!(
        cut.message.contains(
            "the default budget is cut from 3139 MiB (the machine's memory less \
             lifecycle.reserveMiB) to 256 MiB"
        ),
        "{}",
        cut.message
    );
    // What the policy refuses (the model outside its folders) is config_invalid, with the field.
    vps.write("/etc/ray/policy.json", r#"{"modelDirs":["/srv/models"]}"#);
    let report = run(&vps);
    let message = expect(&report, "config_invalid", Level::Error);
    assert!(
        message.contains("model.adapter.launchProfile.modelPath: /var/lib/ray/models/")
            && message.contains("outside the folders the host policy allows models from"),
        "{message}"
    );
    // Without the policy the same config reports no cut.
    let free = FakeVps::with_config(json!({ "lifecycle": {} }));
    let report = run(&free);
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.message.contains("lifecycle.memoryBudgetMiB")),
        "{}",
        report.to_text()
    );
}

#[test]
fn the_host_policy_the_config_names_is_read_below_the_root_and_the_env_file_wins_over_it() {
    // The config names the policy; the env file names none.
    let vps = FakeVps::with_config(json!({
        "policyFile": "/etc/ray/policy.json",
        "scheduler": { "concurrency": 2 },
    }));
    vps.write("/etc/ray/policy.json", r#"{"maxConcurrency":1}"#);
    let doctor = || {
        let output = binary()
            .args(["doctor", "--json", "--root"])
            .arg(&vps.root)
            .arg("--config")
            .arg(&vps.config)
            .args(["--min-free-mib", "1"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stdout)));
        report["findings"].as_array().unwrap().clone()
    };
    let findings = doctor();
    let cut = findings
        .iter()
        .find(|f| f["code"] == "config_warning")
        .unwrap_or_else(|| panic!("{findings:?}"));
    let message = cut["message"].as_str().unwrap();
    assert!(
        message.contains("scheduler.concurrency: cut from 2 to 1")
            && message.ends_with("(set by policy /etc/ray/policy.json)"),
        "{message}"
    );

    // A policy the config names that is not on the host: config_invalid, naming the field.
    vps.remove("/etc/ray/policy.json");
    let findings = doctor();
    let invalid = findings
        .iter()
        .find(|f| f["code"] == "config_invalid")
        .unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(invalid["level"], "error");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("policyFile: the host policy file cannot be used: "),
        "{invalid}"
    );

    // The env file's RAY_POLICY_FILE wins over the config's.
    vps.write("/etc/ray/owner.json", r#"{"maxConcurrency":2}"#);
    vps.write(
        "/etc/ray/ray.env",
        &format!("RAY_API_KEYS={GOOD_KEY}\nRAY_POLICY_FILE=/etc/ray/owner.json\n"),
    );
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let findings = doctor();
    assert!(
        findings
            .iter()
            .all(|f| f["code"] != "config_invalid" && f["code"] != "config_warning"),
        "{findings:?}"
    );
    assert!(
        findings.iter().any(|f| f["code"] == "config_ok"),
        "{findings:?}"
    );
}

// === installed_config ===

#[test]
fn installed_config_missing_or_different() {
    let vps = FakeVps::healthy();
    let elsewhere = vps.dir.path().join("ray.json");
    std::fs::copy(&vps.config, &elsewhere).unwrap();
    let mut args = vps.doctor_args();
    args.deploy.config = elsewhere.clone();
    let report = diagnose(&Host::new(&vps.root), &args);
    expect(&report, "installed_config_ok", Level::Ok);
    std::fs::write(&elsewhere, r#"{"profile":"sub1b"}"#).unwrap();
    let report = diagnose(&Host::new(&vps.root), &args);
    expect(&report, "installed_config_differs", Level::Warn);
    vps.remove("/etc/ray/ray.json");
    let report = diagnose(&Host::new(&vps.root), &args);
    expect(&report, "installed_config_missing", Level::Error);
}

// === env_file ===

#[test]
fn env_file_missing() {
    let vps = FakeVps::healthy();
    vps.remove("/etc/ray/ray.env");
    expect(&run(&vps), "env_file_missing", Level::Error);
}

#[test]
fn env_file_readable_by_others() {
    let vps = FakeVps::healthy();
    chmod(&vps.path("/etc/ray/ray.env"), 0o644);
    let message = expect(&run(&vps), "env_file_permissions", Level::Error);
    assert!(
        message.contains("0644") && message.contains("chmod 0600"),
        "{message}"
    );
}

#[test]
fn env_file_not_owned_by_root() {
    let vps = FakeVps::healthy();
    if let Err(error) = std::os::unix::fs::chown(vps.path("/etc/ray/ray.env"), Some(1000), None) {
        skipped(
            "the env_file_owner check",
            &format!("cannot chown as this user: {error}"),
        );
        return;
    }
    expect(&run(&vps), "env_file_owner", Level::Warn);
}

#[test]
fn env_file_invalid() {
    let vps = FakeVps::healthy();
    vps.write("/etc/ray/ray.env", "RAY_API_KEYS=abc\nthis is not a line\n");
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let message = expect(&run(&vps), "env_file_invalid", Level::Error);
    assert!(message.contains(":2:"), "{message}");
}

// === auth ===

#[test]
fn auth_disabled() {
    failing(
        json!({ "auth": { "enabled": false } }),
        "auth_disabled",
        Level::Warn,
    );
}

#[test]
fn auth_keys_missing() {
    let vps = FakeVps::healthy();
    vps.write("/etc/ray/ray.env", "RAY_LOG_LEVEL=info\n");
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let message = expect(&run(&vps), "auth_keys_missing", Level::Error);
    assert!(message.contains("RAY_API_KEYS"), "{message}");
}

#[test]
fn auth_key_weak() {
    let vps = FakeVps::healthy();
    vps.write(
        "/etc/ray/ray.env",
        &format!("RAY_API_KEYS={GOOD_KEY},tiny-key-1\n"),
    );
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let message = expect(&run(&vps), "auth_key_weak", Level::Warn);
    assert!(message.starts_with("1 of the 2"), "{message}");
    assert!(
        !message.contains("tiny-key-1") && !message.contains(GOOD_KEY),
        "keys must not be printed: {message}"
    );
}

// === callback_secret ===

#[test]
fn callback_secret_weak_and_missing() {
    let vps = FakeVps::with_config(json!({ "asyncQueue": { "enabled": true } }));
    vps.write(
        "/etc/ray/ray.env",
        &format!("RAY_API_KEYS={GOOD_KEY}\nRAY_CALLBACK_SIGNING_SECRET=short\n"),
    );
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let report = run(&vps);
    let message = expect(&report, "callback_secret_weak", Level::Error);
    assert!(
        message.contains("RAY_CALLBACK_SIGNING_SECRET must hold at least 16 bytes, got 5")
            && message.contains("the gateway will not start"),
        "{message}"
    );
    assert!(
        !message.contains("short"),
        "the secret must not be printed: {message}"
    );
    assert!(!report.passed());

    vps.write("/etc/ray/ray.env", &format!("RAY_API_KEYS={GOOD_KEY}\n"));
    let message = expect(&run(&vps), "callback_secret_missing", Level::Warn);
    assert!(message.contains("go unsigned"), "{message}");

    vps.write(
        "/etc/ray/ray.env",
        &format!("RAY_API_KEYS={GOOD_KEY}\nRAY_CALLBACK_SIGNING_SECRET={GOOD_KEY}\n"),
    );
    expect(&run(&vps), "callback_secret_ok", Level::Ok);
}

// === exposure, proxy_headers ===

#[test]
fn public_bind_address() {
    failing(
        json!({ "server": { "host": "0.0.0.0" } }),
        "public_bind_address",
        Level::Warn,
    );
}

#[test]
fn rate_limit_proxy_headers_untrusted() {
    failing(
        json!({ "rateLimit": { "trustProxyHeaders": false, "keyStrategy": "ip" } }),
        "rate_limit_proxy_headers_untrusted",
        Level::Warn,
    );
}

// === service_user ===

#[test]
fn service_user_missing_or_root() {
    let vps = FakeVps::healthy();
    let mut args = vps.doctor_args();
    args.deploy.user = "gateway".into();
    let report = diagnose(&Host::new(&vps.root), &args);
    let message = expect(&report, "service_user_missing", Level::Error);
    assert!(message.contains("useradd --system"), "{message}");
    vps.write(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/:/bin/sh\nray:x:999:999::/:/bin/false\n",
    );
    args.deploy.user = "toor".into();
    let report = diagnose(&Host::new(&vps.root), &args);
    expect(&report, "service_user_root", Level::Error);
}

// === gateway_binary ===

#[test]
fn gateway_binary_missing_or_not_executable() {
    let vps = FakeVps::healthy();
    chmod(&vps.path("/usr/local/bin/ray-server"), 0o644);
    expect(&run(&vps), "gateway_binary_not_executable", Level::Error);
    vps.remove("/usr/local/bin/ray-server");
    expect(&run(&vps), "gateway_binary_missing", Level::Error);
}

// === units ===

#[test]
fn units_not_installed() {
    let vps = FakeVps::healthy();
    vps.remove("/etc/systemd/system/ray-llama-cpp.service");
    let message = expect(&run(&vps), "units_not_installed", Level::Warn);
    assert!(message.contains("ray-llama-cpp.service"), "{message}");
}

#[test]
fn unit_stale_after_a_config_change() {
    let vps = FakeVps::healthy();
    let text = std::fs::read_to_string(&vps.config)
        .unwrap()
        .replace("\"cacheRamMiB\": 512", "\"cacheRamMiB\": 384");
    std::fs::write(&vps.config, text).unwrap();
    let message = expect(&run(&vps), "unit_stale", Level::Warn);
    assert!(message.contains("ray-llama-cpp.service"), "{message}");
    // A config variable in the environment file changes the units too, and the hint says to
    // render with the file.
    let vps = FakeVps::healthy();
    vps.write(
        "/etc/ray/ray.env",
        &format!("RAY_API_KEYS={GOOD_KEY}\nRAY_LLAMA_CPP_CTX_SIZE=4096\n"),
    );
    chmod(&vps.path("/etc/ray/ray.env"), 0o600);
    let message = expect(&run(&vps), "unit_stale", Level::Warn);
    assert!(
        message.contains("--ray-env-file /etc/ray/ray.env"),
        "{message}"
    );
    // Comments alone do not count.
    let vps = FakeVps::healthy();
    let unit = vps.path("/etc/systemd/system/ray-gateway.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, format!("# rendered elsewhere\n{text}")).unwrap();
    expect(&run(&vps), "units_ok", Level::Ok);
}

#[test]
fn unit_conflict_in_supervised_mode() {
    let vps = FakeVps::with_config(json!({
        "model": { "adapter": { "launchProfile": { "supervise": true } } }
    }));
    expect(&run(&vps), "units_ok", Level::Ok);
    vps.write("/etc/systemd/system/ray-llama-cpp.service", "[Service]\n");
    expect(&run(&vps), "unit_conflict", Level::Warn);
    vps.write(
        "/etc/systemd/system/multi-user.target.wants/ray-llama-cpp.service",
        "[Service]\n",
    );
    expect(&run(&vps), "unit_conflict", Level::Error);
}

// === caddy ===

#[test]
fn caddyfile_missing_mismatched_or_unsafe() {
    let vps = FakeVps::healthy();
    let caddyfile = std::fs::read_to_string(vps.path("/etc/caddy/Caddyfile")).unwrap();
    vps.write(
        "/etc/caddy/Caddyfile",
        &caddyfile.replace("keepalive 4s", "keepalive 2m"),
    );
    expect(&run(&vps), "caddy_keepalive_unsafe", Level::Warn);
    vps.write(
        "/etc/caddy/Caddyfile",
        &caddyfile.replace("127.0.0.1:3000", "127.0.0.1:3001"),
    );
    expect(&run(&vps), "caddy_upstream_mismatch", Level::Warn);
    vps.remove("/etc/caddy/Caddyfile");
    expect(&run(&vps), "caddyfile_missing", Level::Warn);
}

// === llama_binary ===

#[test]
fn llama_binary_missing_or_not_executable() {
    let vps = FakeVps::healthy();
    chmod(&vps.path("/usr/local/bin/llama-server"), 0o600);
    expect(&run(&vps), "llama_binary_not_executable", Level::Error);
    vps.remove("/usr/local/bin/llama-server");
    let message = expect(&run(&vps), "llama_binary_missing", Level::Error);
    assert!(message.contains("stage-model"), "{message}");
}

#[test]
fn llama_flags_unsupported() {
    let vps = FakeVps::healthy();
    vps.llama_help(&["--model".into(), "--port".into(), "--host".into()]);
    let message = expect(&run(&vps), "llama_flags_unsupported", Level::Error);
    assert!(message.contains("--cache-idle-slots"), "{message}");
    assert!(!message.contains("--port,"), "{message}");
}

#[test]
fn llama_help_failed() {
    let vps = FakeVps::healthy();
    write_executable(
        &vps.path("/usr/local/bin/llama-server"),
        "\u{7f}ELF but not really a program",
    );
    expect(&run(&vps), "llama_help_failed", Level::Error);
}

// === model_file ===

#[test]
fn model_missing() {
    let vps = FakeVps::healthy();
    vps.remove(&vps.model_path());
    let report = run(&vps);
    expect(&report, "model_missing", Level::Error);
    let message = expect(&report, "memory_fit_unknown", Level::Warn);
    assert!(message.contains("guessed KV cache"), "{message}");
    assert!(
        !message.contains("  "),
        "one space between words: {message}"
    );
}

#[test]
fn model_header_invalid() {
    let vps = FakeVps::healthy();
    let path = vps.path(&vps.model_path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let message = expect(&run(&vps), "model_header_invalid", Level::Error);
    assert!(message.contains("truncated"), "{message}");
    std::fs::write(&path, b"<!DOCTYPE html><html>404 Not Found</html>").unwrap();
    let message = expect(&run(&vps), "model_header_invalid", Level::Error);
    assert!(message.contains("not a GGUF file"), "{message}");
}

#[test]
fn model_unreadable_by_the_service_user() {
    let vps = FakeVps::healthy();
    chmod(&vps.path(&vps.model_path()), 0o600);
    expect(&run(&vps), "model_unreadable", Level::Error);
}

#[test]
fn model_context_short() {
    let vps = FakeVps::healthy();
    ray_server::ops::gguf::GgufBuilder::llama(24, 896, 14, 2)
        .number("llama.context_length", 1024)
        .write(&vps.path(&vps.model_path()))
        .unwrap();
    let message = expect(&run(&vps), "model_context_short", Level::Warn);
    assert!(
        message.contains("1536") && message.contains("1024"),
        "{message}"
    );
}

// === memory_fit ===

#[test]
fn memory_fit_reports_the_estimate_from_the_header() {
    let report = run(&FakeVps::healthy());
    let message = expect(&report, "memory_fit_ok", Level::Ok);
    // 24 layers × 2 KV heads × (64 + 64) × 2 bytes = 12288 bytes per token, 3072 tokens.
    assert!(
        message.contains("12288 bytes per token, from the GGUF header"),
        "{message}"
    );
    assert!(
        message.contains("KV cache 36 MiB (18.0 MiB per slot"),
        "{message}"
    );
    assert!(message.contains("MemoryMax=2380M"), "{message}");
}

#[test]
fn memory_fit_exceeded() {
    let message = failing(
        json!({ "model": { "adapter": { "launchProfile": { "cacheRamMiB": 4096 } } } }),
        "memory_fit_exceeded",
        Level::Error,
    );
    assert!(message.contains("cache-ram 4096 MiB"), "{message}");
}

#[test]
fn memory_fit_tight() {
    // Fill 95 % of llama-server's 2380 MiB with the prompt cache.
    let vps = FakeVps::healthy();
    let config = vps.deploy_args().load(None).unwrap().config;
    let mut launch = config.model.adapter.launch_profile().unwrap().clone();
    launch.cache_ram_mib = Some(0);
    let size = std::fs::metadata(vps.path(&vps.model_path()))
        .unwrap()
        .len();
    let header = ray_server::ops::gguf::read_header(&vps.path(&vps.model_path())).unwrap();
    let base = LlamaEstimate::new(&launch, size, Some(&header))
        .total_mib()
        .unwrap();
    let cache = (2380.0 * 0.95 - base).floor() as i64;
    failing(
        json!({ "model": { "adapter": { "launchProfile": { "cacheRamMiB": cache } } } }),
        "memory_fit_tight",
        Level::Warn,
    );
}

#[test]
fn cache_ram_unbounded() {
    failing(
        json!({ "model": { "adapter": { "launchProfile": { "cacheRamMiB": -1 } } } }),
        "cache_ram_unbounded",
        Level::Error,
    );
}

#[test]
fn cache_ram_implicit() {
    // Without cacheRamMiB, llama-server's own default of 8192 MiB applies: on a 16 GB box it
    // fits, but doctor says so.
    let vps = FakeVps::with_config(json!({
        "model": { "adapter": { "launchProfile": { "cacheRamMiB": null } } }
    }));
    vps.write(
        "/proc/meminfo",
        "MemTotal: 16384000 kB\nMemAvailable: 16000000 kB\nSwapTotal: 1048572 kB\nSwapFree: 1048572 kB\n",
    );
    let mut args = vps.doctor_args();
    args.deploy.memory_mib = Some(16384);
    let report = diagnose(&Host::new(&vps.root), &args);
    let message = expect(&report, "cache_ram_implicit", Level::Warn);
    assert!(message.contains("8192"), "{message}");
    // On the 4 GB box the same config does not fit, and the error says why.
    let message = expect(&run(&vps), "memory_fit_exceeded", Level::Error);
    assert!(message.contains("cacheRamMiB is not set"), "{message}");
}

// === gateway_memory ===

#[test]
fn gateway_memory_tight_and_exceeded() {
    let message = failing(
        json!({ "gracefulDegradation": { "memoryRssThresholdMiB": 16 } }),
        "gateway_memory_tight",
        Level::Warn,
    );
    assert!(message.contains("memoryRssThresholdMiB (16)"), "{message}");
    failing(
        json!({
            "gracefulDegradation": { "memoryRssThresholdMiB": 16 },
            "cache": { "maxBytes": 268435456 },
            "scheduler": { "maxQueuedTokens": 262144 }
        }),
        "gateway_memory_exceeded",
        Level::Error,
    );
}

// === host_memory ===

#[test]
fn memory_budget_exceeds_host() {
    let vps = FakeVps::healthy();
    let mut args = vps.doctor_args();
    args.deploy.memory_mib = Some(8192);
    let report = diagnose(&Host::new(&vps.root), &args);
    let message = expect(&report, "memory_budget_exceeds_host", Level::Warn);
    assert!(message.contains("--memory-mib 3907"), "{message}");
    // The units rendered for 4096 MiB now differ from what 8192 would give.
    expect(&report, "unit_stale", Level::Warn);
}

#[test]
fn host_memory_unknown() {
    let vps = FakeVps::healthy();
    vps.remove("/proc/meminfo");
    expect(&run(&vps), "host_memory_unknown", Level::Warn);
}

// === swap, swappiness ===

#[test]
fn swap_missing_or_full() {
    let vps = FakeVps::healthy();
    vps.write(
        "/proc/meminfo",
        "MemTotal: 4001036 kB\nMemAvailable: 3500000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
    );
    let message = expect(&run(&vps), "swap_missing", Level::Warn);
    assert!(message.contains("swap-plan"), "{message}");
    vps.write(
        "/proc/meminfo",
        "MemTotal: 4001036 kB\nMemAvailable: 300000 kB\nSwapTotal: 1048572 kB\nSwapFree: 102400 kB\n",
    );
    expect(&run(&vps), "swap_low_free", Level::Warn);
}

#[test]
fn swappiness_high_or_unknown() {
    let vps = FakeVps::healthy();
    vps.write("/proc/sys/vm/swappiness", "60\n");
    let message = expect(&run(&vps), "swappiness_high", Level::Warn);
    assert!(message.contains("60"), "{message}");
    vps.remove("/proc/sys/vm/swappiness");
    expect(&run(&vps), "swappiness_unknown", Level::Warn);
}

// === cpu, tuning ===

#[test]
fn llama_threads_exceed_host_cpu() {
    let vps = FakeVps::healthy();
    vps.write("/proc/cpuinfo", "processor\t: 0\n");
    let message = expect(&run(&vps), "llama_threads_exceed_host_cpu", Level::Warn);
    assert!(message.contains("2 threads on 1 CPU"), "{message}");
}

#[test]
fn scheduler_concurrency_exceeds_host_cpu() {
    let vps = FakeVps::with_config(json!({
        "model": { "adapter": { "launchProfile": { "threads": 1, "parallel": 4 } } },
        "scheduler": { "concurrency": 3 }
    }));
    vps.write("/proc/cpuinfo", "processor\t: 0\n");
    expect(
        &run(&vps),
        "scheduler_concurrency_exceeds_host_cpu",
        Level::Warn,
    );
}

#[test]
fn cpu_count_unknown() {
    let vps = FakeVps::healthy();
    vps.remove("/proc/cpuinfo");
    expect(&run(&vps), "cpu_count_unknown", Level::Warn);
}

#[test]
fn scheduler_exceeds_parallel() {
    failing(
        json!({ "scheduler": { "concurrency": 3 } }),
        "scheduler_exceeds_parallel",
        Level::Warn,
    );
}

#[test]
fn ctx_per_slot_tight() {
    let message = failing(
        json!({
            "model": { "adapter": { "launchProfile": { "ctxSize": 512 } } },
            "scheduler": { "maxInflightTokens": 1024 }
        }),
        "ctx_per_slot_tight",
        Level::Warn,
    );
    assert!(message.contains("256 tokens of context"), "{message}");
}

// === disk_space ===

#[test]
fn disk_space_low_or_skipped() {
    let vps = FakeVps::healthy();
    let mut args = vps.doctor_args();
    args.min_free_mib = u64::MAX / 4;
    let report = diagnose(&Host::new(&vps.root), &args);
    let message = expect(&report, "disk_space_low", Level::Error);
    assert!(message.contains("/var/lib/ray ("), "{message}");
    args.min_free_mib = 0;
    let report = diagnose(&Host::new(&vps.root), &args);
    expect(&report, "disk_space_skipped", Level::Info);
}

// === service_paths ===

#[test]
fn service_path_hidden() {
    let vps = FakeVps::with_config(json!({
        "model": { "adapter": { "launchProfile": { "modelPath": "/home/me/model.gguf" } } }
    }));
    let message = expect(&run(&vps), "service_path_hidden", Level::Error);
    assert!(
        message.contains("launchProfile.modelPath /home/me/model.gguf"),
        "{message}"
    );
}

#[test]
fn service_path_read_only() {
    failing(
        json!({ "asyncQueue": { "storageDir": "/etc/ray/jobs" } }),
        "service_path_read_only",
        Level::Error,
    );
}

// === job_store ===

#[test]
fn job_records_quarantined_are_listed_by_name() {
    let vps = FakeVps::with_config(json!({
        "asyncQueue": { "enabled": true, "storageDir": "/var/lib/ray/async-queue" }
    }));
    expect(&run(&vps), "job_store_ok", Level::Ok);
    vps.write(
        "/var/lib/ray/async-queue/quarantine/job_abc.json.1764800000000",
        "{\"id\":",
    );
    vps.write(
        "/var/lib/ray/async-queue/quarantine/.tmp-job_def-x.1764800000001",
        "",
    );
    let message = expect(&run(&vps), "job_records_quarantined", Level::Warn);
    assert!(message.starts_with("2 job store entries"), "{message}");
    assert!(message.contains("job_abc.json.1764800000000"), "{message}");
    assert!(
        message.contains("/var/lib/ray/async-queue/quarantine"),
        "{message}"
    );
}

// === cgroup, systemd, psi ===

#[test]
fn cgroup_v2_or_memory_controller_missing() {
    let vps = FakeVps::healthy();
    vps.write("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n");
    expect(&run(&vps), "cgroup_memory_controller_missing", Level::Warn);
    vps.remove("/sys/fs/cgroup/cgroup.controllers");
    expect(&run(&vps), "cgroup_v2_missing", Level::Warn);
}

#[test]
fn systemd_missing() {
    let vps = FakeVps::healthy();
    vps.remove("/run/systemd/system");
    expect(&run(&vps), "systemd_missing", Level::Warn);
}

#[test]
fn psi_unavailable() {
    let vps = FakeVps::healthy();
    vps.remove("/proc/pressure");
    expect(&run(&vps), "psi_unavailable", Level::Info);
}

// === the command ===

#[test]
fn the_command_exits_by_the_worst_level_and_prints_json() {
    let vps = FakeVps::healthy();
    let doctor = |extra: &[&str]| {
        binary()
            .args(["doctor", "--root"])
            .arg(&vps.root)
            .arg("--config")
            .arg(&vps.config)
            .args(["--min-free-mib", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = doctor(&["--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kind"], "ray-doctor");
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        CHECKS.len(),
        "{report}"
    );
    vps.write("/proc/sys/vm/swappiness", "60\n");
    let output = doctor(&[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "warnings alone pass: {text}");
    assert!(
        text.starts_with("ray-server doctor: 0 error(s), 1 warning(s)"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("warn   swappiness_high"),
        "{text}"
    );
    vps.remove(&vps.model_path());
    let output = doctor(&["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["errors"], 1);
    let output = doctor(&["--user", "root"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--user"));
}

// === lifecycle_fit ===

/// Two managed copies of the healthy box's model (`a` and `b`), under a lifecycle budget.
fn lifecycle_vps(budget_mib: u64, resident: bool) -> FakeVps {
    // Entries of `models` take no profile defaults: start from the effective model.
    let base = FakeVps::healthy();
    let loaded = ray_core::config::ConfigLoader::new()
        .with_file(&base.config)
        .load()
        .unwrap();
    let mut model = serde_json::to_value(&loaded.config.model).unwrap();
    model["adapter"]["launchProfile"]["supervise"] = json!(true);
    model["resident"] = json!(resident);
    let mut a = model.clone();
    a["id"] = json!("a");
    a["adapter"]["launchProfile"]["port"] = json!(8101);
    a["adapter"]["baseUrl"] = json!("http://127.0.0.1:8101");
    let mut b = model;
    b["id"] = json!("b");
    b["adapter"]["launchProfile"]["port"] = json!(8102);
    b["adapter"]["baseUrl"] = json!("http://127.0.0.1:8102");
    FakeVps::with_config(json!({
        "models": [a, b],
        "lifecycle": { "memoryBudgetMiB": budget_mib },
    }))
}

/// The footprint of one of `lifecycle_vps`'s models, by the estimator `check-config` and the
/// gateway use.
fn one_footprint() -> u64 {
    let vps = lifecycle_vps(100_000, false);
    let config = ray_core::config::ConfigLoader::new()
        .with_file(&vps.config)
        .load()
        .unwrap()
        .config;
    let (memory, _) = ray_server::ops::check::check_fit(&config, &vps.root).unwrap();
    assert_eq!(memory.models.len(), 2);
    assert!(memory.models[0].problem.is_none(), "{:?}", memory.models[0]);
    memory.models[0].footprint_mib
}

#[test]
fn lifecycle_fit_names_the_budget_and_each_footprint() {
    let report = run(&FakeVps::healthy());
    let message = expect(&report, "lifecycle_fit_ok", Level::Ok);
    assert!(message.contains("no lifecycle section"), "{message}");
    let footprint = one_footprint();
    assert!(footprint > 0);
    let report = run(&lifecycle_vps(footprint * 2 + 10, true));
    let message = expect(&report, "lifecycle_fit_ok", Level::Ok);
    assert!(
        message.contains(&format!("a {footprint} MiB (estimated, pinned)")),
        "{message}"
    );
    assert!(
        message.contains(&format!("the pinned models take {} MiB", footprint * 2)),
        "{message}"
    );
}

#[test]
fn pinned_models_that_do_not_fit_together_are_an_error() {
    let footprint = one_footprint();
    // Each fits alone, both pinned do not.
    let report = run(&lifecycle_vps(footprint + footprint / 2, true));
    let message = expect(&report, "pinned_models_do_not_fit", Level::Error);
    assert!(message.contains("a, b"), "{message}");
    assert!(
        message.contains(&format!("{} MiB together", footprint * 2)),
        "{message}"
    );
    assert!(report.find("lifecycle_fit_ok").is_none());
    // Unpinned, they take turns: fine.
    let report = run(&lifecycle_vps(footprint + footprint / 2, false));
    expect(&report, "lifecycle_fit_ok", Level::Ok);
}

#[test]
fn a_managed_model_larger_than_the_budget_is_an_error() {
    let footprint = one_footprint();
    let report = run(&lifecycle_vps(footprint / 2, false));
    let message = expect(&report, "model_does_not_fit", Level::Error);
    assert!(message.contains("never load"), "{message}");
    assert!(message.contains(&format!("{footprint} MiB")), "{message}");
}
