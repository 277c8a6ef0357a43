//! `ray-server swap-plan`: swap and `vm.swappiness` for a small box, printed as a plan first and
//! performed only with `--apply`.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

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
    /// Perform the plan (as root).
    #[arg(long)]
    pub apply: bool,
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

/// Runs `swap-plan`.
pub fn run_swap(args: &SwapArgs) -> ExitCode {
    if !args.path.starts_with('/')
        || args
            .path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        eprintln!(
            "ray-server swap-plan: --path must be an absolute path without spaces, got {:?}",
            args.path
        );
        return ExitCode::from(2);
    }
    let host = Host::new(&args.root);
    let memory = host.meminfo();
    let active: Vec<String> = host
        .read("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    let current_swap = memory.map_or(0, |m| m.swap_total_mib);
    let mut steps = Vec::new();
    println!(
        "swap: {current_swap} MiB now{}; {} MiB wanted",
        if active.is_empty() {
            String::new()
        } else {
            format!(" ({})", active.join(", "))
        },
        args.size_mib
    );
    // A little under the target counts: the kernel reports one page less than the file.
    if current_swap + 8 >= args.size_mib {
        println!("  enough swap already: no swap file to add");
    } else if active.contains(&args.path) || host.exists(&args.path) {
        println!(
            "  refused   {} already exists; remove it or choose another --path",
            args.path
        );
        return ExitCode::FAILURE;
    } else {
        let free = host.free_mib(&args.path).unwrap_or(0);
        let needed = args.size_mib + args.headroom_mib;
        if free < needed {
            println!(
                "  refused   {free} MiB free where {} goes; {needed} MiB needed ({} MiB of swap \
                 plus {} MiB headroom)",
                args.path, args.size_mib, args.headroom_mib
            );
            return ExitCode::FAILURE;
        }
        println!("  space     {free} MiB free, {needed} MiB needed");
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
    if swappiness != Some(args.swappiness) {
        steps.push(SwapStep::SysctlNow);
    }
    let persisted = host
        .read(SYSCTL_FILE)
        .is_ok_and(|t| t.trim() == format!("vm.swappiness={}", args.swappiness));
    if !persisted {
        steps.push(SwapStep::SysctlPersist);
    }
    println!(
        "  swappiness {} now, {} wanted",
        swappiness.map_or("unknown".into(), |s| s.to_string()),
        args.swappiness
    );
    if steps.is_empty() {
        println!("nothing to do");
        return ExitCode::SUCCESS;
    }
    println!("commands:");
    for step in &steps {
        println!("  {}", swap_command(step, args));
    }
    if !args.apply {
        println!("dry run: nothing was changed; run them, or add --apply (as root)");
        return ExitCode::SUCCESS;
    }
    for step in &steps {
        match apply_swap_step(step, args, &host) {
            Ok(Some(note)) => println!("{note}"),
            Ok(None) => println!("done: {}", swap_command(step, args)),
            Err(error) => {
                eprintln!(
                    "ray-server swap-plan: {}: {error}",
                    swap_command(step, args)
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
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
