//! What validation reports: a [`Diagnostic`] with its JSON path and [`Severity`], and for a rule
//! between two fields the [`CrossField`] the loader uses to say which field to change.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works but probably not the way the operator wants.
    Warning,
}

/// One problem found in a config, located by its JSON path (`scheduler.maxQueue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// JSON path of the field, e.g. `model.adapter.launchProfile.port`; empty for the root.
    pub path: String,
    /// What is wrong and what the rule is.
    pub message: String,
    /// Where the offending value came from (`env RAY_SCHEDULER_MAX_QUEUE`, `override`), when not
    /// the file or the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a rule between two fields: what the loader needs to say which one to change when
    /// a value came from the profile.
    #[serde(skip)]
    pub(crate) cross: Option<Box<CrossField>>,
}

/// A failed rule between two fields, for the loader to explain when a value came from the
/// profile rather than the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrossField {
    /// The offending field's value, as the message shows it.
    pub(crate) value: String,
    /// What the offending field must be, e.g. `at most 32`.
    pub(crate) requirement: String,
    /// The other way to satisfy the rule, e.g. `raise model.maxOutputTokens`.
    pub(crate) alternative: String,
    /// The full path of the other field of the rule.
    pub(crate) other: String,
    /// The other field's value.
    pub(crate) other_value: String,
    /// How to change the other field, e.g. `set it to at least 300`.
    pub(crate) other_fix: String,
}

impl CrossField {
    pub(crate) fn new(
        value: impl fmt::Display,
        requirement: impl Into<String>,
        alternative: impl Into<String>,
        other: impl Into<String>,
        other_value: impl fmt::Display,
        other_fix: impl Into<String>,
    ) -> CrossField {
        CrossField {
            value: value.to_string(),
            requirement: requirement.into(),
            alternative: alternative.into(),
            other: other.into(),
            other_value: other_value.to_string(),
            other_fix: other_fix.into(),
        }
    }
}

impl Diagnostic {
    /// A fatal problem.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            source: None,
            cross: None,
        }
    }

    /// A warning.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            source: None,
            cross: None,
        }
    }

    /// Whether this is fatal.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(source) = &self.source {
            write!(f, " (set by {source})")?;
        }
        Ok(())
    }
}
