//! The checks themselves, one function each, in the order of [`super::CHECKS`].

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use ray_core::config::{LaunchProfile, LoadedConfig, RateLimitKeyStrategy, RayConfig};

use super::host::{Host, RunOutcome, User};
use super::{DoctorArgs, Finding, Level};
use crate::deploy::envfile::EnvFile;
use crate::deploy::launch::llama_command;
use crate::deploy::memory::{CacheRam, GatewayEstimate, LlamaEstimate, MemorySplit, memory_split};
use crate::deploy::options::DeployError;
use crate::deploy::{
    CADDYFILE_PATH, GATEWAY_UNIT, HIDDEN_PREFIXES, LLAMA_UNIT, READ_ONLY_PREFIXES, STATE_DIR,
    UNIT_DIR, is_under,
};
use crate::gguf::{GgufInfo, read_header};
use crate::render::{CADDY_UPSTREAM_KEEP_ALIVE_SECS, GATEWAY_IDLE_KEEP_ALIVE_SECS, render};

/// How long `llama-server --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(20);
/// Swap a small box should have, and keep free.
const MIN_SWAP_MIB: u64 = 1024;
const MIN_FREE_SWAP_MIB: u64 = 256;
/// Highest `vm.swappiness` that keeps model pages in RAM.
const MAX_SWAPPINESS: u32 = 20;
/// Shortest API key doctor accepts quietly.
const MIN_KEY_CHARS: usize = 32;

struct Ctx<'a> {
    host: &'a Host,
    args: &'a DoctorArgs,
    env_path: PathBuf,
    env_file: Option<EnvFile>,
    loaded: Option<LoadedConfig>,
    user: Option<User>,
    split: Option<MemorySplit>,
    model: Option<Result<GgufInfo, String>>,
    findings: Vec<Finding>,
}

impl Ctx<'_> {
    fn push(&mut self, check: &'static str, level: Level, code: &'static str, message: String) {
        self.findings.push(Finding {
            check,
            level,
            code,
            message,
        });
    }

    fn ok(&mut self, check: &'static str, code: &'static str, message: impl Into<String>) {
        self.push(check, Level::Ok, code, message.into());
    }

    fn config(&self) -> Option<&RayConfig> {
        self.loaded.as_ref().map(|l| &*l.config)
    }

    fn launch(&self) -> Option<LaunchProfile> {
        self.config()?.model.adapter.launch_profile().cloned()
    }

    fn config_flag(&self) -> String {
        self.args.deploy.config.display().to_string()
    }
}

pub(super) fn run(host: &Host, args: &DoctorArgs) -> super::Report {
    let env_path = args
        .deploy
        .ray_env_file
        .clone()
        .unwrap_or_else(|| host.path(&args.deploy.systemd_env_file));
    let mut ctx = Ctx {
        host,
        args,
        env_path,
        env_file: None,
        loaded: None,
        user: None,
        split: None,
        model: None,
        findings: Vec::new(),
    };
    config(&mut ctx);
    installed_config(&mut ctx);
    env_file(&mut ctx);
    auth(&mut ctx);
    exposure(&mut ctx);
    proxy_headers(&mut ctx);
    service_user(&mut ctx);
    gateway_binary(&mut ctx);
    units(&mut ctx);
    caddy(&mut ctx);
    llama_binary(&mut ctx);
    model_file(&mut ctx);
    memory_fit(&mut ctx);
    gateway_memory(&mut ctx);
    host_memory(&mut ctx);
    swap(&mut ctx);
    swappiness(&mut ctx);
    cpu(&mut ctx);
    tuning(&mut ctx);
    disk_space(&mut ctx);
    service_paths(&mut ctx);
    job_store(&mut ctx);
    cgroup(&mut ctx);
    systemd(&mut ctx);
    psi(&mut ctx);
    backend_model(&mut ctx);
    let cluster = ctx.config().and_then(|c| c.cluster.clone());
    ctx.findings.extend(super::cluster::check(
        cluster.as_ref(),
        ctx.env_file.as_ref(),
    ));
    super::Report {
        findings: ctx.findings,
    }
}

fn config(ctx: &mut Ctx<'_>) {
    const C: &str = "config";
    ctx.env_file = EnvFile::read(&ctx.env_path).ok();
    let env = ctx.env_path.exists().then(|| ctx.env_path.clone());
    match ctx.args.deploy.load(env.as_deref()) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                ctx.push(
                    C,
                    Level::Warn,
                    "config_warning",
                    format!("{}: {warning}", ctx.config_flag()),
                );
            }
            ctx.split = Some(memory_split(&loaded.config, ctx.args.deploy.memory_mib));
            ctx.ok(
                C,
                "config_ok",
                format!(
                    "{} loads (profile {}, model {}, adapter {})",
                    ctx.config_flag(),
                    loaded.config.profile,
                    loaded.config.model.id,
                    loaded.config.model.adapter.kind()
                ),
            );
            ctx.loaded = Some(loaded);
        }
        Err(DeployError::Config(error)) => {
            let problems: Vec<String> = error.diagnostics().iter().map(|d| d.to_string()).collect();
            let detail = if problems.is_empty() {
                error.to_string()
            } else {
                problems.join("; ")
            };
            ctx.push(
                C,
                Level::Error,
                "config_invalid",
                format!(
                    "{} does not load: {detail}. Fix it (`ray-server check-config {}` lists every problem); \
                     the checks that need the config were skipped.",
                    ctx.config_flag(),
                    ctx.config_flag()
                ),
            );
        }
        Err(error) => {
            ctx.push(
                C,
                Level::Error,
                "config_invalid",
                format!("{error}. Fix the file; the checks that need the config were skipped."),
            );
        }
    }
}

