//! In-flight dedupe: identical concurrent requests share one execution.
//!
//! The execution is a shared future: whichever waiter polls drives it, so the first caller
//! leaving does not disturb the others, and when the last waiter leaves the future is dropped,
//! which cancels the backend call and releases its permit. The map holds only a weak handle.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use parking_lot::Mutex;

/// A join was refused because the flight already has `maxDedupeWaiters` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{waiters} identical requests already wait on this execution")]
pub struct DedupeFull {
    /// Waiters on the flight.
    pub waiters: usize,
}

struct Flight<V: Clone> {
    id: u64,
    future: WeakShared<BoxFuture<'static, V>>,
    waiters: Arc<AtomicUsize>,
}

/// Runs one execution per key at a time and lets identical requests wait on it.
///
/// ```
/// use ray_scheduler::InflightDedupe;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dedupe = InflightDedupe::<&str, u32>::new(16);
/// let (first, second) = tokio::join!(
///     dedupe.run("key", || Box::pin(async { tokio::task::yield_now().await; 42 })),
///     dedupe.run("key", || Box::pin(async { unreachable!("joined the first") })),
/// );
/// assert_eq!(first?, (42, false));
/// assert_eq!(second?, (42, true)); // shared, not repeated
/// # Ok::<(), ray_scheduler::DedupeFull>(())
/// # }).unwrap();
/// ```
pub struct InflightDedupe<K, V: Clone> {
    flights: Mutex<HashMap<K, Flight<V>>>,
    next_flight: AtomicU64,
    max_waiters: usize,
    followers_total: AtomicU64,
}

impl<K, V: Clone> fmt::Debug for InflightDedupe<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InflightDedupe")
            .field("flights", &self.flights.lock().len())
            .field("max_waiters", &self.max_waiters)
            .finish()
    }
}

impl<K, V> InflightDedupe<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A dedupe map allowing at most `max_waiters` waiters (leader included) per execution.
    pub fn new(max_waiters: usize) -> InflightDedupe<K, V> {
        InflightDedupe {
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(1),
            max_waiters: max_waiters.max(1),
            followers_total: AtomicU64::new(0),
        }
    }

    /// Joins the execution running for `key`, or starts one with `start`.
    ///
    /// Returns the value and whether it was shared (`true` for followers). Dropping the returned
    /// future leaves the flight; the last one to leave cancels the execution.
    pub async fn run<F>(&self, key: K, start: F) -> Result<(V, bool), DedupeFull>
    where
        F: FnOnce() -> BoxFuture<'static, V>,
    {
        let (future, flight_id, waiters, follower) = {
            let mut flights = self.flights.lock();
            let joined = flights.get(&key).and_then(|flight| {
                flight
                    .future
                    .upgrade()
                    .map(|f| (f, flight.id, flight.waiters.clone()))
            });
            match joined {
                Some((future, id, waiters)) => {
                    let count = waiters.load(Ordering::Relaxed);
                    if count >= self.max_waiters {
                        return Err(DedupeFull { waiters: count });
                    }
                    waiters.fetch_add(1, Ordering::Relaxed);
                    self.followers_total.fetch_add(1, Ordering::Relaxed);
                    (future, id, waiters, true)
                }
                None => {
                    let future: Shared<BoxFuture<'static, V>> = start().shared();
                    let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
                    let waiters = Arc::new(AtomicUsize::new(1));
                    let weak = future.downgrade().map(|weak| Flight {
                        id,
                        future: weak,
                        waiters: waiters.clone(),
                    });
                    if let Some(flight) = weak {
                        flights.insert(key.clone(), flight);
                    }
                    (future, id, waiters, false)
                }
            }
        };
        let mut guard = LeaveGuard {
            dedupe: self,
            key: Some(key),
            flight_id,
            waiters,
        };
        let value = future.await;
        // The first waiter to see the result retires the flight, so a request arriving from now
        // on starts a fresh execution instead of receiving a finished one.
        guard.retire();
        Ok((value, follower))
    }

    /// Executions in flight.
    pub fn flights(&self) -> usize {
        self.flights.lock().len()
    }

    /// Followers currently waiting on some execution (waiters beyond each leader).
    pub fn followers(&self) -> usize {
        self.flights
            .lock()
            .values()
            .map(|f| f.waiters.load(Ordering::Relaxed).saturating_sub(1))
            .sum()
    }

    /// Followers that joined an execution since start.
    pub fn followers_total(&self) -> u64 {
        self.followers_total.load(Ordering::Relaxed)
    }
}

