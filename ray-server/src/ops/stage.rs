//! `ray-server stage-model` and `ray-server swap-plan`: the two host changes a deploy needs
//! besides installing files, each printed as a plan first and performed only with `--apply`.
//!
//! Staging installs a `llama-server` binary and a GGUF model where the launch profile says,
//! checked before anything changes (SHA-256, the GGUF header or `--help` listing every
//! generated flag, the memory fit, free space) and atomically: a temporary file in the target
//! directory, fsync, the copy's SHA-256 compared with the source's, then a rename, so the
//! service never sees half a file and a failed copy leaves the old one in place.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ray_core::config::{ConfigLoader, LaunchProfile, RayConfig};
use sha2::{Digest, Sha256};

use crate::ops::deploy::envfile::EnvFile;
use crate::ops::deploy::launch::llama_command;
use crate::ops::deploy::memory::{LlamaEstimate, memory_split};
use crate::ops::deploy::{HIDDEN_PREFIXES, STATE_DIR, is_under};
use crate::ops::gguf::read_header;
use crate::ops::host::{Host, RunOutcome};

/// The largest `llama-server` binary accepted.
const MAX_BINARY_BYTES: u64 = 512 * 1024 * 1024;
/// How long `llama-server --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of `stage-model`.
#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    /// The config whose launch profile names the targets (binaryPath, modelPath).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// An environment file whose RAY_* variables override the config, as the service sees it
    /// [default: /etc/ray/ray.env when it exists].
    #[arg(long, visible_alias = "env-file", value_name = "FILE")]
    pub ray_env_file: Option<PathBuf>,
    /// The GGUF model to install at launchProfile.modelPath.
    #[arg(long, env = "RAY_MODEL_SOURCE_PATH", value_name = "FILE")]
    pub model_source: Option<PathBuf>,
    /// The expected SHA-256 of the model (hex); the copy is refused when it differs.
    #[arg(long, env = "RAY_MODEL_SHA256", value_name = "HEX")]
    pub model_sha256: Option<String>,
    /// The llama-server binary to install at launchProfile.binaryPath.
    #[arg(long, env = "RAY_LLAMA_CPP_BINARY_SOURCE_PATH", value_name = "FILE")]
    pub binary_source: Option<PathBuf>,
    /// The expected SHA-256 of the binary (hex).
    #[arg(long, env = "RAY_LLAMA_CPP_BINARY_SHA256", value_name = "HEX")]
    pub binary_sha256: Option<String>,
    /// The memory budget in MiB for the fit check (as for render).
    #[arg(long, env = "RAY_DEPLOY_MEMORY_MIB", value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(512..=1_048_576))]
    pub memory_mib: Option<u64>,
    /// Free space to keep on the target's file system after a model copy, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub model_headroom_mib: u64,
    /// Free space to keep after a binary copy, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub binary_headroom_mib: u64,
    /// Install a model even when the memory check says it will not fit.
    #[arg(long)]
    pub force: bool,
    /// Perform the plan (without it, nothing is changed).
    #[arg(long)]
    pub apply: bool,
    /// Install below this directory instead of `/` (for tests).
    #[arg(long, hide = true, default_value = "/")]
    pub root: PathBuf,
}

/// What to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Binary,
    Model,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Binary => "llama-server binary",
            Kind::Model => "model",
        }
    }
}

/// The outcome of planning one file: lines to print, and whether it may go ahead.
struct Plan {
    lines: Vec<String>,
    problem: Option<String>,
    /// `None` when the target already has this content.
    copy: Option<Copy>,
}

struct Copy {
    source: PathBuf,
    target: PathBuf,
    sha256: String,
    mode: u32,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_file_with(path, None)
}

/// The SHA-256 of a file, streamed, counting the bytes read on `progress`.
pub fn sha256_file_with(
    path: &Path,
    mut progress: Option<&mut crate::ops::progress::Progress>,
) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        if let Some(progress) = progress.as_deref_mut() {
            progress.advance(read as u64);
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// A SHA-256 in lower-case hex, or an error naming `flag`.
pub fn normalise_sha(flag: &str, value: Option<&str>) -> Result<Option<String>, String> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_ascii_lowercase();
    if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{flag}: must be 64 hexadecimal characters (a SHA-256), got {value:?}"
        ));
    }
    Ok(Some(value))
}

