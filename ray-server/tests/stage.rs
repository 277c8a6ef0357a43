//! `ray-server stage-model` and `ray-server swap-plan`, run as the real binary against
//! temporary roots: checks refuse bad input before anything changes, `--apply` installs
//! atomically, and a dry run changes nothing.
#![allow(clippy::unwrap_used)]

mod deploy_tools;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use deploy_tools::{FakeVps, binary, skipped, tool, write_executable};
use ray_server::ops::gguf::GgufBuilder;
use ray_server::ops::stage::sha256_file;
use serde_json::json;

const MODEL: &str = "/var/lib/ray/models/qwen2.5-0.5b-instruct-q4_k_m.gguf";

fn stage(vps: &FakeVps, args: &[&str]) -> Output {
    binary()
        .args(["stage-model", "--root"])
        .arg(&vps.root)
        .arg("--config")
        .arg(&vps.config)
        .args(["--model-headroom-mib", "1", "--binary-headroom-mib", "1"])
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn model_source(dir: &Path) -> PathBuf {
    let path = dir.join("download.gguf");
    GgufBuilder::llama(24, 896, 14, 2)
        .tensor("token_embd.weight", 200_000)
        .write(&path)
        .unwrap();
    path
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn a_dry_run_checks_everything_and_changes_nothing() {
    let vps = FakeVps::healthy();
    let source = model_source(vps.dir.path());
    let before = std::fs::read(vps.path(MODEL)).unwrap();
    let sha = sha256_file(&source).unwrap();
    let output = stage(
        &vps,
        &[
            "--model-source",
            source.to_str().unwrap(),
            "--model-sha256",
            &sha,
        ],
    );
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains(&format!("sha256    {sha} (as expected)")),
        "{out}"
    );
    assert!(
        out.contains("header    GGUF v3, llama, 24 layers; needs about"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(std::fs::read(vps.path(MODEL)).unwrap(), before);
}

#[test]
fn apply_installs_the_model_atomically_with_its_checksum() {
    let vps = FakeVps::healthy();
    let source = model_source(vps.dir.path());
    let sha = sha256_file(&source).unwrap();
    let output = stage(
        &vps,
        &[
            "--model-source",
            source.to_str().unwrap(),
            "--model-sha256",
            &sha.to_uppercase(),
            "--apply",
        ],
    );
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("installed "), "{out}");
    assert_eq!(sha256_file(&vps.path(MODEL)).unwrap(), sha);
    let mode = std::fs::metadata(vps.path(MODEL))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    assert!(leftovers(&vps.path("/var/lib/ray/models")).is_empty());
    // The same file again: nothing to do.
    let output = stage(
        &vps,
        &["--model-source", source.to_str().unwrap(), "--apply"],
    );
    assert!(
        text(&output).contains("already installed with this content"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_wrong_checksum_or_a_broken_model_is_refused_before_anything_is_written() {
    let vps = FakeVps::healthy();
    let source = model_source(vps.dir.path());
    let before = std::fs::read(vps.path(MODEL)).unwrap();
    let wrong = "0".repeat(64);
    let output = stage(
        &vps,
        &[
            "--model-source",
            source.to_str().unwrap(),
            "--model-sha256",
            &wrong,
            "--apply",
        ],
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("not the expected 0000"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    // A truncated download.
    let bytes = std::fs::read(&source).unwrap();
    std::fs::write(&source, &bytes[..bytes.len() - 4096]).unwrap();
    let output = stage(
        &vps,
        &["--model-source", source.to_str().unwrap(), "--apply"],
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("truncated"), "{out}");
    assert_eq!(std::fs::read(vps.path(MODEL)).unwrap(), before);
    // A malformed checksum is a usage error.
    let output = stage(
        &vps,
        &[
            "--model-source",
            source.to_str().unwrap(),
            "--model-sha256",
            "abc",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--model-sha256"));
    // Nothing to stage is a usage error too.
    let output = stage(&vps, &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_model_that_does_not_fit_is_refused_unless_forced() {
    let vps = FakeVps::healthy();
    let source = model_source(vps.dir.path());
    let output = stage(
        &vps,
        &[
            "--model-source",
            source.to_str().unwrap(),
            "--memory-mib",
            "512",
        ],
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("its unit allows 512 MiB"), "{out}");
    let output = stage(
        &vps,
        &[
            "--model-source",
            source.to_str().unwrap(),
            "--memory-mib",
            "512",
            "--force",
            "--apply",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn too_little_space_is_refused() {
    let vps = FakeVps::healthy();
    let source = model_source(vps.dir.path());
    let output = binary()
        .args(["stage-model", "--root"])
        .arg(&vps.root)
        .arg("--config")
        .arg(&vps.config)
        .args([
            "--model-headroom-mib",
            "1000000000",
            "--apply",
            "--model-source",
        ])
        .arg(&source)
        .output()
        .unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("Free space first"), "{out}");
}

#[test]
fn the_binary_must_support_every_generated_flag() {
    let vps = FakeVps::healthy();
    // A build that lists every flag, from the fake host's own llama-server.
    let good = vps.dir.path().join("llama-server.good");
    std::fs::copy(vps.path("/usr/local/bin/llama-server"), &good).unwrap();
    let old = vps.dir.path().join("llama-server.old");
    write_executable(&old, "#!/bin/sh\necho '--model FNAME'\necho '--port N'\n");
    let output = stage(&vps, &["--binary-source", old.to_str().unwrap(), "--apply"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("does not know --alias"), "{out}");
    std::fs::write(vps.path("/usr/local/bin/llama-server"), "old").unwrap();
    let output = stage(
        &vps,
        &["--binary-source", good.to_str().unwrap(), "--apply"],
    );
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("lists all"), "{out}");
    let installed = vps.path("/usr/local/bin/llama-server");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&good).unwrap()
    );
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    assert!(leftovers(&vps.path("/usr/local/bin")).is_empty());
}

#[test]
fn the_installed_env_file_moves_the_target_as_it_moves_the_service() {
    let vps = FakeVps::healthy();
    vps.write(
        "/etc/ray/ray.env",
        &format!(
            "RAY_API_KEYS={}\nRAY_MODEL_PATH=/var/lib/ray/models/other.gguf\n",
            deploy_tools::GOOD_KEY
        ),
    );
    let source = model_source(vps.dir.path());
    let output = stage(
        &vps,
        &["--model-source", source.to_str().unwrap(), "--apply"],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("model: /var/lib/ray/models/other.gguf"));
    assert!(vps.path("/var/lib/ray/models/other.gguf").exists());
}

#[test]
fn a_target_the_units_cannot_see_is_refused() {
    let vps = FakeVps::with_config(serde_json::json!({
        "model": { "adapter": { "launchProfile": { "modelPath": "/home/me/m.gguf" } } }
    }));
    let source = model_source(vps.dir.path());
    let output = stage(
        &vps,
        &["--model-source", source.to_str().unwrap(), "--apply"],
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("ProtectHome"), "{out}");
}

fn swap_plan(vps: &FakeVps, args: &[&str]) -> Output {
    binary()
        .args(["swap-plan", "--root"])
        .arg(&vps.root)
        .args(["--headroom-mib", "1"])
        .args(args)
        .output()
        .unwrap()
}

fn no_swap(vps: &FakeVps) {
    vps.write(
        "/proc/meminfo",
        "MemTotal: 4001036 kB\nMemAvailable: 3500000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
    );
    vps.write(
        "/proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
    );
    vps.write("/proc/sys/vm/swappiness", "60\n");
    vps.write("/etc/fstab", "UUID=abc / ext4 errors=remount-ro 0 1\n");
}

#[test]
fn swap_plan_prints_the_commands_and_changes_nothing() {
    let vps = FakeVps::healthy();
    no_swap(&vps);
    let output = swap_plan(&vps, &[]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    for command in [
        "sudo fallocate -l 1024M /swapfile",
        "sudo chmod 600 /swapfile",
        "sudo mkswap /swapfile",
        "sudo swapon /swapfile",
        "echo '/swapfile none swap sw 0 0' | sudo tee -a /etc/fstab",
        "sudo sysctl -w vm.swappiness=10",
        "echo 'vm.swappiness=10' | sudo tee /etc/sysctl.d/60-ray-swappiness.conf",
    ] {
        assert!(out.contains(command), "{command} in {out}");
    }
    assert!(!vps.path("/swapfile").exists());
    // Every printed command is valid shell.
    let script: String = out
        .lines()
        .filter(|l| l.starts_with("  sudo ") || l.starts_with("  echo "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let check = std::process::Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(check.status.success(), "{script}");
}

#[test]
fn swap_plan_apply_makes_the_file_and_persists_the_settings_once() {
    if tool("mkswap").is_none() {
        skipped(
            "swap-plan --apply",
            "mkswap is not on PATH (Debian package util-linux, in /sbin)",
        );
        return;
    }
    let vps = FakeVps::healthy();
    no_swap(&vps);
    let output = swap_plan(&vps, &["--size-mib", "32", "--apply"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let file = vps.path("/swapfile");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 32 * 1024 * 1024);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let page = std::fs::read(&file).unwrap();
    assert!(
        page.windows(10).any(|w| w == b"SWAPSPACE2"),
        "mkswap wrote its signature"
    );
    assert!(
        out.contains("skipped (not on the real root): sudo swapon"),
        "{out}"
    );
    assert!(
        out.contains("skipped (not on the real root): sudo sysctl -w"),
        "{out}"
    );
    let fstab = std::fs::read_to_string(vps.path("/etc/fstab")).unwrap();
    assert!(fstab.starts_with("UUID=abc"), "{fstab}");
    assert_eq!(
        fstab.matches("/swapfile none swap sw 0 0").count(),
        1,
        "{fstab}"
    );
    assert_eq!(
        std::fs::read_to_string(vps.path("/etc/sysctl.d/60-ray-swappiness.conf")).unwrap(),
        "vm.swappiness=10\n"
    );
    // Now the file exists: a second plan refuses to clobber it.
    let output = swap_plan(&vps, &["--size-mib", "32", "--apply"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(vps.path("/etc/fstab")).unwrap(),
        fstab,
        "fstab unchanged"
    );
}

#[test]
fn swap_plan_with_enough_swap_only_fixes_swappiness() {
    let vps = FakeVps::healthy();
    vps.write("/proc/sys/vm/swappiness", "60\n");
    let output = swap_plan(&vps, &[]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("enough swap already"), "{out}");
    assert!(!out.contains("fallocate"), "{out}");
    assert!(out.contains("sudo sysctl -w vm.swappiness=10"), "{out}");
    let output = swap_plan(&vps, &["--path", "swap file"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn swap_plan_refuses_without_space() {
    let vps = FakeVps::healthy();
    no_swap(&vps);
    let output = binary()
        .args(["swap-plan", "--root"])
        .arg(&vps.root)
        .args(["--headroom-mib", "1000000000", "--apply"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("refused"));
    assert!(!vps.path("/swapfile").exists());
}

#[test]
fn swap_plan_json_names_each_step_and_each_refusal_with_its_flag() {
    let vps = FakeVps::healthy();
    no_swap(&vps);
    let output = swap_plan(&vps, &["--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kind"], "ray-swap-plan");
    assert_eq!(report["ok"], true);
    assert_eq!(report["apply"], false);
    assert_eq!(report["path"], "/swapfile");
    assert_eq!(report["swapMiB"], 0);
    assert_eq!(report["wantedSwapMiB"], 1024);
    assert_eq!(report["swappiness"], 60);
    assert_eq!(report["wantedSwappiness"], 10);
    assert!(report["neededMiB"].as_u64().unwrap() >= 1024, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let steps: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("allocate", "planned"),
            ("chmod", "planned"),
            ("mkswap", "planned"),
            ("swapon", "planned"),
            ("fstab", "planned"),
            ("sysctl_now", "planned"),
            ("sysctl_persist", "planned"),
        ]
    );
    assert_eq!(
        report["steps"][0]["command"],
        "sudo fallocate -l 1024M /swapfile"
    );
    assert!(!vps.path("/swapfile").exists());

    // Refusals are JSON too, with the flag to change and a non-zero exit.
    let output = swap_plan(&vps, &["--json", "--path", "swap file"]);
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["field"], "--path");
    assert_eq!(report["error"]["code"], "invalid_path");
    let output = binary()
        .args(["swap-plan", "--json", "--root"])
        .arg(&vps.root)
        .args(["--headroom-mib", "1000000000"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["error"]["field"], "--size-mib");
    assert_eq!(report["error"]["code"], "not_enough_space");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MiB needed"),
        "{report}"
    );
}

/// `swap-plan --config` and the running gateway's `/v1/models` give each managed model the same
/// footprint and the same budget: one estimator.
#[tokio::test]
async fn swap_plan_and_the_gateway_agree_on_each_managed_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for (id, bytes, port) in [("small", 200_000, 18_101), ("big", 4_000_000, 18_102)] {
        let path = dir.path().join(format!("{id}.gguf"));
        GgufBuilder::llama(24, 896, 14, 2)
            .tensor("token_embd.weight", bytes)
            .write(&path)
            .unwrap();
        let mut model = serde_json::to_value(
            &ray_core::config::ValidConfig::from_profile(ray_core::config::Profile::Sub1b).model,
        )
        .unwrap();
        model["id"] = json!(id);
        model["adapter"]["baseUrl"] = json!(format!("http://127.0.0.1:{port}"));
        let launch = &mut model["adapter"]["launchProfile"];
        launch["supervise"] = json!(true);
        launch["port"] = json!(port);
        launch["modelPath"] = json!(path.display().to_string());
        launch["binaryPath"] = json!("/bin/false");
        models.push(model);
    }
    let config = json!({
        "profile": "sub1b",
        "models": models,
        "lifecycle": {
            "memoryBudgetMiB": 3000,
            "stateDir": dir.path().join("state").display().to_string(),
        },
        "rateLimit": { "enabled": false },
    });
    let ray = deploy_tools::RayProcess::start(dir.path(), &config);
    ray.wait_for(
        "the gateway",
        std::time::Duration::from_secs(30),
        || async { ray.get("/livez").await.is_some() },
    )
    .await;
    let (_, listed) = ray.get("/v1/models").await.unwrap();
    let output = binary()
        .args(["swap-plan", "--json", "--config"])
        .arg(dir.path().join("ray.json"))
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
    let memory = &report["memory"];
    assert_eq!(memory["budgetMiB"], 3000, "{report}");
    let planned = memory["models"].as_array().unwrap();
    assert_eq!(planned.len(), 2, "{report}");
    for model in planned {
        let served = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model["id"])
            .unwrap_or_else(|| panic!("{} not in {listed}", model["id"]));
        let footprint = model["footprintMiB"].as_u64().unwrap();
        assert!(footprint > 0, "{model}");
        assert_eq!(
            served["lifecycle"]["footprintMiB"].as_u64(),
            Some(footprint),
            "{served} against {model}"
        );
        assert_eq!(served["lifecycle"]["footprintMeasured"], false);
    }
    assert!(
        planned[1]["footprintMiB"].as_u64() > planned[0]["footprintMiB"].as_u64(),
        "the bigger file needs more: {report}"
    );
    // The text form says the same in one line.
    let output = binary()
        .args(["swap-plan", "--config"])
        .arg(dir.path().join("ray.json"))
        .output()
        .unwrap();
    let out = text(&output);
    let sentence = format!(
        "small {} MiB (estimated)",
        planned[0]["footprintMiB"].as_u64().unwrap()
    );
    assert!(out.contains("memory budget 3000 MiB"), "{out}");
    assert!(out.contains(&sentence), "{out}");
}

#[test]
fn swap_plan_names_a_config_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    std::fs::write(&path, r#"{"scheduler":{"concurrency":0}}"#).unwrap();
    let output = binary()
        .args(["swap-plan", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["error"]["field"], "--config");
    assert_eq!(report["error"]["code"], "config_invalid");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scheduler.concurrency"),
        "{report}"
    );
}
