//! The managed models of a runtime whose config has a `lifecycle` section: the lifecycle shell
//! that loads them on demand within the memory budget, and how its refusals read as errors.
//!
//! A leaf: the builder puts a [`Managed`] in the shared state, the execute path takes a
//! [`Lease`](crate::lifecycle::Lease) from it before a request of a managed model waits for its
//! permit, and health, `/v1/models` and `/metrics` read its statuses.

use std::time::Duration;

use ray_core::wire::{ModelLifecycle, ProviderStatus};
use ray_core::{ErrorCode, RayError};

use crate::lifecycle::{BudgetSource, LifecycleShell, ModelState, ModelStatus, Refusal};

/// The lifecycle of the managed models, and where its budget came from.
#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) shell: LifecycleShell,
    /// The driver behind the shell (a reload adds and changes processes through it).
    pub(crate) driver: crate::backend::ondemand::ProcessDriver,
    pub(crate) budget_source: BudgetSource,
    /// `lifecycle.stateDir`.
    pub(crate) state_dir: std::path::PathBuf,
}

/// Seconds for a `Retry-After` of `wait` (1 at least).
fn retry_secs(wait: Duration) -> u32 {
    wait.as_millis()
        .div_ceil(1000)
        .clamp(1, u128::from(u32::MAX)) as u32
}

/// The error a request for `model` gets when the lifecycle refuses it.
pub(crate) fn refusal_error(model: &str, refusal: Refusal, budget: BudgetSource) -> RayError {
    match refusal {
        Refusal::DoesNotFit {
            needed_mib,
            budget_mib,
        } => RayError::new(
            ErrorCode::ModelDoesNotFit,
            format!(
                "Model {model:?} needs {needed_mib} MiB, more than the whole memory budget of \
                 {budget_mib} MiB ({}), so it is never loaded",
                budget.describe()
            ),
        )
        .with_details(serde_json::json!({
            "model": model,
            "footprintMiB": needed_mib,
            "budgetMiB": budget_mib,
        })),
        Refusal::TooSlow { retry_after } => RayError::new(
            ErrorCode::ModelLoading,
            format!(
                "Model {model:?} is not loaded and its load takes about {} ms, more than is \
                 left before the request's deadline",
                retry_after.as_millis()
            ),
        )
        .with_retry_after(retry_secs(retry_after))
        .with_details(serde_json::json!({
            "model": model,
            "retryAfterMs": retry_after.as_millis() as u64,
        })),
        Refusal::LoadFailed {
            reason,
            retry_after,
        } => RayError::new(
            ErrorCode::ModelLoading,
            format!("Model {model:?} could not be loaded: {reason}; it is tried again shortly"),
        )
        .with_retry_after(retry_secs(retry_after))
        .with_details(serde_json::json!({
            "model": model,
            "state": "failed",
            "reason": reason,
            "retryAfterMs": retry_after.as_millis() as u64,
        })),
        Refusal::Expired { retry_after } => {
            let error = RayError::new(
                ErrorCode::RequestTimeout,
                format!("The request's deadline passed while model {model:?} was loading"),
            )
            .with_details(serde_json::json!({ "model": model, "phase": "model_load" }));
            match retry_after {
                Some(wait) => error.with_retry_after(retry_secs(wait)),
                None => error,
            }
        }
        Refusal::Removed => RayError::new(
            ErrorCode::ModelNotFound,
            format!("Model {model:?} was removed from the config by a reload"),
        )
        .with_details(serde_json::json!({ "model": model, "param": "model" })),
        Refusal::ShuttingDown => RayError::new(
            ErrorCode::ShuttingDown,
            format!("The gateway is shutting down; model {model:?} takes no more requests"),
        )
        .with_details(serde_json::json!({ "model": model })),
        Refusal::UnknownModel => RayError::new(
            ErrorCode::GatewayError,
            format!("Model {model:?} is not known to the lifecycle"),
        ),
    }
}

/// The wire view of a model's lifecycle status.
pub(crate) fn lifecycle_view(status: &ModelStatus) -> ModelLifecycle {
    ModelLifecycle {
        state: status.state.name().into(),
        reason: match &status.state {
            ModelState::Failed { reason } => Some(reason.clone()),
            _ => None,
        },
        resident_mib: status.resident_mib,
        footprint_mib: status.footprint_mib,
        footprint_measured: status.footprint_measured,
        pinned: status.pinned,
        last_load_ms: status.last_load_ms,
        loads: status.loads,
        unloads: status.unloads,
        evictions: status.evictions,
        failures: status.failures,
        in_flight: status.in_flight,
        waiting: status.waiting,
    }
}

/// What the backend's status is while the lifecycle holds the model in `state` (`None`: it is
/// `ready`, so its probe says). An unloaded model takes requests (they load it), a loading one
/// is warming, one that failed a moment ago is unavailable.
pub(crate) fn lifecycle_status(state: &ModelState) -> Option<ProviderStatus> {
    match state {
        ModelState::Ready => None,
        ModelState::Loading => Some(ProviderStatus::Warming),
        ModelState::Failed { .. } => Some(ProviderStatus::Unavailable),
        ModelState::Unloaded | ModelState::Draining | ModelState::Unloading => {
            Some(ProviderStatus::Ready)
        }
    }
}