fn plan_file(
    host: &Host,
    kind: Kind,
    source: &Path,
    target: &str,
    expected: Option<&str>,
    headroom_mib: u64,
    check: impl FnOnce(&Path, u64) -> Result<String, String>,
) -> Plan {
    let mut plan = Plan {
        lines: vec![format!("{}: {target}", kind.name())],
        problem: None,
        copy: None,
    };
    let fail = |mut plan: Plan, message: String| {
        plan.problem = Some(message);
        plan
    };
    if HIDDEN_PREFIXES.iter().any(|p| is_under(target, p)) {
        return fail(
            plan,
            format!(
                "{target} is under /home, /root, /run/user, /tmp or /var/tmp, which the units \
                 cannot see (ProtectHome, PrivateTmp); change the launch profile's path"
            ),
        );
    }
    let meta = match std::fs::metadata(source) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return fail(plan, format!("{} is not a regular file", source.display())),
        Err(error) => return fail(plan, format!("cannot read {}: {error}", source.display())),
    };
    let size = meta.len();
    plan.lines.push(format!(
        "  source    {} ({:.1} MiB)",
        source.display(),
        mib(size)
    ));
    if kind == Kind::Binary && size > MAX_BINARY_BYTES {
        return fail(
            plan,
            format!(
                "{} is {:.0} MiB, more than the {} MiB a llama-server binary should be",
                source.display(),
                mib(size),
                MAX_BINARY_BYTES >> 20
            ),
        );
    }
    let sha256 = match sha256_file(source) {
        Ok(sha) => sha,
        Err(error) => return fail(plan, format!("cannot read {}: {error}", source.display())),
    };
    match expected {
        Some(expected) if expected != sha256 => {
            return fail(
                plan,
                format!(
                    "the SHA-256 of {} is {sha256}, not the expected {expected}: a corrupt or \
                     different file",
                    source.display()
                ),
            );
        }
        Some(_) => plan
            .lines
            .push(format!("  sha256    {sha256} (as expected)")),
        None => plan.lines.push(format!(
            "  sha256    {sha256} (not verified: pass the published checksum to check it)"
        )),
    }
    match check(source, size) {
        Ok(line) => plan.lines.push(line),
        Err(message) => return fail(plan, message),
    }
    let target_path = host.path(target);
    if let Ok(existing) = sha256_file(&target_path)
        && existing == sha256
    {
        plan.lines
            .push("  install   already installed with this content: nothing to do".into());
        return plan;
    }
    let free = host.free_mib(target).unwrap_or(0);
    let needed = mib(size).ceil() as u64 + headroom_mib;
    let dir = Path::new(target)
        .parent()
        .map_or_else(|| "/".to_string(), |p| p.display().to_string());
    if free < needed {
        return fail(
            plan,
            format!(
                "{dir} has {free} MiB free; the copy needs {needed} MiB ({:.0} MiB plus {headroom_mib} \
                 MiB headroom). Free space first",
                mib(size)
            ),
        );
    }
    plan.lines.push(format!(
        "  space     {free} MiB free in {dir}, {needed} MiB needed with headroom"
    ));
    let mode = if kind == Kind::Binary { 0o755 } else { 0o644 };
    plan.lines.push(format!(
        "  install   copy to a temporary file in {dir}, fsync, compare its SHA-256, chmod {mode:04o}, \
         rename over {target}"
    ));
    plan.copy = Some(Copy {
        source: source.to_path_buf(),
        target: target_path,
        sha256,
        mode,
    });
    plan
}

fn model_check<'a>(
    config: &'a RayConfig,
    launch: &'a LaunchProfile,
    memory_mib: Option<u64>,
    force: bool,
) -> impl FnOnce(&Path, u64) -> Result<String, String> + 'a {
    move |source, size| {
        let header =
            read_header(source).map_err(|error| format!("{}: {error}", source.display()))?;
        let estimate = LlamaEstimate::new(launch, size, Some(&header));
        let limit = memory_split(config, memory_mib)
            .llama
            .map_or(0, |l| l.max_mib);
        let fit = match estimate.total_mib() {
            Some(total) if total > limit as f64 && !force => {
                return Err(format!(
                    "llama-server would need about {total:.0} MiB with this model (weights, \
                     cache-ram, KV cache, compute) but its unit allows {limit} MiB: lower \
                     cacheRamMiB or ctxSize, pick a smaller quantization, or pass --force"
                ));
            }
            Some(total) => format!("needs about {total:.0} MiB of MemoryMax={limit}M"),
            None => "prompt cache unbounded (cacheRamMiB -1)".to_string(),
        };
        Ok(format!(
            "  header    GGUF v{}, {}, {} layers; {fit}",
            header.version,
            header
                .architecture
                .as_deref()
                .unwrap_or("unknown architecture"),
            header.block_count.map_or("?".into(), |n| n.to_string())
        ))
    }
}

fn binary_check(launch: &LaunchProfile) -> impl FnOnce(&Path, u64) -> Result<String, String> + '_ {
    move |source, _| {
        let runner = Host::new("/");
        let absolute = std::fs::canonicalize(source)
            .map_err(|error| format!("{}: {error}", source.display()))?;
        let output = match runner.run(&absolute.display().to_string(), &["--help"], HELP_TIMEOUT) {
            RunOutcome::Finished { output, .. } => output,
            RunOutcome::TimedOut => {
                return Err(format!("`{} --help` did not finish", source.display()));
            }
            RunOutcome::Failed(error) => {
                return Err(format!(
                    "`{} --help` cannot run ({error}): not an executable for this machine?",
                    source.display()
                ));
            }
        };
        let supported = crate::ops::deploy::launch::help_flags(&output);
        let flags = llama_command(launch).long_flags();
        let missing: Vec<&String> = flags.iter().filter(|f| !supported.contains(*f)).collect();
        if !missing.is_empty() {
            let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return Err(format!(
                "{} does not know {}: llama-server would refuse to start with this config",
                source.display(),
                missing.join(", ")
            ));
        }
        Ok(format!(
            "  --help    lists all {} flags the launch profile generates",
            flags.len()
        ))
    }
}

