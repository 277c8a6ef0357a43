//! `ray-server swap-plan`: swap and `vm.swappiness` for a small box, printed as a plan first and
//! performed only with `--apply`.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::ops::host::Host;

/// Options of `swap-plan`.
#[derive(Debug, Clone, Args)]
pub struct SwapArgs {
    /// Swap to have in total, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(16..=65_536))]
    pub size_mib: u64,
    /// The swap file.
    #[arg(long, default_value = "/swapfile", value_name = "PATH")]
    pub path: String,
    /// The vm.swappiness to set and persist.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=200))]
    pub swappiness: u32,
    /// Free space to keep on the file system after the swap file is made, in MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub headroom_mib: u64,
    /// A config with a `lifecycle` section: the plan also prints the memory budget and each
    /// managed model's footprint, as the gateway counts them (`/v1/models` shows the same).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Perform the plan (as root).
    #[arg(long)]
    pub apply: bool,
    /// Print the plan (and with --apply what was done) as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Work below this directory instead of `/` (for tests): host-wide commands (swapon,
    /// sysctl -w) are then skipped.
    #[arg(long, hide = true, default_value = "/")]
    pub root: PathBuf,
}

const SYSCTL_FILE: &str = "/etc/sysctl.d/60-ray-swappiness.conf";

/// One step of the swap plan.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SwapStep {
    Allocate,
    Chmod,
    Mkswap,
    Swapon,
    Fstab,
    SysctlNow,
    SysctlPersist,
}

fn swap_command(step: &SwapStep, args: &SwapArgs) -> String {
    let path = &args.path;
    match step {
        SwapStep::Allocate => format!("sudo fallocate -l {}M {path}", args.size_mib),
        SwapStep::Chmod => format!("sudo chmod 600 {path}"),
        SwapStep::Mkswap => format!("sudo mkswap {path}"),
        SwapStep::Swapon => format!("sudo swapon {path}"),
        SwapStep::Fstab => {
            format!("echo '{path} none swap sw 0 0' | sudo tee -a /etc/fstab")
        }
        SwapStep::SysctlNow => format!("sudo sysctl -w vm.swappiness={}", args.swappiness),
        SwapStep::SysctlPersist => format!(
            "echo 'vm.swappiness={}' | sudo tee {SYSCTL_FILE}",
            args.swappiness
        ),
    }
}

/// Why `swap-plan` stops: the flag to change, a stable code, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapError {
    /// The flag at fault, e.g. `--path`.
    pub field: &'static str,
    /// A stable code: `invalid_path`, `path_exists`, `not_enough_space`, `step_failed`,
    /// `config_invalid`.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// One command of the plan and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// The step's stable name: `allocate`, `chmod`, `mkswap`, `swapon`, `fstab`,
    /// `sysctl_now`, `sysctl_persist`.
    pub step: &'static str,
    /// The shell command an operator would run.
    pub command: String,
    /// `planned` (a dry run), `done`, `skipped` (not on the real root) or `failed`.
    pub status: &'static str,
}

/// What `swap-plan` found and planned: the document `--json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwapReport {
    /// Always `ray-swap-plan`.
    pub kind: &'static str,
    /// False when the plan was refused or a step failed.
    pub ok: bool,
    /// Whether `--apply` was given.
    pub apply: bool,
    /// The swap file (`--path`).
    pub path: String,
    /// Swap the box has now, in MiB.
    #[serde(rename = "swapMiB")]
    pub swap_mib: u64,
    /// Swap wanted in total (`--size-mib`).
    #[serde(rename = "wantedSwapMiB")]
    pub wanted_swap_mib: u64,
    /// Active swap devices and files (`/proc/swaps`).
    pub active: Vec<String>,
    /// Free space where the swap file goes, in MiB, when a file is to be made.
    #[serde(rename = "freeMiB")]
    pub free_mib: Option<u64>,
    /// Space the file needs with `--headroom-mib`, when a file is to be made.
    #[serde(rename = "neededMiB")]
    pub needed_mib: Option<u64>,
    /// `vm.swappiness` now (null when unreadable).
    pub swappiness: Option<u32>,
    /// `vm.swappiness` wanted (`--swappiness`).
    pub wanted_swappiness: u32,
    /// The commands, in order; empty when the box already has everything.
    pub steps: Vec<StepReport>,
    /// With `--config` and a `lifecycle` section: the memory budget and each managed model's
    /// footprint (the figures `/v1/models` shows in `lifecycle.footprintMiB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::ops::check::MemoryReport>,
    /// Why the plan stopped, when it did.
    pub error: Option<SwapError>,
}

