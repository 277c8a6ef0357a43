//! Retention of finished jobs with the clock paused: the sweeper prunes a job exactly when
//! `completedTtlMs` has passed, without anyone asking for it, and not before.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_core::wire::{InferRequest, JobRecord, JobStatus, JobSubmission};
use ray_runtime::Runtime;

fn runtime(dir: &std::path::Path) -> Runtime {
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":1}}}},
                    "asyncQueue":{{"enabled":true,"storageDir":{:?},"minFreeStorageMiB":1,
                                   "completedTtlMs":60000}}}}"#,
                dir.display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    Runtime::new(config).unwrap()
}

async fn finished(runtime: &Runtime, id: &str) -> JobRecord {
    for _ in 0..1_000 {
        let record = runtime.job(id).await.unwrap();
        if record.status.is_terminal() {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {id} did not finish");
}

fn pruned_total(runtime: &Runtime) -> f64 {
    let text = runtime.metrics().to_prometheus_text();
    text.lines()
        .find_map(|l| l.strip_prefix("ray_jobs_pruned_total "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_prunes_finished_jobs_when_their_ttl_ends() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let _background = runtime.start();
    let accepted = runtime
        .submit_job(JobSubmission::new(InferRequest::new("keep me a minute")))
        .await
        .unwrap();
    let file = dir
        .path()
        .join("jobs")
        .join(format!("{}.json", accepted.id));
    let record = finished(&runtime, &accepted.id).await;
    assert_eq!(record.status, JobStatus::Succeeded);

    // Nobody looks at the job; time passes to just before its retention ends.
    tokio::time::sleep(Duration::from_millis(59_000)).await;
    assert!(file.exists(), "kept until completedTtlMs has passed");
    assert_eq!(pruned_total(&runtime), 0.0);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The removal itself runs on the blocking pool; give it a moment of (paused) time.
    for _ in 0..100 {
        if !file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!file.exists(), "the sweeper removed the record");
    assert_eq!(pruned_total(&runtime), 1.0);
    let error = runtime.job(&accepted.id).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::JobNotFound);
    assert_eq!(runtime.jobs().unwrap().health().total_jobs, 0);
}

#[tokio::test(start_paused = true)]
async fn queued_and_running_jobs_are_never_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":120000}}}},
                    "scheduler":{{"requestTimeoutMs":120000}},
                    "asyncQueue":{{"enabled":true,"storageDir":{:?},"minFreeStorageMiB":1,
                                   "completedTtlMs":0,"dispatchConcurrency":1}}}}"#,
                dir.path().display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::new(config).unwrap();
    let _background = runtime.start();
    let running = runtime
        .submit_job(JobSubmission::new(InferRequest::new("long one")))
        .await
        .unwrap();
    let waiting = runtime
        .submit_job(JobSubmission::new(InferRequest::new("waits behind it")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        runtime.job(&running.id).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(
        runtime.job(&waiting.id).await.unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(pruned_total(&runtime), 0.0);
}
