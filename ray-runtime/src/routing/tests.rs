//! Routing rules, by example and by property.

use std::sync::Arc;

use proptest::prelude::*;
use ray_core::ErrorCode;
use ray_core::config::{ConfigLoader, RayConfig, ValidConfig};

use super::*;
use crate::registry::{ModelEntry, Registry};

fn config(json: &str) -> ValidConfig {
    ConfigLoader::new()
        .with_json("test", json)
        .load()
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

fn registry(config: &RayConfig) -> Registry {
    let entries = config
        .model_entries()
        .iter()
        .map(|m| {
            let provider = ray_models::provider_for_model(config, m).unwrap();
            Arc::new(ModelEntry::new(config, m, provider))
        })
        .collect();
    Registry::new(entries, config.default_model_id())
}

const THREE: &str = r#"{
  "profile": "tiny",
  "models": [
    {"id": "drafter-1.5b", "aliases": ["drafter"], "role": "drafter", "contextWindow": 4096},
    {"id": "classifier-0.5b", "aliases": ["classifier"], "role": "classifier", "contextWindow": 512},
    {"id": "embedder", "role": "embedding", "contextWindow": 512, "maxOutputTokens": 1}
  ],
  "defaultModel": "drafter",
  "routing": {"rules": [
    {"name": "classify", "tasks": ["classify"], "model": "classifier"},
    {"name": "short-json", "json": true, "maxPromptTokens": 200, "fitsContext": true, "model": "classifier"},
    {"name": "keyed", "apiKeys": ["deadbeef"], "routes": ["chat"], "model": "classifier-0.5b"},
    {"name": "embed", "routes": ["embeddings"], "model": "embedder"}
  ]}
}"#;

fn pick(
    config: &RayConfig,
    registry: &Registry,
    facts: RouteFacts,
) -> Result<(String, String), RayError> {
    choose(&config.routing.rules, registry, &facts)
        .map(|c| (registry.at(c.model).id.clone(), c.chosen_by.into_owned()))
}

#[test]
fn names_rules_and_the_default() {
    let config = config(THREE);
    let registry = registry(&config);
    let facts = RouteFacts {
        route: Some(RouteKind::Infer),
        prompt_tokens: 10,
        max_tokens: 64,
        ..RouteFacts::default()
    };
    // A name (id or alias) wins over every rule.
    let named = RouteFacts {
        model: Some("classifier".into()),
        task: Some("anything".into()),
        ..facts.clone()
    };
    assert_eq!(
        pick(&config, &registry, named).unwrap(),
        ("classifier-0.5b".into(), "request".into())
    );
    // No name: the first matching rule, case-insensitive on tasks.
    let task = RouteFacts {
        task: Some("Classify".into()),
        ..facts.clone()
    };
    assert_eq!(
        pick(&config, &registry, task).unwrap(),
        ("classifier-0.5b".into(), "rule:classify".into())
    );
    // `auto` counts as no name.
    let auto = RouteFacts {
        model: Some("auto".into()),
        task: Some("classify".into()),
        ..facts.clone()
    };
    assert_eq!(pick(&config, &registry, auto).unwrap().1, "rule:classify");
    // JSON with a short prompt that fits the classifier's 512 tokens.
    let json = RouteFacts {
        json: true,
        ..facts.clone()
    };
    assert_eq!(pick(&config, &registry, json).unwrap().1, "rule:short-json");
    // The same with a prompt too long for the classifier's context falls to the default.
    let long = RouteFacts {
        json: true,
        prompt_tokens: 190,
        max_tokens: 400,
        ..facts.clone()
    };
    assert_eq!(
        pick(&config, &registry, long).unwrap(),
        ("drafter-1.5b".into(), "default".into())
    );
    // The key rule holds only on chat, only for that key.
    let keyed = RouteFacts {
        route: Some(RouteKind::Chat),
        api_key_id: Some("DEADBEEF".into()),
        ..facts.clone()
    };
    assert_eq!(pick(&config, &registry, keyed).unwrap().1, "rule:keyed");
    let other_key = RouteFacts {
        route: Some(RouteKind::Chat),
        api_key_id: Some("00000000".into()),
        ..facts.clone()
    };
    assert_eq!(pick(&config, &registry, other_key).unwrap().1, "default");
    // Embeddings go to the embedding model, never to a generation rule.
    let embeddings = RouteFacts {
        route: Some(RouteKind::Embeddings),
        task: Some("classify".into()),
        ..facts.clone()
    };
    assert_eq!(
        pick(&config, &registry, embeddings).unwrap(),
        ("embedder".into(), "rule:embed".into())
    );
}

