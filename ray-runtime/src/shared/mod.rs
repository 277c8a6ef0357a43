//! The state several gateways would have to share, each behind a small trait so a cluster can
//! bring its own implementation without touching the request path:
//!
//! - [`ResultStore`]: the result cache (default: [`MemoryResultStore`], S3-FIFO in memory);
//! - [`RateLimitStore`]: the fixed windows of the rate limiter (default:
//!   [`MemoryRateLimitStore`], a bounded key table on Tokio's clock), used through
//!   [`RateLimiter`];
//! - the job store's claims and leases live with the job queue
//!   ([`JobStore::claim`](crate::jobs::JobStore::claim) and
//!   [`Claims`](crate::jobs::Claims)).
//!
//! The request path makes one call through an `Arc<dyn ..>` per use: no allocation or lock of
//! its own beyond what the implementation takes (the defaults take the one lock they took
//! before these traits).

mod rate_limit;
mod results;

pub use rate_limit::{
    Decision, MemoryRateLimitStore, PRESSURE_THRESHOLD, RateLimitStore, RateLimiter, WindowCount,
};
pub use results::{CachedResult, MemoryResultStore, ResultStore};
