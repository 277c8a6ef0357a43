//! The checks, in the order of [`super::CHECKS`]: [`run`] and the checks of the config and its
//! secrets; the others are in [`super::files`], [`super::machine`] and [`super::backend`].

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use ray_core::config::{MIN_CALLBACK_SECRET_BYTES, RateLimitKeyStrategy, callback_secret_problem};

use super::backend::backend_model;
use super::ctx::Ctx;
use super::files::{
    caddy, disk_space, gateway_binary, job_store, llama_binary, model_file, service_paths,
    service_user, units,
};
use super::machine::{
    cgroup, cpu, gateway_memory, host_memory, lifecycle_fit, memory_fit, psi, swap, swappiness,
    systemd, tuning,
};
use super::{DoctorArgs, Level};
use crate::ops::deploy::envfile::EnvFile;
use crate::ops::deploy::memory::memory_split;
use crate::ops::deploy::options::DeployError;
use crate::ops::host::Host;

/// Shortest API key doctor accepts quietly.
const MIN_KEY_CHARS: usize = 32;

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
    callback_secret(&mut ctx);
    exposure(&mut ctx);
    proxy_headers(&mut ctx);
    service_user(&mut ctx);
    gateway_binary(&mut ctx);
    units(&mut ctx);
    caddy(&mut ctx);
    llama_binary(&mut ctx);
    model_file(&mut ctx);
    memory_fit(&mut ctx);
    lifecycle_fit(&mut ctx);
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
    match ctx
        .args
        .deploy
        .load_below(env.as_deref(), &ctx.host.path("/"))
    {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                ctx.push(
                    C,
                    Level::Warn,
                    "config_warning",
                    format!("{}: {warning}", ctx.config_flag()),
                );
            }
            // A default lifecycle budget the host policy cuts (a configured one is among the
            // loader's warnings above).
            if let Some((_, warning)) =
                crate::ops::check::policy_budget_cut(&loaded.config, &ctx.host.path("/"))
            {
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

/// With the job queue or a URL hook: the callback signing secret in the environment file.
fn callback_secret(ctx: &mut Ctx<'_>) {
    const C: &str = "callback_secret";
    let Some(config) = ctx.config() else { return };
    if !config.reads_callback_secret() {
        let message = "asyncQueue is off and no hook has a url: no callback to sign";
        ctx.ok(C, "callback_secret_ok", message);
        return;
    }
    let name = config.async_queue.callback_signing_secret_env.clone();
    let value = ctx
        .env_file
        .as_ref()
        .and_then(|f| f.get(&name))
        .map(std::ffi::OsStr::new);
    if let Some(problem) = callback_secret_problem(&name, value) {
        let message = format!(
            "{problem} in {}: the gateway will not start. Set a longer secret (make one with \
             `od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`), or remove the line to send \
             callbacks unsigned.",
            ctx.env_path.display()
        );
        ctx.push(C, Level::Error, "callback_secret_weak", message);
    } else if value.is_none_or(|v| v.is_empty()) {
        let message = format!(
            "{} sets no {name}: job callbacks and URL hooks go unsigned, so a receiver cannot \
             tell them from forgeries. Add `{name}=<secret>` (at least \
             {MIN_CALLBACK_SECRET_BYTES} bytes).",
            ctx.env_path.display()
        );
        ctx.push(C, Level::Warn, "callback_secret_missing", message);
    } else {
        ctx.ok(
            C,
            "callback_secret_ok",
            format!("callbacks are signed with {name}"),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::super::backend::dechunk;
    use crate::ops::deploy::launch::help_flags;

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