/// Leaves the flight when the waiter finishes or is dropped.
struct LeaveGuard<'a, K, V: Clone>
where
    K: Hash + Eq,
{
    dedupe: &'a InflightDedupe<K, V>,
    key: Option<K>,
    flight_id: u64,
    waiters: Arc<AtomicUsize>,
}

impl<K: Hash + Eq, V: Clone> LeaveGuard<'_, K, V> {
    fn retire(&mut self) {
        if let Some(key) = self.key.take() {
            let mut flights = self.dedupe.flights.lock();
            if flights.get(&key).is_some_and(|f| f.id == self.flight_id) {
                flights.remove(&key);
            }
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<K: Hash + Eq, V: Clone> Drop for LeaveGuard<'_, K, V> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let remaining = self.waiters.fetch_sub(1, Ordering::Relaxed) - 1;
        if remaining == 0 {
            let mut flights = self.dedupe.flights.lock();
            if flights.get(&key).is_some_and(|f| f.id == self.flight_id) {
                flights.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn identical_requests_share_one_execution() {
        let dedupe = Arc::new(InflightDedupe::<u64, u32>::new(64));
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let dedupe = dedupe.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                dedupe
                    .run(7, move || {
                        Box::pin(async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            5
                        })
                    })
                    .await
            }));
        }
        let mut followers = 0;
        for task in tasks {
            let (value, shared) = task.await.unwrap().unwrap();
            assert_eq!(value, 5);
            followers += usize::from(shared);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(followers, 9);
        assert_eq!(dedupe.flights(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_leaving_does_not_disturb_followers() {
        let dedupe = Arc::new(InflightDedupe::<u64, u32>::new(64));
        let slow = || -> BoxFuture<'static, u32> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                9
            })
        };
        let leader = {
            let dedupe = dedupe.clone();
            tokio::spawn(async move { dedupe.run(1, slow).await })
        };
        tokio::task::yield_now().await;
        let follower = {
            let dedupe = dedupe.clone();
            tokio::spawn(async move { dedupe.run(1, slow).await })
        };
        tokio::task::yield_now().await;
        leader.abort();
        assert_eq!(follower.await.unwrap().unwrap(), (9, true));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_waiter_leaves_the_execution_is_cancelled() {
        struct Dropped(Arc<AtomicU32>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dedupe = Arc::new(InflightDedupe::<u64, u32>::new(64));
        let dropped = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let dedupe = dedupe.clone();
            let dropped = dropped.clone();
            tasks.push(tokio::spawn(async move {
                dedupe
                    .run(1, move || {
                        Box::pin(async move {
                            let _guard = Dropped(dropped);
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            1
                        })
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the execution was dropped"
        );
        assert_eq!(dedupe.flights(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_beyond_the_bound_are_refused() {
        let dedupe = Arc::new(InflightDedupe::<u64, u32>::new(2));
        let slow = || -> BoxFuture<'static, u32> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                1
            })
        };
        let a = tokio::spawn({
            let d = dedupe.clone();
            async move { d.run(1, slow).await }
        });
        let b = tokio::spawn({
            let d = dedupe.clone();
            async move { d.run(1, slow).await }
        });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(dedupe.run(1, slow).await, Err(DedupeFull { waiters: 2 }));
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_flight_is_not_joined() {
        let dedupe = InflightDedupe::<u64, u32>::new(8);
        let (first, _) = dedupe.run(1, || Box::pin(async { 1 })).await.unwrap();
        let (second, shared) = dedupe.run(1, || Box::pin(async { 2 })).await.unwrap();
        assert_eq!((first, second, shared), (1, 2, false));
    }
}
