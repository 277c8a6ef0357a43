//! The JSON tree of a config while it is layered: deep merge, reserved keys, typing with
//! repair so every problem is reported in one pass, expanding `models` from `model`, and serde's
//! messages made readable.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::env::pointer;
use crate::config::profiles::adapter_defaults;
use crate::config::types::*;
use crate::config::validate::Diagnostic;

/// Object keys refused anywhere in a config file (the existing Ray refuses them, and a config
/// that relies on them would behave differently there).
const RESERVED_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];

/// The kind of a JSON value, as a message names it (`a string`).
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Whether `value` holds the dotted `path`, whose segments may end in `[index]`
/// (`model.adapter.warmupRequests[0].maxTokens`).
pub(super) fn has_path(value: &Value, path: &str) -> bool {
    let mut current = value;
    for segment in path.split('.') {
        let (key, indices) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        let Some(next) = current.get(key) else {
            return false;
        };
        current = next;
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            let Some(next) = index
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| current.get(i))
            else {
                return false;
            };
            current = next;
        }
    }
    true
}

/// Deep merge: objects merge key by key, arrays and scalars replace. `null` where the default
/// is an object or array, and an object where the default is not one, are errors.
pub(super) fn merge(
    base: &mut Value,
    overlay: Value,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match (base, overlay) {
        (Value::Object(base_map), Value::Object(overlay_map)) => {
            for (key, value) in overlay_map {
                let child = join(path, &key);
                if RESERVED_KEYS.contains(&key.as_str()) {
                    diagnostics.push(Diagnostic::error(child, "reserved key is not allowed"));
                    continue;
                }
                check_reserved(&value, &child, diagnostics);
                match base_map.get_mut(&key) {
                    Some(existing) => merge(existing, value, &child, diagnostics),
                    None => {
                        base_map.insert(key, value);
                    }
                }
            }
        }
        (base @ (Value::Object(_) | Value::Array(_)), Value::Null) => {
            diagnostics.push(Diagnostic::error(
                path,
                format!(
                    "must be {}, got null (leave the field out to use the profile default)",
                    json_type(base)
                ),
            ));
        }
        (Value::Object(_), overlay) => {
            diagnostics.push(Diagnostic::error(
                path,
                format!("must be an object, got {}", json_type(&overlay)),
            ));
        }
        (base, overlay) => *base = overlay,
    }
}

fn check_reserved(value: &Value, path: &str, diagnostics: &mut Vec<Diagnostic>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = join(path, key);
                if RESERVED_KEYS.contains(&key.as_str()) {
                    diagnostics.push(Diagnostic::error(child_path, "reserved key is not allowed"));
                } else {
                    check_reserved(child, &child_path, diagnostics);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_reserved(item, &format!("{path}[{i}]"), diagnostics);
            }
        }
        _ => {}
    }
}