fn step_name(step: &SwapStep) -> &'static str {
    match step {
        SwapStep::Allocate => "allocate",
        SwapStep::Chmod => "chmod",
        SwapStep::Mkswap => "mkswap",
        SwapStep::Swapon => "swapon",
        SwapStep::Fstab => "fstab",
        SwapStep::SysctlNow => "sysctl_now",
        SwapStep::SysctlPersist => "sysctl_persist",
    }
}

/// Looks at the host and plans the steps (performing them with `--apply`); `text` receives
/// the human lines as they happen.
pub fn plan_swap(args: &SwapArgs, text: &mut dyn FnMut(String)) -> SwapReport {
    let mut report = SwapReport {
        kind: "ray-swap-plan",
        ok: false,
        apply: args.apply,
        path: args.path.clone(),
        swap_mib: 0,
        wanted_swap_mib: args.size_mib,
        active: Vec::new(),
        free_mib: None,
        needed_mib: None,
        swappiness: None,
        wanted_swappiness: args.swappiness,
        steps: Vec::new(),
        memory: None,
        error: None,
    };
    if let Some(path) = &args.config {
        let loaded = ray_core::config::ConfigLoader::new()
            .with_process_env()
            .with_file(path)
            .load();
        match loaded {
            Ok(loaded) => {
                report.memory =
                    crate::ops::check::check_fit(&loaded.config, &args.root).map(|(m, _)| m);
                if let Some(memory) = &report.memory {
                    text(crate::ops::check::memory_sentence(memory));
                }
            }
            Err(error) => {
                report.error = Some(SwapError {
                    field: "--config",
                    code: "config_invalid",
                    message: format!(
                        "{} does not load: {error}; `ray-server check-config` lists every problem",
                        path.display()
                    ),
                });
                return report;
            }
        }
    }
    if !args.path.starts_with('/')
        || args
            .path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        report.error = Some(SwapError {
            field: "--path",
            code: "invalid_path",
            message: format!(
                "--path must be an absolute path without spaces, got {:?}",
                args.path
            ),
        });
        return report;
    }
    let host = Host::new(&args.root);
    let memory = host.meminfo();
    report.active = host
        .read("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    let current_swap = memory.map_or(0, |m| m.swap_total_mib);
    report.swap_mib = current_swap;
    let mut steps = Vec::new();
    text(format!(
        "swap: {current_swap} MiB now{}; {} MiB wanted",
        if report.active.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.active.join(", "))
        },
        args.size_mib
    ));
    // A little under the target counts: the kernel reports one page less than the file.
    if current_swap + 8 >= args.size_mib {
        text("  enough swap already: no swap file to add".into());
    } else if report.active.contains(&args.path) || host.exists(&args.path) {
        let message = format!(
            "{} already exists; remove it or choose another --path",
            args.path
        );
        text(format!("  refused   {message}"));
        report.error = Some(SwapError {
            field: "--path",
            code: "path_exists",
            message,
        });
        return report;
    } else {
        let free = host.free_mib(&args.path).unwrap_or(0);
        let needed = args.size_mib + args.headroom_mib;
        report.free_mib = Some(free);
        report.needed_mib = Some(needed);
        if free < needed {
            let message = format!(
                "{free} MiB free where {} goes; {needed} MiB needed ({} MiB of swap plus {} MiB \
                 headroom)",
                args.path, args.size_mib, args.headroom_mib
            );
            text(format!("  refused   {message}"));
            report.error = Some(SwapError {
                field: "--size-mib",
                code: "not_enough_space",
                message,
            });
            return report;
        }
        text(format!("  space     {free} MiB free, {needed} MiB needed"));
        steps.extend([
            SwapStep::Allocate,
            SwapStep::Chmod,
            SwapStep::Mkswap,
            SwapStep::Swapon,
        ]);
        let fstab = host.read("/etc/fstab").unwrap_or_default();
        if !fstab
            .lines()
            .any(|l| l.split_whitespace().next() == Some(args.path.as_str()))
        {
            steps.push(SwapStep::Fstab);
        }
    }
    let swappiness = host.swappiness();
    report.swappiness = swappiness;
    if swappiness != Some(args.swappiness) {
        steps.push(SwapStep::SysctlNow);
    }
    let persisted = host
        .read(SYSCTL_FILE)
        .is_ok_and(|t| t.trim() == format!("vm.swappiness={}", args.swappiness));
    if !persisted {
        steps.push(SwapStep::SysctlPersist);
    }
    text(format!(
        "  swappiness {} now, {} wanted",
        swappiness.map_or("unknown".into(), |s| s.to_string()),
        args.swappiness
    ));
    report.steps = steps
        .iter()
        .map(|step| StepReport {
            step: step_name(step),
            command: swap_command(step, args),
            status: "planned",
        })
        .collect();
    report.ok = true;
    if steps.is_empty() {
        text("nothing to do".into());
        return report;
    }
    text("commands:".into());
    for step in &steps {
        text(format!("  {}", swap_command(step, args)));
    }
    if !args.apply {
        text("dry run: nothing was changed; run them, or add --apply (as root)".into());
        return report;
    }
    for (i, step) in steps.iter().enumerate() {
        match apply_swap_step(step, args, &host) {
            Ok(Some(note)) => {
                report.steps[i].status = "skipped";
                text(note);
            }
            Ok(None) => {
                report.steps[i].status = "done";
                text(format!("done: {}", swap_command(step, args)));
            }
            Err(error) => {
                report.steps[i].status = "failed";
                report.ok = false;
                report.error = Some(SwapError {
                    field: "--apply",
                    code: "step_failed",
                    message: format!("{}: {error}", swap_command(step, args)),
                });
                return report;
            }
        }
    }
    report
}

