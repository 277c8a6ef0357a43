//! `routing`: the rules that pick a model for a request, the roles a rule can ask for, and the
//! cooldown of a failing backend.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Routing between models: ordered rules (the first that matches picks the model) and the
/// cooldown of a backend that keeps failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingConfig {
    /// Ordered rules, at most 64, for requests that name no model or the model `auto`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RoutingRule>,
    /// Consecutive backend failures (refused connections included) that put a model in
    /// cooldown, 1 to 100; default 3.
    #[serde(default = "default_cooldown_after_failures")]
    pub cooldown_after_failures: u32,
    /// How long a model stays in cooldown, 100 to 600000 ms; default 10000. While in cooldown
    /// its requests go to its fallback at once, or are refused with `provider_unavailable` and
    /// `Retry-After`.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
}

fn default_cooldown_after_failures() -> u32 {
    3
}

fn default_cooldown_ms() -> u64 {
    10_000
}

impl Default for RoutingConfig {
    fn default() -> RoutingConfig {
        RoutingConfig {
            rules: Vec::new(),
            cooldown_after_failures: default_cooldown_after_failures(),
            cooldown_ms: default_cooldown_ms(),
        }
    }
}

impl RoutingConfig {
    /// Whether this is the default (so it is left out of printed configs).
    pub fn is_default(&self) -> bool {
        *self == RoutingConfig::default()
    }
}

/// One routing rule: every condition it sets must hold (an unset condition always holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingRule {
    /// A name for diagnostics and logs (at most 64 chars); default `rules[N]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model (id or alias) this rule sends requests to.
    pub model: String,
    /// The routes it applies to: `infer`, `chat`, `completions`, `embeddings`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteKind>,
    /// Tasks it applies to: the `task` field of `/v1/infer` or the `X-Ray-Task` header
    /// (compared case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// The model role the request's prompt suggests (as in the task-routing diagnostics:
    /// `classifier` for JSON or classification prompts, `drafter` for rewrites and drafts,
    /// else `general`), or the request's `tags.modelRole` metadata when it sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_role: Option<ModelRole>,
    /// Applies when the estimated prompt (4 chars a token) has at least this many tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_prompt_tokens: Option<u32>,
    /// Applies when the estimated prompt has at most this many tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_tokens: Option<u32>,
    /// `true`: applies only when the estimated prompt plus the requested output fits the
    /// target model's context window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fits_context: Option<bool>,
    /// `true`: applies only to requests that ask for tools; `false`: only to those that do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    /// `true`: applies only to requests that ask for JSON output (a JSON object or schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
    /// Applies only to requests authenticated with one of these API keys, named by the first 8
    /// hex digits of the key's SHA-256 (`printf %s "$KEY" | sha256sum | cut -c1-8`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
}

/// The kind of route a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// `POST /v1/infer` and durable jobs.
    Infer,
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl RouteKind {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteKind::Infer => "infer",
            RouteKind::Chat => "chat",
            RouteKind::Completions => "completions",
            RouteKind::Embeddings => "embeddings",
        }
    }
}

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelRole {
    /// Any generation (the default).
    General,
    /// Short labelling answers.
    Classifier,
    /// Longer drafts and rewrites.
    Drafter,
    /// Embedding vectors (`/v1/embeddings`).
    Embedding,
}

impl ModelRole {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelRole::General => "general",
            ModelRole::Classifier => "classifier",
            ModelRole::Drafter => "drafter",
            ModelRole::Embedding => "embedding",
        }
    }
}
