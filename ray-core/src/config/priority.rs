//! The `priority` section: the priority classes' wait bounds, the permits kept for interactive
//! requests, and per-API-key ceilings and fairness weights.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
