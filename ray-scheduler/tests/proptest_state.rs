//! Property tests of the decision core over random interleavings of submit, start, complete,
//! cancel and clock advance, checked against a model after every operation.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ray_core::wire::Lane;
use ray_scheduler::{JobSpec, Reject, SchedulerSettings, SchedulerState};

#[derive(Debug, Clone)]
enum Op {
    Submit { cost: u32, short: bool, family: u8 },
    Complete { pick: usize },
    Cancel { pick: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..400, any::<bool>(), 0u8..4)
            .prop_map(|(cost, short, family)| Op::Submit { cost, short, family }),
        3 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (0u64..30).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn settings() -> impl Strategy<Value = SchedulerSettings> {
    (
        1u32..4,
        1u32..12,
        400u32..3_000,
        400u32..1_200,
        1u32..6,
        0u64..20,
        1u32..5,
    )
        .prop_map(
            |(concurrency, max_queue, queued, inflight, lookahead, window, burst)| {
                SchedulerSettings {
                    concurrency,
                    max_queue,
                    max_queued_tokens: queued,
                    max_inflight_tokens: inflight,
                    affinity_lookahead: lookahead,
                    batch_window: Duration::from_millis(window),
                    short_burst: burst,
                    max_dedupe_waiters: 8,
                    ..SchedulerSettings::default()
                }
            },
        )
}

/// What the model knows about a waiting job.
#[derive(Debug, Clone)]
struct Waiting {
    cost: u32,
    lane: Lane,
    /// Short jobs that started while it waited (short jobs only use this).
    shorts_started: u32,
    /// Draft jobs that started while it waited.
    drafts_started: u32,
    /// Later jobs of its lane that started before it.
    overtaken: u32,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    slot: u32,
    cost: u32,
    affinity: Option<u64>,
}

struct Model {
    settings: SchedulerSettings,
    state: SchedulerState<()>,
    now: Instant,
    next_id: u64,
    waiting: BTreeMap<u64, Waiting>,
    running: BTreeMap<u64, Running>,
}

impl Model {
    fn new(settings: SchedulerSettings) -> Model {
        Model {
            state: SchedulerState::new(settings.clone()),
            settings,
            now: Instant::now(),
            next_id: 1,
            waiting: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    /// Starts whatever can start, checking each start against the model.
    fn drain(&mut self) {
        while let Some(assignment) = self.state.next(self.now) {
            let job = self
                .waiting
                .remove(&assignment.id)
                .expect("started a waiting job");
            assert_eq!(job.cost, assignment.cost);
            assert!(
                !self.running.values().any(|r| r.slot == assignment.slot),
                "slot {} handed out twice",
                assignment.slot
            );
            // Everyone of its lane submitted earlier and still waiting was overtaken. A start
            // forced by a wait bound (aging) is outside the lane and affinity rules.
            for (id, other) in self.waiting.iter_mut().filter(|_| !assignment.forced) {
                if *id < assignment.id && other.lane == job.lane {
                    other.overtaken += 1;
                }
                match job.lane {
                    Lane::Short => other.shorts_started += 1,
                    Lane::Draft => other.drafts_started += 1,
                }
            }
            self.running.insert(
                assignment.id,
                Running {
                    slot: assignment.slot,
                    cost: assignment.cost,
                    affinity: assignment.affinity,
                },
            );
        }
    }

    fn check(&self) {
        let s = &self.settings;
        let snapshot = self.state.snapshot(self.now);
        assert!(
            snapshot.in_flight <= s.concurrency,
            "in flight {}",
            snapshot.in_flight
        );
        assert_eq!(snapshot.in_flight as usize, self.running.len());
        assert!(
            snapshot.depth() <= s.max_queue,
            "depth {}",
            snapshot.depth()
        );
        assert_eq!(snapshot.depth() as usize, self.waiting.len());
        let queued: u32 = self.waiting.values().map(|w| w.cost).sum();
        let in_flight: u32 = self.running.values().map(|r| r.cost).sum();
        assert_eq!(snapshot.queued_tokens, queued);
        assert_eq!(snapshot.in_flight_tokens, in_flight);
        assert!(queued <= s.max_queued_tokens);
        assert!(in_flight <= s.max_inflight_tokens);
        for job in self.waiting.values() {
            assert!(
                job.overtaken <= s.affinity_lookahead,
                "a job was overtaken {} times (lookahead {})",
                job.overtaken,
                s.affinity_lookahead
            );
            if job.lane == Lane::Short {
                // The documented bound: while a short job waits, at most one draft job starts
                // per `short_burst` short jobs (plus one whose turn had already come).
                assert!(
                    job.drafts_started <= 1 + job.shorts_started / s.short_burst,
                    "a short job waited behind {} drafts and {} shorts (burst {})",
                    job.drafts_started,
                    job.shorts_started,
                    s.short_burst
                );
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Submit {
                cost,
                short,
                family,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let lane = if short { Lane::Short } else { Lane::Draft };
                let spec = JobSpec {
                    cost,
                    lane,
                    affinity: Some(u64::from(family)),
                    ..JobSpec::default()
                };
                let depth = self.waiting.len() as u32;
                let queued: u32 = self.waiting.values().map(|w| w.cost).sum();
                match self.state.submit(id, spec, self.now, None) {
                    Ok(()) => {
                        assert!(cost <= self.settings.max_inflight_tokens);
                        assert!(depth < self.settings.max_queue);
                        self.waiting.insert(
                            id,
                            Waiting {
                                cost,
                                lane,
                                shorts_started: 0,
                                drafts_started: 0,
                                overtaken: 0,
                            },
                        );
                    }
                    Err(Reject::TokenBudget { .. }) => assert!(
                        cost > self.settings.max_inflight_tokens
                            || cost > self.settings.max_queued_tokens
                    ),
                    Err(Reject::QueueDepth { .. }) => assert!(depth >= self.settings.max_queue),
                    Err(Reject::QueuedTokens { .. }) => {
                        assert!(queued + cost > self.settings.max_queued_tokens)
                    }
                    // Admission by estimate; its rules are checked in proptest_priority.rs.
                    Err(Reject::WaitExceedsDeadline { .. }) => {}
                }
            }
            Op::Complete { pick } => {
                if !self.running.is_empty() {
                    let id = *self.running.keys().nth(pick % self.running.len()).unwrap();
                    let job = self.running.remove(&id).unwrap();
                    self.state
                        .release(job.slot, job.cost, job.affinity, self.now);
                }
            }
            Op::Cancel { pick } => {
                if !self.waiting.is_empty() {
                    let id = *self.waiting.keys().nth(pick % self.waiting.len()).unwrap();
                    self.waiting.remove(&id);
                    assert!(self.state.cancel(id).is_some());
                }
            }
            Op::Advance { ms } => self.now += Duration::from_millis(ms),
        }
        self.drain();
        self.check();
    }

    /// Nothing can be stuck: with nothing running and every hold expired, a waiting job starts.
    fn check_progress(&mut self) {
        if self.running.is_empty() && !self.waiting.is_empty() {
            self.now += self.settings.batch_window + Duration::from_millis(1);
            self.drain();
            assert!(
                !self.running.is_empty(),
                "jobs wait with every permit and all tokens free"
            );
            self.check();
        }
    }
}

/// `default`, or `PROPTEST_CASES` for a longer run (docs/testing.md).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(2_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_rules_hold_for_any_interleaving(
        settings in settings(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut model = Model::new(settings);
        for op in ops {
            model.apply(op);
            model.check_progress();
        }
        // Let everything finish: every counter returns to zero.
        loop {
            if let Some((&id, _)) = model.running.iter().next() {
                let job = model.running.remove(&id).unwrap();
                model.state.release(job.slot, job.cost, job.affinity, model.now);
                model.drain();
                model.check();
            } else if !model.waiting.is_empty() {
                model.check_progress();
            } else {
                break;
            }
        }
        let snapshot = model.state.snapshot(model.now);
        prop_assert_eq!(snapshot.depth(), 0);
        prop_assert_eq!(snapshot.in_flight, 0);
        prop_assert_eq!(snapshot.queued_tokens, 0);
        prop_assert_eq!(snapshot.in_flight_tokens, 0);
    }
}
