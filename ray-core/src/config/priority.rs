//! The `priority` section: the priority classes' wait bounds, the permits kept for interactive
//! requests, and per-API-key ceilings and fairness weights.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::RayConfig;
use super::validate::Diagnostic;
use crate::wire::PriorityClass;

/// Entries of `priority.apiKeys` at most.
pub const MAX_PRIORITY_KEYS: usize = 128;
/// The largest fairness weight.
pub const MAX_PRIORITY_WEIGHT: u32 = 100;
/// The largest `maxWaitMs`.
pub const MAX_CLASS_WAIT_MS: u64 = 3_600_000;

/// Request priority: classes with a bounded wait, permits kept for interactive requests, and
/// what each API key may ask for. New in this version; files written for the existing Ray
/// leave it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PriorityConfig {
    /// The wait bound of each class.
    pub classes: PriorityClasses,
    /// Permits of each model's scheduler that `batch` and `background` work may never take,
    /// 0 to 7 and below `scheduler.concurrency`. Left out: 1 where `concurrency` is 2 or more,
    /// else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_interactive: Option<u32>,
    /// The highest class a request may use when its API key is not listed in `apiKeys` (or
    /// auth is off). A request asking for more runs in this class.
    pub default_max_class: PriorityClass,
    /// Per-API-key ceilings and fairness weights (at most 128).
    pub api_keys: Vec<ApiKeyPriority>,
}

impl Default for PriorityConfig {
    fn default() -> PriorityConfig {
        PriorityConfig {
            classes: PriorityClasses::default(),
            reserved_interactive: None,
            default_max_class: PriorityClass::Interactive,
            api_keys: Vec::new(),
        }
    }
}

impl PriorityConfig {
    /// Whether this is the default (so a written config can leave it out).
    pub fn is_default(&self) -> bool {
        *self == PriorityConfig::default()
    }

    /// The entry of the API key with this id (the first 8 hex digits of its SHA-256).
    pub fn key(&self, id: &str) -> Option<&ApiKeyPriority> {
        self.api_keys.iter().find(|k| k.id == id)
    }

    /// The highest class and the fairness weight of a request authenticated with `key_id`
    /// (`None`: no key, or auth off).
    pub fn ceiling_and_weight(&self, key_id: Option<&str>) -> (PriorityClass, u32) {
        match key_id.and_then(|id| self.key(id)) {
            Some(entry) => (entry.max_class, entry.weight),
            None => (self.default_max_class, 1),
        }
    }

    /// `reservedInteractive` for a scheduler of `concurrency` permits.
    pub fn reserved_for(&self, concurrency: u32) -> u32 {
        self.reserved_interactive
            .unwrap_or(if concurrency >= 2 { 1 } else { 0 })
            .min(concurrency.saturating_sub(1))
    }
}

/// The three classes' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PriorityClasses {
    /// Someone waits for the answer: the default of HTTP requests.
    pub interactive: ClassConfig,
    /// The default of durable jobs.
    pub batch: ClassConfig,
    /// Work that may wait longest.
    pub background: ClassConfig,
}

impl Default for PriorityClasses {
    fn default() -> PriorityClasses {
        PriorityClasses {
            interactive: ClassConfig { max_wait_ms: 2_000 },
            batch: ClassConfig {
                max_wait_ms: 30_000,
            },
            background: ClassConfig {
                max_wait_ms: 120_000,
            },
        }
    }
}

impl PriorityClasses {
    /// One class's settings.
    pub fn get(&self, class: PriorityClass) -> &ClassConfig {
        match class {
            PriorityClass::Interactive => &self.interactive,
            PriorityClass::Batch => &self.batch,
            PriorityClass::Background => &self.background,
        }
    }
}

/// One priority class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassConfig {
    /// The longest a request of this class waits for a permit, 1 to 3600000 ms. A request the
    /// scheduler estimates cannot start within it (or within its deadline) is refused at once
    /// with `503 queue_wait_exceeds_deadline`; waiting raises a request's place so an admitted
    /// one starts within it.
    pub max_wait_ms: u64,
}

/// What one API key may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyPriority {
    /// The key, named by the first 8 hex digits of its SHA-256
    /// (`printf %s "$KEY" | sha256sum | cut -c1-8`), as in routing rules.
    pub id: String,
    /// The highest class its requests may use; a request asking for more runs in this class.
    #[serde(default)]
    pub max_class: PriorityClass,
    /// Its share of the permits against other keys at the same priority, 1 to 100.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

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
