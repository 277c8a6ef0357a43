//! Shared helpers for the deploy tests: the example configs, the binary, external tools that
//! may be missing (reported as SKIPPED, never as passed), and a fabricated VPS for doctor.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every example config, sorted.
pub fn example_configs() -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    configs.sort();
    assert_eq!(configs.len(), 22, "{configs:?}");
    configs
}

/// The `ray-server` binary with no `RAY_*` variables from the developer's shell.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ray-server"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RAY_") {
            command.env_remove(key);
        }
    }
    command
}

/// Where an external tool is, from PATH.
pub fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Says loudly that part of a test did not run (written past the test harness's capture so
/// it shows in a normal `cargo test`), and fails instead when `RAY_REQUIRE_DEPLOY_TOOLS=1`.
pub fn skipped(what: &str, reason: &str) {
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "\n!!! SKIPPED: {what} ({reason}); this check did not run and is not counted as passed."
    );
    assert!(
        std::env::var("RAY_REQUIRE_DEPLOY_TOOLS").as_deref() != Ok("1"),
        "RAY_REQUIRE_DEPLOY_TOOLS=1: {what} must run ({reason})"
    );
}

pub fn write_executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Deep-merges `patch` into `base` (objects key by key, everything else replaced).
pub fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                merge(
                    base.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

/// A fabricated VPS below a temporary root: a healthy 2 vCPU / 4 GB Debian box with Ray
/// installed the way docs/deploy.md says, for doctor to examine.
pub struct FakeVps {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The config doctor is given (the installed copy).
    pub config: PathBuf,
    pub config_json: serde_json::Value,
}

pub const GOOD_KEY: &str = "3f9a1c2b7d4e5f60a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556677";

impl FakeVps {
    /// The public sub1b example with `patch` merged in, installed on a healthy host.
    pub fn with_config(patch: serde_json::Value) -> FakeVps {
        let mut config_json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join("examples/config/ray.sub1b.public.json"))
                .unwrap(),
        )
        .unwrap();
        merge(&mut config_json, &patch);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let vps = FakeVps {
            config: root.join("etc/ray/ray.json"),
            root,
            dir,
            config_json,
        };
        vps.install();
        vps
    }

    pub fn healthy() -> FakeVps {
        FakeVps::with_config(serde_json::json!({}))
    }

    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn write(&self, abs: &str, text: &str) {
        let path = self.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn remove(&self, abs: &str) {
        let path = self.path(abs);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }

    pub fn deploy_args(&self) -> ray_server::ops::deploy::options::DeployArgs {
        deploy_args(&self.config)
    }

    pub fn doctor_args(&self) -> ray_server::ops::doctor::DoctorArgs {
        ray_server::ops::doctor::DoctorArgs {
            deploy: self.deploy_args(),
            json: false,
            min_free_mib: 1,
            root: self.root.clone(),
        }
    }

    pub fn model_path(&self) -> String {
        self.config_json["model"]["adapter"]["launchProfile"]["modelPath"]
            .as_str()
            .unwrap_or("/var/lib/ray/models/qwen2.5-0.5b-instruct-q4_k_m.gguf")
            .to_string()
    }

    /// A `llama-server` stand-in whose `--help` lists `flags`.
    pub fn llama_help(&self, flags: &[String]) {
        let mut help = String::from(
            "----- common params -----\n\n-h,    --help, --usage    print usage and exit\n",
        );
        for flag in flags {
            help.push_str(&format!("{flag} N    a setting\n"));
        }
        write_executable(
            &self.path("/usr/local/bin/llama-server"),
            &format!("#!/bin/sh\ncat <<'HELP'\n{help}HELP\n"),
        );
    }

    fn install(&self) {
        let dirs = [
            "/proc/sys/vm",
            "/proc/pressure",
            "/sys/fs/cgroup",
            "/run/systemd/system",
            "/etc/systemd/system/multi-user.target.wants",
            "/etc/caddy",
            "/var/lib/ray/models",
            "/var/log",
            "/tmp",
        ];
        for dir in dirs {
            std::fs::create_dir_all(self.path(dir)).unwrap();
        }
        self.write(
            "/proc/meminfo",
            "MemTotal:        4001036 kB\nMemFree:         3000000 kB\nMemAvailable:    3500000 kB\n\
             SwapTotal:       1048572 kB\nSwapFree:        1000000 kB\n",
        );
        self.write("/proc/sys/vm/swappiness", "10\n");
        self.write(
            "/proc/cpuinfo",
            "processor\t: 0\nmodel name\t: vCPU\n\nprocessor\t: 1\nmodel name\t: vCPU\n",
        );
        self.write(
            "/proc/pressure/memory",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        self.write(
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        self.write(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nray:x:999:999::/var/lib/ray:/usr/sbin/nologin\n",
        );
        self.write("/etc/group", "root:x:0:\nray:x:999:\n");
        self.write(
            "/etc/ray/ray.json",
            &serde_json::to_string_pretty(&self.config_json).unwrap(),
        );
        chmod(&self.path("/etc/ray/ray.json"), 0o644);
        // The deploy guide fills the signing secret the rendered example leaves empty.
        self.write(
            "/etc/ray/ray.env",
            &format!("RAY_API_KEYS={GOOD_KEY}\nRAY_CALLBACK_SIGNING_SECRET={GOOD_KEY}\n"),
        );
        chmod(&self.path("/etc/ray/ray.env"), 0o600);
        write_executable(
            &self.path("/usr/local/bin/ray-server"),
            "#!/bin/sh\nexit 0\n",
        );
        std::fs::create_dir_all(self.path(&self.model_path()).parent().unwrap()).unwrap();
        ray_server::ops::gguf::GgufBuilder::llama(24, 896, 14, 2)
            .number("llama.context_length", 32768)
            .tensor("token_embd.weight", 64 * 1024)
            .write(&self.path(&self.model_path()))
            .unwrap();
        chmod(&self.path(&self.model_path()), 0o644);
        let deploy = self.deploy_args();
        let loaded = deploy.load(Some(&self.path("/etc/ray/ray.env")));
        if let Ok(loaded) = loaded {
            if let Some(launch) = loaded.config.model.adapter.launch_profile() {
                let flags = ray_server::ops::deploy::launch::llama_command(launch).long_flags();
                self.llama_help(&flags);
            }
            let rendered = ray_server::ops::render::render(&loaded.config, &deploy).unwrap();
            for file in rendered.files {
                if file.name != "ray.env.example" {
                    self.write(&file.install_path, &file.contents);
                }
            }
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ray-server serve` process with its log lines collected.
pub struct RayProcess {
    pub child: std::process::Child,
    pub port: u16,
    pub lines: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl RayProcess {
    /// Starts `ray-server serve --config <config_json>` (written into `dir`) on a free port.
    pub fn start(dir: &Path, config_json: &serde_json::Value) -> RayProcess {
        let port = free_port();
        let mut config = config_json.clone();
        merge(
            &mut config,
            &serde_json::json!({ "server": { "port": port } }),
        );
        let path = dir.join("ray.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let mut child = binary()
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().push(line);
                }
            });
        }
        RayProcess { child, port, lines }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let response = reqwest::get(self.url(path)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// `provider.details.rayBackendProcess` from `/health`.
    pub async fn backend_process(&self) -> Option<serde_json::Value> {
        let (_, health) = self.get("/health").await?;
        Some(health["provider"]["details"]["rayBackendProcess"].clone())
    }

    /// Log lines parsed as JSON.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `check` holds, at most `limit`.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: std::time::Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = std::time::Instant::now();
        while !check().await {
            assert!(
                !exited(self.child.id()),
                "ray-server exited while waiting for {what}; log:\n{}",
                self.lines.lock().join("\n")
            );
            assert!(
                started.elapsed() < limit,
                "{what} did not happen within {limit:?}; log:\n{}",
                self.lines.lock().join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit code.
    pub fn terminate(mut self) -> (Option<i32>, Vec<serde_json::Value>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        // Let the reader threads drain the pipes.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let log = self.log();
        (status.code(), log)
    }

    /// Child processes of this gateway that are zombies (exited, not reaped).
    pub fn zombie_children(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut zombies = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 1 && fields[1] == me.to_string() && fields[0] == "Z" {
                zombies.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
            }
        }
        zombies
    }
}

impl Drop for RayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process exists (a zombie counts: it still has a /proc entry).
pub fn process_exists(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a process has exited but not been reaped (or is gone).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The deploy arguments the tests render with: `config`, `ray.example.com`, user `ray`, and the
/// installed paths of docs/deploy.md.
pub fn deploy_args(config: &Path) -> ray_server::ops::deploy::options::DeployArgs {
    ray_server::ops::deploy::options::DeployArgs {
        config: config.to_path_buf(),
        ray_env_file: None,
        domain: "ray.example.com".into(),
        user: "ray".into(),
        memory_mib: None,
        config_path: "/etc/ray/ray.json".into(),
        systemd_env_file: "/etc/ray/ray.env".into(),
        gateway_binary: "/usr/local/bin/ray-server".into(),
    }
}
