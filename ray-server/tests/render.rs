//! `ray-server render` for every example config: the units pass `systemd-analyze verify`, the
//! Caddyfile passes `caddy validate`, the files say what the config says, the output is
//! deterministic and free of secrets, and bad input is refused before anything is written.
#![allow(clippy::unwrap_used)]

mod deploy_tools;

use std::path::{Path, PathBuf};

use deploy_tools::{binary, example_configs, repo_root, skipped, tool, write_executable};
use ray_core::config::ConfigLoader;
use ray_server::ops::deploy::launch::{SystemdExec, llama_command};
use ray_server::ops::deploy::memory::memory_split;
use ray_server::ops::deploy::options::DeployArgs;
use ray_server::ops::render::{Rendered, render};

fn deploy(config: &Path) -> DeployArgs {
    deploy_tools::deploy_args(config)
}

fn render_example(path: &Path) -> (ray_core::config::ValidConfig, Rendered) {
    let args = deploy(path);
    let config = args.load(None).unwrap().config;
    let rendered = render(&config, &args).unwrap();
    (config, rendered)
}

fn value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn every_example_renders_units_that_say_what_the_config_says() {
    for path in example_configs() {
        let name = path.display().to_string();
        let (config, rendered) = render_example(&path);
        let split = memory_split(&config, None);
        let gateway = &rendered.file("ray-gateway.service").unwrap().contents;
        let launch = config.model.adapter.launch_profile();
        for (key, expected) in [
            ("TimeoutStopSec", "35"),
            ("EnvironmentFile", "/etc/ray/ray.env"),
            ("Environment", "MALLOC_ARENA_MAX=2"),
            ("User", "ray"),
            (
                "ExecStart",
                "/usr/local/bin/ray-server serve --config /etc/ray/ray.json",
            ),
            ("Restart", "always"),
            ("KillMode", "mixed"),
            ("NoNewPrivileges", "true"),
            ("ProtectSystem", "full"),
            ("ProtectHome", "true"),
            ("PrivateTmp", "true"),
            ("CapabilityBoundingSet", ""),
            ("StateDirectory", "ray"),
            ("UMask", "077"),
        ] {
            assert_eq!(value(gateway, key), vec![expected], "{name}: {key}");
        }
        let gateway_memory = match (rendered.supervised, split.llama) {
            (true, Some(llama)) => split.gateway.plus(llama),
            _ => split.gateway,
        };
        assert_eq!(
            value(gateway, "MemoryMax"),
            vec![format!("{}M", gateway_memory.max_mib).as_str()],
            "{name}"
        );
        assert_eq!(
            value(gateway, "MemoryHigh"),
            vec![format!("{}M", gateway_memory.high_mib).as_str()],
            "{name}"
        );
        match (launch, rendered.supervised) {
            (Some(launch), false) => {
                let llama = &rendered.file("ray-llama-cpp.service").unwrap().contents;
                // A node that hosts NATS also wants its unit.
                let mut wants = vec!["ray-llama-cpp.service"];
                if rendered.file("ray-nats.service").is_some() {
                    wants.push("ray-nats.service");
                }
                assert_eq!(value(gateway, "Wants"), wants, "{name}");
                assert_eq!(
                    value(llama, "ExecStart"),
                    vec![llama_command(launch).systemd_exec().unwrap().as_str()],
                    "{name}"
                );
                assert_eq!(value(llama, "TimeoutStopSec"), vec!["35"], "{name}");
                assert_eq!(value(llama, "OOMScoreAdjust"), vec!["250"], "{name}");
                assert_eq!(
                    value(llama, "MemoryMax"),
                    vec![format!("{}M", split.llama.unwrap().max_mib).as_str()],
                    "{name}"
                );
                assert!(value(llama, "Environment").is_empty(), "{name}: flags only");
            }
            (_, _) => assert!(rendered.file("ray-llama-cpp.service").is_none(), "{name}"),
        }
        let caddy = &rendered.file("Caddyfile").unwrap().contents;
        assert!(
            caddy.starts_with("#") && caddy.contains("\nray.example.com {\n"),
            "{name}"
        );
        assert!(
            caddy.contains(&format!(
                "reverse_proxy 127.0.0.1:{} {{",
                config.server.port
            )),
            "{name}"
        );
        assert!(
            caddy.contains(&format!(
                "max_size {}\n",
                config.server.request_body_limit_bytes + 65536
            )),
            "{name}"
        );
        let timeout = config.scheduler.request_timeout_ms.div_ceil(1000) + 5;
        assert!(
            caddy.contains(&format!("response_header_timeout {timeout}s")),
            "{name}"
        );
        assert!(
            caddy.contains("keepalive 4s"),
            "{name}: below the gateway's 5 s"
        );
        let env = &rendered.file("ray.env.example").unwrap().contents;
        if config.auth.enabled {
            assert!(
                env.contains(&format!("\n{}=\n", config.auth.api_key_env)),
                "{name}"
            );
        } else {
            assert!(env.contains("auth.enabled is false"), "{name}");
        }
    }
}

