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
use crate::state::{Inner, Live};

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
    /// The config and models this handle reads: `None` reads the current ones at each call;
    /// a request's handle holds the ones it started with (see [`Runtime::pinned`]).
    pub(crate) pinned: Option<Arc<Live>>,
}

/// The config and models a handle reads: borrowed from a pinned handle, or the current ones.
pub(crate) enum LiveRef<'a> {
    /// The ones a request's handle holds.
    Pinned(&'a Arc<Live>),
    /// The current ones, read at the call.
    Current(Arc<Live>),
}

impl std::ops::Deref for LiveRef<'_> {
    type Target = Live;

    fn deref(&self) -> &Live {
        match self {
            LiveRef::Pinned(live) => live,
            LiveRef::Current(live) => live,
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let live = self.live();
        f.debug_struct("Runtime")
            .field("profile", &live.config.profile)
            .field("models", &live.registry)
            .finish()
    }
}

impl Runtime {
    /// The config and models this handle reads now. A pinned handle lends its own, so the
    /// request path reads them without touching a shared reference count.
    pub(crate) fn live(&self) -> LiveRef<'_> {
        match &self.pinned {
            Some(live) => LiveRef::Pinned(live),
            None => LiveRef::Current(self.current()),
        }
    }

    /// The current config and models (what a reload last made current).
    fn current(&self) -> Arc<Live> {
        self.inner.live.read().clone()
    }

    /// A handle that reads the current config and models until it is dropped, whatever a
    /// reload does meanwhile: each request runs on one.
    pub(crate) fn pinned(&self) -> Runtime {
        Runtime {
            inner: self.inner.clone(),
            pinned: Some(self.pinned.clone().unwrap_or_else(|| self.current())),
        }
    }

    /// The effective config (after a reload, the one it made current).
    pub fn config(&self) -> ValidConfig {
        self.live().config.clone()
    }

    /// Reads the effective config without cloning it: `read` runs under the runtime's read
    /// lock, so keep it short (read a field or two). The cheap way for a per-request edge
    /// to read a setting; [`Runtime::config`] hands out a copy to keep.
    pub fn with_config<R>(&self, read: impl FnOnce(&ray_core::config::RayConfig) -> R) -> R {
        self.with_live(|live| read(&live.config))
    }

    /// Reads the config and models under the read lock (or from the pinned handle), without
    /// touching their reference count.
    fn with_live<R>(&self, read: impl FnOnce(&Live) -> R) -> R {
        match &self.pinned {
            Some(live) => read(live),
            None => read(&self.inner.live.read()),
        }
    }

    /// The default model's entry.
    pub(crate) fn model(&self) -> Arc<ModelEntry> {
        self.live().registry.default_entry().clone()
    }

    /// The provider serving the default model.
    pub fn provider(&self) -> Arc<dyn Provider> {
        self.model().provider.clone()
    }

    /// The provider serving the model `name` (id or alias).
    pub fn provider_of(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.live().registry.get(name).map(|m| m.provider.clone())
    }

    /// The ids of the configured models, in config order.
    pub fn model_ids(&self) -> Vec<String> {
        self.live()
            .registry
            .entries()
            .iter()
            .map(|m| m.id.clone())
            .collect()
    }

    /// The id of the default model.
    pub fn default_model_id(&self) -> String {
        self.model().id.clone()
    }

    /// The id of the model `name` stands for (an id, an alias or a backend's `modelRef`).
    pub fn resolve_model(&self, name: &str) -> Option<String> {
        self.live().registry.get(name).map(|m| m.id.clone())
    }

    /// The largest `maxTokens` a request naming `name` may ask for: that model's
    /// `maxOutputTokens`, or the default model's when `name` is `None`, `auto` or unknown
    /// (routing decides later; the chosen model's own limit then applies).
    pub fn max_output_tokens(&self, name: Option<&str>) -> u32 {
        let live = self.live();
        name.and_then(|n| live.registry.get(n))
            .unwrap_or_else(|| live.registry.default_entry())
            .config
            .max_output_tokens
    }

    /// The rate limiter of `rateLimit` (`None` when it is off). The runtime does not call it:
    /// the edge that knows the client (the HTTP gateway, or an embedder) checks each request
    /// with [`RateLimiter::check`](crate::RateLimiter::check) before handing it over.
    pub fn rate_limiter(&self) -> Option<Arc<crate::shared::RateLimiter>> {
        self.with_live(|live| live.rate_limiter.clone())
    }

    /// `telemetry.serviceName` (fixed at start: a reload does not change `telemetry`).
    pub fn service_name(&self) -> &str {
        &self.inner.telemetry.service_name
    }

    /// Time since the runtime was built.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The access-log policy of this runtime (`telemetry.accessLog`), with the counts behind
    /// its summaries.
    pub fn log_policy(&self) -> LogPolicy<'_> {
        LogPolicy::new(&self.inner.metrics.logs, &self.inner.telemetry)
    }
}
