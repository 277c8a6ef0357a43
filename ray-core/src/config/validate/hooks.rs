//! The rules of the `hooks` section.

use super::{Diagnostic, ParsedUrl};
use crate::config::hooks::*;

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
                // Chars, as the schema's `maxLength` counts them.
                if command.len() > MAX_HOOK_ARGS
                    || command
                        .iter()
                        .any(|a| a.chars().count() > MAX_HOOK_ARG_CHARS || a.contains('\0'))
                {
                    out.push(Diagnostic::error(
                        path("command"),
                        format!(
                            "at most {MAX_HOOK_ARGS} arguments of at most {MAX_HOOK_ARG_CHARS} \
                             chars each, without NUL"
                        ),
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
    #[allow(unused_imports)]
    use crate::config::hooks::*;

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
