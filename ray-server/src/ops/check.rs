//! `ray-server check-config`: loads each file as the gateway would and reports every problem,
//! as `file: path: message` lines or, with `--json`, one document (`docs/operations.md`,
//! "check-config") another tool can act on. With a `lifecycle` section it also checks that
//! every managed model fits the memory budget, and says where the host policy cut it.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use ray_core::config::{ConfigError, ConfigLoader, Diagnostic, RayConfig, callback_secret_problem};
use serde::Serialize;

use crate::ops::fs::diagnostic_line;

/// Options of `check-config`.
#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,
    /// Check the files alone, ignoring RAY_* variables in the environment.
    #[arg(long)]
    pub no_env: bool,
    /// Print one JSON document (files, their diagnostics with the field's path, the memory
    /// fit) instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// One managed model's footprint against the budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFitReport {
    /// The model's id.
    pub id: String,
    /// Its entry in the config (`model` or `models[i]`).
    pub path: String,
    /// What it needs in MiB (0 when it cannot be sized).
    #[serde(rename = "footprintMiB")]
    pub footprint_mib: u64,
    /// Whether the figure was measured on an earlier load rather than estimated.
    pub measured: bool,
    /// Whether it is pinned (`resident`).
    pub resident: bool,
    /// Why it cannot be sized (its model file is unreadable), when so.
    pub problem: Option<String>,
}

/// The memory budget of the managed models and each one's footprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    /// The budget in MiB.
    #[serde(rename = "budgetMiB")]
    pub budget_mib: u64,
    /// Where it came from, e.g. `lifecycle.memoryBudgetMiB`.
    pub budget_source: &'static str,
    /// Where the host policy's `maxMemoryMiB` cut the default budget (`null` when it did
    /// not; a budget the config sets is cut by the loader, with a warning on the field).
    pub policy_cut: Option<PolicyCutReport>,
    /// The managed models.
    pub models: Vec<ModelFitReport>,
}

/// The default budget before the host policy cut it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCutReport {
    /// The default budget in MiB before the cut.
    #[serde(rename = "fromMiB")]
    pub from_mib: u64,
    /// Where that default came from, e.g. the machine's memory less `lifecycle.reserveMiB`.
    pub from_source: &'static str,
}

/// Where the host policy cut the default memory budget (`lifecycle.memoryBudgetMiB` unset):
/// `(before, where it came from, after)` and a warning on `lifecycle.memoryBudgetMiB` saying
/// so; `None` when it did not. A budget the config sets is cut by the loader, which reports it
/// with the config's other warnings. Files are read below `root`.
pub fn policy_budget_cut(config: &RayConfig, root: &Path) -> Option<(PolicyCutReport, Diagnostic)> {
    let lifecycle = config.lifecycle.as_ref()?;
    let policy = config.policy.as_ref()?;
    let max = policy.max_memory_mib?;
    let (before, from, after) = ray_runtime::lifecycle::policy_cut(lifecycle, Some(policy), root)?;
    let mut warning = Diagnostic::warning(
        "lifecycle.memoryBudgetMiB",
        format!(
            "the default budget is cut from {before} MiB ({}) to {after} MiB: the host policy \
             allows Ray and its models {max} MiB, less lifecycle.reserveMiB ({} MiB) for the \
             gateway and the OS",
            from.describe(),
            lifecycle.reserve_mib
        ),
    );
    warning.source = Some("policy maxMemoryMiB".into());
    let report = PolicyCutReport {
        from_mib: before,
        from_source: from.describe(),
    };
    Some((report, warning))
}

/// What `check-config` found in one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    /// The file as given.
    pub file: String,
    /// Whether it loads with no error.
    pub ok: bool,
    /// The profile, when the file loads.
    pub profile: Option<String>,
    /// The default model's id, when the file loads.
    pub default_model: Option<String>,
    /// The default model's adapter kind, when the file loads.
    pub adapter: Option<String>,
    /// Every error and warning, each with the field's JSON path (empty for the whole file).
    pub diagnostics: Vec<Diagnostic>,
    /// Plain sentences about the models and routing, when there are several or any rule.
    pub models: Vec<String>,
    /// The memory fit, with a `lifecycle` section.
    pub memory: Option<MemoryReport>,
    /// What the batch window does and why its default is off, when the file loads.
    pub batch_window: Option<String>,
    /// How many of `diagnostics` the loader gave (the memory fit's follow).
    #[serde(skip)]
    loader_diagnostics: usize,
}

