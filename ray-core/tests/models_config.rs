//! The several-models sections: entries filled from `model`, names, fallback chains, rules.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use ray_core::config::{AdapterConfig, ConfigError, ConfigLoader, ModelRole};

fn load(json: &str) -> Result<ray_core::config::LoadedConfig, ConfigError> {
    ConfigLoader::new().with_json("test", json).load()
}

fn errors(json: &str) -> Vec<(String, String)> {
    match load(json) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| (d.path, d.message))
            .collect(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn has_error(json: &str, path: &str, words: &str) {
    let errors = errors(json);
    assert!(
        errors.iter().any(|(p, m)| p == path && m.contains(words)),
        "expected an error at {path} containing {words:?}, got {errors:?}"
    );
}

const THREE: &str = r#"{
  "profile": "sub1b",
  "model": {"maxOutputTokens": 200},
  "models": [
    {"id": "qwen-1.5b", "aliases": ["drafter"], "role": "drafter",
     "adapter": {"kind": "llama.cpp", "baseUrl": "http://127.0.0.1:8081"},
     "fallback": ["qwen-0.5b"]},
    {"id": "qwen-0.5b", "aliases": ["classifier"], "role": "classifier",
     "adapter": {"kind": "llama.cpp", "baseUrl": "http://127.0.0.1:8082"},
     "scheduler": {"concurrency": 1, "maxQueue": 8}},
    {"id": "embed", "role": "embedding", "contextWindow": 512, "maxOutputTokens": 1,
     "adapter": {"kind": "openai-compatible", "baseUrl": "http://127.0.0.1:8083"}}
  ],
  "defaultModel": "drafter",
  "routing": {"rules": [
    {"name": "classify", "tasks": ["classify"], "model": "classifier"},
    {"name": "embeddings", "routes": ["embeddings"], "model": "embed"}
  ]}
}"#;

#[test]
fn entries_take_unset_fields_from_model_and_adapters_from_their_kind() {
    let config = load(THREE).unwrap().config;
    let entries = config.model_entries();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].max_output_tokens, 200, "inherited from model");
    assert_eq!(entries[0].family, config.model.family);
    assert_eq!(entries[2].context_window, 512, "set by the entry");
    assert_eq!(entries[2].role(), ModelRole::Embedding);
    match &entries[1].adapter {
        AdapterConfig::LlamaCpp(llama) => {
            assert_eq!(llama.base_url, "http://127.0.0.1:8082");
            assert_eq!(llama.model_ref, "qwen-0.5b", "modelRef defaults to the id");
            assert!(llama.launch_profile.is_none(), "never inherited");
        }
        other => panic!("expected llama.cpp, got {other:?}"),
    }
    match &entries[2].adapter {
        AdapterConfig::OpenAiCompatible(openai) => {
            assert_eq!(openai.model_ref, "embed");
        }
        other => panic!("expected openai-compatible, got {other:?}"),
    }
    assert_eq!(config.default_model_id(), "qwen-1.5b");
}

#[test]
fn a_single_model_config_is_a_one_entry_registry() {
    let config = load(r#"{"profile":"tiny"}"#).unwrap().config;
    assert_eq!(config.model_entries().len(), 1);
    assert_eq!(config.default_model_id(), config.model.id);
}

#[test]
fn duplicate_names_are_refused() {
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a","aliases":["x"]},{"id":"b","aliases":["x"]}]}"#,
        "models[1].aliases[0]",
        "already the name of models[0].aliases[0]",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a"},{"id":"a"}]}"#,
        "models[1].id",
        "already the name",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"auto"}]}"#,
        "models[0].id",
        "reserved",
    );
}

#[test]
fn unknown_names_in_rules_defaults_and_fallbacks_are_refused() {
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a"}],"routing":{"rules":[{"model":"nope"}]}}"#,
        "routing.rules[0].model",
        "not a configured model; the models are a",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a"}],"defaultModel":"nope"}"#,
        "defaultModel",
        "not a configured model",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a","fallback":["nope"]}]}"#,
        "models[0].fallback[0]",
        "not a configured model",
    );
    has_error(
        r#"{"profile":"tiny","model":{"fallback":["nope"]}}"#,
        "model.fallback[0]",
        "not a configured model",
    );
}

#[test]
fn fallback_cycles_are_refused() {
    has_error(
        r#"{"profile":"tiny","models":[
            {"id":"a","fallback":["b"]},{"id":"b","fallback":["c"]},{"id":"c","fallback":["a"]}]}"#,
        "models[0].fallback",
        "cycle: a -> b -> c -> a",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a","fallback":["a"]}]}"#,
        "models[0].fallback[0]",
        "this model itself",
    );
}

#[test]
fn entries_are_checked_by_the_rules_of_model() {
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a","maxOutputTokens":5000}]}"#,
        "models[0].maxOutputTokens",
        "2048",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a","scheduler":{"concurrency":0}}]}"#,
        "models[0].scheduler.concurrency",
        "between 1 and 8",
    );
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a","adapter":{"kind":"llama.cpp","baseUrl":"htp//x"}}]}"#,
        "models[0].adapter.baseUrl",
        "",
    );
}

#[test]
fn rules_to_embedding_models_must_be_limited_to_embeddings() {
    has_error(
        r#"{"profile":"tiny","models":[{"id":"a"},{"id":"e","role":"embedding"}],
            "routing":{"rules":[{"model":"e"}]}}"#,
        "routing.rules[0].routes",
        "embedding model",
    );
}
