//! `RAY_*` environment overrides: the complete table, how values are parsed, and how they are
//! applied to the merged JSON before it is typed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

mod table;

pub use table::{ENV_VARS, EnvKind, EnvScope, EnvVar, OTHER_RAY_VARS};

/// Prefixes of variables that configure a section; an unknown variable with one of these
/// prefixes is reported as a probable typo.
const SECTION_PREFIXES: &[&str] = &[
    "RAY_SCHEDULER_",
    "RAY_ASYNC_QUEUE_",
    "RAY_CACHE_",
    "RAY_PROMPT_COMPILER_",
    "RAY_STREAM_",
    "RAY_RATE_LIMIT_",
    "RAY_ADAPTIVE_",
    "RAY_DEGRADATION_",
    "RAY_TELEMETRY_",
    "RAY_LLAMA_CPP_",
    "RAY_MODEL_",
    "RAY_AUTH_",
];

/// Parses a variable's text. Errors name the rule, not the variable (the caller adds it).
pub fn parse_env_value(kind: EnvKind, raw: &str) -> Result<Value, String> {
    let text = raw.trim();
    match kind {
        EnvKind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "expected true/false/1/0/yes/no/on/off, got {text:?}"
            )),
        },
        // Up to 2^64 − 1 parses here; the setting's own type and range are checked later,
        // with a message naming the range.
        EnvKind::Int => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .map_err(|_| format!("expected a whole number, got {text:?}")),
        EnvKind::Number => text
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("expected a finite number, got {text:?}")),
        EnvKind::Text => Ok(Value::String(text.to_string())),
        EnvKind::List => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
    }
}

/// What applying the environment did.
#[derive(Debug, Default)]
pub(crate) struct EnvOutcome {
    /// Paths set, with the variable that set them.
    pub(crate) set: Vec<(String, String)>,
    /// Unusable values: (path, variable, message).
    pub(crate) errors: Vec<(String, String, String)>,
    /// Notes for the operator: (path, message).
    pub(crate) warnings: Vec<(String, String)>,
}

/// Applies the `RAY_*` variables in `env` to the merged config JSON.
pub(crate) fn apply_env(root: &mut Value, env: &BTreeMap<String, String>) -> EnvOutcome {
    let mut outcome = EnvOutcome::default();
    let get = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
    let adapter_kind = pointer(root, "model.adapter.kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let has_operational = pointer(root, "model.operational").is_some_and(Value::is_object);
    let has_launch = pointer(root, "model.adapter.launchProfile").is_some_and(Value::is_object);

    for entry in ENV_VARS {
        let Some(raw) = get(entry.name) else {
            continue;
        };
        let applies = match entry.scope {
            EnvScope::Always => true,
            EnvScope::Operational => has_operational,
            EnvScope::HttpAdapter => adapter_kind != "mock",
            EnvScope::LlamaAdapter => adapter_kind == "llama.cpp",
            EnvScope::LaunchProfile => adapter_kind == "llama.cpp" && has_launch,
        };
        if !applies {
            // RAY_LLAMA_CPP_CACHE_PROMPT has two entries; only warn once, from the adapter one.
            if !(entry.scope == EnvScope::LaunchProfile
                && entry.name == "RAY_LLAMA_CPP_CACHE_PROMPT")
            {
                let why = match entry.scope {
                    EnvScope::Operational => "the config has no model.operational",
                    EnvScope::HttpAdapter => "the adapter is mock",
                    EnvScope::LlamaAdapter => "the adapter is not llama.cpp",
                    EnvScope::LaunchProfile if adapter_kind != "llama.cpp" => {
                        "the adapter is not llama.cpp (only llama.cpp has a launchProfile)"
                    }
                    EnvScope::LaunchProfile => "the llama.cpp adapter has no launchProfile",
                    EnvScope::Always => "",
                };
                outcome.warnings.push((
                    entry.path.to_string(),
                    format!("{} is set but ignored because {why}", entry.name),
                ));
            }
            continue;
        }
        match parse_env_value(entry.kind, raw) {
            Ok(value) => {
                set_pointer(root, entry.path, value);
                outcome
                    .set
                    .push((entry.path.to_string(), entry.name.to_string()));
            }
            Err(message) => {
                outcome
                    .errors
                    .push((entry.path.to_string(), entry.name.to_string(), message))
            }
        }
    }

    // RAY_MODEL_ID also names the backend model and the llama-server alias, unless those have
    // variables of their own.
    if let Some(model_id) = get("RAY_MODEL_ID") {
        let model_id = Value::String(model_id.trim().to_string());
        if adapter_kind != "mock"
            && get("RAY_MODEL_REF").is_none()
            && (adapter_kind != "llama.cpp" || get("RAY_LLAMA_CPP_MODEL_REF").is_none())
        {
            set_pointer(root, "model.adapter.modelRef", model_id.clone());
            outcome
                .set
                .push(("model.adapter.modelRef".into(), "RAY_MODEL_ID".into()));
        }
        if has_launch && adapter_kind == "llama.cpp" && get("RAY_LLAMA_CPP_ALIAS").is_none() {
            set_pointer(root, "model.adapter.launchProfile.alias", model_id);
            outcome.set.push((
                "model.adapter.launchProfile.alias".into(),
                "RAY_MODEL_ID".into(),
            ));
        }
    }
    // RAY_LLAMA_CPP_CTX_SIZE also sets the preferred context size.
    if has_operational
        && has_launch
        && adapter_kind == "llama.cpp"
        && let Some(raw) = get("RAY_LLAMA_CPP_CTX_SIZE")
        && let Ok(value) = parse_env_value(EnvKind::Int, raw)
    {
        set_pointer(root, "model.operational.preferredCtxSize", value);
        outcome.set.push((
            "model.operational.preferredCtxSize".into(),
            "RAY_LLAMA_CPP_CTX_SIZE".into(),
        ));
    }
    // Moving llama-server without naming a base URL moves the base URL with it.
    if has_launch
        && adapter_kind == "llama.cpp"
        && (get("RAY_LLAMA_CPP_HOST").is_some() || get("RAY_LLAMA_CPP_PORT").is_some())
        && get("RAY_MODEL_BASE_URL").is_none()
        && get("RAY_LLAMA_CPP_BASE_URL").is_none()
    {
        let host = pointer(root, "model.adapter.launchProfile.host")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1")
            .to_string();
        let port = pointer(root, "model.adapter.launchProfile.port")
            .and_then(Value::as_i64)
            .unwrap_or(8081);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        set_pointer(
            root,
            "model.adapter.baseUrl",
            Value::String(format!("http://{host}:{port}")),
        );
        outcome.set.push((
            "model.adapter.baseUrl".into(),
            "RAY_LLAMA_CPP_HOST/RAY_LLAMA_CPP_PORT".into(),
        ));
    }

    for name in env.keys() {
        let known =
            ENV_VARS.iter().any(|v| v.name == name) || OTHER_RAY_VARS.contains(&name.as_str());
        if !known && SECTION_PREFIXES.iter().any(|p| name.starts_with(p)) {
            outcome.warnings.push((
                String::new(),
                format!("{name} is not a Ray setting (misspelled?); it is ignored"),
            ));
        }
    }
    outcome
}

/// Reads the value at a dotted path.
pub(crate) fn pointer<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = root;
    for segment in path.split('.') {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// Writes the value at a dotted path, creating objects on the way.
pub(crate) fn set_pointer(root: &mut Value, path: &str, value: Value) {
    let mut current = root;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            return;
        };
        if segments.peek().is_none() {
            map.insert(segment.to_string(), value);
            return;
        }
        current = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests;
