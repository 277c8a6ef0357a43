//! The preparation phase of admission: llama.cpp prompt preparation (template, tokenize) talks
//! to the backend before a request can be costed, so it is bounded like the queue: at most
//! `concurrency` at once, at most `max_queue` waiting, and within the request's deadline.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use ray_core::wire::PreparationHealth;
use ray_core::{ErrorCode, RayError};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The bounded gate of the preparation phase ([`crate::Scheduler::prepare`]).
#[derive(Debug)]
pub struct PrepGate {
    permits: Semaphore,
    concurrency: u32,
    max_waiting: u32,
    waiting: AtomicU32,
    active: AtomicU32,
}

struct Count<'a>(&'a AtomicU32);

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PrepGate {
    /// A gate letting `concurrency` preparations run and `max_waiting` wait.
    pub fn new(concurrency: u32, max_waiting: u32) -> PrepGate {
        PrepGate {
            permits: Semaphore::new(concurrency.max(1) as usize),
            concurrency: concurrency.max(1),
            max_waiting: max_waiting.max(1),
            waiting: AtomicU32::new(0),
            active: AtomicU32::new(0),
        }
    }

    /// Runs `work` when a preparation slot is free, or refuses (`queue_full`) when too many
    /// wait, or times out (`request_timeout`) at `deadline`.
    pub async fn run<T>(
        &self,
        deadline: Instant,
        work: impl Future<Output = T>,
    ) -> Result<T, RayError> {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(RayError::new(
                        ErrorCode::QueueFull,
                        "The request queue is full (prompt preparation)",
                    )
                    .with_details(serde_json::json!({ "phase": "prepare" })));
                }
                let _waiting = Count(&self.waiting);
                match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return Err(RayError::new(
                            ErrorCode::ShuttingDown,
                            "The gateway is shutting down",
                        ));
                    }
                    Err(_elapsed) => {
                        return Err(RayError::new(
                            ErrorCode::RequestTimeout,
                            "The request timed out waiting to prepare its prompt",
                        )
                        .with_details(serde_json::json!({ "phase": "prepare" })));
                    }
                }
            }
        };
        self.active.fetch_add(1, Ordering::Relaxed);
        let _active = Count(&self.active);
        let result = tokio::time::timeout_at(deadline, work).await;
        drop(permit);
        result.map_err(|_| {
            RayError::new(
                ErrorCode::RequestTimeout,
                "The request timed out while its prompt was prepared",
            )
            .with_details(serde_json::json!({ "phase": "prepare" }))
        })
    }

    /// How busy the gate is, for health and metrics.
    pub fn health(&self) -> PreparationHealth {
        let active = self.active.load(Ordering::Relaxed);
        let queued = self.waiting.load(Ordering::Relaxed);
        PreparationHealth {
            degraded: queued > 0,
            active,
            concurrency: self.concurrency,
            active_ratio: f64::from(active) / f64::from(self.concurrency),
            queued,
            max_queue: self.max_waiting,
            queued_ratio: f64::from(queued) / f64::from(self.max_waiting),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bounds_concurrency_waiters_and_time() {
        let gate = std::sync::Arc::new(PrepGate::new(1, 1));
        let far = Instant::now() + Duration::from_secs(60);
        let slow = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run(far, tokio::time::sleep(Duration::from_secs(1)))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.run(far, async { 7 }).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(gate.health().queued, 1);
        let refused = gate.run(far, async { 0 }).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::QueueFull);
        slow.await.unwrap().unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        let soon = Instant::now() + Duration::from_millis(10);
        let late = gate
            .run(soon, tokio::time::sleep(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert_eq!(late.code(), ErrorCode::RequestTimeout);
        let health = gate.health();
        assert_eq!((health.active, health.queued), (0, 0));
    }
}
