//! The shared job queue against a real `nats-server -js` on a free port with its own store: a
//! job that reaches JetStream without a record (its submission was refused after publishing,
//! or the client sent a buffered publish after reconnecting), or whose record was written
//! after the submission had given up, is dropped unrun and leaves a tombstone, while a job
//! submitted normally runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use parking_lot::Mutex;
mod support;

use support::Nats;

use ray_cluster::jobs::{HostFuture, JOBS_BUCKET};
use ray_cluster::{ClusterJobs, JobHost, JobsOptions};
use ray_core::wire::{InferRequest, InferResponse, JobRecord};
use ray_core::{ErrorCode, RayError};

/// Records the input of every job it runs, and fails it for good (no response to build).
#[derive(Default)]
struct Host {
    ran: Mutex<Vec<String>>,
}

impl JobHost for Host {
    fn run(&self, request: InferRequest) -> HostFuture<'_, Result<InferResponse, RayError>> {
        self.ran.lock().push(request.input.unwrap_or_default());
        Box::pin(async { Err(RayError::new(ErrorCode::InvalidRequest, "ran")) })
    }

    fn deliver<'a>(
        &'a self,
        _url: &'a str,
        _record: &'a JobRecord,
        _attempt: u32,
    ) -> HostFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

fn request(input: &str) -> InferRequest {
    InferRequest {
        input: Some(input.into()),
        ..InferRequest::default()
    }
}

/// A job message as a submission publishes it (`{"record": ..., "model": ...}`).
fn job_message(id: &str, input: &str) -> bytes::Bytes {
    let record = JobRecord::queued(
        id.into(),
        request(input),
        3,
        None,
        "2026-01-01T00:00:00.000Z".into(),
    );
    serde_json::to_vec(&serde_json::json!({"record": record, "model": "m"}))
        .expect("a job message")
        .into()
}

async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_timely_record_is_dropped_unrun() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let Some(nats) = Nats::start(dir.path(), 0) else {
        return;
    };
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .expect("connected to NATS");
    let host = Arc::new(Host::default());
    let options = JobsOptions {
        models: vec!["m".into()],
        concurrency: 2,
        max_attempts: 3,
        max_callback_attempts: 1,
        retry_base: Duration::from_millis(50),
        ack_wait: Duration::from_secs(2),
        retention: Duration::from_secs(600),
        max_record_bytes: 1 << 20,
    };
    let jobs = ClusterJobs::new(client.clone(), options, host.clone());
    // A normal submission (it creates the stream and the records' bucket).
    jobs.submit("job_ok".into(), "m".into(), request("ok"), None)
        .await
        .expect("accepted");

    // Two jobs whose submission was refused after they were published: one never gets a
    // record, the other gets it after its submission had given up (3 s later).
    let context = jetstream::new(client.clone());
    for (id, input) in [("job_phantom", "phantom"), ("job_late", "late")] {
        let publish = jetstream::message::PublishMessage::build()
            .message_id(id)
            .payload(job_message(id, input));
        context
            .send_publish("ray.jobs.m", publish)
            .await
            .expect("published")
            .await
            .expect("acknowledged");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = context
        .get_key_value(JOBS_BUCKET)
        .await
        .expect("the records' bucket");
    records
        .create("job_late", job_message("job_late", "late"))
        .await
        .expect("the late record");

    jobs.start();
    assert!(
        within(Duration::from_secs(15), || {
            jobs.stats().refused_dropped.load(Ordering::Relaxed) == 2 && !host.ran.lock().is_empty()
        })
        .await,
        "ran {:?}, dropped {}",
        host.ran.lock(),
        jobs.stats().refused_dropped.load(Ordering::Relaxed)
    );
    // Redeliveries would show up here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*host.ran.lock(), ["ok"]);
    for id in ["job_phantom", "job_late"] {
        assert_eq!(jobs.get(id).await.expect("read"), None, "{id}");
    }
    assert!(jobs.get("job_ok").await.expect("read").is_some());
    // A record written even later for the refused job does not bring it back.
    assert!(
        records
            .create("job_phantom", job_message("job_phantom", "phantom"))
            .await
            .is_err()
    );
    assert_eq!(jobs.get("job_phantom").await.expect("read"), None);
}