/// Loads `file` (with the process's `RAY_*` variables when `with_env`) and checks it.
pub fn check_file(file: &Path, with_env: bool) -> FileReport {
    let name = file.display().to_string();
    let mut report = FileReport {
        file: name,
        ok: false,
        profile: None,
        default_model: None,
        adapter: None,
        diagnostics: Vec::new(),
        models: Vec::new(),
        memory: None,
        batch_window: None,
        loader_diagnostics: 0,
    };
    let mut loader = ConfigLoader::new();
    if with_env {
        loader = loader.with_process_env();
    }
    match loader.with_file(file).load() {
        Ok(loaded) => {
            let config = &loaded.config;
            let default = config.default_model_id();
            report.profile = Some(config.profile.as_str().to_string());
            report.adapter = config
                .model_entries()
                .iter()
                .find(|m| m.id == default)
                .map(|m| m.adapter.kind().to_string());
            report.default_model = Some(default.to_string());
            report.diagnostics = loaded.warnings.clone();
            if with_env && let Some(problem) = callback_secret_env_problem(config) {
                report.diagnostics.push(problem);
            }
            report.loader_diagnostics = report.diagnostics.len();
            report.batch_window = Some(crate::explain::batch_window(
                &ray_core::config::redacted_json(config),
            ));
            if config.model_entries().len() > 1 || !config.routing.rules.is_empty() {
                report.models = ray_core::config::explain_models(config);
            }
            if let Some((memory, problems)) = check_fit(config, Path::new("/")) {
                report.memory = Some(memory);
                report.diagnostics.extend(problems);
            }
            report.ok = !report.diagnostics.iter().any(Diagnostic::is_error);
        }
        Err(ConfigError::Invalid { diagnostics, .. }) => report.diagnostics = diagnostics,
        Err(other) => report.diagnostics = vec![Diagnostic::error("", other.to_string())],
    }
    report
}

/// An error when the callback signing secret in the process's environment would stop the
/// gateway at start (too short, not UTF-8) and the config reads it (`None` otherwise).
fn callback_secret_env_problem(config: &RayConfig) -> Option<Diagnostic> {
    if !config.reads_callback_secret() {
        return None;
    }
    let name = &config.async_queue.callback_signing_secret_env;
    let problem = callback_secret_problem(name, std::env::var_os(name).as_deref())?;
    let mut error = Diagnostic::error(
        "asyncQueue.callbackSigningSecretEnv",
        format!(
            "{problem}: the gateway will not start. Set a longer secret (make one with \
             `od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`), or unset {name} to send callbacks \
             unsigned"
        ),
    );
    error.source = Some(format!("env {name}"));
    Some(error)
}

/// With a `lifecycle` section: the budget and each managed model's footprint, an error for a
/// model that does not fit on its own and a warning for pinned models that do not fit
/// together. Files are read below `root`.
pub fn check_fit(config: &RayConfig, root: &Path) -> Option<(MemoryReport, Vec<Diagnostic>)> {
    let (budget, source, fits) = ray_runtime::lifecycle::fit(config, root)?;
    let mut problems = Vec::new();
    let cut = policy_budget_cut(config, root).map(|(report, warning)| {
        problems.push(warning);
        report
    });
    for fit in &fits {
        if let Some(problem) = &fit.problem {
            problems.push(Diagnostic::warning(
                format!("{}.adapter.launchProfile.modelPath", fit.path),
                format!(
                    "cannot size the model {:?} ({problem}); it is checked against the budget \
                     when it loads",
                    fit.id
                ),
            ));
        } else if fit.footprint_mib > budget {
            problems.push(Diagnostic::error(
                fit.path.clone(),
                format!(
                    "model_does_not_fit: the model {:?} needs about {} MiB ({}) but the memory \
                     budget is {budget} MiB ({}); lower ctxSize, parallel or cacheRamMiB, pick a \
                     smaller quantization, or {}",
                    fit.id,
                    fit.footprint_mib,
                    if fit.measured {
                        "measured"
                    } else {
                        "estimated"
                    },
                    source.describe(),
                    if source == ray_runtime::lifecycle::BudgetSource::Policy {
                        "ask the machine's owner for a larger maxMemoryMiB in the host policy"
                    } else {
                        "raise lifecycle.memoryBudgetMiB"
                    }
                ),
            ));
        }
    }
    let pinned: u64 = fits
        .iter()
        .filter(|f| f.resident)
        .map(|f| f.footprint_mib)
        .sum();
    if pinned > budget {
        problems.push(Diagnostic::warning(
            "lifecycle",
            format!(
                "the resident models need {pinned} MiB together, more than the {budget} MiB \
                 budget ({}): the ones that do not fit load only on demand",
                source.describe()
            ),
        ));
    }
    let memory = MemoryReport {
        budget_mib: budget,
        budget_source: source.describe(),
        policy_cut: cut,
        models: fits
            .into_iter()
            .map(|fit| ModelFitReport {
                id: fit.id,
                path: fit.path,
                footprint_mib: fit.footprint_mib,
                measured: fit.measured,
                resident: fit.resident,
                problem: fit.problem,
            })
            .collect(),
    };
    Some((memory, problems))
}

