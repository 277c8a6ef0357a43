//! Claims and leases on jobs: the rule that keeps two dispatchers sharing one store from
//! running the same job.
//!
//! A dispatcher claims a job for a lease period before it starts an attempt, renews the lease
//! while the attempt runs, and then completes the claim (the job is finished: no one may claim
//! it again) or releases it (the job may run again, here or elsewhere). A claim is exclusive
//! until its lease expires or is released; an expired lease is as good as released, so a
//! dispatcher that died or stalled loses its jobs to the others after one period.
//!
//! [`Claims`] is the rule as a plain value with time passed in; a store keeps one
//! [`ClaimState`] per job and applies it under whatever lock makes its operations atomic
//! (the file store: an exclusive `flock` on the claims directory).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::store::{ClaimError, Lease};

/// What a store keeps per job about its claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimState {
    /// Claims granted so far.
    pub generation: u64,
    /// The holder of the current claim, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When the current claim's lease ends, in Unix milliseconds.
    #[serde(default)]
    pub expires_ms: u64,
    /// The job is finished: no claim is granted any more.
    #[serde(default)]
    pub completed: bool,
}

/// The claim rules, applied to one job's [`ClaimState`] at `now_ms`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claims;

impl Claims {
    /// Grants `holder` a lease of `period` if the job is not completed and no live lease is
    /// held (an expired one counts as released).
    pub fn claim(
        state: &mut ClaimState,
        job_id: &str,
        holder: &str,
        now_ms: u64,
        period: Duration,
    ) -> Result<Lease, ClaimError> {
        if state.completed {
            return Err(ClaimError::Completed {
                job_id: job_id.to_string(),
            });
        }
        if let Some(current) = &state.holder
            && state.expires_ms > now_ms
        {
            return Err(ClaimError::Held {
                job_id: job_id.to_string(),
                holder: current.clone(),
                expires_ms: state.expires_ms,
            });
        }
        state.generation += 1;
        state.holder = Some(holder.to_string());
        state.expires_ms = now_ms.saturating_add(period.as_millis() as u64);
        Ok(Lease {
            job_id: job_id.to_string(),
            holder: holder.to_string(),
            generation: state.generation,
            expires_ms: state.expires_ms,
        })
    }

    /// Extends a live lease to `period` from now.
    pub fn renew(
        state: &mut ClaimState,
        lease: &Lease,
        now_ms: u64,
        period: Duration,
    ) -> Result<Lease, ClaimError> {
        Claims::check_live(state, lease, now_ms)?;
        state.expires_ms = now_ms.saturating_add(period.as_millis() as u64);
        Ok(Lease {
            expires_ms: state.expires_ms,
            ..lease.clone()
        })
    }

    /// Gives the job back: it may be claimed at once. A lease that expired but was not
    /// claimed again since may still be released.
    pub fn release(state: &mut ClaimState, lease: &Lease) -> Result<(), ClaimError> {
        Claims::check_current(state, lease)?;
        state.holder = None;
        state.expires_ms = 0;
        Ok(())
    }

    /// Finishes the job under a live lease: no claim is granted after this.
    pub fn complete(state: &mut ClaimState, lease: &Lease, now_ms: u64) -> Result<(), ClaimError> {
        Claims::check_live(state, lease, now_ms)?;
        state.holder = None;
        state.expires_ms = 0;
        state.completed = true;
        Ok(())
    }

    fn check_current(state: &ClaimState, lease: &Lease) -> Result<(), ClaimError> {
        if state.completed {
            return Err(ClaimError::Completed {
                job_id: lease.job_id.clone(),
            });
        }
        if state.generation != lease.generation
            || state.holder.as_deref() != Some(lease.holder.as_str())
        {
            return Err(ClaimError::Lost {
                job_id: lease.job_id.clone(),
            });
        }
        Ok(())
    }

    fn check_live(state: &ClaimState, lease: &Lease, now_ms: u64) -> Result<(), ClaimError> {
        Claims::check_current(state, lease)?;
        if state.expires_ms <= now_ms {
            return Err(ClaimError::Lost {
                job_id: lease.job_id.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
