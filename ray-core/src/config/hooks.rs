//! The optional `hooks` array: commands to run, or URLs to post to, when something an operator
//! should know about happens (a backend went down, memory went critical, a job failed for good).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{Diagnostic, ParsedUrl};

/// Every event type a hook can ask for, with what it means.
pub const HOOK_EVENTS: &[(&str, &str)] = &[
    (
        "model_state_changed",
        "A model's state changed (ready, loading, degraded, unavailable, cooldown, ...).",
    ),
    ("backend_down", "A model's backend stopped answering."),
    ("backend_recovered", "A model's backend answers again."),
    (
        "degradation_changed",
        "The degradation level changed (none, queue, memory, cpu pressure).",
    ),
    (
        "memory_critical_started",
        "Memory pressure became critical: new work is refused.",
    ),
    (
        "memory_critical_ended",
        "Memory pressure is no longer critical.",
    ),
    (
        "job_failed",
        "A job failed for good (no attempt left, or an error that is not retried).",
    ),
    (
        "callback_gave_up",
        "Every delivery attempt of a job's callback failed.",
    ),
    (
        "cluster_node_joined",
        "A node appeared in the cluster registry.",
    ),
    ("cluster_node_left", "A node left the cluster registry."),
    ("config_reloaded", "The configuration was read again."),
    (
        "hooks_dropped",
        "Events were dropped because the hook queue was full (sent once the queue has room).",
    ),
];

/// One hook: which events, and what runs for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookConfig {
    /// The event types this hook receives (see `docs/operations.md`); absent or empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// A command to run for each event, as an argument vector (no shell); the event is its
    /// standard input, one JSON object. Set `command` or `url`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A URL the event is posted to as JSON, signed like job callbacks and under the same
    /// address rules (`asyncQueue.callbackAllowedHosts`, `callbackAllowPrivateNetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long one run (or one delivery attempt) may take, 100 to 60000 ms (default 5000).
    #[serde(default = "default_hook_timeout_ms")]
    #[schemars(range(min = 100, max = 60_000))]
    pub timeout_ms: u64,
}

/// The default `hooks[].timeoutMs`.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 5_000;
/// The most hooks a config may have.
pub const MAX_HOOKS: usize = 16;

fn default_hook_timeout_ms() -> u64 {
    DEFAULT_HOOK_TIMEOUT_MS
}

/// The rules of the `hooks` array.
pub(crate) fn validate_hooks(hooks: &[HookConfig]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if hooks.len() > MAX_HOOKS {
        out.push(Diagnostic::error(
            "hooks",
            format!("must have at most {MAX_HOOKS} entries, got {}", hooks.len()),
        ));
    }
    for (i, hook) in hooks.iter().enumerate() {
        let path = |field: &str| format!("hooks[{i}].{field}");
        for event in &hook.events {
            if !HOOK_EVENTS.iter().any(|(name, _)| name == event) {
                let known: Vec<&str> = HOOK_EVENTS.iter().map(|(name, _)| *name).collect();
                out.push(Diagnostic::error(
                    path("events"),
                    format!(
                        "unknown event {event:?}; the events are: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        match (&hook.command, &hook.url) {
            (Some(_), Some(_)) | (None, None) => out.push(Diagnostic::error(
                format!("hooks[{i}]"),
                "set exactly one of command (an argument vector) or url",
            )),
            (Some(command), None) => {
                if command.is_empty() || command[0].trim().is_empty() {
                    out.push(Diagnostic::error(
                        path("command"),
                        "must name a program: [\"/path/to/program\", \"arg\", ...]",
                    ));
                } else if !command[0].starts_with('/') {
                    out.push(Diagnostic::error(
                        path("command"),
                        format!(
                            "the program must be an absolute path (no PATH lookup), got {:?}",
                            command[0]
                        ),
                    ));
                }
                if command.len() > 64 || command.iter().any(|a| a.len() > 4_096 || a.contains('\0'))
                {
                    out.push(Diagnostic::error(
                        path("command"),
                        "at most 64 arguments of at most 4096 bytes, without NUL",
                    ));
                }
            }
            (None, Some(url)) => {
                if let Err(why) = ParsedUrl::parse(url) {
                    out.push(Diagnostic::error(
                        path("url"),
                        format!("{why}, got {url:?}"),
                    ));
                }
            }
        }
        if !(100..=60_000).contains(&hook.timeout_ms) {
            out.push(Diagnostic::error(
                path("timeoutMs"),
                format!("must be 100 to 60000, got {}", hook.timeout_ms),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> HookConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_bad_field_is_named() {
        let good = hook(serde_json::json!({"command": ["/usr/local/bin/notify"]}));
        assert!(validate_hooks(&[good]).is_empty());
        let bad = vec![
            hook(serde_json::json!({"events": ["nope"], "url": "http://x.example/h"})),
            hook(serde_json::json!({"command": ["notify"]})),
            hook(serde_json::json!({"url": "ftp://x"})),
            hook(serde_json::json!({"command": ["/bin/true"], "url": "http://x.example"})),
            hook(serde_json::json!({"command": ["/bin/true"], "timeoutMs": 5})),
        ];
        let paths: Vec<String> = validate_hooks(&bad).into_iter().map(|d| d.path).collect();
        assert_eq!(
            paths,
            [
                "hooks[0].events",
                "hooks[1].command",
                "hooks[2].url",
                "hooks[3]",
                "hooks[4].timeoutMs"
            ]
        );
    }
}
