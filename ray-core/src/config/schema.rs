//! The JSON Schema of a config file: generated from the config types, with the rules of
//! [`FIELD_LIMITS`](super::FIELD_LIMITS) and the few the loader applies because of layering.
//!
//! A file is merged over its profile's defaults, so a field is required only where nothing
//! lies under it (an entry of a list, a section no profile sets), an adapter without `kind`
//! takes the profile's kind (in an entry of `models`: that of `model.adapter`), and `null` is
//! refused where the profile has an object.

use serde_json::{Map, Value, json};

use super::hooks::{HOOK_EVENTS, MAX_HOOK_ARG_CHARS, MAX_HOOK_ARGS, MAX_HOOKS};
use super::limits;
use super::profiles::profile_defaults;
use super::types::{Profile, RayConfig};

/// The JSON Schema of a config file (draft 2020-12).
pub(super) fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(RayConfig).to_value();
    let defaults: Vec<(Profile, Value)> = Profile::ALL
        .into_iter()
        .map(|p| {
            (
                p,
                serde_json::to_value(profile_defaults(p)).unwrap_or(Value::Null),
            )
        })
        .collect();
    for (_, value) in &defaults {
        relax_required(&mut schema, "", value);
    }
    adapter_kind_optional(&mut schema);
    models_entry_rules(&mut schema);
    limits::apply_to_schema(&mut schema);
    hook_rules(&mut schema);
    profile_rules(&mut schema, &defaults);
    if let Value::Object(map) = &mut schema {
        map.insert(
            "description".into(),
            Value::String(
                "Configuration of a Ray inference gateway. Fields left out come from the \
                 selected profile; see docs/configuration.md."
                    .into(),
            ),
        );
    }
    schema
}

/// The object schemas (JSON pointers) that describe the value at `at`: through `$ref` and
/// every branch of `anyOf`/`oneOf`/`allOf`.
fn object_schemas(root: &Value, at: &str, out: &mut Vec<String>) {
    let Some(node) = root.pointer(at) else {
        return;
    };
    if let Some(name) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        object_schemas(root, &format!("/$defs/{name}"), out);
        return;
    }
    let mut branched = false;
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(variants) = node.get(combinator).and_then(Value::as_array) {
            branched = true;
            for index in 0..variants.len() {
                object_schemas(root, &format!("{at}/{combinator}/{index}"), out);
            }
        }
    }
    if !branched && node.get("properties").is_some() {
        out.push(at.to_string());
    }
}

/// Drops `required` from the schema at `at` and below wherever `default` (a profile's value
/// there) is an object: the file is merged over it, so every field may be left out. Lists and
/// sections no profile sets keep theirs, as the loader has nothing to fill them from.
fn relax_required(schema: &mut Value, at: &str, default: &Value) {
    let Value::Object(fields) = default else {
        return;
    };
    let mut nodes = Vec::new();
    object_schemas(schema, at, &mut nodes);
    for node in nodes {
        if let Some(Value::Object(map)) = schema.pointer_mut(&node) {
            map.remove("required");
        }
        for (key, value) in fields {
            let child = format!("{node}/properties/{key}");
            if schema.pointer(&child).is_some() {
                relax_required(schema, &child, value);
            }
        }
    }
}

/// The adapter's `kind` may be left out (the profile's adapter kind applies): `anyOf` instead
/// of `oneOf`, so a partial adapter matching more than one kind stays valid. Each kind still
/// refuses fields it does not have.
fn adapter_kind_optional(schema: &mut Value) {
    if let Some(Value::Object(adapter)) = schema.pointer_mut("/$defs/AdapterConfig")
        && let Some(variants) = adapter.remove("oneOf")
    {
        adapter.insert("anyOf".into(), variants);
    }
}

/// An entry of `models` takes its unset fields from `model`, but never `id`: the loader
/// requires it, so the schema does (on the list's items, as `model` shares their definition).
fn models_entry_rules(schema: &mut Value) {
    if let Some(Value::Object(items)) = schema.pointer_mut("/properties/models/items") {
        items.insert("required".into(), json!(["id"]));
    }
}

/// Whether the file sets `model.adapter.kind`.
fn sets_model_adapter_kind() -> Value {
    json!({
        "required": ["model"],
        "properties": {
            "model": {
                "required": ["adapter"],
                "properties": { "adapter": { "required": ["kind"] } },
            },
        },
    })
}

/// An adapter of an entry of `models` without `kind` has the fields of the adapter kind at
/// `branch` (a pointer to one branch of `AdapterConfig`).
fn models_adapter_kind(branch: &str) -> Value {
    json!({
        "properties": {
            "models": {
                "items": {
                    "properties": {
                        "adapter": {
                            "if": { "not": { "required": ["kind"] } },
                            "then": { "$ref": branch },
                        },
                    },
                },
            },
        },
    })
}