#[test]
fn rendering_is_deterministic_and_loads_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("ray.env");
    std::fs::write(
        &env_file,
        "RAY_API_KEYS=very-secret-key-0123456789abcdef0123\nRAY_SCHEDULER_MAX_QUEUE=33\n",
    )
    .unwrap();
    let config = deploy_tools::repo_root().join("examples/config/ray.sub1b.public.json");
    let run = |out: &Path| {
        let output = binary()
            .args(["render", "--config"])
            .arg(&config)
            .arg("--ray-env-file")
            .arg(&env_file)
            .args(["--domain", "ray.example.com", "--output-dir"])
            .arg(out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    let summary = run(&first);
    run(&second);
    let names = [
        "ray-gateway.service",
        "ray-llama-cpp.service",
        "Caddyfile",
        "ray.env.example",
    ];
    for name in names {
        let a = std::fs::read_to_string(first.join(name)).unwrap();
        let b = std::fs::read_to_string(second.join(name)).unwrap();
        assert_eq!(a, b, "{name}");
        assert!(!a.contains("very-secret-key"), "{name} holds a secret");
    }
    assert!(!summary.contains("very-secret-key"));
    // The env file's config variables did apply: the queue bound shows in nothing rendered,
    // but a memory-relevant one does.
    std::fs::write(
        &env_file,
        "RAY_DEGRADATION_MEMORY_RSS_THRESHOLD_MIB=256\nRAY_API_KEYS=x\n",
    )
    .unwrap();
    run(&first);
    let gateway = std::fs::read_to_string(first.join("ray-gateway.service")).unwrap();
    assert!(gateway.contains("\nMemoryMax=640M\n"), "{gateway}");
    // The env example is private, the rest readable.
    let mode = |name: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(first.join(name)).unwrap().permissions(),
        ) & 0o777
    };
    assert_eq!(mode("ray.env.example"), 0o600);
    assert_eq!(mode("Caddyfile"), 0o644);
    assert!(summary.contains("test -e /etc/ray/ray.env ||"), "{summary}");
}

#[test]
fn bad_flags_and_configs_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = deploy_tools::repo_root().join("examples/config/ray.sub1b.json");
    let out = dir.path().join("out");
    for (flags, expected, code) in [
        (vec!["--domain", "ray example.com"], "--domain", 2),
        (vec!["--user", "root"], "--user", 2),
        (vec!["--memory-mib", "12"], "--memory-mib", 2),
        (
            vec!["--gateway-binary", "ray-server"],
            "--gateway-binary",
            2,
        ),
    ] {
        let output = binary()
            .args(["render", "--config"])
            .arg(&config)
            .args(&flags)
            .arg("--output-dir")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} wrote something");
    }
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"profile":"sub1b","scheduler":{"maxQueue":0}}"#).unwrap();
    let output = binary()
        .args(["render", "--config"])
        .arg(&bad)
        .arg("--output-dir")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("scheduler.maxQueue"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn supervised_mode_renders_one_unit_with_both_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    std::fs::write(
        &path,
        r#"{"profile":"sub1b","model":{"adapter":{"kind":"llama.cpp","launchProfile":{"supervise":true}}}}"#,
    )
    .unwrap();
    let (config, rendered) = render_example(&path);
    let split = memory_split(&config, None);
    assert!(rendered.supervised);
    let names: Vec<&str> = rendered.files.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        ["ray-gateway.service", "Caddyfile", "ray.env.example"]
    );
    let unit = &rendered.files[0].contents;
    assert_eq!(value(unit, "OOMPolicy"), vec!["continue"]);
    assert!(value(unit, "Wants").is_empty());
    assert_eq!(
        value(unit, "MemoryMax"),
        vec![format!("{}M", split.gateway.max_mib + split.llama.unwrap().max_mib).as_str()]
    );
    assert_eq!(value(unit, "MemoryMax"), vec!["3276M"]);
}

