//! The claim rules as a state machine, property-tested twice: on the plain rule ([`Claims`])
//! and on real files, with two [`FileJobStore`] handles on one directory as two dispatchers.
//! Both are checked against the same model: no two holders at once, an expired or released
//! job can be claimed again, complete is final, and no job is lost (every job not completed
//! can be claimed once its lease is over).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::jobs::{FileJobStore, JobStore};

const JOBS: [&str; 3] = ["job_a", "job_b", "job_c"];

#[derive(Debug, Clone)]
enum Op {
    Claim { who: usize, job: usize, period: u64 },
    Renew { who: usize, job: usize, period: u64 },
    Release { who: usize, job: usize },
    Complete { who: usize, job: usize },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..2usize;
    let job = 0..JOBS.len();
    prop_oneof![
        4 => (who.clone(), job.clone(), 1..50u64).prop_map(|(who, job, period)| Op::Claim { who, job, period }),
        2 => (who.clone(), job.clone(), 1..50u64).prop_map(|(who, job, period)| Op::Renew { who, job, period }),
        1 => (who.clone(), job.clone()).prop_map(|(who, job)| Op::Release { who, job }),
        1 => (who, job).prop_map(|(who, job)| Op::Complete { who, job }),
        2 => (0..60u64).prop_map(Op::Advance),
    ]
}

/// What a holder can do: the rule in memory, or a store handle.
trait Side {
    fn claim(&self, job: &str, now: u64, period: Duration) -> Result<Lease, ClaimError>;
    fn renew(&self, lease: &Lease, now: u64, period: Duration) -> Result<Lease, ClaimError>;
    fn release(&self, lease: &Lease) -> Result<(), ClaimError>;
    fn complete(&self, lease: &Lease, now: u64) -> Result<(), ClaimError>;
}

/// The plain rule, with the state of every job shared by the sides.
struct Plain<'a> {
    name: &'static str,
    states: &'a std::cell::RefCell<HashMap<String, ClaimState>>,
}

impl Side for Plain<'_> {
    fn claim(&self, job: &str, now: u64, period: Duration) -> Result<Lease, ClaimError> {
        let mut states = self.states.borrow_mut();
        Claims::claim(
            states.entry(job.into()).or_default(),
            job,
            self.name,
            now,
            period,
        )
    }
    fn renew(&self, lease: &Lease, now: u64, period: Duration) -> Result<Lease, ClaimError> {
        let mut states = self.states.borrow_mut();
        Claims::renew(
            states.entry(lease.job_id.clone()).or_default(),
            lease,
            now,
            period,
        )
    }
    fn release(&self, lease: &Lease) -> Result<(), ClaimError> {
        let mut states = self.states.borrow_mut();
        Claims::release(states.entry(lease.job_id.clone()).or_default(), lease)
    }
    fn complete(&self, lease: &Lease, now: u64) -> Result<(), ClaimError> {
        let mut states = self.states.borrow_mut();
        Claims::complete(states.entry(lease.job_id.clone()).or_default(), lease, now)
    }
}

impl Side for FileJobStore {
    fn claim(&self, job: &str, now: u64, period: Duration) -> Result<Lease, ClaimError> {
        JobStore::claim(self, job, now, period)
    }
    fn renew(&self, lease: &Lease, now: u64, period: Duration) -> Result<Lease, ClaimError> {
        JobStore::renew(self, lease, now, period)
    }
    fn release(&self, lease: &Lease) -> Result<(), ClaimError> {
        JobStore::release(self, lease)
    }
    fn complete(&self, lease: &Lease, now: u64) -> Result<(), ClaimError> {
        JobStore::complete(self, lease, now)
    }
}

/// The model: who holds each job until when, and which jobs are completed.
#[derive(Default)]
struct Model {
    held: HashMap<usize, (usize, u64)>,
    completed: Vec<usize>,
    leases: HashMap<(usize, usize), Lease>,
}