/// `hooks`: exactly one of `command` (naming a program by absolute path) or `url`, and known
/// event names.
fn hook_rules(schema: &mut Value) {
    let events: Vec<&str> = HOOK_EVENTS.iter().map(|(name, _)| *name).collect();
    if let Some(Value::Object(hooks)) = schema.pointer_mut("/properties/hooks") {
        hooks.insert("maxItems".into(), json!(MAX_HOOKS));
    }
    let Some(Value::Object(hook)) = schema.pointer_mut("/$defs/HookConfig") else {
        return;
    };
    hook.insert(
        "oneOf".into(),
        json!([
            { "required": ["command"], "properties": { "command": { "type": "array" } } },
            { "required": ["url"], "properties": { "url": { "type": "string" } } },
        ]),
    );
    if let Some(Value::Object(properties)) = hook.get_mut("properties") {
        if let Some(Value::Object(items)) = properties
            .get_mut("events")
            .and_then(|e| e.get_mut("items"))
        {
            items.insert("enum".into(), json!(events));
        }
        if let Some(Value::Object(command)) = properties.get_mut("command") {
            command.insert("minItems".into(), json!(1));
            command.insert("maxItems".into(), json!(MAX_HOOK_ARGS));
            command.insert("prefixItems".into(), json!([{ "pattern": "^/" }]));
            command.insert(
                "items".into(),
                json!({
                    "type": "string",
                    "maxLength": MAX_HOOK_ARG_CHARS,
                    "pattern": "^[^\\x00]*$",
                }),
            );
        }
    }
}

/// Rules that depend on the profile (the file's `profile`; without one, the default profile):
/// an adapter without `kind` has the fields of the profile's adapter kind, and `null` is
/// refused where the profile's default is an object. An adapter of an entry of `models`
/// without `kind` has the kind of `model.adapter`: the file's when it sets one, else the
/// profile's.
fn profile_rules(schema: &mut Value, defaults: &[(Profile, Value)]) {
    let kinds: Vec<(String, String)> = schema
        .pointer("/$defs/AdapterConfig/anyOf")
        .and_then(Value::as_array)
        .map(|variants| {
            variants
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let kind = v.pointer("/properties/kind/const")?.as_str()?;
                    Some((kind.to_string(), format!("#/$defs/AdapterConfig/anyOf/{i}")))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rules = Vec::new();
    for (kind, branch) in &kinds {
        let mut condition = sets_model_adapter_kind();
        condition["properties"]["model"]["properties"]["adapter"]["properties"] =
            json!({ "kind": { "const": kind } });
        rules.push(json!({ "if": condition, "then": models_adapter_kind(branch) }));
    }
    for (profile, default) in defaults {
        let mut then = not_null_objects(schema, "", default).unwrap_or_else(|| json!({}));
        let kind = default
            .pointer("/model/adapter/kind")
            .and_then(Value::as_str);
        if let Some((_, branch)) = kinds.iter().find(|(k, _)| Some(k.as_str()) == kind) {
            let adapter = &mut then["properties"]["model"]["properties"]["adapter"];
            if !adapter.is_object() {
                *adapter = json!({});
            }
            adapter["if"] = json!({ "not": { "required": ["kind"] } });
            adapter["then"] = json!({ "$ref": branch });
            then["if"] = sets_model_adapter_kind();
            then["else"] = models_adapter_kind(branch);
        }
        let mut condition = json!({ "properties": { "profile": { "const": profile.as_str() } } });
        if *profile != Profile::DEFAULT {
            condition["required"] = json!(["profile"]);
        }
        rules.push(json!({ "if": condition, "then": then }));
    }
    if let Value::Object(map) = schema {
        map.insert("allOf".into(), Value::Array(rules));
    }
}

/// A schema refusing `null` at every field below `at` whose value in `default` is an object
/// and whose schema allows `null`; `None` when there is none.
fn not_null_objects(schema: &Value, at: &str, default: &Value) -> Option<Value> {
    let Value::Object(fields) = default else {
        return None;
    };
    let mut nodes = Vec::new();
    object_schemas(schema, at, &mut nodes);
    let mut properties = Map::new();
    for (key, value) in fields {
        if !value.is_object() {
            continue;
        }
        for node in &nodes {
            let child = format!("{node}/properties/{key}");
            let Some(child_schema) = schema.pointer(&child) else {
                continue;
            };
            let mut rule = not_null_objects(schema, &child, value).unwrap_or_else(|| json!({}));
            if allows_null(schema, child_schema) {
                rule["not"] = json!({ "type": "null" });
            }
            if rule.as_object().is_some_and(|m| !m.is_empty()) {
                properties.insert(key.clone(), rule);
            }
        }
    }
    (!properties.is_empty()).then(|| json!({ "properties": properties }))
}

fn allows_null(root: &Value, node: &Value) -> bool {
    if let Some(name) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        return root
            .pointer(&format!("/$defs/{name}"))
            .is_some_and(|def| allows_null(root, def));
    }
    match node.get("type") {
        Some(Value::String(t)) if t == "null" => return true,
        Some(Value::Array(types)) if types.iter().any(|t| t == "null") => return true,
        _ => {}
    }
    ["anyOf", "oneOf"].iter().any(|c| {
        node.get(*c)
            .and_then(Value::as_array)
            .is_some_and(|variants| variants.iter().any(|v| allows_null(root, v)))
    })
}
