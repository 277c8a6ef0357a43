//! `ray-server provision MANIFEST`: what an operator does by hand to set a box up, from one
//! manifest ([`manifest`]) and idempotently. It checks each model file's SHA-256 (fetching a
//! missing one from its URL: resumable, verified before it is renamed into place,
//! [`fetch`]), loads the Ray config the manifest describes under the host policy, checks the
//! memory budget (the lifecycle fit, else what `render`'s split gives `llama-server`), then
//! writes the config and what `render` renders (units, Caddyfile, and the environment file when
//! it is missing) where they differ, and says what changed and what is left to do. A second run
//! changes nothing and says so; `--dry-run` writes nothing.

pub mod fetch;
pub mod manifest;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ray_core::config::{ConfigError, ConfigLoader, Diagnostic, POLICY_FILE_ENV, RayConfig};
use serde::Serialize;

use crate::ops::check::MemoryReport;
use crate::ops::deploy::memory::{LlamaEstimate, memory_split};
use crate::ops::deploy::options::DeployArgs;
use crate::ops::deploy::{LLAMA_UNIT, STATE_DIR};
use crate::ops::progress::{Progress, Unit};
use manifest::{Manifest, ManifestError};

/// Options of `provision`.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    /// The manifest (JSON): models with their path, URL and SHA-256, launch profiles, routing,
    /// the deploy target.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON report on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Show no progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// One thing provisioning looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// `model`, `config`, `unit`, `caddyfile`, `env_file` or `file`.
    pub kind: &'static str,
    /// The model's id, for a model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The path on the box (below the target's root).
    pub path: String,
    /// `unchanged`, `created`, `updated`, `fetched`, or with `--dry-run` `would_create`,
    /// `would_update`, `would_fetch`; `kept` for an environment file that exists.
    pub status: &'static str,
    /// What was checked or done, in a few words.
    pub detail: String,
}

impl Action {
    fn changes(&self) -> bool {
        !matches!(self.status, "unchanged" | "kept")
    }
}

/// Why provisioning stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The manifest's or the config's field at fault (`models[1].sha256`,
    /// `scheduler.maxQueue`); empty when none is.
    pub field: String,
    /// A stable code: `manifest_invalid`, `config_invalid`, `sha256_mismatch`,
    /// `model_missing`, `fetch_failed`, `model_does_not_fit`, `write_failed`.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The report: what `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always `ray-provision`.
    pub kind: &'static str,
    /// False when provisioning stopped.
    pub ok: bool,
    /// Whether this was a `--dry-run`.
    pub dry_run: bool,
    /// Whether anything changed (or with `--dry-run`, would).
    pub changed: bool,
    /// The root everything is written below.
    pub root: String,
    /// Each model and file, in order.
    pub actions: Vec<Action>,
    /// The memory fit with a `lifecycle` section (as `check-config --json` gives it).
    pub memory: Option<MemoryReport>,
    /// The config's warnings (policy cuts among them), each with its field.
    pub warnings: Vec<Diagnostic>,
    /// What is left for the operator, as commands or sentences.
    pub next: Vec<String>,
    /// Why it stopped, when it did.
    pub error: Option<Failure>,
    /// Every error of a config that does not load, each with its field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    fn fail(&mut self, field: impl Into<String>, code: &'static str, message: String) {
        self.ok = false;
        self.error = Some(Failure {
            field: field.into(),
            code,
            message,
        });
    }

    /// The report as lines.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "ray-server provision{} (root {})\n",
            if self.dry_run { " --dry-run" } else { "" },
            self.root
        );
        for action in &self.actions {
            let what = match &action.id {
                Some(id) => format!("{} {id}", action.kind),
                None => action.kind.to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<14} {:<13} {}  ({})",
                what,
                action.status.replace('_', " "),
                action.path,
                action.detail
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        if let Some(error) = &self.error {
            let field = if error.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", error.field)
            };
            let _ = writeln!(out, "error: {field}{}: {}", error.code, error.message);
            if self.diagnostics.len() > 1 {
                for diagnostic in &self.diagnostics {
                    let _ = writeln!(out, "  {diagnostic}");
                }
            }
            out.push_str("stopped: nothing half-written is left at the destinations\n");
            return out;
        }
        let changed = self.actions.iter().filter(|a| a.changes()).count();
        if self.dry_run {
            let _ = writeln!(
                out,
                "dry run: {changed} change(s) planned; nothing was written"
            );
        } else if changed == 0 {
            out.push_str("nothing changed: the box already matches the manifest\n");
        } else {
            let _ = writeln!(out, "changed {changed} item(s)");
        }
        if !self.next.is_empty() {
            out.push_str("next:\n");
            for step in &self.next {
                let _ = writeln!(out, "  {step}");
            }
        }
        out
    }
}

