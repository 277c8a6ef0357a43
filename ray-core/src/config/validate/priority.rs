//! The rules of the `priority` section.

use super::Diagnostic;
use crate::config::priority::*;
use crate::config::types::RayConfig;
use crate::wire::PriorityClass;
use std::collections::BTreeSet;

/// The rules of the `priority` section.
pub(crate) fn validate_priority(config: &RayConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let priority = &config.priority;
    for class in PriorityClass::ALL {
        let wait = priority.classes.get(class).max_wait_ms;
        if !(1..=MAX_CLASS_WAIT_MS).contains(&wait) {
            out.push(Diagnostic::error(
                format!("priority.classes.{class}.maxWaitMs"),
                format!("must be 1 to {MAX_CLASS_WAIT_MS} ms, got {wait}"),
            ));
        }
    }
    let waits: Vec<u64> = PriorityClass::ALL
        .iter()
        .map(|c| priority.classes.get(*c).max_wait_ms)
        .collect();
    if waits.windows(2).any(|pair| pair[0] > pair[1]) {
        out.push(Diagnostic::error(
            "priority.classes",
            format!(
                "a lower class may not have a shorter maxWaitMs than a higher one \
                 (interactive {} ms, batch {} ms, background {} ms)",
                waits[0], waits[1], waits[2]
            ),
        ));
    }
    if let Some(reserved) = priority.reserved_interactive {
        let concurrency = config.scheduler.concurrency;
        if reserved > 7 {
            out.push(Diagnostic::error(
                "priority.reservedInteractive",
                format!("must be 0 to 7, got {reserved}"),
            ));
        } else if reserved > 0 && reserved >= concurrency {
            out.push(Diagnostic::error(
                "priority.reservedInteractive",
                format!(
                    "must be below scheduler.concurrency ({concurrency}) so batch and \
                     background work keep a permit, got {reserved}"
                ),
            ));
        }
    }
    if priority.api_keys.len() > MAX_PRIORITY_KEYS {
        out.push(Diagnostic::error(
            "priority.apiKeys",
            format!(
                "at most {MAX_PRIORITY_KEYS} entries, got {}",
                priority.api_keys.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, key) in priority.api_keys.iter().enumerate() {
        let is_id = key.id.len() == 8
            && key
                .id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_id {
            out.push(Diagnostic::error(
                format!("priority.apiKeys[{index}].id"),
                format!(
                    "must be the first 8 lowercase hex digits of the key's SHA-256 \
                     (printf %s \"$KEY\" | sha256sum | cut -c1-8), got {:?}",
                    key.id
                ),
            ));
        } else if !seen.insert(key.id.as_str()) {
            out.push(Diagnostic::error(
                format!("priority.apiKeys[{index}].id"),
                format!("the key {:?} is listed twice", key.id),
            ));
        }
        if !(1..=MAX_PRIORITY_WEIGHT).contains(&key.weight) {
            out.push(Diagnostic::error(
                format!("priority.apiKeys[{index}].weight"),
                format!("must be 1 to {MAX_PRIORITY_WEIGHT}, got {}", key.weight),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::config::priority::*;
    use crate::config::{Profile, profile_defaults};

    fn errors(config: &RayConfig) -> Vec<String> {
        validate_priority(config)
            .into_iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect()
    }

    #[test]
    fn the_defaults_are_valid() {
        let mut config = profile_defaults(Profile::Tiny);
        assert!(errors(&config).is_empty());
        config.scheduler.concurrency = 2;
        assert!(errors(&config).is_empty());
        assert_eq!(config.priority.reserved_for(2), 1);
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut config = profile_defaults(Profile::Tiny);
        config.scheduler.concurrency = 2;
        config.priority.classes.batch.max_wait_ms = 0;
        config.priority.reserved_interactive = Some(2);
        config.priority.api_keys = vec![
            ApiKeyPriority {
                id: "XYZ".into(),
                max_class: PriorityClass::Batch,
                weight: 0,
            },
            ApiKeyPriority {
                id: "0123abcd".into(),
                max_class: PriorityClass::Batch,
                weight: 3,
            },
            ApiKeyPriority {
                id: "0123abcd".into(),
                max_class: PriorityClass::Batch,
                weight: 3,
            },
        ];
        let all = errors(&config).join("\n");
        for expected in [
            "priority.classes.batch.maxWaitMs: must be 1 to",
            "priority.classes: a lower class may not",
            "priority.reservedInteractive: must be below scheduler.concurrency (2)",
            "priority.apiKeys[0].id: must be the first 8",
            "priority.apiKeys[0].weight: must be 1 to 100",
            "priority.apiKeys[2].id: the key \"0123abcd\" is listed twice",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in\n{all}");
        }
    }

    #[test]
    fn keys_get_their_ceiling_and_weight_and_others_the_default() {
        let mut priority = PriorityConfig::default();
        priority.api_keys.push(ApiKeyPriority {
            id: "0123abcd".into(),
            max_class: PriorityClass::Batch,
            weight: 3,
        });
        assert_eq!(
            priority.ceiling_and_weight(Some("0123abcd")),
            (PriorityClass::Batch, 3)
        );
        assert_eq!(
            priority.ceiling_and_weight(Some("ffffffff")),
            (PriorityClass::Interactive, 1)
        );
        assert_eq!(priority.reserved_for(1), 0);
        assert_eq!(priority.reserved_for(2), 1);
        priority.reserved_interactive = Some(3);
        assert_eq!(priority.reserved_for(2), 1);
    }
}