fn installed_config(ctx: &mut Ctx<'_>) {
    const C: &str = "installed_config";
    let path = ctx.args.deploy.config_path.clone();
    let Ok(installed) = std::fs::read(ctx.host.path(&path)) else {
        ctx.push(
            C,
            Level::Error,
            "installed_config_missing",
            format!(
                "{path} (the gateway unit's --config) does not exist: \
                 `sudo install -m 0644 {} {path}`.",
                ctx.config_flag()
            ),
        );
        return;
    };
    let checked = std::fs::read(&ctx.args.deploy.config).unwrap_or_default();
    if installed != checked {
        ctx.push(
            C,
            Level::Warn,
            "installed_config_differs",
            format!(
                "{path} differs from {}, which doctor checked; run doctor with --config {path}, \
                 or install the checked file.",
                ctx.config_flag()
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "installed_config_ok",
        format!("{path} is the checked config"),
    );
}

fn env_file(ctx: &mut Ctx<'_>) {
    const C: &str = "env_file";
    let path = ctx.env_path.display().to_string();
    let Ok(meta) = std::fs::metadata(&ctx.env_path) else {
        ctx.push(
            C,
            Level::Error,
            "env_file_missing",
            format!(
                "{path} does not exist, and the units need it (EnvironmentFile=): install the \
                 rendered ray.env.example there with mode 0600."
            ),
        );
        return;
    };
    if let Err(error) = EnvFile::read(&ctx.env_path) {
        ctx.push(
            C,
            Level::Error,
            "env_file_invalid",
            format!("{error}: systemd would refuse the file; write NAME=value lines only."),
        );
        return;
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        ctx.push(
            C,
            Level::Error,
            "env_file_permissions",
            format!(
                "{path} has mode {mode:04o}: other users can read the API keys in it; \
                 `sudo chmod 0600 {path}`."
            ),
        );
        return;
    }
    if meta.uid() != 0 {
        ctx.push(
            C,
            Level::Warn,
            "env_file_owner",
            format!(
                "{path} is owned by uid {}; systemd reads it as root, so make root own it: \
                 `sudo chown root:root {path}`.",
                meta.uid()
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "env_file_ok",
        format!("{path} is private (mode {mode:04o}, owner root)"),
    );
}

fn auth(ctx: &mut Ctx<'_>) {
    const C: &str = "auth";
    let Some(config) = ctx.config() else { return };
    if !config.auth.enabled {
        let message = format!(
            "auth.enabled is false: anyone who reaches {} can run inference. Set it to true and \
             put keys in {} ({}).",
            ctx.args.deploy.domain,
            config.auth.api_key_env,
            ctx.env_path.display()
        );
        ctx.push(C, Level::Warn, "auth_disabled", message);
        return;
    }
    let name = config.auth.api_key_env.clone();
    let keys: Vec<String> = ctx
        .env_file
        .as_ref()
        .and_then(|f| f.get(&name))
        .unwrap_or("")
        .split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    if keys.is_empty() {
        let message = format!(
            "auth is on but {} sets no {name}: every request would be refused with 401. \
             Add `{name}=<key>` (make one with `od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`).",
            ctx.env_path.display()
        );
        ctx.push(C, Level::Error, "auth_keys_missing", message);
        return;
    }
    let short = keys
        .iter()
        .filter(|k| k.chars().count() < MIN_KEY_CHARS)
        .count();
    if short > 0 {
        ctx.push(
            C,
            Level::Warn,
            "auth_key_weak",
            format!(
                "{short} of the {} key(s) in {name} are shorter than {MIN_KEY_CHARS} characters; \
                 use long random keys (`od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`).",
                keys.len()
            ),
        );
        return;
    }
    let count = keys.len();
    ctx.ok(
        C,
        "auth_ok",
        format!("auth is on with {count} key(s) in {name}"),
    );
}

fn exposure(ctx: &mut Ctx<'_>) {
    const C: &str = "exposure";
    let Some(host) = ctx.config().map(|c| c.server.host.clone()) else {
        return;
    };
    if ray_core::config::is_loopback_host(&host) {
        ctx.ok(
            C,
            "exposure_ok",
            format!("the gateway listens on {host}, behind Caddy"),
        );
    } else {
        ctx.push(
            C,
            Level::Warn,
            "public_bind_address",
            format!(
                "server.host is {host}: the gateway is reachable without Caddy's TLS. Set it to \
                 127.0.0.1 unless something else must reach it directly."
            ),
        );
    }
}

fn proxy_headers(ctx: &mut Ctx<'_>) {
    const C: &str = "proxy_headers";
    let Some(config) = ctx.config() else { return };
    let limit = &config.rate_limit;
    let behind_proxy = ray_core::config::is_loopback_host(&config.server.host);
    if limit.enabled
        && behind_proxy
        && !limit.trust_proxy_headers
        && limit.key_strategy != RateLimitKeyStrategy::ApiKey
    {
        ctx.push(
            C,
            Level::Warn,
            "rate_limit_proxy_headers_untrusted",
            "behind Caddy every client arrives from 127.0.0.1, so the per-IP rate limit treats \
             them all as one client: set rateLimit.trustProxyHeaders to true."
                .into(),
        );
        return;
    }
    ctx.ok(C, "proxy_headers_ok", "rate-limit keys tell clients apart");
}

fn service_user(ctx: &mut Ctx<'_>) {
    const C: &str = "service_user";
    let name = ctx.args.deploy.user.clone();
    match ctx.host.user(&name) {
        None => ctx.push(
            C,
            Level::Error,
            "service_user_missing",
            format!(
                "the service user {name} does not exist: `sudo useradd --system --home-dir \
                 {STATE_DIR} --shell /usr/sbin/nologin {name}`."
            ),
        ),
        Some(user) if user.uid == 0 => ctx.push(
            C,
            Level::Error,
            "service_user_root",
            format!(
                "{name} has uid 0: the services would run as root. Create an unprivileged user \
                 and pass it with --user."
            ),
        ),
        Some(user) => {
            ctx.ok(
                C,
                "service_user_ok",
                format!("{} (uid {})", user.name, user.uid),
            );
            ctx.user = Some(user);
        }
    }
}

/// Reports a missing or non-executable binary; true when it is fine.
fn check_executable(
    ctx: &mut Ctx<'_>,
    check: &'static str,
    codes: (&'static str, &'static str),
    path: &str,
    fix: &str,
) -> bool {
    let Ok(meta) = ctx.host.metadata(path) else {
        ctx.push(
            check,
            Level::Error,
            codes.0,
            format!("{path} does not exist: {fix}."),
        );
        return false;
    };
    let runnable = match &ctx.user {
        Some(user) => ctx.host.executable_by(path, user),
        None => meta.permissions().mode() & 0o111 != 0,
    };
    if !meta.is_file() || !runnable {
        ctx.push(
            check,
            Level::Error,
            codes.1,
            format!(
                "{path} is not an executable file for {}: `sudo chmod 0755 {path}`.",
                ctx.args.deploy.user
            ),
        );
        return false;
    }
    true
}

fn gateway_binary(ctx: &mut Ctx<'_>) {
    const C: &str = "gateway_binary";
    let path = ctx.args.deploy.gateway_binary.clone();
    let fix = format!("install it with `sudo install -m 0755 ray-server {path}`");
    if check_executable(
        ctx,
        C,
        ("gateway_binary_missing", "gateway_binary_not_executable"),
        &path,
        &fix,
    ) {
        ctx.ok(C, "gateway_binary_ok", format!("{path} is executable"));
    }
}

/// A unit or Caddyfile without its comments and blank lines, for comparison.
fn significant(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn units(ctx: &mut Ctx<'_>) {
    const C: &str = "units";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    let Ok(rendered) = render(&config, &ctx.args.deploy) else {
        return;
    };
    // Config variables in the environment file change what the units must say; render sees
    // them only when given the file.
    let env_flag = match &ctx.env_file {
        Some(file) if !file.config_overrides().is_empty() => {
            format!(" --ray-env-file {}", ctx.args.deploy.systemd_env_file)
        }
        _ => String::new(),
    };
    let render_hint = format!(
        "`ray-server render --config {}{env_flag} --domain {} --output-dir DIR` and install the \
         units",
        ctx.config_flag(),
        ctx.args.deploy.domain
    );
    let llama_installed = ctx.host.exists(&format!("{UNIT_DIR}/{LLAMA_UNIT}"));
    if rendered.supervised && llama_installed {
        let enabled = ctx
            .host
            .exists(&format!("{UNIT_DIR}/multi-user.target.wants/{LLAMA_UNIT}"));
        ctx.push(
            C,
            if enabled { Level::Error } else { Level::Warn },
            "unit_conflict",
            format!(
                "launchProfile.supervise is on, so the gateway starts llama-server itself, but \
                 {LLAMA_UNIT} is installed{}: both would bind port {}. \
                 `sudo systemctl disable --now ray-llama-cpp && sudo rm {UNIT_DIR}/{LLAMA_UNIT}`.",
                if enabled { " and enabled" } else { "" },
                config.model.adapter.launch_profile().map_or(0, |l| l.port)
            ),
        );
        return;
    }
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for file in rendered
        .files
        .iter()
        .filter(|f| f.name.ends_with(".service"))
    {
        match ctx.host.read(&file.install_path) {
            Err(_) => missing.push(file.install_path.clone()),
            Ok(installed) if significant(&installed) != significant(&file.contents) => {
                stale.push(file.install_path.clone());
            }
            Ok(_) => {}
        }
    }
    if !stale.is_empty() {
        ctx.push(
            C,
            Level::Warn,
            "unit_stale",
            format!(
                "{} differ(s) from what the config renders now (flags, memory limits or paths \
                 changed): {render_hint}, then `sudo systemctl daemon-reload` and restart.",
                stale.join(", ")
            ),
        );
        return;
    }
    if !missing.is_empty() {
        ctx.push(
            C,
            Level::Warn,
            "units_not_installed",
            format!("{} not installed: {render_hint}.", missing.join(", ")),
        );
        return;
    }
    ctx.ok(C, "units_ok", "the installed units match the config");
}

fn caddy(ctx: &mut Ctx<'_>) {
    const C: &str = "caddy";
    let Some(port) = ctx.config().map(|c| c.server.port) else {
        return;
    };
    let Ok(text) = ctx.host.read(CADDYFILE_PATH) else {
        ctx.push(
            C,
            Level::Warn,
            "caddyfile_missing",
            format!(
                "{CADDYFILE_PATH} does not exist: install Caddy (`sudo apt-get install caddy`) and \
                 the rendered Caddyfile, or the gateway has no TLS front."
            ),
        );
        return;
    };
    let lines = significant(&text);
    let proxies = lines.iter().any(|l| {
        l.starts_with("reverse_proxy")
            && l.split_whitespace()
                .any(|w| w.ends_with(&format!(":{port}")))
    });
    if !proxies {
        ctx.push(
            C,
            Level::Warn,
            "caddy_upstream_mismatch",
            format!(
                "{CADDYFILE_PATH} has no reverse_proxy to the gateway's port {port}: install the \
                 rendered Caddyfile and `sudo systemctl reload caddy`."
            ),
        );
        return;
    }
    let keepalive = lines.iter().find_map(|l| {
        let rest = l.strip_prefix("keepalive ")?.trim();
        rest.strip_suffix('s')?.parse::<u64>().ok()
    });
    if keepalive.is_none_or(|k| k >= GATEWAY_IDLE_KEEP_ALIVE_SECS) {
        ctx.push(
            C,
            Level::Warn,
            "caddy_keepalive_unsafe",
            format!(
                "{CADDYFILE_PATH} keeps idle upstream connections longer than the gateway's \
                 {GATEWAY_IDLE_KEEP_ALIVE_SECS} s, so Caddy may reuse one the gateway has closed \
                 and answer 502: set `keepalive {CADDY_UPSTREAM_KEEP_ALIVE_SECS}s` in its \
                 `transport http` block (the rendered Caddyfile does)."
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "caddy_ok",
        format!("{CADDYFILE_PATH} proxies to port {port}"),
    );
}

fn llama_binary(ctx: &mut Ctx<'_>) {
    const C: &str = "llama_binary";
    let Some(launch) = ctx.launch() else { return };
    let command = llama_command(&launch);
    let Some(path) = ctx.host.resolve_command(&command.program) else {
        ctx.push(
            C,
            Level::Error,
            "llama_binary_missing",
            format!(
                "{} is not on systemd's search path: install it with `sudo ray-server \
                 stage-model --config {} --binary-source FILE --apply`.",
                command.program,
                ctx.config_flag()
            ),
        );
        return;
    };
    let fix = format!(
        "install it with `sudo ray-server stage-model --config {} --binary-source FILE --apply`",
        ctx.config_flag()
    );
    if !check_executable(
        ctx,
        C,
        ("llama_binary_missing", "llama_binary_not_executable"),
        &path,
        &fix,
    ) {
        return;
    }
    let output = match ctx.host.run(&path, &["--help"], HELP_TIMEOUT) {
        RunOutcome::Finished { output, .. } => output,
        RunOutcome::TimedOut => {
            ctx.push(
                C,
                Level::Error,
                "llama_help_failed",
                format!(
                    "`{path} --help` did not finish within {} s; check the binary by hand.",
                    HELP_TIMEOUT.as_secs()
                ),
            );
            return;
        }
        RunOutcome::Failed(error) => {
            ctx.push(
                C,
                Level::Error,
                "llama_help_failed",
                format!(
                    "`{path} --help` cannot run ({error}): a binary for another architecture, or \
                     missing shared libraries (`ldd {path}`)."
                ),
            );
            return;
        }
    };
    let supported = help_flags(&output);
    let unsupported: Vec<String> = command
        .long_flags()
        .into_iter()
        .filter(|flag| !supported.contains(flag))
        .collect();
    if !unsupported.is_empty() {
        ctx.push(
            C,
            Level::Error,
            "llama_flags_unsupported",
            format!(
                "{path} does not know {}: llama-server would refuse to start. Install a newer \
                 llama.cpp build, or change the launch profile (extraArgs, or the fields that \
                 generate these flags).",
                unsupported.join(", ")
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "llama_binary_ok",
        format!(
            "{path} supports all {} generated flags",
            command.long_flags().len()
        ),
    );
}

/// Every `--flag` a help text mentions.
pub(crate) fn help_flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

fn model_file(ctx: &mut Ctx<'_>) {
    const C: &str = "model_file";
    let Some(launch) = ctx.launch() else { return };
    let path = launch.model_path.clone();
    let stage = format!(
        "`sudo ray-server stage-model --config {} --model-source FILE --apply`",
        ctx.config_flag()
    );
    if !ctx.host.exists(&path) {
        ctx.model = Some(Err("missing".into()));
        ctx.push(
            C,
            Level::Error,
            "model_missing",
            format!("the model {path} does not exist: stage it with {stage}."),
        );
        return;
    }
    let header = read_header(&ctx.host.path(&path));
    let info = match header {
        Ok(info) => info,
        Err(error) => {
            ctx.push(
                C,
                Level::Error,
                "model_header_invalid",
                format!("{path}: {error}. Stage the model again with {stage}."),
            );
            ctx.model = Some(Err(error.to_string()));
            return;
        }
    };
    ctx.model = Some(Ok(info.clone()));
    if let Some(user) = ctx.user.clone()
        && !ctx.host.readable_by(&path, &user)
    {
        ctx.push(
            C,
            Level::Error,
            "model_unreadable",
            format!(
                "{} cannot read {path}: `sudo chmod 0644 {path}` (and make its directories \
                 searchable).",
                user.name
            ),
        );
        return;
    }
    let per_slot = launch.ctx_size / launch.parallel.max(1);
    if let Some(trained) = info.context_length
        && u64::from(per_slot) > trained
    {
        ctx.push(
            C,
            Level::Warn,
            "model_context_short",
            format!(
                "each slot gets {per_slot} tokens (ctxSize {} / parallel {}), more than the {trained} \
                 the model was trained for: quality drops past it. Lower ctxSize.",
                launch.ctx_size, launch.parallel
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "model_file_ok",
        format!(
            "{path}: GGUF v{}, {} ({} layers), {:.0} MiB",
            info.version,
            info.architecture
                .as_deref()
                .unwrap_or("unknown architecture"),
            info.block_count.map_or("?".into(), |n| n.to_string()),
            info.file_bytes as f64 / 1_048_576.0
        ),
    );
}

fn memory_fit(ctx: &mut Ctx<'_>) {
    const C: &str = "memory_fit";
    let (Some(launch), Some(split)) = (ctx.launch(), ctx.split) else {
        return;
    };
    let Some(limit) = split.llama.map(|l| l.max_mib) else {
        return;
    };
    let header = match &ctx.model {
        Some(Ok(info)) => Some(info.clone()),
        _ => None,
    };
    let model_bytes = header.as_ref().map_or(0, |h| h.file_bytes);
    let estimate = LlamaEstimate::new(&launch, model_bytes, header.as_ref());
    if header.is_none() {
        let partial = estimate.total_mib().map_or_else(
            || "an unbounded prompt cache".to_string(),
            |t| format!("{t:.0} MiB"),
        );
        ctx.push(
            C,
            Level::Warn,
            "memory_fit_unknown",
            format!(
                "the model cannot be read, so only part of llama-server's memory is known                  ({partial} without the weights, with a guessed KV cache, against MemoryMax={limit}M);                  stage the model and run doctor again."
            ),
        );
        return;
    }
    let unit = if launch.supervise {
        GATEWAY_UNIT
    } else {
        LLAMA_UNIT
    };
    let Some(total) = estimate.total_mib() else {
        ctx.push(
            C,
            Level::Error,
            "cache_ram_unbounded",
            format!(
                "launchProfile.cacheRamMiB is -1: llama-server's prompt cache may grow until \
                 {unit} hits MemoryMax={limit}M and is killed. Set a bound, e.g. 512."
            ),
        );
        return;
    };
    let breakdown = format!(
        "model {:.0} MiB + cache-ram {} MiB + KV cache {:.0} MiB ({:.1} MiB per slot, {} bytes \
         per token{}) + compute {:.0} MiB + overhead {:.0} MiB = {:.0} MiB against {unit} \
         MemoryMax={limit}M",
        estimate.model_mib,
        estimate.cache_ram.counted_mib().unwrap_or(0),
        estimate.kv_mib,
        estimate.kv_per_slot_mib,
        estimate.kv_bytes_per_token,
        if estimate.kv_from_header {
            ", from the GGUF header"
        } else {
            ", a guess: the model could not be read"
        },
        estimate.compute_mib,
        estimate.overhead_mib,
        total
    );
    let ratio = total / limit as f64;
    if ratio > 1.0 {
        ctx.push(
            C,
            Level::Error,
            "memory_fit_exceeded",
            format!(
                "llama-server needs about {breakdown}: it would be killed.{} Lower cacheRamMiB, \
                 ctxSize or parallel, use a smaller quantization, or raise --memory-mib on a \
                 bigger box.",
                if estimate.cache_ram == CacheRam::Implicit {
                    " launchProfile.cacheRamMiB is not set, so llama-server's default of 8192 \
                     MiB applies."
                } else {
                    ""
                }
            ),
        );
    } else if estimate.cache_ram == CacheRam::Implicit {
        ctx.push(
            C,
            Level::Warn,
            "cache_ram_implicit",
            format!(
                "launchProfile.cacheRamMiB is not set, so llama-server's default of 8192 MiB \
                 applies ({breakdown}); set it explicitly, e.g. 512."
            ),
        );
    } else if ratio >= 0.9 {
        ctx.push(
            C,
            Level::Warn,
            "memory_fit_tight",
            format!(
                "llama-server needs about {breakdown} ({:.0} %): little room for growth. Lower \
                 cacheRamMiB or ctxSize.",
                ratio * 100.0
            ),
        );
    } else {
        ctx.ok(
            C,
            "memory_fit_ok",
            format!("llama-server needs about {breakdown}"),
        );
    }
}

fn gateway_memory(ctx: &mut Ctx<'_>) {
    const C: &str = "gateway_memory";
    let (Some(config), Some(split)) = (ctx.config().cloned(), ctx.split) else {
        return;
    };
    let estimate = GatewayEstimate::new(&config);
    let total = estimate.total_mib();
    let threshold = f64::from(config.graceful_degradation.memory_rss_threshold_mib);
    let breakdown = format!(
        "cache {:.1} + rate-limit keys {:.1} + queued and running tokens {:.1} + request bodies \
         {:.1} + base {:.0} = {:.0} MiB",
        estimate.cache_mib,
        estimate.rate_limit_mib,
        estimate.tokens_mib,
        estimate.bodies_mib,
        estimate.base_mib,
        total
    );
    if total > split.gateway.max_mib as f64 {
        ctx.push(
            C,
            Level::Error,
            "gateway_memory_exceeded",
            format!(
                "the gateway's bounded state can reach {breakdown}, above its MemoryMax={}M: \
                 lower cache.maxBytes, scheduler.maxQueue or the token budgets.",
                split.gateway.max_mib
            ),
        );
    } else if total > threshold {
        ctx.push(
            C,
            Level::Warn,
            "gateway_memory_tight",
            format!(
                "the gateway's bounded state can reach {breakdown}, above \
                 gracefulDegradation.memoryRssThresholdMiB ({threshold:.0}): it would degrade \
                 requests from its own caches alone. Lower the budgets or raise the threshold."
            ),
        );
    } else {
        ctx.ok(
            C,
            "gateway_memory_ok",
            format!(
                "the gateway's bounded state can reach {breakdown}, below its RSS threshold \
                 ({threshold:.0} MiB) and MemoryMax ({}M)",
                split.gateway.max_mib
            ),
        );
    }
}

fn host_memory(ctx: &mut Ctx<'_>) {
    const C: &str = "host_memory";
    let Some(split) = ctx.split else { return };
    let Some(memory) = ctx.host.meminfo() else {
        ctx.push(
            C,
            Level::Warn,
            "host_memory_unknown",
            "/proc/meminfo cannot be read: the memory checks against the host were skipped.".into(),
        );
        return;
    };
    // A "4 GB" VPS reports a little less than 4096 MiB; allow 10 %.
    if (split.budget_mib as f64) > memory.total_mib as f64 * 1.1 {
        ctx.push(
            C,
            Level::Warn,
            "memory_budget_exceeds_host",
            format!(
                "the memory budget is {} MiB ({}) but the host has {} MiB: the units' limits are \
                 too high to protect anything. Render with --memory-mib {}.",
                split.budget_mib,
                split.source.as_str(),
                memory.total_mib,
                memory.total_mib
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "host_memory_ok",
        format!(
            "budget {} MiB on a host with {} MiB",
            split.budget_mib, memory.total_mib
        ),
    );
}

fn swap(ctx: &mut Ctx<'_>) {
    const C: &str = "swap";
    let Some(memory) = ctx.host.meminfo() else {
        return;
    };
    if memory.swap_total_mib + 8 < MIN_SWAP_MIB {
        ctx.push(
            C,
            Level::Warn,
            "swap_missing",
            format!(
                "the host has {} MiB of swap: a memory spike kills llama-server instead of \
                 slowing it. Add {MIN_SWAP_MIB} MiB: `sudo ray-server swap-plan --apply`.",
                memory.swap_total_mib
            ),
        );
        return;
    }
    if memory.swap_free_mib < MIN_FREE_SWAP_MIB {
        ctx.push(
            C,
            Level::Warn,
            "swap_low_free",
            format!(
                "only {} MiB of {} MiB swap is free: the box is short of memory. Lower \
                 cacheRamMiB or ctxSize, or add swap.",
                memory.swap_free_mib, memory.swap_total_mib
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "swap_ok",
        format!(
            "{} MiB swap, {} MiB free",
            memory.swap_total_mib, memory.swap_free_mib
        ),
    );
}

fn swappiness(ctx: &mut Ctx<'_>) {
    const C: &str = "swappiness";
    match ctx.host.swappiness() {
        None => ctx.push(
            C,
            Level::Warn,
            "swappiness_unknown",
            "/proc/sys/vm/swappiness cannot be read; check `sysctl vm.swappiness`.".into(),
        ),
        Some(value) if value > MAX_SWAPPINESS => ctx.push(
            C,
            Level::Warn,
            "swappiness_high",
            format!(
                "vm.swappiness is {value}: the kernel swaps model pages out early. Set 10 \
                 (`ray-server swap-plan` prints the commands)."
            ),
        ),
        Some(value) => ctx.ok(C, "swappiness_ok", format!("vm.swappiness is {value}")),
    }
}

fn cpu(ctx: &mut Ctx<'_>) {
    const C: &str = "cpu";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    let Some(cpus) = ctx.host.cpu_count() else {
        ctx.push(
            C,
            Level::Warn,
            "cpu_count_unknown",
            "/proc/cpuinfo cannot be read: the CPU checks were skipped.".into(),
        );
        return;
    };
    if let Some(launch) = config.model.adapter.launch_profile() {
        let threads = launch.threads.max(launch.threads_batch.unwrap_or(0));
        if threads > cpus {
            ctx.push(
                C,
                Level::Warn,
                "llama_threads_exceed_host_cpu",
                format!(
                    "llama-server uses {threads} threads on {cpus} CPU(s): they fight over cores \
                     and generation slows. Set launchProfile.threads to {cpus}."
                ),
            );
            return;
        }
    }
    if config.scheduler.concurrency > cpus.max(1) * 2 {
        ctx.push(
            C,
            Level::Warn,
            "scheduler_concurrency_exceeds_host_cpu",
            format!(
                "scheduler.concurrency is {} on {cpus} CPU(s): requests share the cores and each \
                 gets slower without more throughput. Lower it.",
                config.scheduler.concurrency
            ),
        );
        return;
    }
    ctx.ok(C, "cpu_ok", format!("{cpus} CPU(s)"));
}

fn tuning(ctx: &mut Ctx<'_>) {
    const C: &str = "tuning";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    let Some(launch) = config.model.adapter.launch_profile() else {
        ctx.ok(C, "tuning_ok", "no launch profile to compare with");
        return;
    };
    if config.scheduler.concurrency > launch.parallel {
        ctx.push(
            C,
            Level::Warn,
            "scheduler_exceeds_parallel",
            format!(
                "scheduler.concurrency ({}) is above launchProfile.parallel ({}): the extra \
                 requests wait inside llama-server, where Ray cannot see or bound them. Make \
                 them equal.",
                config.scheduler.concurrency, launch.parallel
            ),
        );
        return;
    }
    let per_slot = launch.ctx_size / launch.parallel.max(1);
    let needed = config.model.max_output_tokens + 256;
    if per_slot < needed {
        ctx.push(
            C,
            Level::Warn,
            "ctx_per_slot_tight",
            format!(
                "each slot has {per_slot} tokens of context (ctxSize {} / parallel {}), less than \
                 model.maxOutputTokens ({}) plus a 256-token prompt: long requests will be \
                 refused. Raise ctxSize or lower parallel.",
                launch.ctx_size, launch.parallel, config.model.max_output_tokens
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "tuning_ok",
        format!(
            "concurrency {} ≤ parallel {}, {per_slot} tokens per slot",
            config.scheduler.concurrency, launch.parallel
        ),
    );
}

fn disk_space(ctx: &mut Ctx<'_>) {
    const C: &str = "disk_space";
    let minimum = ctx.args.min_free_mib;
    if minimum == 0 {
        ctx.push(
            C,
            Level::Info,
            "disk_space_skipped",
            "--min-free-mib is 0: free space was not checked.".into(),
        );
        return;
    }
    let mut paths: Vec<String> = vec![
        "/".into(),
        STATE_DIR.into(),
        "/var/log".into(),
        "/tmp".into(),
    ];
    if let Some(config) = ctx.config()
        && config.async_queue.enabled
    {
        paths.push(config.async_queue.storage_dir.clone());
    }
    let mut low = Vec::new();
    let mut smallest: Option<u64> = None;
    for path in &paths {
        if let Some(free) = ctx.host.free_mib(path) {
            smallest = Some(smallest.map_or(free, |s| s.min(free)));
            if free < minimum {
                low.push(format!("{path} ({free} MiB free)"));
            }
        }
    }
    if !low.is_empty() {
        ctx.push(
            C,
            Level::Error,
            "disk_space_low",
            format!(
                "less than {minimum} MiB free on {}: logs, job records and model staging need \
                 room. Free space (`journalctl --vacuum-size=200M`, old models) or grow the disk.",
                low.join(", ")
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "disk_space_ok",
        format!(
            "at least {} MiB free where the services write",
            smallest.unwrap_or(0)
        ),
    );
}

fn service_paths(ctx: &mut Ctx<'_>) {
    const C: &str = "service_paths";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    let mut paths = vec![
        ("--config-path", ctx.args.deploy.config_path.clone()),
        ("--gateway-binary", ctx.args.deploy.gateway_binary.clone()),
        (
            "--systemd-env-file",
            ctx.args.deploy.systemd_env_file.clone(),
        ),
    ];
    if let Some(launch) = config.model.adapter.launch_profile() {
        paths.push(("launchProfile.binaryPath", launch.binary_path.clone()));
        paths.push(("launchProfile.modelPath", launch.model_path.clone()));
    }
    if config.async_queue.enabled {
        paths.push((
            "asyncQueue.storageDir",
            config.async_queue.storage_dir.clone(),
        ));
    }
    let hidden: Vec<String> = paths
        .iter()
        .filter(|(_, path)| HIDDEN_PREFIXES.iter().any(|p| is_under(path, p)))
        .map(|(field, path)| format!("{field} {path}"))
        .collect();
    if !hidden.is_empty() {
        ctx.push(
            C,
            Level::Error,
            "service_path_hidden",
            format!(
                "{}: the units run with ProtectHome and PrivateTmp and cannot see /home, /root, \
                 /run/user, /tmp or /var/tmp. Move them, e.g. under {STATE_DIR}.",
                hidden.join(", ")
            ),
        );
        return;
    }
    if config.async_queue.enabled
        && READ_ONLY_PREFIXES
            .iter()
            .any(|p| is_under(&config.async_queue.storage_dir, p))
    {
        ctx.push(
            C,
            Level::Error,
            "service_path_read_only",
            format!(
                "asyncQueue.storageDir {} is read-only for the gateway (ProtectSystem=full \
                 protects /usr, /boot, /efi and /etc): use {STATE_DIR}/async-queue.",
                config.async_queue.storage_dir
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "service_paths_ok",
        "every service path is visible and writable where it must be",
    );
}

/// Job records listed at most by name in one finding.
const MAX_LISTED_RECORDS: usize = 20;

/// Records the gateway set aside in `<storageDir>/quarantine/` (damaged, unreadable, left by
/// an interrupted write): each is answered `job_record_damaged` and waits for the operator.
fn job_store(ctx: &mut Ctx<'_>) {
    const C: &str = "job_store";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    if !config.async_queue.enabled {
        return;
    }
    let quarantine = format!(
        "{}/quarantine",
        config.async_queue.storage_dir.trim_end_matches('/')
    );
    let mut names: Vec<String> = match std::fs::read_dir(ctx.host.path(&quarantine)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            ctx.push(
                C,
                Level::Warn,
                "job_quarantine_unreadable",
                format!("{quarantine} cannot be listed: {error}"),
            );
            return;
        }
    };
    if names.is_empty() {
        ctx.ok(C, "job_store_ok", "no job record is quarantined");
        return;
    }
    names.sort();
    let count = names.len();
    let mut listed = names
        .iter()
        .take(MAX_LISTED_RECORDS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if count > MAX_LISTED_RECORDS {
        listed.push_str(&format!(" and {} more", count - MAX_LISTED_RECORDS));
    }
    ctx.push(
        C,
        Level::Warn,
        "job_records_quarantined",
        format!(
            "{count} job store entr{} set aside in {quarantine}: {listed}. The gateway answers \
             job_record_damaged for these jobs; its log at the start that moved them says why. \
             Inspect them, then delete them (or restore a repaired <id>.json into jobs/ while \
             the gateway is stopped).",
            if count == 1 { "y is" } else { "ies are" }
        ),
    );
}

fn cgroup(ctx: &mut Ctx<'_>) {
    const C: &str = "cgroup";
    let Ok(controllers) = ctx.host.read("/sys/fs/cgroup/cgroup.controllers") else {
        ctx.push(
            C,
            Level::Warn,
            "cgroup_v2_missing",
            "no cgroup v2 at /sys/fs/cgroup: the units' MemoryMax/MemoryHigh are not enforced \
             and Ray cannot read its cgroup pressure. Boot with the unified hierarchy \
             (the default on Debian 11 and later)."
                .into(),
        );
        return;
    };
    if !controllers.split_whitespace().any(|c| c == "memory") {
        ctx.push(
            C,
            Level::Warn,
            "cgroup_memory_controller_missing",
            "the cgroup memory controller is off: the units' memory limits are not enforced. \
             Enable it on the kernel command line (cgroup_enable=memory)."
                .into(),
        );
        return;
    }
    ctx.ok(C, "cgroup_ok", "cgroup v2 with the memory controller");
}

fn systemd(ctx: &mut Ctx<'_>) {
    const C: &str = "systemd";
    if ctx.host.exists("/run/systemd/system") {
        ctx.ok(C, "systemd_ok", "the host runs systemd");
    } else {
        ctx.push(
            C,
            Level::Warn,
            "systemd_missing",
            "the host was not booted with systemd (no /run/systemd/system): the rendered \
             units will not run here. Use `ray-server serve` under your own supervisor, with \
             launchProfile.supervise to run llama-server."
                .into(),
        );
    }
}

fn psi(ctx: &mut Ctx<'_>) {
    const C: &str = "psi";
    if ctx.host.exists("/proc/pressure/memory") {
        ctx.ok(C, "psi_ok", "pressure stall information is available");
    } else {
        ctx.push(
            C,
            Level::Info,
            "psi_unavailable",
            "/proc/pressure is missing: Ray's PSI pressure signals stay off and degradation \
             relies on RSS and cgroup usage. Boot with psi=1 to enable them."
                .into(),
        );
    }
}

/// How long doctor waits for the backend to say which model it serves.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a running backend which model it serves (`llama-server` `/props`, an
/// OpenAI-compatible `/v1/models`) and compares it with `modelRef`. A backend that does not
/// answer (doctor usually runs before the services start) is not checked.
fn backend_model(ctx: &mut Ctx<'_>) {
    const C: &str = "backend_model";
    let Some(config) = ctx.config() else {
        ctx.ok(
            C,
            "backend_model_ok",
            "no config: the backend's model is not checked",
        );
        return;
    };
    let adapter = &config.model.adapter;
    let Some(http) = adapter.http() else {
        ctx.ok(
            C,
            "backend_model_ok",
            "the mock adapter serves no backend model",
        );
        return;
    };
    if !ctx.host.is_real() {
        ctx.ok(
            C,
            "backend_model_ok",
            "the host is read below --root: its backend is not asked",
        );
        return;
    }
    let (model_ref, required, base_url) = (
        http.model_ref.to_string(),
        http.require_backend_model_match,
        http.base_url.to_string(),
    );
    let key = http
        .api_key_env
        .and_then(|name| std::env::var(name).ok())
        .filter(|k| !k.is_empty());
    let llama = adapter.kind() == "llama.cpp";
    let path = if llama { "/props" } else { "/v1/models" };
    let reported: Vec<String> = match http_get(&base_url, path, key.as_deref()) {
        Some(body) => match serde_json::from_str::<serde_json::Value>(&body) {
            // The alias, else the model the slots run, else the model file.
            Ok(json) if llama => [
                "/model_alias",
                "/default_generation_settings/model",
                "/model_path",
            ]
            .into_iter()
            .find_map(|pointer| json.pointer(pointer)?.as_str().filter(|s| !s.is_empty()))
            .map(String::from)
            .into_iter()
            .collect(),
            Ok(json) => json["data"]
                .as_array()
                .map(|models| {
                    models
                        .iter()
                        .filter_map(|m| m["id"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        None => {
            ctx.ok(
                C,
                "backend_model_ok",
                format!(
                    "the backend at {base_url} does not answer {path} (not started yet?): the \
                     model it serves is checked once it does; /health shows it as \
                     provider.modelIdentity"
                ),
            );
            return;
        }
    };
    if reported.is_empty() {
        ctx.ok(
            C,
            "backend_model_ok",
            format!("the backend at {base_url} does not say which model it serves"),
        );
    } else if reported
        .iter()
        .any(|name| ray_core::wire::model_names_match(&model_ref, name))
    {
        ctx.ok(
            C,
            "backend_model_ok",
            format!("the backend serves the configured model {model_ref:?}"),
        );
    } else {
        let level = if required { Level::Error } else { Level::Warn };
        ctx.push(
            C,
            level,
            "backend_model_mismatch",
            format!(
                "the backend at {base_url} serves {}, not the configured modelRef {model_ref:?}: \
                 answers come from another model than the config says{}. Fix modelRef or the \
                 backend's --alias/model.",
                reported.join(", "),
                if required {
                    ", and with requireBackendModelMatch Ray will not become ready"
                } else {
                    ""
                }
            ),
        );
    }
}

/// `GET base_url + path` over plain HTTP/1.1 with a short timeout: the body of a 200, else
/// `None` (https, unreachable, another status).
fn http_get(base_url: &str, path: &str, key: Option<&str>) -> Option<String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let rest = base_url.strip_prefix("http://")?;
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, prefix)) => (authority, format!("/{}", prefix.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let socket = address.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&socket, BACKEND_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(BACKEND_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(BACKEND_TIMEOUT)).ok()?;
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Accept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|line| line.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return None;
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    Some(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// A chunked body joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "Wikipedia");
    }

    #[test]
    fn help_flags_reads_llama_server_help_layout() {
        let flags = help_flags(
            "-c,    --ctx-size N      size\n--cache-prompt, --no-cache-prompt   whether\n\
             -kvu,  --kv-unified, -no-kvu, --no-kv-unified\n--log-file FNAME\n--x=Y [--y]\n",
        );
        for flag in [
            "--ctx-size",
            "--cache-prompt",
            "--no-cache-prompt",
            "--kv-unified",
            "--no-kv-unified",
            "--log-file",
            "--x",
            "--y",
        ] {
            assert!(flags.contains(flag), "{flag} in {flags:?}");
        }
        assert!(!flags.contains("-kvu"));
    }
}