/// Copies `copy.source` over `copy.target` through a temporary file in the same directory.
fn install(copy: &Copy) -> Result<(), String> {
    let dir = copy
        .target
        .parent()
        .ok_or_else(|| format!("{} has no directory", copy.target.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = copy
        .target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.ray-stage-{}.tmp", std::process::id()));
    let result = (|| -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: {e}", temp.display());
        let mut input = std::fs::File::open(&copy.source)
            .map_err(|e| format!("{}: {e}", copy.source.display()))?;
        let mut output = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
        std::io::copy(&mut input, &mut output).map_err(io)?;
        output.flush().map_err(io)?;
        output.sync_all().map_err(io)?;
        drop(output);
        let copied = sha256_file(&temp).map_err(io)?;
        if copied != copy.sha256 {
            return Err(format!(
                "the copy's SHA-256 is {copied}, the source's {}: the disk or the source changed \
                 while copying",
                copy.sha256
            ));
        }
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(copy.mode)).map_err(io)?;
        std::fs::rename(&temp, &copy.target)
            .map_err(|e| format!("cannot rename over {}: {e}", copy.target.display()))?;
        // The rename is durable once the directory is.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Runs `stage-model`.
pub fn run_stage(args: &StageArgs) -> ExitCode {
    if args.model_source.is_none() && args.binary_source.is_none() {
        eprintln!(
            "ray-server stage-model: give --model-source FILE, --binary-source FILE, or both"
        );
        return ExitCode::from(2);
    }
    let (model_sha, binary_sha) = match (
        normalise_sha("--model-sha256", args.model_sha256.as_deref()),
        normalise_sha("--binary-sha256", args.binary_sha256.as_deref()),
    ) {
        (Ok(model), Ok(binary)) => (model, binary),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("ray-server stage-model: {error}");
            return ExitCode::from(2);
        }
    };
    let host = Host::new(&args.root);
    let mut loader = ConfigLoader::new()
        .with_file(&args.config)
        .with_base_dir(STATE_DIR)
        .with_policy_root(&args.root);
    // The service's own environment file overrides the config's paths as the service sees
    // them (RAY_MODEL_PATH, RAY_LLAMA_CPP_BINARY_PATH), so stage where it will look.
    let env_file = args.ray_env_file.clone().or_else(|| {
        let installed = host.path(crate::ops::deploy::ENV_FILE_PATH);
        installed.exists().then_some(installed)
    });
    if let Some(path) = &env_file {
        match EnvFile::read(path) {
            Ok(file) => loader = loader.with_env(file.config_overrides()),
            Err(error) => {
                eprintln!("ray-server stage-model: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let config = match loader.load() {
        Ok(loaded) => loaded.config,
        Err(error) => {
            crate::ops::fs::report_error(&args.config.display().to_string(), &error);
            return ExitCode::FAILURE;
        }
    };
    let Some(launch) = config.model.adapter.launch_profile().cloned() else {
        eprintln!(
            "ray-server stage-model: {}: model.adapter has no launchProfile, so there is no \
             binaryPath or modelPath to install to",
            args.config.display()
        );
        return ExitCode::FAILURE;
    };
    let mut plans = Vec::new();
    if let Some(source) = &args.binary_source {
        let target = host
            .resolve_command(&launch.binary_path)
            .unwrap_or_else(|| format!("/usr/local/bin/{}", launch.binary_path));
        plans.push(plan_file(
            &host,
            Kind::Binary,
            source,
            &target,
            binary_sha.as_deref(),
            args.binary_headroom_mib,
            binary_check(&launch),
        ));
    }
    if let Some(source) = &args.model_source {
        plans.push(plan_file(
            &host,
            Kind::Model,
            source,
            &launch.model_path,
            model_sha.as_deref(),
            args.model_headroom_mib,
            model_check(&config, &launch, args.memory_mib, args.force),
        ));
    }
    for plan in &plans {
        for line in &plan.lines {
            println!("{line}");
        }
        if let Some(problem) = &plan.problem {
            println!("  refused   {problem}");
        }
    }
    if plans.iter().any(|p| p.problem.is_some()) {
        eprintln!("ray-server stage-model: refused; nothing was changed");
        return ExitCode::FAILURE;
    }
    if !args.apply {
        println!("dry run: nothing was changed; add --apply to install");
        return ExitCode::SUCCESS;
    }
    for copy in plans.iter().filter_map(|p| p.copy.as_ref()) {
        match install(copy) {
            Ok(()) => println!("installed {}", copy.target.display()),
            Err(error) => {
                eprintln!(
                    "ray-server stage-model: {error}; {} is unchanged",
                    copy.target.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "next: `sudo ray-server doctor --config {}`, then `sudo systemctl restart {}`",
        args.config.display(),
        if launch.supervise {
            "ray-gateway"
        } else {
            "ray-llama-cpp"
        }
    );
    ExitCode::SUCCESS
}
