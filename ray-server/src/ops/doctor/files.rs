//! The checks of what is installed: the service user, binaries, units, the Caddyfile, the
//! `llama-server` binary and model, disk space, the service paths and the job store.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::Level;
use super::ctx::Ctx;
use crate::ops::deploy::launch::{help_flags, llama_command};
use crate::ops::deploy::{
    CADDYFILE_PATH, HIDDEN_PREFIXES, LLAMA_UNIT, READ_ONLY_PREFIXES, STATE_DIR, UNIT_DIR, is_under,
};
use crate::ops::gguf::read_header;
use crate::ops::host::RunOutcome;
use crate::ops::render::{CADDY_UPSTREAM_KEEP_ALIVE_SECS, GATEWAY_IDLE_KEEP_ALIVE_SECS, render};

/// How long `llama-server --help` may take.
pub(super) const HELP_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) fn service_user(ctx: &mut Ctx<'_>) {
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
pub(super) fn check_executable(
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

pub(super) fn gateway_binary(ctx: &mut Ctx<'_>) {
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
pub(super) fn significant(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

pub(super) fn units(ctx: &mut Ctx<'_>) {
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

pub(super) fn caddy(ctx: &mut Ctx<'_>) {
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

pub(super) fn llama_binary(ctx: &mut Ctx<'_>) {
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

pub(super) fn model_file(ctx: &mut Ctx<'_>) {
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

pub(super) fn disk_space(ctx: &mut Ctx<'_>) {
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

pub(super) fn service_paths(ctx: &mut Ctx<'_>) {
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
pub(super) const MAX_LISTED_RECORDS: usize = 20;

/// Records the gateway set aside in `<storageDir>/quarantine/` (damaged, unreadable, left by
/// an interrupted write): each is answered `job_record_damaged` and waits for the operator.
pub(super) fn job_store(ctx: &mut Ctx<'_>) {
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