/// Runs `swap-plan`.
pub fn run_swap(args: &SwapArgs) -> ExitCode {
    let report = if args.json {
        plan_swap(args, &mut |_| {})
    } else {
        plan_swap(args, &mut |line| println!("{line}"))
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("cannot print JSON: {error}"),
        }
    } else if let Some(error) = &report.error
        && error.code != "path_exists"
        && error.code != "not_enough_space"
    {
        eprintln!("ray-server swap-plan: {}", error.message);
    }
    match &report.error {
        None => ExitCode::SUCCESS,
        Some(error) if error.code == "invalid_path" => ExitCode::from(2),
        Some(_) => ExitCode::FAILURE,
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Performs one step. Returns a note when the step was skipped.
fn apply_swap_step(
    step: &SwapStep,
    args: &SwapArgs,
    host: &Host,
) -> Result<Option<String>, String> {
    let file = host.path(&args.path);
    let file_text = file.display().to_string();
    let real = host.is_real();
    match step {
        SwapStep::Allocate => {
            if run_tool(
                "fallocate",
                &["-l", &format!("{}M", args.size_mib), &file_text],
            )
            .is_err()
            {
                // Some file systems cannot fallocate; a swap file must have no holes, so write
                // zeros instead.
                let _ = std::fs::remove_file(&file);
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file)
                    .map_err(|e| e.to_string())?;
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..args.size_mib {
                    out.write_all(&zeros).map_err(|e| e.to_string())?;
                }
                out.sync_all().map_err(|e| e.to_string())?;
            }
            Ok(None)
        }
        SwapStep::Chmod => {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
        SwapStep::Mkswap => run_tool("mkswap", &[&file_text]).map(|()| None),
        SwapStep::Swapon if !real => Ok(Some(format!(
            "skipped (not on the real root): {}",
            swap_command(step, args)
        ))),
        SwapStep::Swapon => run_tool("swapon", &[&file_text]).map(|()| None),
        SwapStep::Fstab => {
            let fstab = host.path("/etc/fstab");
            let mut text = std::fs::read_to_string(&fstab).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            let _ = writeln!(text, "{} none swap sw 0 0", args.path);
            crate::ops::fs::write_atomically(&fstab, text.as_bytes(), 0o644)
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
        SwapStep::SysctlNow if !real => Ok(Some(format!(
            "skipped (not on the real root): {}",
            swap_command(step, args)
        ))),
        SwapStep::SysctlNow => run_tool(
            "sysctl",
            &["-w", &format!("vm.swappiness={}", args.swappiness)],
        )
        .map(|()| None),
        SwapStep::SysctlPersist => {
            let path = host.path(SYSCTL_FILE);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            crate::ops::fs::write_atomically(
                &path,
                format!("vm.swappiness={}\n", args.swappiness).as_bytes(),
                0o644,
            )
            .map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}
