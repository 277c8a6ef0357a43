//! Rules of the several-models sections: `models`, `defaultModel`, `routing` and the per-model
//! fields of `model` (`aliases`, `role`, `fallback`, `scheduler`, `tags`).
//!
//! A model entry is checked by the rules of `model` ([`super::model`]), and the paths are
//! renamed (`model.adapter.baseUrl` becomes `models[1].adapter.baseUrl`).

use std::collections::{BTreeMap, BTreeSet};

use super::checker::Checker;
use super::diagnostic::Diagnostic;
use crate::config::limits::{
    Limit, MAX_MODELS, MAX_NAME_CHARS, MAX_ROUTING_RULES, MAX_RULE_WORD_CHARS, limits_of,
};
use crate::config::types::{AdapterConfig, ModelConfig, ModelRole, RayConfig, RouteKind};

pub use crate::config::reserved::AUTO_MODEL;

/// Every rule about models and routing.
pub(super) fn validate_models(c: &mut Checker, config: &RayConfig) {
    let out = &mut c.diagnostics;
    if config.models.len() > MAX_MODELS as usize {
        out.push(Diagnostic::error(
            "models",
            format!("at most {MAX_MODELS} models, got {}", config.models.len()),
        ));
    }
    // Each entry, by the rules of `model`.
    for (index, entry) in config.models.iter().enumerate() {
        let mut own = Checker {
            diagnostics: Vec::new(),
        };
        super::model::model(&mut own, entry, &config.server);
        for mut diagnostic in own.diagnostics {
            if let Some(rest) = diagnostic.path.strip_prefix("model.") {
                diagnostic.path = format!("models[{index}].{rest}");
                out.push(diagnostic);
            } else if diagnostic.path == "model" {
                diagnostic.path = format!("models[{index}]");
                out.push(diagnostic);
            }
        }
    }
    let registry: Vec<(String, &ModelConfig)> = if config.models.is_empty() {
        vec![("model".to_string(), &config.model)]
    } else {
        config
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("models[{i}]"), m))
            .collect()
    };
    // Names: ids and aliases, unique.
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    for (path, model) in &registry {
        let own = std::iter::once((format!("{path}.id"), model.id.as_str())).chain(
            model
                .aliases
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("{path}.aliases[{i}]"), a.as_str())),
        );
        for (field, name) in own {
            // The length of ids and aliases is checked by the rules of `model` (`model.id`,
            // `model.aliases[]`).
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS as usize {
                continue;
            }
            // `auto` is refused by the rules of `model` (`model.id`, `model.aliases[]`).
            if name == AUTO_MODEL {
                continue;
            }
            if let Some(first) = names.get(name) {
                out.push(Diagnostic::error(
                    &field,
                    format!(
                        "{name:?} is already the name of {first}; ids and aliases must be unique"
                    ),
                ));
            } else {
                names.insert(name, field.clone());
            }
        }
        if model.tags.len() > 64 {
            out.push(Diagnostic::error(
                format!("{path}.tags"),
                format!("at most 64 tags, got {}", model.tags.len()),
            ));
        }
        if let Some(limits) = &model.scheduler {
            let checks = [
                ("concurrency", limits.concurrency),
                ("maxQueue", limits.max_queue),
                ("maxQueuedTokens", limits.max_queued_tokens),
                ("maxInflightTokens", limits.max_inflight_tokens),
            ];
            for (field, value) in checks {
                let rule = limits_of(&format!("model.scheduler.{field}")).find_map(|l| match l {
                    Limit::Int { min, max } => Some((*min, *max)),
                    _ => None,
                });
                let field_path = format!("{path}.scheduler.{field}");
                match (value, rule) {
                    (Some(value), Some((min, max))) if !(min..=max).contains(&i64::from(value)) => {
                        out.push(Diagnostic::error(
                            field_path,
                            format!("must be between {min} and {max}, got {value}"),
                        ));
                    }
                    (_, None) => out.push(Diagnostic::error(
                        field_path,
                        "internal: no rule for this field in FIELD_LIMITS",
                    )),
                    _ => {}
                }
            }
        }
    }
    // The model a name stands for, as an index into the registry.
    let resolve = |name: &str| -> Option<usize> {
        registry
            .iter()
            .position(|(_, m)| m.id == name || m.aliases.iter().any(|a| a == name))
    };
    let known = || -> String {
        registry
            .iter()
            .map(|(_, m)| m.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(default) = &config.default_model
        && resolve(default).is_none()
    {
        out.push(Diagnostic::error(
            "defaultModel",
            format!(
                "{default:?} is not a configured model; the models are {}",
                known()
            ),
        ));
    }
    // Fallback chains: known names, not itself, no cycle.
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); registry.len()];
    for (index, (path, model)) in registry.iter().enumerate() {
        for (i, name) in model.fallback.iter().enumerate() {
            let field = format!("{path}.fallback[{i}]");
            match resolve(name) {
                None => out.push(Diagnostic::error(
                    field,
                    format!(
                        "{name:?} is not a configured model; the models are {}",
                        known()
                    ),
                )),
                Some(target) if target == index => out.push(Diagnostic::error(
                    field,
                    format!("{name:?} is this model itself"),
                )),
                Some(target) => {
                    if registry[target].1.role() == ModelRole::Embedding
                        && model.role() != ModelRole::Embedding
                    {
                        out.push(Diagnostic::error(
                            field,
                            format!(
                                "{name:?} is an embedding model and cannot take the generation \
                                 requests of {:?}",
                                model.id
                            ),
                        ));
                    }
                    edges[index].push(target);
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<&str> = cycle.iter().map(|&i| registry[i].1.id.as_str()).collect();
        out.push(Diagnostic::error(
            format!("{}.fallback", registry[cycle[0]].0),
            format!("the fallback chains form a cycle: {}", path.join(" -> ")),
        ));
    }
    // Routing rules.
    let routing = &config.routing;
    if routing.rules.len() > MAX_ROUTING_RULES as usize {
        out.push(Diagnostic::error(
            "routing.rules",
            format!(
                "at most {MAX_ROUTING_RULES} rules, got {}",
                routing.rules.len()
            ),
        ));
    }
    if !(1..=100).contains(&routing.cooldown_after_failures) {
        out.push(Diagnostic::error(
            "routing.cooldownAfterFailures",
            format!(
                "must be between 1 and 100, got {}",
                routing.cooldown_after_failures
            ),
        ));
    }
    if !(100..=600_000).contains(&routing.cooldown_ms) {
        out.push(Diagnostic::error(
            "routing.cooldownMs",
            format!(
                "must be between 100 and 600000, got {}",
                routing.cooldown_ms
            ),
        ));
    }
    let mut rule_names = BTreeSet::new();
    for (i, rule) in routing.rules.iter().enumerate() {
        let path = format!("routing.rules[{i}]");
        if let Some(name) = &rule.name {
            if name.is_empty() || name.chars().count() > MAX_RULE_WORD_CHARS as usize {
                out.push(Diagnostic::error(
                    format!("{path}.name"),
                    format!("must be 1 to {MAX_RULE_WORD_CHARS} chars"),
                ));
            } else if !rule_names.insert(name.as_str()) {
                out.push(Diagnostic::error(
                    format!("{path}.name"),
                    format!("{name:?} names another rule already"),
                ));
            }
        }
        match resolve(&rule.model) {
            None => out.push(Diagnostic::error(
                format!("{path}.model"),
                format!(
                    "{:?} is not a configured model; the models are {}",
                    rule.model,
                    known()
                ),
            )),
            Some(target) => {
                let embedding = registry[target].1.role() == ModelRole::Embedding;
                let embeddings_only = !rule.routes.is_empty()
                    && rule.routes.iter().all(|r| *r == RouteKind::Embeddings);
                if embedding && !embeddings_only {
                    out.push(Diagnostic::error(
                        format!("{path}.routes"),
                        format!(
                            "the rule sends requests to the embedding model {:?}; limit it with \
                             \"routes\": [\"embeddings\"]",
                            rule.model
                        ),
                    ));
                }
            }
        }
        if let (Some(min), Some(max)) = (rule.min_prompt_tokens, rule.max_prompt_tokens)
            && min > max
        {
            out.push(Diagnostic::error(
                format!("{path}.minPromptTokens"),
                format!("must be at most maxPromptTokens ({max}), got {min}"),
            ));
        }
        for (k, task) in rule.tasks.iter().enumerate() {
            if task.is_empty() || task.chars().count() > MAX_RULE_WORD_CHARS as usize {
                out.push(Diagnostic::error(
                    format!("{path}.tasks[{k}]"),
                    format!("must be 1 to {MAX_RULE_WORD_CHARS} chars"),
                ));
            }
        }
        for (k, key) in rule.api_keys.iter().enumerate() {
            if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(Diagnostic::error(
                    format!("{path}.apiKeys[{k}]"),
                    "must be the first 8 hex digits of the key's SHA-256 \
                     (printf %s \"$KEY\" | sha256sum | cut -c1-8)",
                ));
            }
        }
    }
    // Two managed backends cannot share a port.
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    for (path, model) in &registry {
        if let AdapterConfig::LlamaCpp(llama) = &model.adapter
            && let Some(launch) = &llama.launch_profile
        {
            if let Some(first) = ports.get(&launch.port) {
                out.push(Diagnostic::error(
                    format!("{path}.adapter.launchProfile.port"),
                    format!("port {} is already the launch port of {first}", launch.port),
                ));
            } else {
                ports.insert(launch.port, path.clone());
            }
        }
    }
}

/// A cycle in the fallback graph, as the models on it (first repeated at the end), if any.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0: unvisited, 1: on the stack, 2: done.
    fn visit(
        node: usize,
        edges: &[Vec<usize>],
        mark: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[node] = 1;
        stack.push(node);
        for &next in &edges[node] {
            if mark[next] == 1 {
                let start = stack.iter().position(|&n| n == next).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(next);
                return Some(cycle);
            }
            if mark[next] == 0
                && let Some(cycle) = visit(next, edges, mark, stack)
            {
                return Some(cycle);
            }
        }
        stack.pop();
        mark[node] = 2;
        None
    }
    let mut mark = vec![0u8; edges.len()];
    for node in 0..edges.len() {
        if mark[node] == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, edges, &mut mark, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}