/// Types the merged JSON. The adapter is typed on its own first so errors inside it keep their
/// paths (serde loses them through internally tagged enums).
pub(super) fn type_config(
    merged: &mut Value,
    defaults: &Value,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RayConfig> {
    if let Some(adapter) = merged
        .get_mut("model")
        .and_then(|m| m.get_mut("adapter"))
        .and_then(Value::as_object_mut)
    {
        let kind = adapter
            .get("kind")
            .and_then(Value::as_str)
            .map(String::from);
        let adapter_defaults = pointer(defaults, "model.adapter")
            .cloned()
            .unwrap_or(Value::Null);
        let mut body = Value::Object(adapter.clone());
        if let Value::Object(map) = &mut body {
            map.remove("kind");
        }
        let ok = match kind.as_deref() {
            Some("mock") => repair::<MockAdapterConfig>(
                &mut body,
                &adapter_defaults,
                "model.adapter",
                diagnostics,
            ),
            Some("openai-compatible") => repair::<OpenAiAdapterConfig>(
                &mut body,
                &adapter_defaults,
                "model.adapter",
                diagnostics,
            ),
            Some("llama.cpp") => repair::<LlamaCppAdapterConfig>(
                &mut body,
                &adapter_defaults,
                "model.adapter",
                diagnostics,
            ),
            // An unknown kind was reported already; fall back to the defaults.
            _ => false,
        };
        let mut repaired = if ok { body } else { adapter_defaults.clone() };
        if ok && let (Value::Object(map), Some(kind)) = (&mut repaired, kind) {
            map.insert("kind".into(), Value::String(kind));
        }
        if let Value::Object(map) = repaired {
            *adapter = map;
        }
    }
    if repair::<RayConfig>(merged, defaults, "", diagnostics) {
        serde_json::from_value(merged.clone()).ok()
    } else {
        None
    }
}

/// Fields of `model` an entry of `models` inherits when it leaves them out.
const INHERITED_MODEL_FIELDS: [&str; 6] = [
    "family",
    "quantization",
    "contextWindow",
    "warmOnBoot",
    "maxOutputTokens",
    "operational",
];

/// Fills each entry of `models` from `model` (see [`INHERITED_MODEL_FIELDS`]); its adapter
/// starts from `model.adapter` when the kinds match (the entry's kind defaults to that of
/// `model.adapter`), else from the profile's defaults for its kind, never with a
/// `launchProfile` and with `modelRef` defaulting to the entry's id. Entries that are not objects are left for typing to report.
pub(super) fn expand_models(
    merged: &mut Value,
    profile: Profile,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let template = merged.get("model").cloned().unwrap_or(Value::Null);
    let template_kind = pointer(&template, "adapter.kind")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_string();
    let Some(Value::Array(entries)) = merged.get_mut("models") else {
        return;
    };
    for (index, entry) in entries.iter_mut().enumerate() {
        let Value::Object(fields) = entry else {
            continue;
        };
        for name in INHERITED_MODEL_FIELDS {
            if !fields.contains_key(name)
                && let Some(value) = template.get(name)
            {
                fields.insert(name.into(), value.clone());
            }
        }
        let id = fields
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("model")
            .to_string();
        let adapter = fields
            .remove("adapter")
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let kind = match adapter.get("kind") {
            None => template_kind.clone(),
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => {
                diagnostics.push(Diagnostic::error(
                    format!("models[{index}].adapter.kind"),
                    "must be a string: mock, openai-compatible or llama.cpp",
                ));
                fields.insert("adapter".into(), adapter);
                continue;
            }
        };
        // The same kind as `model.adapter`: start from it; another kind: from the profile's
        // defaults for that kind.
        let inherited = template
            .get("adapter")
            .filter(|_| kind == template_kind)
            .cloned();
        let mut base = match inherited {
            Some(adapter) => adapter,
            None => match adapter_defaults(&kind, &id, profile) {
                Some(defaults) => serde_json::to_value(defaults).unwrap_or(Value::Null),
                None => {
                    diagnostics.push(Diagnostic::error(
                        format!("models[{index}].adapter.kind"),
                        format!(
                            "unknown adapter kind {kind:?}; expected mock, openai-compatible or \
                             llama.cpp"
                        ),
                    ));
                    fields.insert("adapter".into(), adapter);
                    continue;
                }
            },
        };
        // A launch profile describes one process and `modelRef` names one model: an entry
        // never inherits them (its `modelRef` defaults to its id).
        if let Value::Object(map) = &mut base {
            map.remove("launchProfile");
            if kind != "mock" {
                map.insert("modelRef".into(), Value::String(id.clone()));
            }
        }
        merge(
            &mut base,
            adapter,
            &format!("models[{index}].adapter"),
            diagnostics,
        );
        fields.insert("adapter".into(), base);
    }
}

/// Deserializes `T` from `value`; on each error, records it with its path and repairs the value
/// (unknown keys removed, bad values replaced by the default) so the next error can be found.
/// Returns whether `value` finally deserializes.
fn repair<T: DeserializeOwned>(
    value: &mut Value,
    defaults: &Value,
    prefix: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let mut seen = Vec::new();
    for _ in 0..128 {
        let error = match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(_) => return true,
            Err(error) => error,
        };
        let segments: Vec<String> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = error.into_inner().to_string();
        let fingerprint = (segments.clone(), message.clone());
        if seen.contains(&fingerprint) {
            return false;
        }
        seen.push(fingerprint);

        let mut path = prefix.to_string();
        for segment in &segments {
            if segment.starts_with('[') {
                path.push_str(segment);
            } else {
                path = join(&path, segment);
            }
        }
        if let Some(field) = backticked(&message, "unknown field `") {
            // The path normally ends with the unknown key itself; be robust if it does not.
            let parent = match segments.split_last() {
                Some((last, parent)) if *last == field => parent,
                _ => &segments[..],
            };
            let shown = if segments.last() == Some(&field) {
                path.clone()
            } else {
                join(&path, &field)
            };
            diagnostics.push(Diagnostic::error(
                shown,
                unknown_field_message(&field, &message),
            ));
            let removed = match navigate_mut(value, parent) {
                Some(Value::Object(map)) => map.remove(&field).is_some(),
                _ => false,
            };
            if !removed {
                return false;
            }
        } else if let Some(field) = backticked(&message, "missing field `") {
            diagnostics.push(Diagnostic::error(
                join(&path, &field),
                "is required here and has no default",
            ));
            let mut field_path = segments.clone();
            field_path.push(field);
            let Some(default) = navigate(defaults, &field_path).cloned() else {
                return false;
            };
            if let Some(Value::Object(map)) = navigate_mut(value, &segments) {
                map.insert(field_path.pop().unwrap_or_default(), default);
            } else {
                return false;
            }
        } else {
            diagnostics.push(Diagnostic::error(path.clone(), clean_message(&message)));
            let default = navigate(defaults, &segments).cloned();
            let Some((last, parent)) = segments.split_last() else {
                return false;
            };
            match (navigate_mut(value, parent), default) {
                (Some(Value::Object(map)), Some(default)) => {
                    map.insert(last.clone(), default);
                }
                (Some(Value::Object(map)), None) => {
                    map.remove(last);
                }
                (Some(Value::Array(items)), _) => {
                    let index = last
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<usize>()
                        .ok();
                    match index {
                        Some(i) if i < items.len() => {
                            items.remove(i);
                        }
                        _ => return false,
                    }
                }
                _ => return false,
            }
        }
    }
    false
}

