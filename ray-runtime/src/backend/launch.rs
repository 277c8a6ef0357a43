//! The `llama-server` command line generated from a launch profile: one list of flags used
//! by the systemd unit `ray-server render` writes, the supervised mode and doctor's `--help`
//! check, so the three can never disagree.
//!
//! Unlike the existing Ray, which wrote every setting twice (as `LLAMA_ARG_*` variables and as
//! flags), Ray writes flags only: one place to read, and `llama-server --help` can vouch for
//! each of them.

use ray_core::config::LaunchProfile;

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaCommand {
    /// The `llama-server` binary (`launchProfile.binaryPath`).
    pub program: String,
    /// Its arguments, flags Ray generates first, then `extraArgs`.
    pub args: Vec<String>,
}

fn toggle(on: bool, yes: &str, no: &str) -> String {
    if on { yes } else { no }.to_string()
}

/// The command that starts `llama-server` for `launch`.
pub fn llama_command(launch: &LaunchProfile) -> LlamaCommand {
    let mut args: Vec<String> = vec!["--model".into(), launch.model_path.clone()];
    if let Some(alias) = &launch.alias {
        args.extend(["--alias".into(), alias.clone()]);
    }
    args.extend([
        "--host".into(),
        launch.host.clone(),
        "--port".into(),
        launch.port.to_string(),
        "--ctx-size".into(),
        launch.ctx_size.to_string(),
        "--parallel".into(),
        launch.parallel.to_string(),
        "--threads".into(),
        launch.threads.to_string(),
    ]);
    if let Some(threads_batch) = launch.threads_batch {
        args.extend(["--threads-batch".into(), threads_batch.to_string()]);
    }
    args.extend([
        "--threads-http".into(),
        launch.threads_http.to_string(),
        "--batch-size".into(),
        launch.batch_size.to_string(),
        "--ubatch-size".into(),
        launch.ubatch_size.to_string(),
        toggle(launch.cache_prompt, "--cache-prompt", "--no-cache-prompt"),
        "--cache-reuse".into(),
        launch.cache_reuse.to_string(),
    ]);
    if let Some(cache_ram) = launch.cache_ram_mib {
        args.extend(["--cache-ram".into(), cache_ram.to_string()]);
    }
    args.push(toggle(
        launch.continuous_batching,
        "--cont-batching",
        "--no-cont-batching",
    ));
    if launch.enable_metrics {
        args.push("--metrics".into());
    }
    args.extend([
        toggle(launch.expose_slots, "--slots", "--no-slots"),
        toggle(launch.warmup, "--warmup", "--no-warmup"),
        toggle(launch.enable_unified_kv, "--kv-unified", "--no-kv-unified"),
        toggle(
            launch.cache_idle_slots,
            "--cache-idle-slots",
            "--no-cache-idle-slots",
        ),
        toggle(
            launch.context_shift,
            "--context-shift",
            "--no-context-shift",
        ),
    ]);
    if let Some(dir) = &launch.slot_save_path {
        args.extend(["--slot-save-path".into(), dir.clone()]);
    }
    if let Some(extra) = &launch.extra_args {
        args.extend(extra.iter().cloned());
    }
    LlamaCommand {
        program: launch.binary_path.clone(),
        args,
    }
}

impl LlamaCommand {
    /// Every long flag in the command (`--name`, without any `=value`), in order, once each:
    /// what `llama-server --help` must list.
    pub fn long_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = Vec::new();
        for arg in &self.args {
            if let Some(name) = arg.strip_prefix("--") {
                let flag = format!("--{}", name.split('=').next().unwrap_or(name));
                if flag.len() > 2 && !flags.contains(&flag) {
                    flags.push(flag);
                }
            }
        }
        flags
    }
}

/// The `oom_score_adj` a `llama-server` child gets (the separate unit's `OOMScoreAdjust`): the
/// kernel picks it before the gateway when memory runs out.
pub const LLAMA_OOM_SCORE_ADJUST: i32 = 250;
