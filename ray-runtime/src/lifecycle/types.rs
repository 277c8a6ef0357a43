//! The lifecycle's vocabulary: its settings, each model's state, what a request gets, and
//! what the core asks its shell to do.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The budget and timings that apply to every managed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// Memory the managed models may use together, in MiB (`lifecycle.memoryBudgetMiB`).
    pub budget_mib: u64,
    /// How long a model chosen to make room may take to finish its requests before the
    /// eviction is abandoned (`lifecycle.drainTimeoutMs`).
    pub drain_timeout: Duration,
    /// Fair swapping: new requests a busy model still takes once another model's requests
    /// wait for its memory (`lifecycle.swapBatchRequests`).
    pub swap_batch_requests: u32,
    /// Fair swapping: how long a busy model still takes new requests once another model's
    /// requests wait for its memory (`lifecycle.swapBatchMs`; zero: it drains at once).
    pub swap_batch: Duration,
}

/// One managed model as the lifecycle sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleModel {
    /// The model's id.
    pub id: String,
    /// Its footprint before any measurement, in MiB (the estimate).
    pub footprint_mib: u64,
    /// Pinned (`resident: true`): loaded at start and never unloaded to make room or when idle.
    pub resident: bool,
    /// Never unloaded (idle or to make room) sooner than this after its load
    /// (`minResidentMs`).
    pub min_resident: Duration,
    /// Unloaded after this long without a request (`idleUnloadMs`); `None` keeps it.
    pub idle_unload: Option<Duration>,
    /// How long its last load took, when one was measured (kept across restarts).
    pub load_time: Option<Duration>,
}

/// Where a model stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ModelState {
    /// No process; the next request loads it.
    Unloaded,
    /// Its process starts and warms up.
    Loading,
    /// Answering requests.
    Ready,
    /// Chosen to make room: admits nothing new, finishes its requests, then unloads.
    Draining,
    /// Its process is being stopped.
    Unloading,
    /// Its load failed or its process died; the next request loads it again.
    Failed {
        /// What happened.
        reason: String,
    },
}

impl ModelState {
    /// The state's name as `/v1/models` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Draining => "draining",
            ModelState::Unloading => "unloading",
            ModelState::Failed { .. } => "failed",
        }
    }

    /// Whether the model holds memory in this state (from the start of its load to the end of
    /// its unload).
    pub fn holds_memory(&self) -> bool {
        matches!(
            self,
            ModelState::Loading | ModelState::Ready | ModelState::Draining | ModelState::Unloading
        )
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request waiting for its model.
pub type WaiterId = u64;

/// Why a request cannot be served by its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The model needs more than the whole budget.
    DoesNotFit {
        /// Its footprint in MiB.
        needed_mib: u64,
        /// The budget in MiB.
        budget_mib: u64,
    },
    /// The model's load cannot finish before the request's deadline.
    TooSlow {
        /// When the load would be done.
        retry_after: Duration,
    },
    /// The request's deadline passed while it waited.
    Expired {
        /// The model's expected load time, when known.
        retry_after: Option<Duration>,
    },
    /// The model's last load failed (or its process died) a moment ago.
    LoadFailed {
        /// What happened.
        reason: String,
        /// When a request will try to load it again.
        retry_after: Duration,
    },
    /// No such model.
    UnknownModel,
    /// A config reload removed the model.
    Removed,
    /// The gateway shuts down.
    ShuttingDown,
}

/// What happens to a request that asks for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The model is ready: go (counted in flight until
    /// [`Lifecycle::finished`](super::Lifecycle::finished)).
    Go,
    /// Wait: an [`Effect::Serve`] or [`Effect::Refuse`] with this id follows.
    Wait(WaiterId),
    /// Refused at once.
    Refused(Refusal),
}

/// One state change of one model, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The model's index.
    pub model: usize,
    /// The state it left.
    pub from: &'static str,
    /// The state it entered.
    pub to: &'static str,
    /// Why.
    pub reason: String,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start the model's process; report [`Lifecycle::loaded`](super::Lifecycle::loaded) or
    /// [`Lifecycle::load_failed`](super::Lifecycle::load_failed).
    Load {
        /// The model's index.
        model: usize,
    },
    /// Stop the model's process; report [`Lifecycle::unloaded`](super::Lifecycle::unloaded).
    Unload {
        /// The model's index.
        model: usize,
    },
    /// The waiting request may go (it is counted in flight on `model` until
    /// [`Lifecycle::finished`](super::Lifecycle::finished)).
    Serve {
        /// The request.
        waiter: WaiterId,
        /// The model's index.
        model: usize,
    },
    /// The waiting request is refused.
    Refuse {
        /// The request.
        waiter: WaiterId,
        /// Why.
        refusal: Refusal,
    },
    /// A model changed state (one JSON log line).
    Transition(Transition),
    /// The definition a config reload gave the model applies now (no process of it runs):
    /// its next process starts with it.
    Reconfigured {
        /// The model's index.
        model: usize,
    },
}

/// A model's state and figures, for `/v1/models`, `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// The model's id.
    pub id: String,
    /// Its state.
    #[serde(flatten)]
    pub state: ModelState,
    /// MiB it holds now (its footprint while it holds memory, else 0).
    #[serde(rename = "residentMiB")]
    pub resident_mib: u64,
    /// MiB it is counted for when loaded.
    #[serde(rename = "footprintMiB")]
    pub footprint_mib: u64,
    /// Whether the footprint was measured from its process (else estimated).
    pub footprint_measured: bool,
    /// Whether it is pinned (`resident`).
    pub pinned: bool,
    /// How long its last load took, in milliseconds.
    pub last_load_ms: Option<u64>,
    /// Loads started.
    pub loads: u64,
    /// Unloads started (idle, evictions, drains).
    pub unloads: u64,
    /// Unloads started to make room for another model.
    pub evictions: u64,
    /// Loads that failed and processes that died.
    pub failures: u64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests waiting for it.
    pub waiting: u32,
}
