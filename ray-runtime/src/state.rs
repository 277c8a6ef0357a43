//! What a [`Runtime`](crate::Runtime) shares between its clones: the config, the model
//! registry, the result store, the rate limiter, the counters, the pressure monitor, the job
//! queue and the managed models' lifecycle. Every
//! step of the request path reads it; it names none of them.

use std::sync::Arc;

use parking_lot::RwLock;
use ray_core::config::ValidConfig;
use tokio::time::Instant;

use crate::hooks::Hooks;
use crate::ids::IdSource;
use crate::jobs::JobQueue;
use crate::managed::Managed;
use crate::pressure::PressureMonitor;
use crate::registry::Registry;
use crate::shared::{RateLimiter, ResultStore};
use crate::telemetry::{EmbedMetrics, RuntimeMetrics};

/// What a reload replaces as one piece: the effective config, the models built from it and
/// the rate limiter. A request reads one [`Live`] from its start to its end (see
/// [`Runtime::pinned`](crate::Runtime)), so a reload never mixes two configs in one request.
pub(crate) struct Live {
    pub(crate) config: ValidConfig,
    pub(crate) registry: Registry,
    pub(crate) rate_limiter: Option<Arc<RateLimiter>>,
}

/// The shared state behind a [`Runtime`](crate::Runtime).
pub(crate) struct Inner {
    /// The current config and models; a reload swaps it whole.
    pub(crate) live: RwLock<Arc<Live>>,
    /// `telemetry` of the config the runtime was built with (a reload cannot change it).
    pub(crate) telemetry: ray_core::config::TelemetryConfig,
    /// Tasks a reload started (the monitors of models it added), stopped with the runtime's
    /// [`Background`](crate::Background).
    pub(crate) reload_tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// One reload at a time.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Providers of your own, by model id: a reload that rebuilds one of these models uses
    /// the same provider again.
    pub(crate) own_providers: Vec<(String, Arc<dyn ray_models::Provider>)>,
    /// The rate-limit store of your own: a reload that changes `rateLimit` keeps counting in
    /// it (without one, the new limits get a new in-memory table).
    pub(crate) rate_limit_store: Option<Arc<dyn crate::shared::RateLimitStore>>,
    pub(crate) cache: Option<Arc<dyn ResultStore>>,
    pub(crate) metrics: RuntimeMetrics,
    pub(crate) pressure: PressureMonitor,
    pub(crate) ids: IdSource,
    pub(crate) started: Instant,
    pub(crate) jobs: Option<Arc<JobQueue>>,
    pub(crate) embeddings: EmbedMetrics,
    pub(crate) hooks: Hooks,
    /// The managed models' lifecycle, with a `lifecycle` section and at least one managed
    /// model.
    pub(crate) managed: Option<Managed>,
    /// Set by [`Runtime::close_for_shutdown`](crate::Runtime::close_for_shutdown): no model
    /// takes new work.
    pub(crate) closing: std::sync::atomic::AtomicBool,
}