/// The policy file to check against: the manifest's, else `RAY_POLICY_FILE`, else the config's
/// `policyFile` below the root, else `/etc/ray/policy.json` below the root when it exists.
fn policy_file(manifest: &Manifest, config: &serde_json::Value) -> Option<PathBuf> {
    if let Some(path) = &manifest.target.policy_file {
        return Some(manifest.below_root(path));
    }
    if let Some(path) = std::env::var_os(POLICY_FILE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = config.get("policyFile").and_then(serde_json::Value::as_str)
        && !path.trim().is_empty()
    {
        return Some(manifest.below_root(path));
    }
    let default = manifest.below_root("/etc/ray/policy.json");
    default.exists().then_some(default)
}

/// A file to write: where on the box, what, with which mode, and whether an existing one is
/// left alone.
struct Planned {
    kind: &'static str,
    path: String,
    contents: String,
    mode: u32,
    keep_existing: bool,
}

/// Runs `provision`.
pub fn run(args: &ProvisionArgs) -> ExitCode {
    let report = provision(args);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("cannot print JSON: {error}"),
        }
    } else if report.ok {
        print!("{}", report.to_text());
    } else {
        eprint!("{}", report.to_text());
    }
    match &report.error {
        None => ExitCode::SUCCESS,
        Some(_) => ExitCode::FAILURE,
    }
}