/// The document `--json` prints for `files`.
pub fn to_json(files: &[FileReport]) -> serde_json::Value {
    let count = |severity_error: bool| {
        files
            .iter()
            .flat_map(|f| &f.diagnostics)
            .filter(|d| d.is_error() == severity_error)
            .count()
    };
    serde_json::json!({
        "kind": "ray-check-config",
        "ok": files.iter().all(|f| f.ok),
        "errors": count(true),
        "warnings": count(false),
        "files": files,
    })
}

/// Prints one file's report as lines: problems of a file that does not load on stderr, the
/// rest on stdout.
fn print_text(report: &FileReport) {
    let name = &report.file;
    let (Some(profile), Some(model)) = (&report.profile, &report.default_model) else {
        for diagnostic in &report.diagnostics {
            eprintln!("{}", diagnostic_line(name, diagnostic));
        }
        return;
    };
    // The loader's warnings first, then the summary, then the memory fit's findings.
    let (loader, fit) = report.diagnostics.split_at(report.loader_diagnostics);
    for warning in loader {
        println!("{}", diagnostic_line(name, warning));
    }
    println!(
        "{name}: ok (profile {profile}, model {model}, adapter {}, {} warning(s))",
        report.adapter.as_deref().unwrap_or("?"),
        loader.len()
    );
    if let Some(sentence) = &report.batch_window {
        println!("  {sentence}");
    }
    for sentence in &report.models {
        println!("  {sentence}");
    }
    if let Some(memory) = &report.memory {
        println!("  {}", memory_sentence(memory));
    }
    for diagnostic in fit {
        let level = if diagnostic.is_error() {
            "error"
        } else {
            "warning"
        };
        println!("{name}: {level}: {diagnostic}");
    }
}

/// The lifecycle's budget and each managed model's footprint in one line, e.g. "memory
/// budget 3150 MiB (the machine's memory less lifecycle.reserveMiB): chat 2350 MiB
/// (estimated), coder 1850 MiB (measured); all loaded at once they need 4200 MiB".
pub(crate) fn memory_sentence(memory: &MemoryReport) -> String {
    let models: Vec<String> = memory
        .models
        .iter()
        .map(|m| match &m.problem {
            Some(_) => format!("{} cannot be sized", m.id),
            None => format!(
                "{} {} MiB ({}{})",
                m.id,
                m.footprint_mib,
                if m.measured { "measured" } else { "estimated" },
                if m.resident { ", pinned" } else { "" }
            ),
        })
        .collect();
    let total: u64 = memory.models.iter().map(|m| m.footprint_mib).sum();
    let together = if total > memory.budget_mib {
        "more than the budget: they take turns"
    } else {
        "within the budget"
    };
    format!(
        "memory budget {} MiB ({}): {}; all loaded at once they need {total} MiB, {together}",
        memory.budget_mib,
        memory.budget_source,
        if models.is_empty() {
            "no managed model".to_string()
        } else {
            models.join(", ")
        }
    )
}

/// Runs `check-config`.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let reports: Vec<FileReport> = args
        .files
        .iter()
        .map(|file| check_file(file, !args.no_env))
        .collect();
    if args.json {
        match serde_json::to_string_pretty(&to_json(&reports)) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("cannot print JSON: {error}"),
        }
    } else {
        for report in &reports {
            print_text(report);
        }
    }
    if reports.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
