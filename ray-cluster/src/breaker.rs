//! A circuit breaker per peer: after `threshold` failed forwards in a row the peer is skipped
//! for `open_for`; then one request may try it again (half open), and its outcome closes or
//! reopens the breaker. A sync core: time is passed in.

use std::time::{Duration, Instant};

/// Where one peer's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go through; `failures` in a row so far.
    Closed {
        /// Failed forwards in a row.
        failures: u32,
    },
    /// The peer is skipped until `until`.
    Open {
        /// When one request may try the peer again.
        until: Instant,
    },
    /// One trial request is out; the others skip the peer until it answers.
    HalfOpen,
}

/// One peer's circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: BreakerState::Closed { failures: 0 },
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// Its state now.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request may go to the peer at `now`; an open breaker whose time is over lets
    /// exactly one trial through (and is half open until that trial's outcome is recorded).
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// Whether a request could go to the peer at `now`, without taking the half-open trial.
    pub fn allows(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } => now >= until,
            BreakerState::HalfOpen => false,
        }
    }

    /// The outcome of a request that was let through.
    pub fn record(&mut self, ok: bool, now: Instant) {
        self.state = match (self.state, ok) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_trial_through() {
        let start = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.try_acquire(start));
            b.record(false, start);
        }
        assert!(b.try_acquire(start));
        b.record(false, start);
        assert!(!b.try_acquire(start + Duration::from_secs(9)));
        let later = start + Duration::from_secs(10);
        assert!(b.try_acquire(later), "one trial");
        assert!(!b.try_acquire(later), "only one");
        b.record(true, later);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    proptest! {
        /// Whatever the sequence: an open breaker lets nothing through before its time, at
        /// most one trial is out while half open, and a success always closes it.
        #[test]
        fn never_lets_through_while_open(
            steps in proptest::collection::vec((0u64..5_000, prop::bool::ANY, prop::bool::ANY), 1..64),
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut b = Breaker::new(2, Duration::from_millis(1_000));
            let mut out = false;
            for (advance, ok, finish) in steps {
                now += Duration::from_millis(advance);
                let before = b.state();
                let acquired = b.try_acquire(now);
                match before {
                    BreakerState::Open { until } if now < until => prop_assert!(!acquired),
                    BreakerState::HalfOpen => prop_assert!(!acquired),
                    _ => prop_assert!(acquired),
                }
                if acquired {
                    prop_assert!(!(out && b.state() == BreakerState::HalfOpen && before == BreakerState::HalfOpen));
                    out = true;
                }
                if out && finish {
                    b.record(ok, now);
                    out = false;
                    if ok {
                        prop_assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
                    }
                }
            }
        }
    }
}
