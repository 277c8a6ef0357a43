//! `docs/configuration.md` is generated from the JSON Schema, the profile defaults and the
//! environment table; this test regenerates it and fails on drift.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ray_core::config::{ENV_VARS, Profile, json_schema, profile_defaults};
use serde_json::Value;

const INTRO: &str = include_str!("config_docs_intro.md");

/// The sections, in the order the page lists them: (title, JSON path prefix, `$defs` name).
const SECTIONS: &[(&str, &str, &str)] = &[
    ("Top level", "", "RayConfig"),
    ("server", "server", "ServerConfig"),
    ("model", "model", "ModelConfig"),
    ("model.operational", "model.operational", "ModelOperational"),
    (
        "model.adapter (kind: mock)",
        "model.adapter",
        "AdapterConfig:mock",
    ),
    (
        "model.adapter (kind: openai-compatible)",
        "model.adapter",
        "AdapterConfig:openai-compatible",
    ),
    (
        "model.adapter (kind: llama.cpp)",
        "model.adapter",
        "AdapterConfig:llama.cpp",
    ),
    (
        "model.adapter.launchProfile",
        "model.adapter.launchProfile",
        "LaunchProfile",
    ),
    (
        "model.adapter.warmupRequests[]",
        "model.adapter.warmupRequests[]",
        "WarmupRequest",
    ),
    ("scheduler", "scheduler", "SchedulerConfig"),
    ("streaming", "streaming", "StreamingConfig"),
    ("asyncQueue", "asyncQueue", "AsyncQueueConfig"),
    ("cache", "cache", "CacheConfig"),
    ("telemetry", "telemetry", "TelemetryConfig"),
    (
        "gracefulDegradation",
        "gracefulDegradation",
        "GracefulDegradationConfig",
    ),
    ("promptCompiler", "promptCompiler", "PromptCompilerConfig"),
    ("adaptiveTuning", "adaptiveTuning", "AdaptiveTuningConfig"),
    ("auth", "auth", "AuthConfig"),
    ("rateLimit", "rateLimit", "RateLimitConfig"),
];

fn pointer<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(value, |v, key| v.get(key))
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "`\"\"`".into(),
        Value::String(s) => format!("`{s}`"),
        Value::Array(items) if items.is_empty() => "`[]`".into(),
        Value::Object(map) if map.is_empty() => "`{}`".into(),
        other => format!("`{other}`"),
    }
}

/// The description without its trailing "Env: ..." sentence (the table has a column for it).
fn meaning(description: &str) -> String {
    let text = description.replace('\n', " ");
    let text = match text.find(" Env: ") {
        Some(index) => text[..index].to_string(),
        None => text,
    };
    text.replace('|', "\\|")
}

fn defaults_cell(path: &str, kind: Option<&str>) -> String {
    let mut cells: Vec<(Profile, Option<Value>)> = Vec::new();
    for profile in Profile::ALL {
        let config = serde_json::to_value(profile_defaults(profile)).unwrap();
        if let Some(kind) = kind
            && pointer(&config, "model.adapter.kind").and_then(Value::as_str) != Some(kind)
        {
            continue;
        }
        cells.push((profile, pointer(&config, path).cloned()));
    }
    let present: Vec<&(Profile, Option<Value>)> =
        cells.iter().filter(|(_, v)| v.is_some()).collect();
    if present.is_empty() {
        return "none".into();
    }
    let first = &present[0].1;
    if present.len() == cells.len() && present.iter().all(|(_, v)| v == first) {
        return render(first.as_ref().unwrap());
    }
    present
        .iter()
        .map(|(p, v)| format!("{p}: {}", render(v.as_ref().unwrap())))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn generate() -> String {
    let schema = json_schema();
    let defs = &schema["$defs"];
    let mut out = String::from(INTRO);
    for (title, prefix, definition) in SECTIONS {
        let def = if *definition == "RayConfig" {
            &schema
        } else if let Some(kind) = definition.strip_prefix("AdapterConfig:") {
            defs["AdapterConfig"]["oneOf"]
                .as_array()
                .expect("adapter variants")
                .iter()
                .find(|v| v["properties"]["kind"]["const"] == kind)
                .expect("adapter kind")
        } else {
            &defs[*definition]
        };
        let kind = if title.contains("kind: mock") {
            Some("mock")
        } else if title.contains("openai-compatible") {
            Some("openai-compatible")
        } else if title.contains("kind: llama.cpp") || prefix.contains("launchProfile") {
            Some("llama.cpp")
        } else {
            None
        };
        out.push_str(&format!("\n## `{title}`\n\n"));
        if let Some(description) = def["description"].as_str() {
            out.push_str(&meaning(description));
            out.push_str("\n\n");
        }
        out.push_str("| Field | Meaning | Environment | Default by profile |\n");
        out.push_str("|---|---|---|---|\n");
        let properties = def["properties"].as_object().expect(definition);
        for (field, property) in properties {
            if *definition == "RayConfig" && property.get("$ref").is_some() {
                continue;
            }
            if field == "kind" {
                out.push_str(&format!(
                    "| `kind` | Selects this adapter. | file only | `{}` |\n",
                    property["const"].as_str().unwrap_or("")
                ));
                continue;
            }
            let path = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            let env: Vec<String> = ENV_VARS
                .iter()
                .filter(|v| v.path == path)
                .map(|v| format!("`{}`", v.name))
                .collect();
            let extra_env = match path.as_str() {
                "profile" => vec!["`RAY_PROFILE` (only when the file names none)".to_string()],
                _ => Vec::new(),
            };
            let env = env.into_iter().chain(extra_env).collect::<Vec<_>>();
            let description = property["description"].as_str().unwrap_or("");
            let default = if prefix.ends_with("[]") || path == "$schema" {
                "none".to_string()
            } else {
                defaults_cell(&path, kind)
            };
            out.push_str(&format!(
                "| `{field}` | {} | {} | {} |\n",
                meaning(description),
                if env.is_empty() {
                    "file only".into()
                } else {
                    env.join(", ")
                },
                default
            ));
        }
    }
    out
}

#[test]
fn configuration_reference_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let generated = generate();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != generated {
        std::fs::write(&path, &generated).unwrap();
        panic!(
            "docs/configuration.md was out of date and has been regenerated; review and commit it"
        );
    }
}
