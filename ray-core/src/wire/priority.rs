//! Request priority: a class (`interactive`, `batch`, `background`) and an optional level
//! within it, as a request asks for it (`priority` on `/v1/infer` and jobs, the
//! `X-Ray-Priority` header on the OpenAI routes) and as it ran.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The highest level within a class.
pub const MAX_PRIORITY_LEVEL: u8 = 9;

/// A priority class. Declared from highest to lowest, so `a < b` means `a` goes first.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    /// Someone is waiting for the answer: the default of HTTP requests.
    #[default]
    Interactive,
    /// Work nobody watches as it runs: the default of durable jobs.
    Batch,
    /// Work that may wait longest.
    Background,
}

impl PriorityClass {
    /// Every class, highest first.
    pub const ALL: [PriorityClass; 3] = [
        PriorityClass::Interactive,
        PriorityClass::Batch,
        PriorityClass::Background,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PriorityClass::Interactive => "interactive",
            PriorityClass::Batch => "batch",
            PriorityClass::Background => "background",
        }
    }

    /// Its index in [`PriorityClass::ALL`].
    pub const fn index(self) -> usize {
        match self {
            PriorityClass::Interactive => 0,
            PriorityClass::Batch => 1,
            PriorityClass::Background => 2,
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<PriorityClass> {
        PriorityClass::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class and a level within it (0 to [`MAX_PRIORITY_LEVEL`], higher first, default 0).
///
/// Written `"batch"` or `"batch:3"`, the same in a JSON body and in `X-Ray-Priority`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Priority {
    /// The class.
    pub class: PriorityClass,
    /// The level within the class.
    pub level: u8,
}

impl Priority {
    /// A class at level 0.
    pub const fn of(class: PriorityClass) -> Priority {
        Priority { class, level: 0 }
    }

    /// Parses `"class"` or `"class:level"`; the error says what is wrong in plain words.
    pub fn parse(text: &str) -> Result<Priority, String> {
        let text = text.trim();
        let (name, level) = match text.split_once(':') {
            Some((name, level)) => (name.trim(), Some(level.trim())),
            None => (text, None),
        };
        let class = PriorityClass::parse(&name.to_ascii_lowercase()).ok_or_else(|| {
            format!(
                "unknown priority class {name:?}: use interactive, batch or background, \
                 optionally with a level 0 to {MAX_PRIORITY_LEVEL} (\"batch:3\")"
            )
        })?;
        let level = match level {
            None => 0,
            Some(level) => match level.parse::<u8>() {
                Ok(level) if level <= MAX_PRIORITY_LEVEL => level,
                _ => {
                    return Err(format!(
                        "priority level {level:?} must be a whole number from 0 to \
                         {MAX_PRIORITY_LEVEL}"
                    ));
                }
            },
        };
        Ok(Priority { class, level })
    }

    /// The same priority no higher than `ceiling`'s class (the level is kept when the class
    /// is, and reset to 0 when the class is lowered). Returns whether it was lowered.
    pub fn clamp_to(self, ceiling: PriorityClass) -> (Priority, bool) {
        if self.class < ceiling {
            (Priority::of(ceiling), true)
        } else {
            (self, false)
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.level == 0 {
            f.write_str(self.class.as_str())
        } else {
            write!(f, "{}:{}", self.class, self.level)
        }
    }
}

/// How a request's priority was decided, in its diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorityDiagnostics {
    /// The class the request ran in.
    pub class: PriorityClass,
    /// Its level within the class.
    pub level: u8,
    /// What the request asked for, when it asked (`"interactive"`, `"batch:3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// True when the API key's highest class lowered what the request asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clamped: bool,
    /// How long the request waited for a permit, in ms.
    pub queue_wait_ms: u64,
}

/// The priority side of a model's queue, in `/health` (`runtime.queue.priority`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorityHealth {
    /// Permits `batch` and `background` work may never take.
    pub reserved_interactive: u32,
    /// `batch` and `background` requests executing now.
    pub lower_class_in_flight: u32,
    /// The running estimate of one request's service time (permit held), in ms; absent
    /// until a request finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_time_estimate_ms: Option<u64>,
    /// By class: how long a new request would wait for a permit, by the estimate (absent
    /// until a request finished).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub estimated_wait_ms: std::collections::BTreeMap<String, u64>,
    /// By class: each class's `maxWaitMs`.
    pub max_wait_ms: std::collections::BTreeMap<String, u64>,
    /// By class: requests waiting.
    pub waiting: std::collections::BTreeMap<String, u32>,
    /// By class: requests started since start.
    pub started: std::collections::BTreeMap<String, u64>,
    /// By class: requests refused with `queue_wait_exceeds_deadline` since start.
    pub refused_wait: std::collections::BTreeMap<String, u64>,
    /// Requests started ahead of the preferred order because their wait bound required it.
    pub aged_starts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_levels_parse_and_print_back() {
        for text in [
            "interactive",
            "batch",
            "background",
            "batch:3",
            "background:9",
        ] {
            let priority = Priority::parse(text).unwrap();
            assert_eq!(priority.to_string(), text);
        }
        assert_eq!(
            Priority::parse(" Batch : 2 ").unwrap(),
            Priority {
                class: PriorityClass::Batch,
                level: 2
            }
        );
        assert_eq!(Priority::parse("batch:0").unwrap().to_string(), "batch");
        for bad in ["", "urgent", "batch:10", "batch:-1", "batch:x", "batch:"] {
            let error = Priority::parse(bad).unwrap_err();
            assert!(error.contains("priority"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_ceiling_lowers_the_class_and_never_raises_it() {
        let asked = Priority::parse("interactive:5").unwrap();
        assert_eq!(
            asked.clamp_to(PriorityClass::Batch),
            (Priority::of(PriorityClass::Batch), true)
        );
        assert_eq!(asked.clamp_to(PriorityClass::Interactive), (asked, false));
        let low = Priority::parse("background:2").unwrap();
        assert_eq!(low.clamp_to(PriorityClass::Batch), (low, false));
        assert!(PriorityClass::Interactive < PriorityClass::Background);
    }
}
