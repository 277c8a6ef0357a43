//! What a [`Runtime`](crate::Runtime) shares between its clones: the config, the model
//! registry, the result store, the rate limiter, the counters, the pressure monitor, the job
//! queue and the managed models' lifecycle. Every
//! step of the request path reads it; it names none of them.

use std::sync::Arc;

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

/// The shared state behind a [`Runtime`](crate::Runtime).
pub(crate) struct Inner {
    pub(crate) config: ValidConfig,
    pub(crate) registry: Registry,
    pub(crate) cache: Option<Arc<dyn ResultStore>>,
    pub(crate) rate_limiter: Option<RateLimiter>,
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
}
