//! Recovery at start: a store holding interrupted attempts, a pending callback and damaged
//! entries of every kind. The gateway starts anyway, sets the damage aside, and finishes the
//! work.
#![allow(clippy::unwrap_used)]

mod jobs_support;
mod util;

use std::path::Path;
use std::time::Duration;

use jobs_support::{Receiver, poll_until};
use ray_core::wire::{
    CallbackStatus, CountTriple, Diagnostics, InferRequest, InferResponse, JobCallback, JobRecord,
    JobStatus, Usage,
};
use util::TestServer;

fn record(id: &str, status: JobStatus, attempts: u32) -> JobRecord {
    JobRecord {
        id: id.into(),
        status,
        request: InferRequest::new(format!("recovered {id}")),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:01.000Z".into(),
        started_at: (attempts > 0).then(|| "2026-01-01T00:00:01.000Z".into()),
        completed_at: None,
        attempts,
        max_attempts: 3,
        next_attempt_at: None,
        result: None,
        error: None,
        callback: None,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join("jobs").join(name), bytes).unwrap();
}

fn write_record(dir: &Path, record: &JobRecord) {
    write(
        dir,
        &format!("{}.json", record.id),
        &serde_json::to_vec(record).unwrap(),
    );
}

#[tokio::test]
async fn a_damaged_store_never_stops_the_start_and_the_work_resumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let receiver = Receiver::start(None).await;

    // Good records in every state recovery cares about.
    let queued = record("job_aaaaaaaaaaaaaaaa", JobStatus::Queued, 0);
    let interrupted = record("job_bbbbbbbbbbbbbbbb", JobStatus::Running, 1);
    let exhausted = record("job_cccccccccccccccc", JobStatus::Running, 3);
    let mut finished = record("job_dddddddddddddddd", JobStatus::Succeeded, 1);
    finished.result = Some(Box::new(InferResponse {
        id: "req_0123456789abcdef".into(),
        model: "tiny-dev".into(),
        output: "done before the crash".into(),
        usage: Usage {
            chars: CountTriple::new(1, 1),
            tokens: None,
        },
        cached: false,
        deduplicated: false,
        queue_time_ms: 0,
        latency_ms: 1,
        degraded: false,
        diagnostics: Box::new(Diagnostics::default()),
        finish_reason: None,
        created_at: "2026-01-01T00:00:01.000Z".into(),
        tool_calls: None,
        logprobs: None,
    }));
    finished.completed_at = Some("2026-01-01T00:00:01.000Z".into());
    finished.callback = Some(JobCallback {
        url: receiver.url(),
        status: CallbackStatus::Pending,
        attempts: 1,
        last_attempt_at: Some("2026-01-01T00:00:01.000Z".into()),
        delivered_at: None,
        last_error: Some("the receiver answered 503".into()),
        next_attempt_at: None,
    });
    for good in [&queued, &interrupted, &exhausted, &finished] {
        write_record(dir.path(), good);
    }

    // Damage of every kind.
    let mut mismatched = record("job_0000000000000003", JobStatus::Queued, 0);
    mismatched.id = "job_0000000000000003".into();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        (
            "job_eeeeeeeeeeeeeeee.json",
            br#"{"id":"job_eeeeeeeeeeeeeeee","status":"que"#.to_vec(),
        ),
        ("job_ffffffffffffffff.json", Vec::new()),
        (
            "job_0000000000000001.json",
            br#"{"hello":"world"}"#.to_vec(),
        ),
        (
            "job_0000000000000002.json",
            serde_json::to_vec(&mismatched).unwrap(),
        ),
        ("bad name!.json", b"{}".to_vec()),
        (
            ".tmp-job_aaaaaaaaaaaaaaaa-lk3j2-1f",
            b"{\"id\":\"job_aaaaaaaaaaaaaaaa\"".to_vec(),
        ),
        ("job_0000000000000004.json", vec![0xff, 0x00, 0xfe, 0x7b]),
        ("job_0000000000000005.json", vec![b' '; 20_000]),
    ];
    for (name, bytes) in &damaged {
        write(dir.path(), name, bytes);
    }
    std::fs::create_dir(dir.path().join("jobs/job_0000000000000006.json")).unwrap();
    write(dir.path(), "notes.txt", b"an operator's note, not a job");
    let set_aside = damaged.len() + 1;

    // Every job_failed event goes to a file, those of the recovery at start included.
    let events = dir.path().join("events.jsonl");
    let config = format!(
        r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":1}}}},
            "asyncQueue":{{"enabled":true,"storageDir":{:?},"minFreeStorageMiB":1,
                           "maxRecordBytes":16384,"pollIntervalMs":20,
                           "callbackAllowPrivateNetwork":true}},
            "hooks":[{{"events":["job_failed"],"command":["/bin/sh","-c","cat >> {}"]}}]}}"#,
        dir.path().display().to_string(),
        events.display()
    );
    let server = TestServer::start(&config).await;
    let client = server.client();
    assert!(client.live().await.unwrap());

    // Everything damaged was moved aside, not deleted; the operator's file is left alone.
    let mut quarantined: Vec<String> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    quarantined.sort();
    assert_eq!(quarantined.len(), set_aside, "{quarantined:?}");
    for (name, _) in &damaged {
        assert!(
            quarantined.iter().any(|q| q.starts_with(name)),
            "{name} is in quarantine: {quarantined:?}"
        );
    }
    assert!(dir.path().join("jobs/notes.txt").exists());
    let health = client.health().await.unwrap().async_queue.unwrap();
    assert_eq!(health.quarantined_files, set_aside as u64);
    assert_eq!(health.total_jobs, 4);

    // The interrupted attempt counted; the job ran again and finished.
    let wait = ray_sdk::WaitOptions::timeout(Duration::from_secs(20));
    let done = client.wait_for_job(&interrupted.id, wait).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    let done = client.wait_for_job(&queued.id, wait).await.unwrap();
    assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 1));
    // No attempt was left for this one: it failed with the reason.
    let failed = client.job(&exhausted.id).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 3);
    assert_eq!(
        failed.error.unwrap().code,
        ray_runtime::jobs::JOB_RECOVERY_ATTEMPTS_EXHAUSTED
    );
    // ... and its job_failed event went out, although it failed before the hooks were set.
    let announced = poll_until(Duration::from_secs(10), || {
        let events = events.clone();
        let id = exhausted.id.clone();
        async move {
            std::fs::read_to_string(&events).is_ok_and(|text| {
                text.lines().any(|line| {
                    let event: serde_json::Value = serde_json::from_str(line).unwrap();
                    event["type"] == "job_failed"
                        && event["jobId"] == id.as_str()
                        && event["code"] == ray_runtime::jobs::JOB_RECOVERY_ATTEMPTS_EXHAUSTED
                })
            })
        }
    })
    .await;
    assert!(
        announced,
        "{:?}",
        std::fs::read_to_string(&events).unwrap_or_default()
    );
    // The pending callback resumed (attempt 2: the first was made before the crash).
    let delivered = poll_until(Duration::from_secs(10), || {
        let client = client.clone();
        let id = finished.id.clone();
        async move {
            client.job(&id).await.unwrap().callback.unwrap().status == CallbackStatus::Delivered
        }
    })
    .await;
    assert!(delivered);
    let deliveries = receiver.of(&finished.id);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].delivery_attempt, 2);
    assert_eq!(
        deliveries[0].record["result"]["output"],
        "done before the crash"
    );

    // A damaged record is not a job, and says so rather than "not found".
    let damaged = client.job("job_eeeeeeeeeeeeeeee").await.unwrap_err();
    assert_eq!(damaged.status(), Some(410));
    assert_eq!(damaged.code(), Some(ray_core::ErrorCode::JobRecordDamaged));
    let missing = client.job("job_9999999999999999").await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    server.stop().await;
}

#[tokio::test]
async fn an_unusable_storage_directory_fails_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let config = ray_core::config::ConfigLoader::new()
        .with_json(
            "test.json",
            format!(
                r#"{{"profile":"tiny","asyncQueue":{{"enabled":true,"storageDir":{:?}}}}}"#,
                file.display().to_string()
            ),
        )
        .load()
        .unwrap()
        .config;
    let error = ray_runtime::Runtime::new(config).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("async job queue"), "{message}");
    assert!(message.contains("not-a-directory"), "{message}");
}
