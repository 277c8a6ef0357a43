//! Property test of the job state machine over a store that fails writes at random: whatever
//! the failures hit (a submission, the start of an attempt, its outcome, a cancellation), once
//! the store works again every accepted job ends succeeded, failed for good or cancelled, no
//! job stays `running`, and the store holds what the queue says.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_core::wire::{InferRequest, JobRecord, JobStatus, JobSubmission};
use ray_runtime::Runtime;
use ray_runtime::jobs::{JobStore, ScanReport, StoreError, Visit};

/// Records in memory; while `faulty`, each write, removal and probe fails with probability
/// `fail_percent` (drawn from a seeded sequence, so a case replays the same way).
#[derive(Debug)]
struct FlakyStore {
    records: Mutex<HashMap<String, Vec<u8>>>,
    faulty: AtomicBool,
    fail_percent: u64,
    draws: AtomicU64,
    seed: u64,
    failed: AtomicU64,
}

impl FlakyStore {
    fn new(seed: u64, fail_percent: u64) -> FlakyStore {
        FlakyStore {
            records: Mutex::new(HashMap::new()),
            faulty: AtomicBool::new(false),
            fail_percent,
            draws: AtomicU64::new(0),
            seed,
            failed: AtomicU64::new(0),
        }
    }

    fn fails(&self) -> Result<(), StoreError> {
        if !self.faulty.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = self.draws.fetch_add(1, Ordering::SeqCst);
        let mut x = self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        if x % 100 < self.fail_percent {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io {
                action: "write",
                path: "/flaky/jobs".into(),
                source: std::io::Error::from_raw_os_error(28),
            });
        }
        Ok(())
    }

    fn record(&self, id: &str) -> Option<JobRecord> {
        let bytes = self.records.lock().get(id).cloned()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }
}

impl JobStore for FlakyStore {
    fn scan(&self, visit: &mut Visit<'_>) -> Result<ScanReport, StoreError> {
        let records = self.records.lock().clone();
        for (id, bytes) in &records {
            visit(id, bytes).unwrap();
        }
        Ok(ScanReport::default())
    }

    fn write(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.fails()?;
        self.records.lock().insert(id.into(), record.to_vec());
        Ok(())
    }

    fn read(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.records.lock().get(id).cloned())
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.fails()?;
        self.records.lock().remove(id);
        Ok(())
    }

    fn available_bytes(&self) -> Option<u64> {
        None
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.fails()
    }
}

#[derive(Debug, Clone)]
enum Step {
    Submit,
    Cancel(usize),
    Pause(u64),
    Fault(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Submit),
        1 => (0usize..16).prop_map(Step::Cancel),
        2 => (1u64..40).prop_map(Step::Pause),
        1 => any::<bool>().prop_map(Step::Fault),
    ]
}

fn runtime(store: Arc<FlakyStore>) -> Runtime {
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            // The store directory is never used: the flaky store replaces the file store.
            r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":15}},
                "cache":{"enabled":false},
                "asyncQueue":{"enabled":true,"storageDir":"/nonexistent/ray-flaky",
                              "pollIntervalMs":10,"maxAttempts":3,"completedTtlMs":604800000}}"#,
        )
        .load()
        .unwrap()
        .config;
    Runtime::builder(config).job_store(store).build().unwrap()
}

