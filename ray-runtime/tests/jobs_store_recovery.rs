//! Property test of recovery over real files: whatever mix of good records, damaged entries,
//! stale temporary files and foreign files the store directory holds, the runtime starts, keeps
//! every good record, leaves no job `running`, sets everything else aside without deleting it,
//! and a second start finds nothing more to do.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use ray_core::config::ConfigLoader;
use ray_core::wire::{InferRequest, JobListQuery, JobRecord, JobStatus};
use ray_runtime::Runtime;

#[derive(Debug, Clone)]
enum Entry {
    Good { status: JobStatus, attempts: u32 },
    Garbage(Vec<u8>),
    Truncated { keep: usize },
    WrongId,
    BadName,
    Temporary,
    Foreign,
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        4 => (
            prop::sample::select(vec![JobStatus::Queued, JobStatus::Running, JobStatus::Failed, JobStatus::Cancelled]),
            0u32..5,
        )
            .prop_map(|(status, attempts)| Entry::Good { status, attempts }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Entry::Garbage),
        1 => (1usize..200).prop_map(|keep| Entry::Truncated { keep }),
        1 => Just(Entry::WrongId),
        1 => Just(Entry::BadName),
        1 => Just(Entry::Temporary),
        1 => Just(Entry::Foreign),
    ]
}

fn record(id: &str, status: JobStatus, attempts: u32) -> JobRecord {
    JobRecord {
        id: id.into(),
        status,
        request: InferRequest::new("recover me"),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        started_at: None,
        completed_at: None,
        attempts: attempts.min(3),
        max_attempts: 3,
        next_attempt_at: None,
        result: None,
        error: None,
        callback: None,
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn open(dir: &Path) -> Runtime {
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                // A huge retention: nothing is pruned while the test looks.
                r#"{{"profile":"tiny","asyncQueue":{{"enabled":true,"storageDir":{:?},
                     "completedTtlMs":604800000}}}}"#,
                dir.display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    Runtime::new(config).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_good_records_and_sets_aside_the_rest(entries in prop::collection::vec(entry(), 0..14)) {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let mut good = Vec::new();
        let mut foreign = BTreeSet::new();
        let mut damaged = 0;
        for (i, entry) in entries.iter().enumerate() {
            let id = format!("job_{i:016x}");
            match entry {
                Entry::Good { status, attempts } => {
                    let record = record(&id, *status, *attempts);
                    std::fs::write(jobs.join(format!("{id}.json")), serde_json::to_vec(&record).unwrap()).unwrap();
                    good.push(record);
                }
                Entry::Garbage(bytes) => {
                    std::fs::write(jobs.join(format!("{id}.json")), bytes).unwrap();
                    damaged += 1;
                }
                Entry::Truncated { keep } => {
                    let bytes = serde_json::to_vec(&record(&id, JobStatus::Queued, 0)).unwrap();
                    let keep = (*keep).min(bytes.len() - 1);
                    std::fs::write(jobs.join(format!("{id}.json")), &bytes[..keep]).unwrap();
                    damaged += 1;
                }
                Entry::WrongId => {
                    let bytes = serde_json::to_vec(&record("job_ffffffffffffffff", JobStatus::Queued, 0)).unwrap();
                    std::fs::write(jobs.join(format!("{id}.json")), bytes).unwrap();
                    damaged += 1;
                }
                Entry::BadName => {
                    std::fs::write(jobs.join(format!("no good {i}.json")), b"{}").unwrap();
                    damaged += 1;
                }
                Entry::Temporary => {
                    std::fs::write(jobs.join(format!(".tmp-{id}-abc-{i}")), b"{\"id\":").unwrap();
                    damaged += 1;
                }
                Entry::Foreign => {
                    let name = format!("README-{i}.txt");
                    std::fs::write(jobs.join(&name), b"not a job").unwrap();
                    foreign.insert(name);
                }
            }
        }

        let runtime = open(dir.path());
        let queue = runtime.jobs().unwrap();
        prop_assert_eq!(queue.len(), good.len());
        prop_assert_eq!(queue.health().quarantined_files, damaged as u64);
        prop_assert_eq!(names(&dir.path().join("quarantine")).len(), damaged);
        let expected: BTreeSet<String> = good
            .iter()
            .map(|r| format!("{}.json", r.id))
            .chain(foreign.iter().cloned())
            .collect();
        prop_assert_eq!(names(&jobs), expected);

        let listed = runtime.list_jobs(&JobListQuery { limit: Some(200), ..JobListQuery::default() }).unwrap();
        prop_assert!(listed.jobs.iter().all(|j| j.status != JobStatus::Running));
        for original in &good {
            let bytes = std::fs::read(jobs.join(format!("{}.json", original.id))).unwrap();
            let stored: JobRecord = serde_json::from_slice(&bytes).unwrap();
            prop_assert_ne!(stored.status, JobStatus::Running);
            prop_assert_eq!(stored.attempts, original.attempts);
            if original.status == JobStatus::Running {
                let expect = if original.attempts >= original.max_attempts {
                    JobStatus::Failed
                } else {
                    JobStatus::Queued
                };
                prop_assert_eq!(stored.status, expect);
            } else {
                prop_assert_eq!(&stored, original);
            }
        }
        drop(runtime);

        // A second start changes nothing and sets nothing more aside.
        let before = names(&jobs);
        let again = open(dir.path());
        prop_assert_eq!(again.jobs().unwrap().len(), good.len());
        prop_assert_eq!(again.jobs().unwrap().health().quarantined_files, 0);
        prop_assert_eq!(names(&jobs), before);
    }
}

/// Jobs recovered at start run in the order they were created, not in the order the store's
/// directory lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_jobs_run_in_the_order_they_were_created() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    // Ids whose order (and so, often, the directory's) differs from the creation order.
    let mut created = Vec::new();
    for n in 0..12u64 {
        let id = format!("job_{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 4);
        let mut job = record(&id, JobStatus::Queued, 0);
        job.created_at = format!("2026-01-01T00:00:{n:02}.000Z");
        job.updated_at = job.created_at.clone();
        std::fs::write(
            jobs.join(format!("{id}.json")),
            serde_json::to_vec(&job).unwrap(),
        )
        .unwrap();
        created.push(id);
    }
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":5}}}},
                     "scheduler":{{"concurrency":1}},
                     "asyncQueue":{{"enabled":true,"storageDir":{:?},"dispatchConcurrency":1,
                                    "completedTtlMs":604800000}}}}"#,
                dir.path().display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::new(config).unwrap();
    let background = runtime.start();
    let mut finished: Vec<(String, String)> = Vec::new();
    for _ in 0..200 {
        finished.clear();
        for id in &created {
            let job = runtime.job(id).await.unwrap();
            if let Some(at) = job.completed_at {
                finished.push((at, id.clone()));
            }
        }
        if finished.len() == created.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(finished.len(), created.len(), "{finished:?}");
    finished.sort();
    let order: Vec<String> = finished.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, created);
    background.shutdown().await;
}