fn navigate<'a>(value: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments.iter().try_fold(value, |current, segment| {
        if let Some(index) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current.as_array()?.get(index.parse::<usize>().ok()?)
        } else {
            current.as_object()?.get(segment)
        }
    })
}

fn navigate_mut<'a>(value: &'a mut Value, segments: &[String]) -> Option<&'a mut Value> {
    segments.iter().try_fold(value, |current, segment| {
        if let Some(index) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current
                .as_array_mut()?
                .get_mut(index.parse::<usize>().ok()?)
        } else {
            current.as_object_mut()?.get_mut(segment)
        }
    })
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next()?.to_string())
}

/// "unknown field `x`, expected one of `a`, `b`" becomes a sentence with a suggestion.
fn unknown_field_message(field: &str, serde_message: &str) -> String {
    let expected: Vec<&str> = serde_message
        .split_once("expected")
        .map(|(_, list)| {
            list.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect()
        })
        .unwrap_or_default();
    let closest = expected
        .iter()
        .map(|candidate| (edit_distance(field, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 3)
        .min();
    match closest {
        Some((_, suggestion)) => format!("unknown field; did you mean \"{suggestion}\"?"),
        None if expected.is_empty() => "unknown field".to_string(),
        None => format!("unknown field; expected one of {}", expected.join(", ")),
    }
}

/// serde's messages mention Rust types; say what a config author needs instead.
fn clean_message(message: &str) -> String {
    let message = message
        .replace("u16", "a port number (0 to 65535)")
        .replace("u32", "a whole number from 0 to 4294967295")
        .replace("u64", "a whole number from 0 to 18446744073709551615")
        .replace("i32", "a whole number from -2147483648 to 2147483647")
        .replace(
            "i64",
            "a whole number from -9223372036854775808 to 9223372036854775807",
        )
        .replace("f64", "a number");
    message.replace("invalid type: ", "wrong type: ")
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
