//! What an execution produced and what a request was charged: the values the execute path
//! hands from step to step and the cache keeps. A leaf: it names no step of the path.

use std::sync::Arc;
use std::time::Duration;

use ray_core::RayError;
use ray_core::wire::{CountTriple, FinishReason, ProviderDiagnostics};
use ray_models::ProviderOutput;

/// The result of one backend execution, shared by every request that joined it.
#[derive(Debug)]
pub(crate) struct Execution {
    pub(crate) output: ProviderOutput,
    pub(crate) queue_time: Duration,
    pub(crate) prompt_tokens: u32,
    pub(crate) prompt_tokens_source: &'static str,
    pub(crate) cost: u32,
    /// The priority the execution ran with.
    pub(crate) priority: ray_core::wire::Priority,
}

/// What every request sharing an execution receives.
pub(crate) type ExecResult = Result<Arc<Execution>, RayError>;

/// A stored successful result: what a [`ResultStore`](crate::shared::ResultStore) keeps. Its
/// fields are the runtime's own; a store holds it as an opaque value.
#[derive(Debug)]
pub struct CachedResult {
    pub(crate) output: String,
    pub(crate) finish_reason: Option<FinishReason>,
    pub(crate) tokens: Option<CountTriple>,
    pub(crate) degraded: bool,
    pub(crate) provider: ProviderDiagnostics,
    pub(crate) weight: u64,
    /// An embedding vector (the embeddings path, under its own keys); `None` for text.
    pub(crate) embedding: Option<Arc<[f32]>>,
}

/// What admission charged a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub(crate) prompt_tokens: u32,
    pub(crate) prompt_tokens_source: &'static str,
    pub(crate) cost: u32,
    /// The prompt family, for the learned output caps.
    pub(crate) family: u64,
}

/// How long an execution waited for its permit and spent with the backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) queue_time: Duration,
    pub(crate) call_time: Duration,
    /// The priority it was admitted with.
    pub(crate) priority: ray_core::wire::Priority,
}

/// The facts of the plan an execution needs after the backend answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExecPlan {
    pub(crate) max_tokens: u32,
    /// The cache key to store the result under, when it is cacheable.
    pub(crate) store: Option<u128>,
    pub(crate) degraded: bool,
}
