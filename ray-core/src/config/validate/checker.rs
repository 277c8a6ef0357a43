//! The checker every section writes into: range, text and list rules read from
//! [`FIELD_LIMITS`](crate::config::FIELD_LIMITS), so the validator and the schema cannot drift.

use super::diagnostic::{CrossField, Diagnostic};
use crate::config::limits::{Limit, limits_of};

/// A field's value as the bound of another, or `None` when it is 0 and so invalid itself.
pub(super) fn positive(value: impl Into<u64>) -> Option<u64> {
    let value = value.into();
    (value > 0).then_some(value)
}

/// Collects diagnostics with small helpers for the common range rules.
pub(super) struct Checker {
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl Checker {
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(path, message));
    }

    /// An error of a rule between two fields.
    pub(super) fn cross_error(
        &mut self,
        path: &str,
        message: impl Into<String>,
        cross: CrossField,
    ) {
        let mut diagnostic = Diagnostic::error(path, message);
        diagnostic.cross = Some(Box::new(cross));
        self.diagnostics.push(diagnostic);
    }

    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(path, message));
    }

    /// The rule of `path` that `kind` accepts; an internal error when the table has none, so a
    /// check the schema would not carry cannot go unnoticed.
    pub(super) fn limit(
        &mut self,
        path: &str,
        kind: impl Fn(&Limit) -> bool,
    ) -> Option<&'static Limit> {
        let found = limits_of(path).find(|limit| kind(limit));
        if found.is_none() {
            self.error(path, "internal: no rule for this field in FIELD_LIMITS");
        }
        found
    }

    /// A whole number within its [`Limit::Int`], reported as "must be at least/at most".
    pub(super) fn int(&mut self, path: &str, value: i128) {
        let Some(&Limit::Int { min, max }) = self.limit(path, |l| matches!(l, Limit::Int { .. }))
        else {
            return;
        };
        if value < i128::from(min) {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if value > i128::from(max) {
            self.error(path, format!("must be at most {max}, got {value}"));
        }
    }

    /// A whole number whose lower bound is in [`FIELD_LIMITS`] and whose upper bound is another
    /// field, named in the message.
    /// `max` is `None` when that field is invalid itself: its own error says so, and a bound
    /// made up from it would only mislead, so just the minimum is checked.
    pub(super) fn at_most_field(
        &mut self,
        path: &str,
        value: u64,
        max: Option<u64>,
        max_field: &str,
    ) {
        let Some(&Limit::AtLeast { min }) =
            self.limit(path, |l| matches!(l, Limit::AtLeast { .. }))
        else {
            return;
        };
        let min = u64::try_from(min).unwrap_or(0);
        if value < min {
            self.error(path, format!("must be at least {min}, got {value}"));
        } else if let Some(max) = max
            && value > max
        {
            // `max_field` is a path, a launch-profile path without its prefix, or `... - 1`.
            let (other, other_value, needed) = match max_field.strip_suffix(" - 1") {
                Some(other) => (other, max + 1, value + 1),
                None => (max_field, max, value),
            };
            let other = match other.strip_prefix("launchProfile.") {
                Some(field) => format!("model.adapter.launchProfile.{field}"),
                None => other.to_string(),
            };
            self.cross_error(
                path,
                format!("must be at most {max_field} ({max}), got {value}"),
                CrossField::new(
                    value,
                    format!("at most {max}"),
                    format!("raise {other}"),
                    other.clone(),
                    other_value,
                    format!("set it to at least {needed}, or lower {path}"),
                ),
            );
        }
    }

    /// A number within its [`Limit::Number`], for ratios and PSI values.
    pub(super) fn number(&mut self, path: &str, value: f64) {
        let Some(&Limit::Number {
            min,
            min_inclusive,
            max,
        }) = self.limit(path, |l| matches!(l, Limit::Number { .. }))
        else {
            return;
        };
        let low_ok = if min_inclusive {
            value >= min
        } else {
            value > min
        };
        if !value.is_finite() {
            self.error(path, format!("must be a finite number, got {value}"));
        } else if !low_ok {
            let rule = if min_inclusive {
                "at least"
            } else {
                "greater than"
            };
            self.error(path, format!("must be {rule} {min}, got {value}"));
        } else if value > max {
            self.error(path, format!("must be at most {max}, got {value}"));
        }
    }

    /// Text within its [`Limit::Text`].
    pub(super) fn text(&mut self, path: &str, value: &str) {
        let Some(&Limit::Text {
            max_chars,
            allow_empty,
        }) = self.limit(path, |l| matches!(l, Limit::Text { .. }))
        else {
            return;
        };
        if !allow_empty && value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
        let chars = value.chars().count();
        if chars > max_chars as usize {
            self.error(
                path,
                format!("must be at most {max_chars} chars, got {chars}"),
            );
        }
        if value.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
        }
    }

    /// A name within its [`Limit::Name`]: 1 to `max_chars` chars.
    pub(super) fn name(&mut self, path: &str, value: &str) {
        let Some(&Limit::Name { max_chars }) =
            self.limit(path, |l| matches!(l, Limit::Name { .. }))
        else {
            return;
        };
        let chars = value.chars().count();
        if chars == 0 || chars > max_chars as usize {
            self.error(path, format!("must be 1 to {max_chars} chars, got {chars}"));
        }
    }

    /// A name that is not its [`Limit::NotReserved`] word.
    pub(super) fn not_reserved(&mut self, path: &str, value: &str) {
        let Some(&Limit::NotReserved(word)) =
            self.limit(path, |l| matches!(l, Limit::NotReserved(_)))
        else {
            return;
        };
        if value == word {
            self.error(
                path,
                format!("{word:?} is reserved: it asks for routing by routing.rules"),
            );
        }
    }

    /// A list or object within its [`Limit::Entries`].
    pub(super) fn entries(&mut self, path: &str, count: usize) {
        let Some(&Limit::Entries { max }) =
            self.limit(path, |l| matches!(l, Limit::Entries { .. }))
        else {
            return;
        };
        if count > max as usize {
            self.error(
                path,
                format!("must have at most {max} entries, got {count}"),
            );
        }
    }

    /// Whether `path` has the rule `limit` (which the caller then checks itself).
    pub(super) fn has(&mut self, path: &str, limit: Limit) -> bool {
        self.limit(path, |l| *l == limit).is_some()
    }
}
