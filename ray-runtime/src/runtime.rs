//! `Runtime`: the one object an embedding program holds, and the entry of the request path.
//!
//! The path of one request, in order, each step in one module:
//!
//! | step | module |
//! |---|---|
//! | route to one model (by name, by rule, by default) | [`crate::front`] (`route`), [`crate::routing`] |
//! | normalise: defaults, templates, prompt compiler | [`crate::plan`] |
//! | degrade: one decision (trim, clamp, refuse) | [`crate::degrade`] |
//! | cache, refusals, preparation, budgets | [`crate::front`] |
//! | dedupe, admit, execute (whole or streamed) | [`crate::execute`] |
//! | record, respond | [`crate::respond`], [`crate::stream`] |
//!
//! Models live in the [`crate::registry`]; a request carries its entry from the route on.
//!
//! This file holds only the handle and its accessors: what the clones share is in
//! [`crate::state`], and each step adds its methods to `Runtime` from its own file, so no
//! module below imports a step.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ray_core::config::ValidConfig;
use ray_models::Provider;

use crate::log_policy::LogPolicy;
use crate::registry::ModelEntry;
use crate::state::Inner;

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A provider could not be built from the config (or a provider of your own names no
    /// configured model).
    #[error("cannot build the {kind} provider: {message}")]
    Provider {
        /// The adapter kind.
        kind: String,
        /// What went wrong.
        message: String,
    },
    /// The async job queue could not be opened (its store cannot be created or listed, or the
    /// callback signing secret is unusable). Bad records never cause this: they are set aside.
    #[error("cannot open the async job queue: {0}")]
    Jobs(String),
}

/// The Ray runtime: routing, admission, caching, dedupe, degradation, health and metrics in
/// front of one or several model backends, with no HTTP of its own.
///
/// Cloning is cheap and shares everything. Build it with [`Runtime::new`] or
/// [`Runtime::builder`], call [`Runtime::start`] once to run warm-up in the background, then
/// call [`Runtime::infer`] from any task.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("profile", &self.inner.config.profile)
            .field("models", &self.inner.registry)
            .finish()
    }
}

impl Runtime {
    /// The effective config.
    pub fn config(&self) -> &ValidConfig {
        &self.inner.config
    }

    /// The default model's entry.
    pub(crate) fn model(&self) -> &Arc<ModelEntry> {
        self.inner.registry.default_entry()
    }

    /// The provider serving the default model.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.model().provider
    }

    /// The provider serving the model `name` (id or alias).
    pub fn provider_of(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.inner.registry.get(name).map(|m| &m.provider)
    }

    /// The ids of the configured models, in config order.
    pub fn model_ids(&self) -> Vec<&str> {
        self.inner
            .registry
            .entries()
            .iter()
            .map(|m| m.id.as_str())
            .collect()
    }

    /// The id of the default model.
    pub fn default_model_id(&self) -> &str {
        &self.model().id
    }

    /// The id of the model `name` stands for (an id, an alias or a backend's `modelRef`).
    pub fn resolve_model(&self, name: &str) -> Option<&str> {
        self.inner.registry.get(name).map(|m| m.id.as_str())
    }

    /// The largest `maxTokens` a request naming `name` may ask for: that model's
    /// `maxOutputTokens`, or the default model's when `name` is `None`, `auto` or unknown
    /// (routing decides later; the chosen model's own limit then applies).
    pub fn max_output_tokens(&self, name: Option<&str>) -> u32 {
        name.and_then(|n| self.inner.registry.get(n))
            .unwrap_or_else(|| self.model())
            .config
            .max_output_tokens
    }

    /// The rate limiter of `rateLimit` (`None` when it is off). The runtime does not call it:
    /// the edge that knows the client (the HTTP gateway, or an embedder) checks each request
    /// with [`RateLimiter::check`](crate::RateLimiter::check) before handing it over.
    pub fn rate_limiter(&self) -> Option<&crate::shared::RateLimiter> {
        self.inner.rate_limiter.as_ref()
    }

    /// Time since the runtime was built.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The access-log policy of this runtime (`telemetry.accessLog`), with the counts behind
    /// its summaries.
    pub fn log_policy(&self) -> LogPolicy<'_> {
        LogPolicy::new(&self.inner.metrics.logs, &self.inner.config.telemetry)
    }
}
