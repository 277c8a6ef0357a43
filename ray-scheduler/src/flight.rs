//! In-flight sharing: identical concurrent requests share one execution, whether they want the
//! finished answer or the live stream of its progress.
//!
//! A [`Flights`] map holds, per key, the execution under way. The first request for a key
//! becomes its leader and receives a [`Publisher`]: whoever drives the execution publishes
//! progress (for example the tokens of a stream) and finally the result. Every request for the
//! key, leader included, holds a [`Subscription`]: it reads the progress from the start (so a
//! late joiner first receives what was produced so far), then the result. A request that wants
//! only the answer skips the progress.
//!
//! Cancellation is drop: when the last subscription is dropped before the result, the driving
//! task registered with [`Subscription::set_task`] is aborted, which drops the backend call and
//! its permit. The map holds only weak handles and the publisher removes its entry when it
//! finishes or is dropped, so no entry outlives its execution.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// A join was refused because the flight already has `maxDedupeWaiters` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{waiters} identical requests already wait on this execution")]
pub struct DedupeFull {
    /// Waiters on the flight.
    pub waiters: usize,
}

/// One execution and what it produced so far.
struct Flight<D, T> {
    state: Mutex<State<D, T>>,
    notify: Notify,
}

struct State<D, T> {
    progress: Vec<D>,
    done: Option<T>,
    /// Every subscriber left before the result, the publisher went away without one, or the
    /// last subscriber took the result (see [`Subscription::outcome`]): no one joins, and no
    /// result is left to read.
    ended: bool,
    subscribers: usize,
    task: Option<AbortHandle>,
}

/// The executions in flight, by key, with a bound on the waiters of each.
///
/// ```
/// use std::sync::Arc;
/// use ray_scheduler::{FlightEvent, Flights};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let flights = Arc::new(Flights::<u32, &'static str, u64>::new(16));
/// let mut leader = flights.join(Some(7))?;
/// let mut follower = flights.join(Some(7))?;
/// assert!(leader.publisher.is_some() && follower.publisher.is_none());
///
/// let publisher = leader.publisher.take().unwrap();
/// publisher.publish("tok");
/// publisher.finish(42);
/// assert_eq!(follower.subscription.next().await, FlightEvent::Progress("tok"));
/// assert_eq!(follower.subscription.outcome().await, Some(42)); // shared, not repeated
/// assert_eq!(flights.flights(), 0);
/// # Ok::<(), ray_scheduler::DedupeFull>(())
/// # }).unwrap();
/// ```
pub struct Flights<K, D, T> {
    map: Mutex<HashMap<K, Weak<Flight<D, T>>>>,
    max_waiters: usize,
    followers: Arc<AtomicUsize>,
    followers_total: AtomicU64,
}

impl<K, D, T> fmt::Debug for Flights<K, D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("flights", &self.map.lock().len())
            .field("max_waiters", &self.max_waiters)
            .finish()
    }
}

/// What [`Flights::join`] gives: a subscription, and for the leader the publisher.
#[derive(Debug)]
pub struct Joined<K: Hash + Eq + Clone, D, T> {
    /// The caller's hold on the execution.
    pub subscription: Subscription<D, T>,
    /// `Some` for the leader, who must drive the execution.
    pub publisher: Option<Publisher<K, D, T>>,
}

impl<K, D, T> Flights<K, D, T>
where
    K: Hash + Eq + Clone,
{
    /// A map allowing at most `max_waiters` waiters (leader included) per execution.
    pub fn new(max_waiters: usize) -> Flights<K, D, T> {
        Flights {
            map: Mutex::new(HashMap::new()),
            max_waiters: max_waiters.max(1),
            followers: Arc::new(AtomicUsize::new(0)),
            followers_total: AtomicU64::new(0),
        }
    }

    /// Joins the execution under way for `key`, or starts a new one (always, when `key` is
    /// `None`). Refused when that execution already has `max_waiters` waiters.
    pub fn join(self: &Arc<Self>, key: Option<K>) -> Result<Joined<K, D, T>, DedupeFull> {
        let mut map = self.map.lock();
        if let Some(key) = &key
            && let Some(flight) = map.get(key).and_then(Weak::upgrade)
        {
            let mut state = flight.state.lock();
            if state.done.is_none() && !state.ended {
                if state.subscribers >= self.max_waiters {
                    return Err(DedupeFull {
                        waiters: state.subscribers,
                    });
                }
                state.subscribers += 1;
                drop(state);
                self.followers.fetch_add(1, Ordering::Relaxed);
                self.followers_total.fetch_add(1, Ordering::Relaxed);
                return Ok(Joined {
                    subscription: Subscription {
                        flight,
                        next: 0,
                        follower: Some(self.followers.clone()),
                    },
                    publisher: None,
                });
            }
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State {
                progress: Vec::new(),
                done: None,
                ended: false,
                subscribers: 1,
                task: None,
            }),
            notify: Notify::new(),
        });
        if let Some(key) = &key {
            map.insert(key.clone(), Arc::downgrade(&flight));
        }
        drop(map);
        Ok(Joined {
            subscription: Subscription {
                flight: flight.clone(),
                next: 0,
                follower: None,
            },
            publisher: Some(Publisher {
                flights: self.clone(),
                flight,
                key,
                finished: false,
            }),
        })
    }

    /// Whether an execution is under way for `key` that a request could join now (a moment
    /// later it may have ended: [`Flights::join`] decides).
    pub fn is_running(&self, key: &K) -> bool {
        self.map
            .lock()
            .get(key)
            .and_then(Weak::upgrade)
            .is_some_and(|flight| {
                let state = flight.state.lock();
                state.done.is_none() && !state.ended
            })
    }

    /// Executions under way with a key.
    pub fn flights(&self) -> usize {
        self.map.lock().len()
    }

    /// Requests waiting on an execution they did not start.
    pub fn followers(&self) -> usize {
        self.followers.load(Ordering::Relaxed)
    }

    /// Requests that ever joined an execution they did not start.
    pub fn followers_total(&self) -> u64 {
        self.followers_total.load(Ordering::Relaxed)
    }

    fn forget(&self, key: &K, flight: &Arc<Flight<D, T>>) {
        let mut map = self.map.lock();
        if map
            .get(key)
            .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), Arc::as_ptr(flight)))
        {
            map.remove(key);
        }
    }
}

