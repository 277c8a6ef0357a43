//! Every config field can be set by a `RAY_*` variable, or is listed here with the reason it
//! cannot. The table in `config/env/table.rs` keeps the existing Ray's names, so it is kept by
//! hand; this test catches a new field that was given no variable and no reason.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ray_core::config::{ENV_VARS, json_schema};
use serde_json::Value;

/// Fields with no `RAY_*` variable, and why (a path ending in `.*` covers what is under it).
const NO_VARIABLE: &[(&str, &str)] = &[
    (
        "models",
        "a list of model objects: the several-models layout is written in the file",
    ),
    (
        "defaultModel",
        "names an entry of `models`, which only the file can hold",
    ),
    (
        "routing.*",
        "rules that name entries of `models`; routing is configured with them, in the file",
    ),
    (
        "model.aliases",
        "a list of names the router resolves; part of the models layout",
    ),
    (
        "model.fallback",
        "names entries of `models`; part of the models layout",
    ),
    ("model.role", "what a model is for in the models layout"),
    (
        "cluster.*",
        "a node's identity in a cluster (its id, address, labels, NATS URLs): one file per node",
    ),
    ("hooks", "a list of hook objects (commands and URLs)"),
    (
        "lifecycle.*",
        "the memory budget and swap timings of managed models, set together in the file",
    ),
    (
        "model.idleUnloadMs",
        "per-model lifecycle settings belong to the models layout in the file",
    ),
    (
        "model.minResidentMs",
        "per-model lifecycle settings belong to the models layout in the file",
    ),
    (
        "model.resident",
        "per-model lifecycle settings belong to the models layout in the file",
    ),
    (
        "priority.*",
        "classes and per-key ceilings and weights that belong together, written in the file",
    ),
    (
        "model.scheduler.*",
        "per-model limits under the top-level scheduler, whose variables set the whole box",
    ),
    ("model.tags", "a free-form map"),
    (
        "cluster.*",
        "a node's place in a cluster (NATS URLs, identity, labels) is written in its file, which \
         render and doctor read too; the existing Ray has no cluster and so no variables for it",
    ),
    ("tags", "a free-form map"),
    (
        "model.adapter.kind",
        "selects the adapter's shape: the fields the new kind needs come with it, from the file \
         or the profile",
    ),
    (
        "model.adapter.headers",
        "a map of header names to values, which a single variable cannot spell",
    ),
    ("model.adapter.warmupRequests", "a list of request objects"),
    (
        "model.adapter.latencyMs",
        "the mock adapter's, for tests and the tiny profile",
    ),
    (
        "model.adapter.seed",
        "the mock adapter's, for tests and the tiny profile",
    ),
    (
        "model.adapter.launchProfile.extraArgs",
        "llama-server arguments may hold commas, which a comma list would split",
    ),
    (
        "model.adapter.launchProfile.preset",
        "records which preset the launch values started from; changing it changes no value",
    ),
    (
        "model.operational.chatTemplateKnown",
        "a fact about the model file that is reported, not a setting",
    ),
    (
        "model.operational.supportsJsonMode",
        "a fact about the model file that is reported, not a setting",
    ),
    (
        "model.operational.recommendedPromptFormat",
        "chooses the prompt format of this model file; the existing Ray has no variable for it",
    ),
];

/// Follows a `$ref` into `$defs`.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            resolve(root, &root["$defs"][name])
        }
        None => schema,
    }
}

/// The settable leaves under `schema`: scalars, lists and maps end a path; objects with
/// properties and the variants of a `oneOf`/`anyOf` are walked into.
fn leaves(root: &Value, schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    let schema = resolve(root, schema);
    let mut walked = false;
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        walked = true;
        for (name, child) in properties {
            if path.is_empty() && (name == "$schema" || name == "profile") {
                continue;
            }
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            leaves(root, child, &child_path, out);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(variants) = schema.get(key).and_then(Value::as_array) {
            for variant in variants {
                let variant = resolve(root, variant);
                if variant.get("type").and_then(Value::as_str) == Some("null") {
                    continue;
                }
                let object = ["properties", "$ref", "oneOf", "anyOf"]
                    .iter()
                    .any(|key| variant.get(key).is_some());
                if object {
                    walked = true;
                    leaves(root, variant, path, out);
                }
            }
        }
    }
    if !walked && !path.is_empty() {
        out.insert(path.to_string());
    }
}

fn excused(path: &str) -> bool {
    NO_VARIABLE
        .iter()
        .any(|(listed, _)| match listed.strip_suffix(".*") {
            Some(prefix) => path == prefix || path.starts_with(&format!("{prefix}.")),
            None => path == *listed,
        })
}

#[test]
fn every_config_field_has_a_variable_or_a_listed_reason() {
    let schema = json_schema();
    let mut fields = BTreeSet::new();
    leaves(&schema, &schema, "", &mut fields);
    assert!(fields.contains("scheduler.maxQueue"), "{fields:#?}");
    let covered: BTreeSet<&str> = ENV_VARS.iter().map(|var| var.path).collect();
    let missing: Vec<&String> = fields
        .iter()
        .filter(|path| !covered.contains(path.as_str()) && !excused(path))
        .collect();
    assert!(
        missing.is_empty(),
        "config fields with no RAY_* variable and no reason in NO_VARIABLE: {missing:#?}"
    );
}

#[test]
fn every_listed_reason_names_a_field_that_exists_and_has_no_variable() {
    let schema = json_schema();
    let mut fields = BTreeSet::new();
    leaves(&schema, &schema, "", &mut fields);
    for (listed, reason) in NO_VARIABLE {
        assert!(!reason.trim().is_empty(), "{listed} needs a reason");
        let prefix = listed.strip_suffix(".*").unwrap_or(listed);
        let matching: Vec<&String> = fields
            .iter()
            .filter(|f| *f == prefix || f.starts_with(&format!("{prefix}.")))
            .collect();
        assert!(!matching.is_empty(), "{listed} names no config field");
        assert!(
            matching
                .iter()
                .any(|f| !ENV_VARS.iter().any(|v| v.path == f.as_str())),
            "{listed} is listed but every field under it has a variable"
        );
    }
}
