//! Routing: which model serves a request. A small pure function of the request's facts, the
//! config's rules and the registry's names, testable without I/O.
//!
//! - A request naming a model (id or alias) goes to it; an unknown name is `model_not_found`.
//! - A request naming no model, or the virtual model `auto`, goes to the model of the first
//!   rule of `routing.rules` whose conditions all hold, else to `defaultModel`.
//! - Embedding requests only go to models with the `embedding` role, generation requests only
//!   to the others.

use std::borrow::Cow;

use ray_core::RayError;
use ray_core::config::{AUTO_MODEL, ModelRole, RouteKind, RoutingRule};

use crate::registry::Registry;

/// What routing looks at, computed once per request before any backend is asked.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteFacts {
    /// The route the request arrived on (`infer` for `/v1/infer` and jobs).
    pub(crate) route: Option<RouteKind>,
    /// The model the request names, if any (`auto` counts as none).
    pub(crate) model: Option<String>,
    /// The request's task (`task` field or `X-Ray-Task` header).
    pub(crate) task: Option<String>,
    /// The model role the prompt suggests (see [`ray_core::config::RoutingRule::model_role`]).
    pub(crate) suggested_role: Option<ModelRole>,
    /// Estimated prompt tokens (4 chars a token).
    pub(crate) prompt_tokens: u32,
    /// Output tokens the request asks for (or the default).
    pub(crate) max_tokens: u32,
    /// Whether the request asks for tools.
    pub(crate) tools: bool,
    /// Whether the request asks for JSON output.
    pub(crate) json: bool,
    /// The first 8 hex digits of the SHA-256 of the API key it authenticated with.
    pub(crate) api_key_id: Option<String>,
}

/// The model routing chose and what chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Index into the registry.
    pub(crate) model: usize,
    /// `request`, `rule:NAME` or `default`.
    pub(crate) chosen_by: Cow<'static, str>,
}

/// Chooses the model for a request.
pub(crate) fn choose(
    rules: &[RoutingRule],
    registry: &Registry,
    facts: &RouteFacts,
) -> Result<Choice, RayError> {
    let embeddings = facts.route == Some(RouteKind::Embeddings);
    if let Some(name) = facts.model.as_deref().filter(|n| *n != AUTO_MODEL) {
        let model = registry
            .index_of(name)
            .ok_or_else(|| registry.not_found(name))?;
        return Ok(Choice {
            model,
            chosen_by: "request".into(),
        });
    }
    for (index, rule) in rules.iter().enumerate() {
        let Some(model) = registry.index_of(&rule.model) else {
            continue;
        };
        let entry = registry.at(model);
        let is_embedding = entry.config.role() == ModelRole::Embedding;
        if is_embedding != embeddings {
            continue;
        }
        if matches(rule, facts, entry.context_window()) {
            return Ok(Choice {
                model,
                chosen_by: Cow::Owned(format!(
                    "rule:{}",
                    rule.name
                        .clone()
                        .unwrap_or_else(|| format!("rules[{index}]"))
                )),
            });
        }
    }
    let default = registry.default_index();
    if embeddings && registry.at(default).config.role() != ModelRole::Embedding {
        // The default is a generation model: the first embedding model serves instead.
        if let Some(model) = registry
            .entries()
            .iter()
            .position(|e| e.config.role() == ModelRole::Embedding)
        {
            return Ok(Choice {
                model,
                chosen_by: "role:embedding".into(),
            });
        }
    }
    Ok(Choice {
        model: default,
        chosen_by: "default".into(),
    })
}

/// Whether every condition `rule` sets holds for `facts`; `context_window` is the target
/// model's.
pub(crate) fn matches(rule: &RoutingRule, facts: &RouteFacts, context_window: u32) -> bool {
    if !rule.routes.is_empty() && !facts.route.is_some_and(|r| rule.routes.contains(&r)) {
        return false;
    }
    if !rule.tasks.is_empty()
        && !facts
            .task
            .as_deref()
            .is_some_and(|task| rule.tasks.iter().any(|t| t.eq_ignore_ascii_case(task)))
    {
        return false;
    }
    if let Some(role) = rule.model_role
        && facts.suggested_role != Some(role)
    {
        return false;
    }
    if rule
        .min_prompt_tokens
        .is_some_and(|min| facts.prompt_tokens < min)
    {
        return false;
    }
    if rule
        .max_prompt_tokens
        .is_some_and(|max| facts.prompt_tokens > max)
    {
        return false;
    }
    if rule.fits_context == Some(true)
        && facts.prompt_tokens.saturating_add(facts.max_tokens) > context_window
    {
        return false;
    }
    if rule.tools.is_some_and(|tools| tools != facts.tools) {
        return false;
    }
    if rule.json.is_some_and(|json| json != facts.json) {
        return false;
    }
    if !rule.api_keys.is_empty()
        && !facts
            .api_key_id
            .as_deref()
            .is_some_and(|id| rule.api_keys.iter().any(|k| k.eq_ignore_ascii_case(id)))
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests;