/// The leader's handle for publishing progress and the result. Dropping it without
/// [`Publisher::finish`] ends the flight: its subscribers receive [`FlightEvent::Lost`].
pub struct Publisher<K, D, T>
where
    K: Hash + Eq + Clone,
{
    flights: Arc<Flights<K, D, T>>,
    flight: Arc<Flight<D, T>>,
    key: Option<K>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, D, T> fmt::Debug for Publisher<K, D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl<K: Hash + Eq + Clone, D, T> Publisher<K, D, T> {
    /// Adds progress every subscriber will read.
    pub fn publish(&self, item: D) {
        self.flight.state.lock().progress.push(item);
        self.flight.notify.notify_waiters();
    }

    /// Whether every subscriber has left (the execution may stop).
    pub fn abandoned(&self) -> bool {
        self.flight.state.lock().ended
    }

    /// Publishes the result and takes the flight out of the map, so later requests start
    /// afresh (or find the result in a cache).
    pub fn finish(mut self, value: T) {
        self.finished = true;
        let mut state = self.flight.state.lock();
        if state.done.is_none() && !state.ended {
            state.done = Some(value);
        }
        state.task = None;
        drop(state);
        self.flight.notify.notify_waiters();
        if let Some(key) = &self.key {
            self.flights.forget(key, &self.flight);
        }
    }
}

impl<K: Hash + Eq + Clone, D, T> Drop for Publisher<K, D, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.flight.state.lock();
        state.ended = true;
        state.task = None;
        drop(state);
        self.flight.notify.notify_waiters();
        if let Some(key) = &self.key {
            self.flights.forget(key, &self.flight);
        }
    }
}

/// What a subscription reads next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlightEvent<D, T> {
    /// The next piece of progress.
    Progress(D),
    /// The result.
    Done(T),
    /// The execution ended without a result (its driver went away).
    Lost,
}

/// One request's hold on an execution. Dropping the last one before the result aborts the
/// driving task.
pub struct Subscription<D, T> {
    flight: Arc<Flight<D, T>>,
    next: usize,
    /// The followers gauge, for a follower.
    follower: Option<Arc<AtomicUsize>>,
}

impl<D, T> fmt::Debug for Subscription<D, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("follower", &self.follower.is_some())
            .field("next", &self.next)
            .finish()
    }
}

impl<D: Clone, T: Clone> Subscription<D, T> {
    /// How many requests hold this execution, this one included.
    pub fn subscribers(&self) -> usize {
        self.flight.state.lock().subscribers
    }

    /// Whether this request joined an execution another one started.
    pub fn is_follower(&self) -> bool {
        self.follower.is_some()
    }

    /// Registers the task driving the execution, aborted when every subscriber has left.
    pub fn set_task(&self, task: AbortHandle) {
        let mut state = self.flight.state.lock();
        if state.done.is_none() && !state.ended {
            state.task = Some(task);
        } else if state.ended {
            task.abort();
        }
    }

    /// How many pieces of progress this subscription has read.
    pub fn read(&self) -> usize {
        self.next
    }