#[test]
fn an_unknown_name_lists_the_names_that_exist() {
    let config = config(THREE);
    let registry = registry(&config);
    let error = pick(
        &config,
        &registry,
        RouteFacts {
            model: Some("gpt-4".into()),
            ..RouteFacts::default()
        },
    )
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ModelNotFound);
    assert_eq!(error.status(), 404);
    for name in [
        "drafter-1.5b",
        "drafter",
        "classifier-0.5b",
        "classifier",
        "embedder",
    ] {
        assert!(error.message().contains(name), "{}", error.message());
    }
}

#[test]
fn fallback_chains_visit_each_model_once() {
    let config = config(
        r#"{"profile":"tiny","models":[
            {"id":"a","fallback":["b","c"]},{"id":"b","fallback":["c","d"]},{"id":"c"},{"id":"d"}]}"#,
    );
    let registry = registry(&config);
    let ids = |chain: Vec<usize>| -> Vec<String> {
        chain
            .into_iter()
            .map(|i| registry.at(i).id.clone())
            .collect()
    };
    assert_eq!(ids(registry.fallback_chain(0)), ["a", "b", "c", "d"]);
    assert_eq!(ids(registry.fallback_chain(2)), ["c"]);
}

fn arbitrary_facts(names: Vec<String>) -> impl Strategy<Value = RouteFacts> {
    let name = prop::option::of(prop::sample::select(
        names
            .into_iter()
            .chain(["auto".to_string(), "unknown".to_string()])
            .collect::<Vec<_>>(),
    ));
    (
        name,
        prop::option::of(prop::sample::select(vec!["classify", "draft", "CLASSIFY"])),
        prop::option::of(prop::sample::select(vec![
            RouteKind::Infer,
            RouteKind::Chat,
            RouteKind::Completions,
            RouteKind::Embeddings,
        ])),
        0u32..5_000,
        1u32..2_048,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["deadbeef", "00000000"])),
    )
        .prop_map(
            |(model, task, route, prompt_tokens, max_tokens, tools, json, key)| RouteFacts {
                route,
                model,
                task: task.map(String::from),
                suggested_role: None,
                prompt_tokens,
                max_tokens,
                tools,
                json,
                api_key_id: key.map(String::from),
            },
        )
}

proptest! {
    #![proptest_config(crate::fuzz_config(256))]

    /// Every request resolves to exactly one configured model, or to `model_not_found` for a
    /// name that does not exist; a named model is always the one served.
    #[test]
    fn every_request_resolves_to_one_model_or_a_clear_error(
        facts in arbitrary_facts(vec![
            "drafter-1.5b".into(), "drafter".into(), "classifier-0.5b".into(),
            "classifier".into(), "embedder".into(),
        ]),
    ) {
        let config = config(THREE);
        let registry = registry(&config);
        match choose(&config.routing.rules, &registry, &facts) {
            Ok(choice) => {
                prop_assert!(choice.model < registry.entries().len());
                let entry = registry.at(choice.model);
                match facts.model.as_deref().filter(|m| *m != "auto") {
                    Some(name) => {
                        prop_assert!(entry.id == name || entry.config.aliases.iter().any(|a| a == name));
                        prop_assert_eq!(choice.chosen_by, "request");
                    }
                    None => {
                        let embeddings = facts.route == Some(RouteKind::Embeddings);
                        prop_assert_eq!(
                            entry.config.role() == ModelRole::Embedding,
                            embeddings,
                            "embedding requests go only to embedding models"
                        );
                    }
                }
            }
            Err(error) => {
                prop_assert_eq!(error.code(), ErrorCode::ModelNotFound);
                prop_assert_eq!(facts.model.as_deref(), Some("unknown"));
            }
        }
    }

    /// A config with only `model` and the same model written as a one-entry `models` route
    /// every request the same way.
    #[test]
    fn model_and_a_one_entry_models_route_alike(
        facts in arbitrary_facts(vec!["m".into(), "alias".into()]),
    ) {
        let single = config(r#"{"profile":"tiny","model":{"id":"m","aliases":["alias"]}}"#);
        let listed = config(r#"{"profile":"tiny","models":[{"id":"m","aliases":["alias"]}]}"#);
        let a = choose(&single.routing.rules, &registry(&single), &facts);
        let b = choose(&listed.routing.rules, &registry(&listed), &facts);
        match (a, b) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.code(), b.code());
                prop_assert_eq!(a.message(), b.message());
            }
            (a, b) => prop_assert!(false, "differ: {:?} vs {:?}", a, b),
        }
    }
}
