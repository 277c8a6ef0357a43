//! The `llama-server` command line generated from `model.adapter.launchProfile`: one list of
//! flags used by the systemd unit, the supervised mode and doctor's `--help` check, so the three
//! can never disagree.
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

    /// The command as a systemd `ExecStart=` value, each word quoted as systemd needs.
    pub fn systemd_exec(&self) -> Result<String, String> {
        let mut words = vec![systemd_quote(&self.program)?];
        for arg in &self.args {
            words.push(systemd_quote(arg)?);
        }
        Ok(words.join(" "))
    }
}

/// Quotes one word for a systemd command line: `%` and `$` are doubled (systemd expands
/// specifiers and variables), and a word with spaces, quotes or backslashes is put in double
/// quotes with C escapes. Control characters cannot be written and are refused.
pub fn systemd_quote(word: &str) -> Result<String, String> {
    if word.chars().any(char::is_control) {
        return Err(format!(
            "{word:?} contains a control character, which a systemd unit cannot hold"
        ));
    }
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._:,=+@%$-".contains(c));
    if plain {
        return Ok(escaped);
    }
    let mut quoted = String::with_capacity(escaped.len() + 2);
    quoted.push('"');
    for c in escaped.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ray_core::config::{Profile, profile_defaults};

    fn sub1b() -> LaunchProfile {
        profile_defaults(Profile::Sub1b)
            .model
            .adapter
            .launch_profile()
            .unwrap()
            .clone()
    }

    #[test]
    fn the_sub1b_command_matches_the_existing_unit() {
        // The ExecStart of the existing Ray's ray-llama-cpp.service, word for word.
        let expected = "/usr/local/bin/llama-server --model /var/lib/ray/models/qwen2.5-0.5b-instruct-q4_k_m.gguf --alias qwen2.5-0.5b-instruct-q4_k_m --host 127.0.0.1 --port 8081 --ctx-size 3072 --parallel 2 --threads 2 --threads-http 2 --batch-size 256 --ubatch-size 128 --cache-prompt --cache-reuse 256 --cache-ram 512 --cont-batching --metrics --slots --warmup --kv-unified --cache-idle-slots --context-shift";
        assert_eq!(llama_command(&sub1b()).systemd_exec().unwrap(), expected);
    }

    #[test]
    fn switches_off_and_extra_args_are_written() {
        let mut launch = sub1b();
        launch.cache_prompt = false;
        launch.enable_metrics = false;
        launch.context_shift = false;
        launch.threads_batch = Some(2);
        launch.cache_ram_mib = None;
        launch.extra_args = Some(vec!["--jinja".into(), "--log-colors=off".into()]);
        let command = llama_command(&launch);
        let line = command.args.join(" ");
        assert!(line.contains("--no-cache-prompt"), "{line}");
        assert!(line.contains("--threads-batch 2"), "{line}");
        assert!(!line.contains("--metrics"), "{line}");
        assert!(!line.contains("--cache-ram"), "{line}");
        assert!(
            line.ends_with("--no-context-shift --jinja --log-colors=off"),
            "{line}"
        );
        let flags = command.long_flags();
        assert!(flags.contains(&"--log-colors".to_string()), "{flags:?}");
        assert!(flags.contains(&"--no-cache-prompt".to_string()));
        assert_eq!(flags.iter().filter(|f| *f == "--model").count(), 1);
    }

    #[test]
    fn systemd_words_are_quoted_and_escaped() {
        assert_eq!(
            systemd_quote("/opt/models/m.gguf").unwrap(),
            "/opt/models/m.gguf"
        );
        assert_eq!(
            systemd_quote("/opt/my models/m.gguf").unwrap(),
            "\"/opt/my models/m.gguf\""
        );
        assert_eq!(systemd_quote("50%").unwrap(), "50%%");
        assert_eq!(systemd_quote("$HOME").unwrap(), "$$HOME");
        assert_eq!(systemd_quote("a\"b").unwrap(), "\"a\\\"b\"");
        assert_eq!(systemd_quote("").unwrap(), "\"\"");
        assert!(systemd_quote("a\nb").is_err());
    }
}
