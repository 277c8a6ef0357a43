//! The several-models sections in plain words, for `check-config` and `print-config`.

use super::types::{ModelRole, RayConfig, RouteKind, RoutingRule};

/// Sentences saying which model serves which requests: the models and their roles, each
/// routing rule, the default, the fallback chains and the cooldown. For a one-model config
/// without rules, one sentence.
///
/// ```
/// use ray_core::config::{ConfigLoader, explain_models};
///
/// let config = ConfigLoader::new()
///     .with_json("x", r#"{"profile":"tiny","models":[{"id":"big","fallback":["small"]},{"id":"small"}],
///         "routing":{"rules":[{"tasks":["classify"],"model":"small"}]}}"#)
///     .load()
///     .unwrap()
///     .config;
/// let text = explain_models(&config).join("\n");
/// assert!(text.contains("Requests with task classify go to small"));
/// assert!(text.contains("The rest go to big"));
/// assert!(text.contains("If big is down, its requests fall back to small"));
/// ```
pub fn explain_models(config: &RayConfig) -> Vec<String> {
    let entries = config.model_entries();
    let default = config.default_model_id();
    let mut out = Vec::new();
    if entries.len() == 1 && config.routing.rules.is_empty() {
        let model = &entries[0];
        out.push(format!(
            "Every request goes to {} ({} backend{}).",
            model.id,
            model.adapter.kind(),
            aliases(&model.aliases)
        ));
    } else {
        let list: Vec<String> = entries
            .iter()
            .map(|m| {
                format!(
                    "{} ({}, {} backend{})",
                    m.id,
                    m.role().as_str(),
                    m.adapter.kind(),
                    aliases(&m.aliases)
                )
            })
            .collect();
        out.push(format!("{} models: {}.", entries.len(), list.join("; ")));
        out.push(
            "A request naming a model (id or alias) goes to it; one naming none, or \"auto\", \
             goes to the first matching rule below, else to the default."
                .to_string(),
        );
        for rule in &config.routing.rules {
            out.push(format!(
                "{} go to {}.",
                conditions(rule),
                target(config, &rule.model)
            ));
        }
        out.push(format!("The rest go to {default}."));
    }
    for model in entries {
        if !model.fallback.is_empty() {
            let chain: Vec<&str> = model
                .fallback
                .iter()
                .map(|name| target(config, name))
                .collect();
            out.push(format!(
                "If {} is down, its requests fall back to {}, each tried once within the \
                 request's deadline.",
                model.id,
                chain.join(", then ")
            ));
        }
    }
    out.push(format!(
        "A model whose backend fails {} times in a row is in cooldown for {} ms: its requests go \
         to its fallback at once, or are refused with 503 provider_unavailable.",
        config.routing.cooldown_after_failures, config.routing.cooldown_ms
    ));
    if entries.iter().any(|m| m.role() == ModelRole::Embedding) {
        let embedders: Vec<&str> = entries
            .iter()
            .filter(|m| m.role() == ModelRole::Embedding)
            .map(|m| m.id.as_str())
            .collect();
        out.push(format!(
            "/v1/embeddings is served by {}; generation requests never go there.",
            embedders.join(", ")
        ));
    }
    out
}

fn aliases(aliases: &[String]) -> String {
    if aliases.is_empty() {
        String::new()
    } else {
        format!(", also called {}", aliases.join(", "))
    }
}

/// The id a name (id or alias) stands for, or the name itself.
fn target<'a>(config: &'a RayConfig, name: &'a str) -> &'a str {
    config.find_model(name).map_or(name, |m| m.id.as_str())
}

fn conditions(rule: &RoutingRule) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !rule.tasks.is_empty() {
        parts.push(format!("with task {}", rule.tasks.join(" or ")));
    }
    if !rule.routes.is_empty() {
        let routes: Vec<&str> = rule.routes.iter().map(|r: &RouteKind| r.as_str()).collect();
        parts.push(format!("on the {} route", routes.join(" or ")));
    }
    if let Some(role) = rule.model_role {
        parts.push(format!("whose prompt suggests a {} model", role.as_str()));
    }
    if let Some(min) = rule.min_prompt_tokens {
        parts.push(format!("with at least {min} prompt tokens"));
    }
    if let Some(max) = rule.max_prompt_tokens {
        parts.push(format!("with at most {max} prompt tokens"));
    }
    if rule.fits_context == Some(true) {
        parts.push("that fit the model's context window".to_string());
    }
    match rule.tools {
        Some(true) => parts.push("asking for tools".to_string()),
        Some(false) => parts.push("not asking for tools".to_string()),
        None => {}
    }
    match rule.json {
        Some(true) => parts.push("asking for JSON".to_string()),
        Some(false) => parts.push("not asking for JSON".to_string()),
        None => {}
    }
    if !rule.api_keys.is_empty() {
        parts.push(format!("from the API keys {}", rule.api_keys.join(", ")));
    }
    let name = rule
        .name
        .as_deref()
        .map(|n| format!(" (rule {n})"))
        .unwrap_or_default();
    if parts.is_empty() {
        format!("All remaining requests{name}")
    } else {
        format!("Requests {}{name}", parts.join(", "))
    }
}