/// Provisions as `args` says and reports.
pub fn provision(args: &ProvisionArgs) -> Report {
    let mut report = Report {
        kind: "ray-provision",
        ok: true,
        dry_run: args.dry_run,
        changed: false,
        root: String::new(),
        actions: Vec::new(),
        memory: None,
        warnings: Vec::new(),
        next: Vec::new(),
        error: None,
        diagnostics: Vec::new(),
    };
    let quiet = args.quiet;
    let manifest = match Manifest::read(&args.manifest) {
        Ok(manifest) => manifest,
        Err(ManifestError { field, message }) => {
            report.fail(field, "manifest_invalid", message);
            return report;
        }
    };
    report.root = manifest.target.root.clone();

    // The config, under the host policy, before anything is fetched or written.
    let config_json = manifest.ray_config();
    let config_text = match serde_json::to_string_pretty(&config_json) {
        Ok(text) => format!("{text}\n"),
        Err(error) => {
            report.fail("", "config_invalid", error.to_string());
            return report;
        }
    };
    let config_path = manifest.target.config_path.clone();
    let mut loader = ConfigLoader::new()
        .with_json(config_path.clone(), config_text.clone())
        .with_base_dir(STATE_DIR);
    if let Some(policy) = policy_file(&manifest, &config_json) {
        loader = loader.with_env([(POLICY_FILE_ENV.to_string(), policy.display().to_string())]);
    }
    let loaded = match loader.load() {
        Ok(loaded) => loaded,
        Err(error) => {
            let (field, message, diagnostics) = match &error {
                ConfigError::Invalid { diagnostics, .. } => {
                    let first = diagnostics.iter().find(|d| d.is_error());
                    (
                        first.map(|d| d.path.clone()).unwrap_or_default(),
                        first.map_or_else(|| error.to_string(), |d| d.message.clone()),
                        diagnostics.clone(),
                    )
                }
                other => (String::new(), other.to_string(), Vec::new()),
            };
            report.diagnostics = diagnostics;
            report.fail(
                field,
                "config_invalid",
                format!(
                    "the Ray config the manifest describes does not load: {message}{}",
                    if report.diagnostics.len() > 1 {
                        " (every problem below)"
                    } else {
                        ""
                    }
                ),
            );
            return report;
        }
    };
    report.warnings = loaded.warnings.clone();
    let config: RayConfig = (*loaded.config).clone();

    // The models: present with the right digest, or to fetch.
    let mut to_fetch = Vec::new();
    for (i, model) in manifest.models.iter().enumerate() {
        let dest = manifest.below_root(&model.path);
        let mut action = Action {
            kind: "model",
            id: Some(model.id.clone()),
            path: model.path.clone(),
            status: "unchanged",
            detail: String::new(),
        };
        if dest.exists() {
            let size = std::fs::metadata(&dest).map_or(0, |m| m.len());
            let mut progress =
                Progress::new(format!("sha256 {}", model.id), Some(size), 0, Unit::Bytes)
                    .quiet(quiet);
            let actual = crate::ops::stage::sha256_file_with(&dest, Some(&mut progress));
            progress.finish();
            match actual {
                Ok(actual) if actual == model.sha256 => {
                    action.detail = "sha256 as expected".into();
                }
                Ok(actual) => {
                    report.fail(
                        format!("models[{i}].sha256"),
                        "sha256_mismatch",
                        format!(
                            "model {:?}: {} has SHA-256 {actual}, the manifest expects {}: a \
                             corrupt or different file (remove it to fetch it again, or fix the \
                             manifest)",
                            model.id, model.path, model.sha256
                        ),
                    );
                    return report;
                }
                Err(error) => {
                    report.fail(
                        format!("models[{i}].path"),
                        "model_missing",
                        format!("model {:?}: cannot read {}: {error}", model.id, model.path),
                    );
                    return report;
                }
            }
        } else if let Some(url) = &model.url {
            let resume = fetch::part_path(&dest);
            action.status = if args.dry_run {
                "would_fetch"
            } else {
                "fetched"
            };
            action.detail = match std::fs::metadata(&resume) {
                Ok(meta) => format!("from {url}, resuming after {} bytes", meta.len()),
                Err(_) => format!("from {url}"),
            };
            to_fetch.push((i, dest, report.actions.len()));
        } else {
            report.fail(
                format!("models[{i}].url"),
                "model_missing",
                format!(
                    "model {:?}: {} does not exist and the manifest gives no url to fetch it from",
                    model.id, model.path
                ),
            );
            return report;
        }
        report.actions.push(action);
    }
    if !args.dry_run {
        for (i, dest, index) in to_fetch {
            let model = &manifest.models[i];
            let url = model.url.as_deref().unwrap_or_default();
            match fetch::fetch(url, &dest, &model.sha256, &model.id, quiet) {
                Ok(fetched) => {
                    report.actions[index].detail = format!(
                        "{} from {url}{}, sha256 as expected",
                        human_bytes(fetched.bytes),
                        if fetched.resumed_from > 0 {
                            format!(" (resumed after {})", human_bytes(fetched.resumed_from))
                        } else {
                            String::new()
                        }
                    );
                }
                Err(fetch::FetchError::Digest { expected, actual }) => {
                    report.actions.truncate(index);
                    report.fail(
                        format!("models[{i}].sha256"),
                        "sha256_mismatch",
                        format!(
                            "model {:?}: what {url} sent has SHA-256 {actual}, the manifest \
                             expects {expected}; it was not installed",
                            model.id
                        ),
                    );
                    return report;
                }
                Err(fetch::FetchError::Io(message)) => {
                    report.actions.truncate(index);
                    report.fail(
                        format!("models[{i}].url"),
                        "fetch_failed",
                        format!(
                            "model {:?}: {message} (run again to resume from {})",
                            model.id,
                            fetch::part_path(Path::new(&model.path)).display()
                        ),
                    );
                    return report;
                }
            }
        }
    }

    // The memory budget, with the model files where they now are.
    if let Err(failure) = check_memory(&manifest, &config_json, &config, &mut report) {
        report.error = Some(failure);
        report.ok = false;
        return report;
    }

    // The config and what render renders from it.
    let deploy = DeployArgs {
        config: PathBuf::from(&config_path),
        ray_env_file: None,
        domain: manifest.target.domain.clone(),
        user: manifest.target.user.clone(),
        memory_mib: manifest.target.memory_mib,
        config_path: config_path.clone(),
        systemd_env_file: manifest.target.env_file.clone(),
        gateway_binary: manifest.target.gateway_binary.clone(),
    };
    let rendered = match crate::ops::render::render(&config, &deploy) {
        Ok(rendered) => rendered,
        Err(error) => {
            report.fail("target", "config_invalid", error.to_string());
            return report;
        }
    };
    let mut files = vec![Planned {
        kind: "config",
        path: config_path.clone(),
        contents: config_text,
        mode: 0o644,
        keep_existing: false,
    }];
    for file in &rendered.files {
        let (kind, path, mode, keep) = if file.name.ends_with(".service") {
            (
                "unit",
                format!(
                    "{}/{}",
                    manifest.target.unit_dir.trim_end_matches('/'),
                    file.name
                ),
                0o644,
                false,
            )
        } else if file.name == "Caddyfile" {
            (
                "caddyfile",
                manifest.target.caddyfile_path.clone(),
                0o644,
                false,
            )
        } else if file.name == "ray.env.example" {
            ("env_file", manifest.target.env_file.clone(), 0o600, true)
        } else {
            ("file", file.install_path.clone(), 0o644, false)
        };
        files.push(Planned {
            kind,
            path,
            contents: file.contents.clone(),
            mode,
            keep_existing: keep,
        });
    }
    let mut written = Vec::new();
    for file in &files {
        let dest = manifest.below_root(&file.path);
        let existing = std::fs::read(&dest).ok();
        let status = match (&existing, file.keep_existing) {
            (Some(_), true) => "kept",
            (Some(old), false) if old == file.contents.as_bytes() => "unchanged",
            (Some(_), false) if args.dry_run => "would_update",
            (Some(_), false) => "updated",
            (None, _) if args.dry_run => "would_create",
            (None, _) => "created",
        };
        let detail = match status {
            "kept" => "exists, never overwritten: it holds the keys".to_string(),
            "unchanged" => "as rendered".to_string(),
            _ => format!("{} bytes, mode {:04o}", file.contents.len(), file.mode),
        };
        if matches!(status, "created" | "updated") {
            let result = dest
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    crate::ops::fs::write_atomically(&dest, file.contents.as_bytes(), file.mode)
                });
            if let Err(error) = result {
                report.fail(
                    "target",
                    "write_failed",
                    format!("cannot write {}: {error}", dest.display()),
                );
                return report;
            }
            written.push(file.kind);
        }
        report.actions.push(Action {
            kind: file.kind,
            id: None,
            path: file.path.clone(),
            status,
            detail,
        });
    }
    report.changed = report.actions.iter().any(Action::changes);
    report.next = next_steps(&report, &manifest, rendered.supervised);
    report
}