    /// The next event: progress not read yet, else the result, else waits.
    pub async fn next(&mut self) -> FlightEvent<D, T> {
        loop {
            let notified = self.flight.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.flight.state.lock();
                if let Some(item) = state.progress.get(self.next) {
                    self.next += 1;
                    return FlightEvent::Progress(item.clone());
                }
                if let Some(done) = &state.done {
                    return FlightEvent::Done(done.clone());
                }
                if state.ended {
                    return FlightEvent::Lost;
                }
            }
            notified.await;
        }
    }

    /// The result, skipping progress; `None` when the execution ended without one.
    ///
    /// The only subscriber left takes the result itself rather than a copy (nobody can join a
    /// finished flight); the flight then counts as ended, so a second call answers `None`.
    pub async fn outcome(&mut self) -> Option<T> {
        loop {
            let notified = self.flight.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.flight.state.lock();
                self.next = state.progress.len();
                if state.subscribers == 1 && state.done.is_some() {
                    state.ended = true;
                    return state.done.take();
                }
                if let Some(done) = &state.done {
                    return Some(done.clone());
                }
                if state.ended {
                    return None;
                }
            }
            notified.await;
        }
    }
}

impl<D, T> Drop for Subscription<D, T> {
    fn drop(&mut self) {
        if let Some(gauge) = &self.follower {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        let mut state = self.flight.state.lock();
        state.subscribers -= 1;
        if state.subscribers == 0 && state.done.is_none() {
            state.ended = true;
            if let Some(task) = state.task.take() {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type Map = Arc<Flights<u8, u32, u32>>;

    #[tokio::test]
    async fn a_late_joiner_reads_the_progress_from_the_start() {
        let flights: Map = Arc::new(Flights::new(8));
        assert!(!flights.is_running(&1));
        let mut leader = flights.join(Some(1)).unwrap();
        assert!(flights.is_running(&1), "a request could join it now");
        let publisher = leader.publisher.take().unwrap();
        publisher.publish(1);
        publisher.publish(2);
        let mut late = flights.join(Some(1)).unwrap();
        assert!(late.subscription.is_follower());
        assert_eq!(flights.followers(), 1);
        assert_eq!(late.subscription.next().await, FlightEvent::Progress(1));
        publisher.finish(9);
        assert!(!flights.is_running(&1), "a finished flight takes no one");
        assert_eq!(late.subscription.next().await, FlightEvent::Progress(2));
        assert_eq!(late.subscription.next().await, FlightEvent::Done(9));
        assert_eq!(leader.subscription.outcome().await, Some(9));
        drop(late);
        assert_eq!(flights.followers(), 0);
        assert_eq!(flights.flights(), 0);
        // A finished flight is never joined: the next request starts afresh.
        assert!(flights.join(Some(1)).unwrap().publisher.is_some());
    }

    #[tokio::test]
    async fn the_only_subscriber_takes_the_result_and_others_share_it() {
        let flights: Arc<Flights<u8, u32, Arc<u32>>> = Arc::new(Flights::new(8));
        // Alone: the result itself, not a copy of the handle.
        let mut alone = flights.join(Some(1)).unwrap();
        alone.publisher.take().unwrap().finish(Arc::new(5));
        let result = alone.subscription.outcome().await.unwrap();
        assert_eq!(Arc::strong_count(&result), 1);
        assert_eq!(alone.subscription.outcome().await, None, "taken once");
        drop(alone);
        // Two: each reads it, the first as a copy, the last left alone takes it.
        let mut leader = flights.join(Some(2)).unwrap();
        let mut follower = flights.join(Some(2)).unwrap();
        leader.publisher.take().unwrap().finish(Arc::new(7));
        let first = follower.subscription.outcome().await.unwrap();
        drop(follower);
        let last = leader.subscription.outcome().await.unwrap();
        assert_eq!((*first, *last), (7, 7));
        assert_eq!(
            Arc::strong_count(&last),
            2,
            "the follower's copy and the leader's"
        );
        assert!(!flights.is_running(&2));
        assert!(flights.join(Some(2)).unwrap().publisher.is_some());
    }

    #[tokio::test]
    async fn waiters_are_bounded() {
        let flights: Map = Arc::new(Flights::new(2));
        let _a = flights.join(Some(1)).unwrap();
        let _b = flights.join(Some(1)).unwrap();
        assert_eq!(
            flights.join(Some(1)).unwrap_err(),
            DedupeFull { waiters: 2 }
        );
        // No key: never shared.
        assert!(flights.join(None).unwrap().publisher.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_subscriber_leaving_aborts_the_task() {
        let flights: Map = Arc::new(Flights::new(8));
        let Joined {
            subscription,
            publisher,
        } = flights.join(Some(1)).unwrap();
        let publisher = publisher.unwrap();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            publisher.finish(1);
        });
        subscription.set_task(task.abort_handle());
        let follower = flights.join(Some(1)).unwrap();
        drop(subscription);
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "a follower still waits");
        drop(follower);
        let joined = task.await;
        assert!(joined.unwrap_err().is_cancelled());
        assert_eq!(
            flights.flights(),
            0,
            "the dropped publisher forgot its entry"
        );
    }

    #[tokio::test]
    async fn a_publisher_dropped_without_a_result_is_lost() {
        let flights: Map = Arc::new(Flights::new(8));
        let mut joined = flights.join(Some(3)).unwrap();
        drop(joined.publisher.take());
        assert_eq!(joined.subscription.next().await, FlightEvent::Lost);
        assert_eq!(joined.subscription.outcome().await, None);
    }
}
