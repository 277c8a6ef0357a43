//! `ray-server doctor`: checks a VPS and its config before (and after) the services start.
//!
//! Each check has a stable name and reports one finding: `ok` with the check's `*_ok` code, or
//! a problem with its own stable code, a level (`info`, `warn`, `error`) and a sentence that
//! says what to do. Any `error` makes the command exit 1. The checks read the host through
//! [`Host`], below a root directory (`/` unless the hidden `--root` flag says otherwise), so
//! tests run them against fabricated hosts. [`CHECKS`] lists them; `docs/operations.md`
//! documents every code.

mod backend;
mod checks;
mod cluster;
mod ctx;
mod files;
mod machine;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::ops::host::Host;

use crate::ops::deploy::options::DeployArgs;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The check passed.
    Ok,
    /// Worth knowing; nothing to fix.
    Info,
    /// Works, but not as well or as safely as it could.
    Warn,
    /// Will not work, or is unsafe: doctor exits 1.
    Error,
}

impl Level {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check that produced it (see [`CHECKS`]).
    pub check: &'static str,
    /// How serious it is.
    pub level: Level,
    /// A stable code, e.g. `swap_missing`.
    pub code: &'static str,
    /// What was found and what to do.
    pub message: String,
}

/// Every check, in the order they run.
pub const CHECKS: &[&str] = &[
    "config",
    "installed_config",
    "env_file",
    "auth",
    "callback_secret",
    "exposure",
    "proxy_headers",
    "service_user",
    "gateway_binary",
    "units",
    "caddy",
    "llama_binary",
    "model_file",
    "memory_fit",
    "lifecycle_fit",
    "gateway_memory",
    "host_memory",
    "swap",
    "swappiness",
    "cpu",
    "tuning",
    "disk_space",
    "service_paths",
    "job_store",
    "cgroup",
    "systemd",
    "psi",
    "backend_model",
    "cluster",
];

/// Every finding of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Findings in check order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings at `level`.
    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// The finding with `code`, if any.
    pub fn find(&self, code: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.code == code)
    }

    /// Whether nothing is an error.
    pub fn passed(&self) -> bool {
        self.count(Level::Error) == 0
    }

    /// The JSON document `--json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "ray-doctor",
            "ok": self.passed(),
            "errors": self.count(Level::Error),
            "warnings": self.count(Level::Warn),
            "findings": self.findings,
        })
    }

    /// The text the command prints: problems first, then what passed.
    pub fn to_text(&self) -> String {
        let mut sorted: Vec<&Finding> = self.findings.iter().collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.level));
        let mut out = format!(
            "ray-server doctor: {} error(s), {} warning(s), {} check(s) passed\n",
            self.count(Level::Error),
            self.count(Level::Warn),
            self.count(Level::Ok)
        );
        for finding in sorted {
            out.push_str(&format!(
                "{:<5}  {:<40} {}\n",
                finding.level.as_str(),
                finding.code,
                finding.message
            ));
        }
        out
    }
}

/// Options of `doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The deployment.
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Free space each service directory needs, in MiB (0 skips the check).
    #[arg(
        long,
        env = "RAY_DEPLOY_MIN_FREE_STORAGE_MIB",
        default_value_t = 1024,
        value_name = "MIB"
    )]
    pub min_free_mib: u64,
    /// Read the host below this directory instead of `/` (for tests).
    #[arg(long, hide = true, default_value = "/")]
    pub root: PathBuf,
}

/// Runs every check against `host`.
pub fn diagnose(host: &Host, args: &DoctorArgs) -> Report {
    checks::run(host, args)
}

/// Runs `doctor`.
pub fn run(args: &DoctorArgs) -> ExitCode {
    if let Err(error) = args.deploy.check() {
        eprintln!("ray-server doctor: {error}");
        return ExitCode::from(2);
    }
    let host = Host::new(&args.root);
    let report = diagnose(&host, args);
    if args.json {
        match serde_json::to_string_pretty(&report.to_json()) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("cannot print JSON: {error}"),
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
