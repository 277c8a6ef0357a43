//! The dispatcher's side of claims: a job is claimed in the store before its attempt starts,
//! the lease is renewed while it runs, and afterwards completed (the job is finished) or
//! released (it may run again). With the default of a store that grants every claim this is
//! four calls that do nothing; with a store shared by several dispatchers it is what keeps a
//! job to one of them.

use std::time::Duration;

use ray_core::time::unix_millis_now;

use super::JobQueue;
use super::claim::{ClaimError, Lease};
use super::store::StoreError;

/// How long a claim lasts without renewal; renewed every third of it while an attempt runs.
pub(crate) const LEASE_PERIOD: Duration = Duration::from_secs(30);

impl JobQueue {
    /// Claims job `id` for [`LEASE_PERIOD`].
    pub(crate) async fn claim(&self, id: &str) -> Result<Lease, ClaimError> {
        let id = id.to_string();
        self.claim_op(move |store| store.claim(&id, unix_millis_now(), LEASE_PERIOD))
            .await
    }

    /// Renews `lease` every third of its period; answers only when a renewal fails (the
    /// lease is lost, or the store failed long enough for it to run out).
    pub(crate) async fn keep_lease(&self, mut lease: Lease) -> ClaimError {
        loop {
            tokio::time::sleep(LEASE_PERIOD / 3).await;
            let current = lease.clone();
            let renewed = self
                .claim_op(move |store| store.renew(&current, unix_millis_now(), LEASE_PERIOD))
                .await;
            match renewed {
                Ok(next) => lease = next,
                // A failed write of the lease is tried again while the lease lasts.
                Err(ClaimError::Store(error)) if lease.expires_ms > unix_millis_now() => {
                    self.store_failed("renew a job's lease", &error);
                }
                Err(error) => return error,
            }
        }
    }

    /// Ends a claim: completes it when the job is finished, else releases it. A failure only
    /// leaves the lease to expire.
    pub(crate) async fn end_claim(&self, lease: Lease, finished: bool) {
        let job_id = lease.job_id.clone();
        let ended = self
            .claim_op(move |store| {
                if finished {
                    store.complete(&lease, unix_millis_now())
                } else {
                    store.release(&lease)
                }
            })
            .await;
        if let Err(error) = ended {
            tracing::warn!(job_id = %job_id, %error, "a job's claim could not be ended; it expires by itself");
        }
    }

    async fn claim_op<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn super::JobStore) -> Result<T, ClaimError> + Send + 'static,
    ) -> Result<T, ClaimError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store.as_ref()))
            .await
            .map_err(|e| {
                ClaimError::Store(StoreError::Other(format!("the store task failed: {e}")))
            })?
    }
}