fn run(sides: [&dyn Side; 2], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut now = 1_000u64;
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Advance(ms) => now += ms,
            Op::Claim { who, job, period } => {
                let answer = sides[who].claim(JOBS[job], now, Duration::from_millis(period));
                let live = model.held.get(&job).filter(|(_, until)| *until > now);
                match (answer, model.completed.contains(&job), live) {
                    (Ok(lease), false, None) => {
                        prop_assert_eq!(lease.expires_ms, now + period);
                        model.held.insert(job, (who, now + period));
                        model.leases.insert((who, job), lease);
                    }
                    (Err(ClaimError::Completed { .. }), true, _) => {}
                    (Err(ClaimError::Held { expires_ms, .. }), false, Some((_, until))) => {
                        prop_assert_eq!(expires_ms, *until);
                    }
                    (answer, completed, live) => {
                        prop_assert!(
                            false,
                            "claim of {} by {who} at {now}: {answer:?} (completed {completed}, live {live:?})",
                            JOBS[job]
                        );
                    }
                }
            }
            Op::Renew { who, job, period } => {
                let Some(lease) = model.leases.get(&(who, job)).cloned() else {
                    continue;
                };
                let answer = sides[who].renew(&lease, now, Duration::from_millis(period));
                let ours = !model.completed.contains(&job)
                    && model
                        .held
                        .get(&job)
                        .is_some_and(|(w, until)| *w == who && *until > now)
                    && current(&model, who, job, &lease);
                match answer {
                    Ok(renewed) => {
                        prop_assert!(ours, "renewed a lease that is not live");
                        model.held.insert(job, (who, now + period));
                        model.leases.insert((who, job), renewed);
                    }
                    Err(_) => prop_assert!(!ours, "a live lease could not be renewed"),
                }
            }
            Op::Release { who, job } => {
                let Some(lease) = model.leases.get(&(who, job)).cloned() else {
                    continue;
                };
                let ours = !model.completed.contains(&job)
                    && model.held.get(&job).is_some_and(|(w, _)| *w == who)
                    && current(&model, who, job, &lease);
                match sides[who].release(&lease) {
                    Ok(()) => {
                        prop_assert!(ours, "released a lease that is not the job's claim");
                        model.held.remove(&job);
                    }
                    Err(_) => prop_assert!(!ours, "the current claim could not be released"),
                }
            }
            Op::Complete { who, job } => {
                let Some(lease) = model.leases.get(&(who, job)).cloned() else {
                    continue;
                };
                let ours = !model.completed.contains(&job)
                    && model
                        .held
                        .get(&job)
                        .is_some_and(|(w, until)| *w == who && *until > now)
                    && current(&model, who, job, &lease);
                match sides[who].complete(&lease, now) {
                    Ok(()) => {
                        prop_assert!(ours, "completed without a live lease");
                        model.held.remove(&job);
                        model.completed.push(job);
                    }
                    Err(_) => prop_assert!(!ours, "a live lease could not complete"),
                }
            }
        }
    }
    // Nothing lost: once every lease is over, each job not completed can be claimed.
    now += 100;
    for (job, id) in JOBS.iter().enumerate() {
        let answer = sides[0].claim(id, now, Duration::from_millis(10));
        if model.completed.contains(&job) {
            prop_assert!(
                matches!(answer, Err(ClaimError::Completed { .. })),
                "{} was claimed after completion",
                id
            );
        } else {
            prop_assert!(answer.is_ok(), "{id} was lost: {answer:?}");
        }
    }
    Ok(())
}

/// Whether `lease` is the last one `who` got for `job` and nobody claimed it since.
fn current(model: &Model, who: usize, job: usize, lease: &Lease) -> bool {
    model
        .leases
        .iter()
        .filter(|((_, j), _)| *j == job)
        .all(|(_, other)| other.generation <= lease.generation)
        && model.leases.get(&(who, job)) == Some(lease)
}

proptest! {
    #![proptest_config(crate::fuzz_config(256))]

    #[test]
    fn the_rule_keeps_one_holder_and_loses_nothing(ops in prop::collection::vec(op(), 0..60)) {
        let states = std::cell::RefCell::new(HashMap::new());
        let one = Plain { name: "one", states: &states };
        let two = Plain { name: "two", states: &states };
        run([&one, &two], &ops)?;
    }
}

proptest! {
    #![proptest_config(crate::fuzz_config(48))]

    #[test]
    fn two_file_stores_on_one_directory_never_share_a_job(ops in prop::collection::vec(op(), 0..40)) {
        let dir = tempfile::tempdir().unwrap();
        let one = FileJobStore::open(dir.path(), 1 << 20).unwrap();
        let two = FileJobStore::open(dir.path(), 1 << 20).unwrap();
        prop_assert_ne!(one.holder(), two.holder());
        run([&one, &two], &ops)?;
    }
}

#[test]
fn a_dropped_handle_gives_its_jobs_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileJobStore::open(dir.path(), 1 << 20).unwrap();
    let lease = JobStore::claim(&first, "job_x", 1_000, Duration::from_secs(60)).unwrap();
    let second = FileJobStore::open(dir.path(), 1 << 20).unwrap();
    assert!(matches!(
        JobStore::claim(&second, "job_x", 1_000, Duration::from_secs(60)),
        Err(ClaimError::Held { .. })
    ));
    drop(first);
    let taken = JobStore::claim(&second, "job_x", 1_001, Duration::from_secs(60)).unwrap();
    assert!(taken.generation > lease.generation);
    // Removing the job forgets its claims.
    JobStore::remove(&second, "job_x").unwrap();
    assert!(!dir.path().join("claims/job_x").exists());
}

#[test]
fn claim_files_do_not_disturb_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileJobStore::open(dir.path(), 1 << 20).unwrap();
    JobStore::claim(&store, "job_y", 1_000, Duration::from_secs(1)).unwrap();
    let report = store.scan(&mut |_, _| Ok(())).unwrap();
    assert!(report.set_aside.is_empty() && report.ignored.is_empty());
}