#[test]
fn a_backend_key_reaches_llama_server_through_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    let with_key = |name: &str| {
        std::fs::write(
            &path,
            format!(r#"{{"profile":"sub1b","model":{{"adapter":{{"kind":"llama.cpp","apiKeyEnv":"{name}"}}}}}}"#),
        )
        .unwrap();
        let (_, rendered) = render_example(&path);
        rendered
            .file("ray-llama-cpp.service")
            .unwrap()
            .contents
            .clone()
    };
    let native = with_key("LLAMA_API_KEY");
    assert_eq!(value(&native, "EnvironmentFile"), vec!["/etc/ray/ray.env"]);
    assert!(!native.contains("--api-key"));
    let other = with_key("BACKEND_KEY");
    assert_eq!(value(&other, "EnvironmentFile"), vec!["/etc/ray/ray.env"]);
    assert!(
        value(&other, "ExecStart")[0].ends_with(" --api-key \"${BACKEND_KEY}\""),
        "{other}"
    );
}

/// Renders every example with binaries that exist on this machine, so `systemd-analyze
/// verify` judges the units themselves.
fn render_for_verification(dir: &Path) -> Vec<(String, PathBuf)> {
    let fake_llama = dir.join("bin/llama-server");
    let fake_gateway = dir.join("bin/ray-server");
    write_executable(&fake_llama, "#!/bin/sh\nexit 0\n");
    write_executable(&fake_gateway, "#!/bin/sh\nexit 0\n");
    let env_file = dir.join("ray.env");
    std::fs::write(
        &env_file,
        format!("RAY_LLAMA_CPP_BINARY_PATH={}\n", fake_llama.display()),
    )
    .unwrap();
    let mut rendered = Vec::new();
    for (index, path) in example_configs().into_iter().enumerate() {
        let out = dir.join(format!("out-{index}"));
        let mut args = deploy(&path);
        args.gateway_binary = fake_gateway.display().to_string();
        let loaded = ConfigLoader::new()
            .with_file(&path)
            .with_env([(
                "RAY_LLAMA_CPP_BINARY_PATH",
                fake_llama.display().to_string(),
            )])
            .load();
        // Configs without a launch profile ignore the variable with a warning.
        let config = loaded.unwrap().config;
        let files = render(&config, &args).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        for file in files.files {
            std::fs::write(out.join(file.name), &file.contents).unwrap();
        }
        rendered.push((path.display().to_string(), out));
    }
    rendered
}

#[test]
fn rendered_units_pass_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        skipped(
            "systemd-analyze verify of the rendered units",
            "systemd-analyze is not installed (Debian package systemd)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (config, out) in render_for_verification(dir.path()) {
        let units: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "service"))
            .collect();
        let output = std::process::Command::new(&analyze)
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // verify exits 0 on warnings (an unknown key, a bad value), so any line about one of
        // our files fails the test too.
        let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains(".service")).collect();
        assert!(
            output.status.success() && complaints.is_empty(),
            "{config}: systemd-analyze verify: {stderr}"
        );
    }
}