fn human_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// The memory check: with a `lifecycle` section, every managed model must fit the budget on
/// its own (the lifecycle fit); without one, the models' llama-server processes together must
/// fit what render's memory split gives them.
fn check_memory(
    manifest: &Manifest,
    config_json: &serde_json::Value,
    config: &RayConfig,
    report: &mut Report,
) -> Result<(), Failure> {
    // A model not fetched yet (a dry run) cannot be sized: say so and check the rest.
    let missing: Vec<&str> = manifest
        .models
        .iter()
        .filter(|m| !manifest.below_root(&m.path).exists())
        .map(|m| m.id.as_str())
        .collect();
    if !missing.is_empty() {
        report.next.push(format!(
            "the memory budget is checked once {} is fetched",
            missing.join(", ")
        ));
        return Ok(());
    }
    // The same config with each model path below the root, so the files are read where they are.
    let mut local = config_json.clone();
    if let Some(models) = local.get_mut("models").and_then(|m| m.as_array_mut()) {
        for (entry, model) in models.iter_mut().zip(&manifest.models) {
            entry["adapter"]["launchProfile"]["modelPath"] =
                serde_json::Value::String(manifest.below_root(&model.path).display().to_string());
        }
    }
    let local = ConfigLoader::new()
        .with_json("manifest", local.to_string())
        .with_base_dir(STATE_DIR)
        .load()
        .map_err(|error| Failure {
            field: String::new(),
            code: "config_invalid",
            message: error.to_string(),
        })?;
    let mut local: RayConfig = (*local.config).clone();
    local.policy = config.policy.clone();
    local.lifecycle = config.lifecycle.clone();
    if let Some((memory, problems)) = crate::ops::check::check_fit(&local, Path::new("/")) {
        report.memory = Some(memory);
        if let Some(problem) = problems.iter().find(|d| d.is_error()) {
            return Err(Failure {
                field: problem.path.clone(),
                code: "model_does_not_fit",
                message: problem.message.clone(),
            });
        }
        report.warnings.extend(problems);
        return Ok(());
    }
    // No lifecycle: every launch profile runs at once within llama-server's share.
    let Some(limit) = memory_split(config, manifest.target.memory_mib).llama else {
        return Ok(());
    };
    let mut total = 0.0;
    for model in local.model_entries() {
        let Some(launch) = model.adapter.launch_profile() else {
            continue;
        };
        match LlamaEstimate::of_launch(launch)
            .ok()
            .and_then(|e| e.total_mib())
        {
            Some(mib) => total += mib,
            None => continue,
        }
    }
    if total > limit.max_mib as f64 {
        return Err(Failure {
            field: "models".into(),
            code: "model_does_not_fit",
            message: format!(
                "the models' llama-server processes need about {total:.0} MiB together but \
                 render gives them {} MiB (MemoryMax): lower ctxSize or cacheRamMiB, pick \
                 smaller quantizations, raise target.memoryMiB, or add a lifecycle section so \
                 they load on demand",
                limit.max_mib
            ),
        });
    }
    Ok(())
}

