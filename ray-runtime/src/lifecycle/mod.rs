//! The lifecycle of managed models on a box whose memory does not hold them all: which model
//! is loaded, which one is unloaded to make room, and when a waiting request may go.
//!
//! [`Lifecycle`] is a synchronous core, like the scheduler's: every decision takes `now`, it
//! does no I/O, and it is driven by events (a request arrives or ends, a load or unload
//! finishes, a child exits, the clock ticks). What it wants done comes back as [`Effect`]s:
//! start loading a model, unload one, let a waiting request go or refuse it, and one
//! [`Transition`] per state change saying why. An async shell holds it behind a mutex (never
//! across an `.await`), performs the effects and reports back.
//!
//! The rules, each property-tested (`lifecycle/tests.rs`):
//!
//! - **The budget is never exceeded.** A model counts against
//!   [`LifecycleSettings::budget_mib`] from the moment its load starts until its unload
//!   finishes (`loading`, `ready`, `draining`, `unloading`); a load starts only when its
//!   footprint fits in what is left.
//! - **Work in flight is never cut.** Only an idle `ready` model (no request in flight) is
//!   unloaded. A busy model chosen to make room goes `draining`: it admits nothing new, its
//!   requests finish, then it unloads. A drain that outlasts `drainTimeoutMs` is abandoned (the
//!   model goes back to `ready` and is not asked to drain again for as long), so a long
//!   request is never killed to make room. A drain a config reload asked for (the model
//!   changed or was removed) is never abandoned: the old definition must end.
//! - **Idle models go first**: not pinned (`resident`), loaded for at least `minResidentMs`,
//!   least recently used first, then the cheapest to load again. Busy models are drained only
//!   when idle ones cannot make the room, and nothing is evicted at all when even every
//!   candidate together could not (no needless evictions).
//! - **Waiting requests are served in arrival order across models.** A model loads only when no
//!   older waiting request still needs room, and only the model of the oldest waiting request
//!   may make room, so memory freed for one request is never taken by a younger one. Every waiting request is answered (let go or refused) by its own deadline; one
//!   whose deadline the measured load time cannot meet is refused at once with that time as
//!   its `Retry-After`.
//! - **A model that cannot fit even alone** is refused (`model_does_not_fit`), never loaded.
//! - **No model stays failed.** A failed load or a process that died refuses requests for a
//!   retry wait ([`FAILED_RETRY`], doubled for each failure in a row up to
//!   [`MAX_FAILED_RETRY`]); after it a pinned model loads again by itself and any other becomes
//!   `unloaded`.

mod budget;
mod core;
mod shell;
#[cfg(test)]
mod tests;
mod types;

pub use budget::{BudgetSource, ModelFit, fit, memory_budget, policy_cut};
pub use core::{FAILED_RETRY, Lifecycle, MAX_FAILED_RETRY};
pub use shell::{BoxFuture, LIFECYCLE_TICK, Lease, LifecycleShell, ModelDriver, TransitionSink};
pub use types::{
    Admission, Effect, LifecycleModel, LifecycleSettings, ModelState, ModelStatus, Refusal,
    Transition, WaiterId,
};
