//! Admission and execution order for a small inference box.
//!
//! On a 2-vCPU machine the backend can run one or two generations at a time; everything else
//! must wait, be shared or be refused, explicitly. This crate decides which.
//!
//! - [`Scheduler`] is the async front: [`Scheduler::admit`] waits in a bounded queue ordered by
//!   priority class with aging (every admitted job starts within its class's bound while
//!   permits turn over as estimated), fair share between senders by weight, two lanes (short
//!   jobs before drafts, without starving drafts) and slot affinity, until a concurrency permit
//!   and enough of the in-flight token budget are free, or until the request's deadline. A job
//!   that by the service-time estimate could not start in time is refused at once (one
//!   admitted before any service time was measured, as soon as the first one is). It returns a
//!   [`Permit`]; dropping the permit releases the capacity and starts the next job, so an early
//!   return, a timeout or a client that hangs up can never leak a slot.
//! - [`SchedulerState`] is the decision core as a plain synchronous struct: admission, turns
//!   between lanes, bounded overtaking for slot affinity, token fit, the batch window. It takes
//!   `now` as an argument, so its rules are unit- and property-tested without a runtime.
//! - [`Scheduler::prepare`] is the first phase of admission: prompt preparation that needs the
//!   backend (template, tokenizer) runs through a bounded gate before the request is costed.
//! - [`Flights`] lets identical concurrent requests share one execution, as a finished answer
//!   or as a live stream of its progress; the last waiter to leave cancels it.
//!
//! The crate knows nothing of HTTP, providers or config files: it takes its own
//! [`SchedulerSettings`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use ray_core::wire::Lane;
//! use ray_scheduler::{JobSpec, Scheduler, SchedulerSettings};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let scheduler = Scheduler::new(SchedulerSettings { concurrency: 1, ..Default::default() });
//! let spec = JobSpec::new(300, Lane::Short, None);
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
//!
//! let permit = scheduler.admit(spec, deadline).await?;
//! assert_eq!(scheduler.snapshot().in_flight, 1);
//! drop(permit); // the capacity is back
//! assert_eq!(scheduler.snapshot().in_flight, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod flight;
mod prepare;
mod scheduler;
mod settings;
mod state;

pub use flight::{DedupeFull, FlightEvent, Flights, Joined, Publisher, Subscription};
pub use prepare::PrepGate;
pub use scheduler::{AdmitError, Permit, Scheduler};
pub use settings::{
    DEFAULT_CLASS_MAX_WAIT, DEFAULT_SHORT_BURST, SchedulerSettings, default_reserved_interactive,
};
pub use state::{
    Assignment, BudgetKind, Counters, Evicted, JobSpec, Reject, SchedulerState, StateSnapshot,
};
