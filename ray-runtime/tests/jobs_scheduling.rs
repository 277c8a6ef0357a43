//! How jobs share the box, with the clock paused: a job waits in the scheduler's batch class
//! while interactive requests hold or wait for the only permit, yet starts within its deadline
//! (it is never starved); shutdown lets a running attempt finish.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ray_core::config::ConfigLoader;
use ray_core::wire::{InferRequest, JobStatus, JobSubmission};
use ray_runtime::Runtime;

/// The tiny profile (one permit), a mock that takes a second, the queue in `dir`. Slot
/// affinity looks one place ahead only: with a full look-ahead a request of another prompt
/// family may be overtaken by eight one-second requests of a hot family, which is the whole
/// 8-second deadline, and that is the scheduler's business, not the job queue's.
fn runtime(dir: &std::path::Path) -> Runtime {
    let config = ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":1000}}}},
                    "cache":{{"enabled":false}},"scheduler":{{"affinityLookahead":1}},
                    "asyncQueue":{{"enabled":true,"storageDir":{:?},"minFreeStorageMiB":1}}}}"#,
                dir.display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    Runtime::new(config).unwrap()
}

async fn status(runtime: &Runtime, id: &str) -> JobStatus {
    runtime.job(id).await.unwrap().status
}

#[tokio::test(start_paused = true)]
async fn a_job_waits_for_the_permit_an_interactive_request_holds() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let _background = runtime.start();
    let interactive = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.infer(InferRequest::new("interactive")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let job = runtime
        .submit_job(JobSubmission::new(InferRequest::new("background work")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The job's attempt is in the scheduler, waiting in the batch class for the permit.
    assert_ne!(
        status(&runtime, &job.id).await,
        JobStatus::Succeeded,
        "the permit is taken"
    );
    interactive.await.unwrap().unwrap();
    for _ in 0..100 {
        if status(&runtime, &job.id).await == JobStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&runtime, &job.id).await, JobStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_job_is_not_starved_by_constant_interactive_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let _background = runtime.start();
    // Two clients keep the only permit busy and one request always waiting, for 30 s.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..2 {
        let (runtime, stop) = (runtime.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let _ = runtime
                    .infer(InferRequest::new(format!("client {client} request {n}")))
                    .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = runtime
        .submit_job(JobSubmission::new(InferRequest::new("must still run")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Interactive requests go first while the job can still start within its deadline.
    assert_ne!(
        status(&runtime, &job.id).await,
        JobStatus::Succeeded,
        "it yields at first"
    );
    let mut finished = false;
    for _ in 0..270 {
        if status(&runtime, &job.id).await == JobStatus::Succeeded {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let record = runtime.job(&job.id).await.unwrap();
    assert!(
        finished,
        "the job ran while interactive traffic went on: {record:?}"
    );
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_running_attempt_finish() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let background = runtime.start();
    let job = runtime
        .submit_job(JobSubmission::new(InferRequest::new("finish me")))
        .await
        .unwrap();
    for _ in 0..100 {
        if status(&runtime, &job.id).await == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status(&runtime, &job.id).await, JobStatus::Running);
    background.shutdown().await;
    let record = runtime.job(&job.id).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded, "drained, not cut off");
    assert_eq!(record.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_job_waiting_for_the_permit_at_shutdown_keeps_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let background = runtime.start();
    let interactive = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.infer(InferRequest::new("interactive")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let job = runtime
        .submit_job(JobSubmission::new(InferRequest::new("background work")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&runtime, &job.id).await, JobStatus::Running);
    // The drain begins: the job's attempt, still waiting for the permit, is given back.
    runtime.close_for_shutdown();
    for _ in 0..50 {
        if status(&runtime, &job.id).await == JobStatus::Queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = runtime.job(&job.id).await.unwrap();
    assert_eq!(record.status, JobStatus::Queued, "{record:?}");
    assert_eq!(
        record.attempts, 0,
        "no attempt is spent on the shutdown: {record:?}"
    );
    // The interactive request in progress finishes; a new one is refused.
    interactive.await.unwrap().unwrap();
    let refused = runtime.infer(InferRequest::new("late")).await.unwrap_err();
    assert_eq!(refused.code(), ray_core::error::ErrorCode::ShuttingDown);
    background.shutdown().await;
}