#[test]
fn systemd_analyze_verify_would_catch_a_bad_unit() {
    // The verification above is only worth something if a broken unit fails it.
    let Some(analyze) = tool("systemd-analyze") else {
        skipped(
            "systemd-analyze verify of a broken unit",
            "systemd-analyze is not installed (Debian package systemd)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = render_for_verification(dir.path()).remove(0);
    let unit = out.join("ray-gateway.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("MemoryMax=", "MemoryMax=lots\nMemoryMaxx=");
    std::fs::write(&unit, text).unwrap();
    let output = std::process::Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ray-gateway.service"), "{stderr}");
}

#[test]
fn rendered_caddyfiles_pass_caddy_validate() {
    let Some(caddy) = tool("caddy") else {
        skipped(
            "caddy validate of the rendered Caddyfiles",
            "caddy is not installed; .ci/run installs it with apt-get install caddy",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (config, out) in render_for_verification(dir.path()) {
        let output = std::process::Command::new(&caddy)
            .args(["validate", "--adapter", "caddyfile", "--config"])
            .arg(out.join("Caddyfile"))
            // Caddy keeps its state under $HOME; keep it out of the developer's.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("Valid configuration"),
            "{config}: caddy validate: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A broken one fails, so the pass above means something.
    let broken = dir.path().join("Caddyfile.broken");
    std::fs::write(
        &broken,
        "ray.example.com {\n\treverse_proxy {\n\t\tkeepalive soon\n\t}\n}\n",
    )
    .unwrap();
    let output = std::process::Command::new(&caddy)
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(&broken)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn caddy_serves_the_gateway_with_the_rendered_caddyfile() {
    let Some(caddy) = tool("caddy") else {
        skipped(
            "Caddy in front of the gateway",
            "caddy is not installed; .ci/run installs it with apt-get install caddy",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ray = deploy_tools::RayProcess::start(
        dir.path(),
        &serde_json::json!({ "profile": "tiny", "server": { "requestBodyLimitBytes": 2000 } }),
    );
    let config = dir.path().join("ray.json");
    let (_, rendered) = render_example(&config);
    // Plain HTTP on a free port instead of the domain (no certificate, no trust store), and no
    // admin endpoint; everything else is the rendered file.
    let port = deploy_tools::free_port();
    let caddyfile = rendered
        .file("Caddyfile")
        .unwrap()
        .contents
        .replace("ray.example.com {", &format!("http://127.0.0.1:{port} {{"));
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, format!("{{\n\tadmin off\n}}\n{caddyfile}")).unwrap();
    let mut proxy = std::process::Command::new(&caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ready = loop {
        match client.get(format!("{url}/readyz")).send().await {
            Ok(response) => break response,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("caddy did not answer: {error}"),
        }
    };
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.headers()["x-content-type-options"], "nosniff");
    assert!(!ready.headers().contains_key("server"));
    let infer = client
        .post(format!("{url}/v1/infer"))
        .header("accept-encoding", "gzip")
        .header("content-type", "application/json")
        .body(r#"{"input":"Why do small boxes need bounded queues?"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(infer.status().as_u16(), 200);
    assert_eq!(
        infer.headers()["content-encoding"],
        "gzip",
        "JSON is compressed"
    );
    let too_big = client
        .post(format!("{url}/v1/infer"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"input":"{}"}}"#, "x".repeat(4000)))
        .send()
        .await
        .unwrap();
    // The gateway's own JSON 413 reaches the client through Caddy.
    assert_eq!(too_big.status().as_u16(), 413);
    let body: serde_json::Value = too_big.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    let _ = proxy.kill();
    let _ = proxy.wait();
    drop(ray);
}

#[test]
fn the_env_file_asks_for_a_signing_secret_when_jobs_are_on_and_caddy_retries_a_restart() {
    for path in example_configs() {
        let name = path.display().to_string();
        let (config, rendered) = render_example(&path);
        let env = &rendered.file("ray.env.example").unwrap().contents;
        let line = format!("\n{}=\n", config.async_queue.callback_signing_secret_env);
        assert_eq!(
            env.contains(&line),
            config.async_queue.enabled,
            "{name}: the signing secret line follows asyncQueue.enabled:\n{env}"
        );
        let caddy = &rendered.file("Caddyfile").unwrap().contents;
        assert!(caddy.contains("lb_try_duration 5s"), "{name}:\n{caddy}");
        assert!(!caddy.contains("health_uri"), "{name}:\n{caddy}");
    }
}

#[test]
fn a_node_hosting_nats_gets_its_unit_and_a_config_nats_server_accepts() {
    let path = repo_root().join("examples/config/ray.cluster-node.json");
    let config = ConfigLoader::new().with_file(&path).load().unwrap().config;
    let rendered = render(&config, &deploy(&path)).unwrap();
    let unit = rendered.file("ray-nats.service").expect("the NATS unit");
    assert!(
        unit.contents
            .contains("ExecStart=/usr/sbin/nats-server -c /etc/ray/nats.conf")
    );
    let gateway = rendered.file("ray-gateway.service").unwrap();
    assert!(
        gateway.contents.contains("Wants=ray-nats.service"),
        "{}",
        gateway.contents
    );
    let conf = rendered.file("nats.conf").expect("the NATS config");
    assert!(conf.contents.contains("listen: 127.0.0.1:4222"));
    assert!(conf.contents.contains("jetstream {"));
    let Some(nats) = tool("nats-server") else {
        skipped(
            "nats-server -t of the rendered config",
            "nats-server is not installed (Debian package nats-server)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The store path is the VPS's; for the check it points into the temporary directory.
    let local = conf.contents.replace(
        "/var/lib/ray-nats",
        &dir.path().join("store").display().to_string(),
    );
    let file = dir.path().join("nats.conf");
    std::fs::write(&file, local).unwrap();
    let output = std::process::Command::new(nats)
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nats-server -t: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A node whose NATS is elsewhere renders no NATS unit.
    let elsewhere = ConfigLoader::new()
        .with_file(&path)
        .with_json(
            "override",
            r#"{"cluster":{"natsUrls":["nats://10.0.0.2:4222"],"nodeId":"fsn-1",
                "advertiseUrl":"http://10.0.0.2:8080","clusterKeyEnv":"RAY_CLUSTER_KEY"}}"#,
        )
        .load()
        .unwrap()
        .config;
    let rendered = render(&elsewhere, &deploy(&path)).unwrap();
    assert!(rendered.file("ray-nats.service").is_none());
}

/// The JSON of operations.md's worked example of two managed models.
fn worked_example() -> serde_json::Value {
    let docs =
        std::fs::read_to_string(deploy_tools::repo_root().join("docs/operations.md")).unwrap();
    let section = docs
        .find("### A worked example: two models")
        .expect("the worked example");
    let start = section + docs[section..].find("```json").unwrap() + "```json".len();
    let end = start + docs[start..].find("```").unwrap();
    serde_json::from_str(&docs[start..end]).expect("the worked example is JSON")
}

#[test]
fn managed_models_render_one_unit_with_the_lifecycle_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    let mut config = worked_example();
    std::fs::write(&path, config.to_string()).unwrap();
    let (loaded, rendered) = render_example(&path);
    assert!(rendered.supervised);
    let names: Vec<&str> = rendered.files.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        ["ray-gateway.service", "Caddyfile", "ray.env.example"]
    );
    let unit = &rendered.files[0].contents;
    assert!(
        unit.contains("# The gateway runs llama-server for chat, coder, loading each on demand"),
        "{unit}"
    );
    assert!(value(unit, "Wants").is_empty(), "{unit}");
    assert_eq!(value(unit, "OOMPolicy"), vec!["continue"]);
    let split = memory_split(&loaded, None);
    assert_eq!(
        value(unit, "MemoryMax"),
        vec![format!("{}M", split.gateway.max_mib + split.llama.unwrap().max_mib).as_str()]
    );

    // With a budget, the children's share of the unit is that budget.
    config["lifecycle"]["memoryBudgetMiB"] = serde_json::json!(2400);
    std::fs::write(&path, config.to_string()).unwrap();
    let (loaded, rendered) = render_example(&path);
    let unit = &rendered.files[0].contents;
    let gateway = memory_split(&loaded, None).gateway.max_mib;
    assert_eq!(
        value(unit, "MemoryMax"),
        vec![format!("{}M", gateway + 2400).as_str()]
    );
    assert!(
        unit.contains("lifecycle.memoryBudgetMiB (2400 MiB"),
        "{unit}"
    );
}

#[test]
fn caddy_reaches_an_ipv6_gateway_with_its_address_in_one_pair_of_brackets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ray.json");
    for (host, upstream) in [
        ("::1", "[::1]:8080"),
        ("[::1]", "[::1]:8080"),
        ("[::]", "127.0.0.1:8080"),
        ("127.0.0.1", "127.0.0.1:8080"),
    ] {
        std::fs::write(
            &path,
            format!(r#"{{"profile":"sub1b","server":{{"host":"{host}","port":8080}}}}"#),
        )
        .unwrap();
        let (_, rendered) = render_example(&path);
        let caddyfile = &rendered.file("Caddyfile").unwrap().contents;
        assert!(
            caddyfile.contains(&format!("reverse_proxy {upstream} {{")),
            "{host}: {caddyfile}"
        );
    }
}