async fn run_case(seed: u64, fail_percent: u64, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let store = Arc::new(FlakyStore::new(seed, fail_percent));
    let runtime = runtime(store.clone());
    let background = runtime.start();
    let mut accepted: Vec<String> = Vec::new();
    for step in steps {
        match step {
            Step::Submit => {
                match runtime
                    .submit_job(JobSubmission::new(InferRequest::new("flaky store")))
                    .await
                {
                    Ok(job) => accepted.push(job.id),
                    Err(error) => {
                        prop_assert!(
                            matches!(
                                error.code(),
                                ErrorCode::AsyncQueueStorageLow | ErrorCode::AsyncQueueUnavailable
                            ),
                            "a store failure answers 503, got {error:?}"
                        );
                        prop_assert!(error.retry_after_secs().is_some());
                    }
                }
            }
            Step::Cancel(n) => {
                let Some(id) = accepted.get(n) else { continue };
                if let Err(error) = runtime.cancel_job(id).await {
                    prop_assert!(
                        matches!(
                            error.code(),
                            ErrorCode::JobNotCancellable
                                | ErrorCode::AsyncQueueStorageLow
                                | ErrorCode::AsyncQueueUnavailable
                        ),
                        "{error:?}"
                    );
                }
            }
            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Step::Fault(on) => store.faulty.store(on, Ordering::SeqCst),
        }
    }
    store.faulty.store(false, Ordering::SeqCst);

    // Once the store works again, everything settles: the probe ends the fault within a
    // second, and a job's store retries wait at most ten seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let mut open = Vec::new();
        for id in &accepted {
            let record = runtime.job(id).await.unwrap();
            if !record.status.is_terminal() {
                open.push((id.clone(), record.status));
            }
        }
        // The probe ends a fault within a second even when nothing else writes.
        if open.is_empty() && !runtime.jobs().unwrap().health().store_failing {
            break;
        }
        prop_assert!(
            tokio::time::Instant::now() < deadline,
            "jobs never finished after the store recovered: {open:?} (failed writes: {})",
            store.failed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = runtime.jobs().unwrap().health();
    prop_assert_eq!(health.running, 0);
    prop_assert_eq!(health.queued, 0);
    prop_assert!(!health.store_failing, "{:?}", health.store_error);
    for id in &accepted {
        let stored = store.record(id).unwrap();
        let served = runtime.job(id).await.unwrap();
        prop_assert_eq!(stored.status, served.status, "{}", id);
        match stored.status {
            JobStatus::Succeeded => prop_assert!(stored.result.is_some()),
            JobStatus::Failed => prop_assert!(stored.attempts >= stored.max_attempts),
            JobStatus::Cancelled => {}
            other => prop_assert!(false, "{id} ended {other:?}"),
        }
    }
    background.shutdown().await;
    Ok(())
}

/// A job cut off by a crash whose recovered record cannot be written at start (the store
/// fails every write then) is neither lost nor left `running`: it runs once the store works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_job_whose_write_fails_at_start_runs_once_the_store_works() {
    let store = Arc::new(FlakyStore::new(7, 100));
    let record = serde_json::json!({
        "id": "job_0123456789abcdef", "status": "running",
        "request": {"input": "cut off by a crash"},
        "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:01.000Z",
        "startedAt": "2026-01-01T00:00:01.000Z", "attempts": 1, "maxAttempts": 3
    });
    store.records.lock().insert(
        "job_0123456789abcdef".into(),
        record.to_string().into_bytes(),
    );
    store.faulty.store(true, Ordering::SeqCst);
    let runtime = runtime(store.clone());
    let background = runtime.start();
    let health = runtime.jobs().unwrap().health();
    assert!(health.store_failing, "the failed recovery write shows");
    assert_eq!(health.running, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.record("job_0123456789abcdef").unwrap().status,
        JobStatus::Running
    );
    store.faulty.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let record = runtime.job("job_0123456789abcdef").await.unwrap();
        if record.status == JobStatus::Succeeded {
            assert_eq!(record.attempts, 2, "the cut-off attempt counted");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{record:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = store.record("job_0123456789abcdef").unwrap();
    assert_eq!(stored.status, JobStatus::Succeeded);
    background.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_job_settles_once_the_store_works_again(
        seed in any::<u64>(),
        fail_percent in 20u64..90,
        steps in prop::collection::vec(step(), 4..40),
    ) {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        tokio.block_on(run_case(seed, fail_percent, steps))?;
    }
}

/// A damaged record that cannot be moved to `quarantine/` (here a file is in its way) is named
/// in one error, left where it is, and still answered `job_record_damaged`.
#[tokio::test]
async fn a_damaged_record_that_cannot_be_moved_is_left_in_place_and_answered_damaged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("quarantine"), b"in the way").unwrap();
    let damaged = dir.path().join("jobs/job_0123456789abcdef.json");
    std::fs::write(&damaged, br#"{"id":"job_0123456789abcdef","sta"#).unwrap();
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                r#"{{"profile":"tiny","asyncQueue":{{"enabled":true,"storageDir":{:?}}}}}"#,
                dir.path().display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::new(config).unwrap();
    assert!(damaged.exists(), "left in place");
    let error = runtime.job("job_0123456789abcdef").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::JobRecordDamaged);
    assert_eq!(error.status(), 410);
    let error = runtime
        .cancel_job("job_0123456789abcdef")
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::JobRecordDamaged);
    let error = runtime.job("job_fedcba9876543210").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::JobNotFound);
}