/// What is left for the operator after the files changed.
fn next_steps(report: &Report, manifest: &Manifest, supervised: bool) -> Vec<String> {
    let mut next = report.next.clone();
    let changed = |kind: &str| report.actions.iter().any(|a| a.kind == kind && a.changes());
    let verb = |on: &str| {
        if report.dry_run {
            format!("after a real run: {on}")
        } else {
            on.to_string()
        }
    };
    let units: Vec<String> = report
        .actions
        .iter()
        .filter(|a| a.kind == "unit")
        .filter_map(|a| {
            Path::new(&a.path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    if changed("env_file") {
        next.push(verb(&format!(
            "put the API keys in {} (RAY_API_KEYS=...; it is readable by root only)",
            manifest.target.env_file
        )));
    }
    let created_units = report
        .actions
        .iter()
        .any(|a| a.kind == "unit" && matches!(a.status, "created" | "would_create"));
    if changed("unit") {
        next.push(verb("sudo systemctl daemon-reload"));
    }
    if created_units {
        next.push(verb(&format!(
            "sudo systemctl enable --now {}",
            units.join(" ")
        )));
    } else if changed("config") || changed("model") || changed("unit") {
        let restart = if supervised || !units.iter().any(|u| format!("{u}.service") == LLAMA_UNIT) {
            "ray-gateway".to_string()
        } else {
            "ray-llama-cpp ray-gateway".to_string()
        };
        next.push(verb(&format!("sudo systemctl restart {restart}")));
    }
    if changed("caddyfile") {
        next.push(verb("sudo systemctl reload caddy"));
    }
    if changed("config") || changed("unit") || changed("model") {
        next.push(verb(&format!(
            "sudo ray-server doctor --config {} --domain {}",
            manifest.target.config_path, manifest.target.domain
        )));
    }
    next
}
