//! The job API over real loopback connections, with job records on disk: submission, look-up,
//! listing, cancellation, retries, callbacks, and each limit's refusal.
#![allow(clippy::unwrap_used)]

mod jobs_support;
mod util;

use std::time::Duration;

use jobs_support::{FakeBackend, Receiver, eventually, poll_until};
use ray_core::ErrorCode;
use ray_core::wire::{CallbackStatus, InferRequest, JobListQuery, JobStatus, JobSubmission};
use ray_sdk::WaitOptions;
use util::{TestServer, post};

const WAIT: WaitOptions = WaitOptions {
    timeout: Duration::from_secs(20),
    initial_interval: Duration::from_millis(20),
    max_interval: Duration::from_millis(200),
};

/// The tiny profile with the queue on, records under `dir`, and `extra` merged in: each key
/// of `queue` (asyncQueue fields) and `extra` (top-level sections) replaces the default one,
/// since a config file may not give a key twice.
fn config(dir: &std::path::Path, queue: &str, extra: &str) -> String {
    let mut config = serde_json::json!({
        "profile": "tiny",
        "model": {"adapter": {"kind": "mock", "latencyMs": 5}},
        "asyncQueue": {"enabled": true, "storageDir": dir.display().to_string(),
                       "minFreeStorageMiB": 1, "pollIntervalMs": 20,
                       "callbackAllowPrivateNetwork": true},
    });
    let fields = |text: &str| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&format!("{{{text}}}")).unwrap()
    };
    for (key, value) in fields(queue) {
        config["asyncQueue"][key] = value;
    }
    for (key, value) in fields(extra) {
        config[key] = value;
    }
    config.to_string()
}

/// The job records in the store (not the `.tmp-` file the store's health probe writes and
/// removes every second).
fn job_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("jobs"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_job_is_accepted_durably_runs_and_can_be_fetched_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start(&config(dir.path(), "", r#""rateLimit":{"enabled":true}"#)).await;

    let raw = server
        .raw(&post(
            "/v1/jobs",
            r#"{"input":"Summarise: jobs survive crashes.","maxTokens":40}"#,
        ))
        .await;
    assert_eq!(raw.status, 202, "{}", raw.body);
    let id = raw.json()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("job_") && id.len() == 20, "{id}");
    assert_eq!(raw.json()["status"], "queued");
    assert_eq!(
        raw.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    assert_eq!(raw.json()["location"], format!("/v1/jobs/{id}"));
    assert!(raw.header("x-ratelimit-remaining").is_some());
    // The 202 came after the record was on disk.
    assert!(job_files(dir.path()).contains(&format!("{id}.json")));

    let client = server.client();
    let record = client.wait_for_job(&id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.max_attempts, 3);
    let result = record.result.as_ref().unwrap();
    assert!(
        result.output.contains("jobs survive crashes"),
        "{}",
        result.output
    );
    assert!(result.id.starts_with("req_"));
    assert_eq!(record.request.max_tokens, Some(40));
    assert!(record.started_at.is_some() && record.completed_at.is_some());
    assert_eq!(record.error, None);

    // The record on disk is the one served.
    let on_disk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("jobs").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["status"], "succeeded");

    let second = client
        .submit_job(&JobSubmission::new(InferRequest::new("another")))
        .await
        .unwrap();
    client.wait_for_job(&second.id, WAIT).await.unwrap();
    let listed = client.list_jobs(&JobListQuery::default()).await.unwrap();
    let ids: Vec<&str> = listed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec![second.id.as_str(), id.as_str()], "newest first");
    assert_eq!(listed.next_cursor, None);

    let lookup = server
        .raw(
            format!("GET /v1/jobs/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
    assert_eq!(lookup.status, 200);
    assert!(lookup.header("x-ratelimit-limit").is_some());
    server.stop().await;
}

#[tokio::test]
async fn listings_page_with_a_cursor_and_filter_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&config(dir.path(), "", "")).await;
    let client = server.client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let accepted = client
            .submit_job(&JobSubmission::new(InferRequest::new(format!("page {i}"))))
            .await
            .unwrap();
        client.wait_for_job(&accepted.id, WAIT).await.unwrap();
        ids.push(accepted.id);
    }
    let mut seen = Vec::new();
    let mut query = JobListQuery {
        limit: Some(2),
        ..JobListQuery::default()
    };
    loop {
        let page = client.list_jobs(&query).await.unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every job once, newest first");

    let succeeded = client
        .list_jobs(&JobListQuery {
            statuses: vec![JobStatus::Succeeded],
            ..JobListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(succeeded.jobs.len(), 5);
    let queued = client
        .list_jobs(&JobListQuery {
            statuses: vec![JobStatus::Queued, JobStatus::Running],
            ..JobListQuery::default()
        })
        .await
        .unwrap();
    assert!(queued.jobs.is_empty());

    for (query, field) in [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("cursor=nonsense", "cursor"),
        ("sort=asc", "sort"),
    ] {
        let response = server
            .raw(
                format!("GET /v1/jobs?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        assert_eq!(response.status, 400, "{query}");
        assert!(
            response.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{query}: {}",
            response.body
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_submissions_are_refused_by_name_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&config(
        dir.path(),
        r#""callbackAllowPrivateNetwork":false"#,
        "",
    ))
    .await;
    for (body, status, code, names) in [
        ("{", 400, "invalid_json", "JSON"),
        (
            r#"{"input":"x","maxTokenz":1}"#,
            400,
            "invalid_request",
            "maxTokenz",
        ),
        (r#"{"input":"  "}"#, 400, "invalid_request", "input"),
        (
            r#"{"input":"x","stream":true}"#,
            400,
            "invalid_request",
            "stream",
        ),
        (
            r#"{"templateId":"nope.v1"}"#,
            400,
            "invalid_request",
            "templateId",
        ),
        (
            r#"{"input":"x","callbackUrl":7}"#,
            400,
            "invalid_request",
            "callbackUrl",
        ),
        (
            r#"{"input":"x","callbackUrl":"ftp://h.example/"}"#,
            400,
            "invalid_request",
            "callbackUrl",
        ),
        (
            r#"{"input":"x","callbackUrl":"http://127.0.0.1:9/"}"#,
            400,
            "invalid_request",
            "not a public address",
        ),
        (
            r#"{"input":"x","callbackUrl":"http://localhost:9/"}"#,
            400,
            "invalid_request",
            "not a public address",
        ),
        (
            r#"{"input":"x","callbackUrl":"http://[::1]/"}"#,
            400,
            "invalid_request",
            "not a public address",
        ),
        (
            r#"{"input":"x","callbackUrl":"http://169.254.169.254/"}"#,
            400,
            "invalid_request",
            "not a public address",
        ),
    ] {
        let response = server.raw(&post("/v1/jobs", body)).await;
        assert_eq!(response.status, status, "{body}: {}", response.body);
        assert_eq!(response.code(), code, "{body}");
        assert!(response.body.contains(names), "{body}: {}", response.body);
    }
    let bad_type = server
        .raw(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .await;
    assert_eq!(bad_type.status, 415);
    for (request, status) in [
        ("GET /v1/jobs/bad%2Fid HTTP/1.1", 400),
        ("GET /v1/jobs/ HTTP/1.1", 400),
        ("GET /v1/jobs/job_0000000000000000 HTTP/1.1", 404),
        ("DELETE /v1/jobs/job_0000000000000000 HTTP/1.1", 404),
        ("PUT /v1/jobs/job_0000000000000000 HTTP/1.1", 404),
    ] {
        let response = server
            .raw(format!("{request}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        assert_eq!(response.status, status, "{request}: {}", response.body);
    }
    assert_eq!(job_files(dir.path()), Vec::<String>::new());
    let health = server.client().health().await.unwrap();
    let queue = health.async_queue.unwrap();
    assert_eq!((queue.total_jobs, queue.pending_admissions), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn low_storage_is_refused_with_retry_after_30_and_shows_in_health() {
    let dir = tempfile::tempdir().unwrap();
    // More free space than any test machine has.
    let server = TestServer::start(&config(dir.path(), r#""minFreeStorageMiB":1048576"#, "")).await;
    let response = server.raw(&post("/v1/jobs", r#"{"input":"x"}"#)).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.code(), "async_queue_storage_low");
    assert_eq!(response.header("retry-after"), Some("30"));
    assert!(
        response.body.contains("minFreeStorageMiB"),
        "{}",
        response.body
    );
    assert_eq!(job_files(dir.path()), Vec::<String>::new());

    let health = server.client().health().await.unwrap();
    let queue = health.async_queue.unwrap();
    assert_eq!(queue.storage_low, Some(true));
    assert!(queue.degraded);
    assert!(queue.available_storage_mib.unwrap() > 0.0);
    let ready = server.client().ready().await.unwrap();
    assert!(ready.reasons.contains(&"async_queue_pressure".to_string()));
    assert_eq!(server.metric("ray_jobs_storage_low").await, 1.0);
    let metrics = server.client().metrics_text().await.unwrap();
    util::exposition::check(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    assert_eq!(
        util::metric_value(&metrics, r#"ray_jobs_rejected_total{reason="storage_low"}"#),
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_refused_with_retry_after_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&config(
        dir.path(),
        r#""maxJobs":2"#,
        r#""model":{"adapter":{"kind":"mock","latencyMs":2000}}"#,
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(
            server
                .raw(&post("/v1/jobs", r#"{"input":"x"}"#))
                .await
                .status,
            202
        );
    }
    let response = server.raw(&post("/v1/jobs", r#"{"input":"x"}"#)).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.code(), "async_queue_full");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.json()["error"]["details"]["maxJobs"], 2);
    assert_eq!(job_files(dir.path()).len(), 2);
    let queue = server.client().health().await.unwrap().async_queue.unwrap();
    assert_eq!((queue.total_jobs, queue.max_jobs), (2, 2));
    assert!(queue.jobs_pressure);
    assert_eq!(server.metric("ray_jobs_ratio").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn records_over_the_size_cap_are_refused_or_fail_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::start(Duration::from_millis(1)).await;
    let server = TestServer::start(&config(
        dir.path(),
        r#""maxRecordBytes":8192"#,
        &format!(r#""model":{}"#, backend.model_config()),
    ))
    .await;
    let big = format!(r#"{{"input":"{}"}}"#, "y".repeat(9_000));
    let response = server.raw(&post("/v1/jobs", &big)).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.code(), "async_job_record_too_large");
    assert_eq!(response.json()["error"]["details"]["maxRecordBytes"], 8192);
    assert_eq!(job_files(dir.path()), Vec::<String>::new());

    // A result too large for the record fails the job, with the reason, instead of losing it.
    let client = server.client();
    let accepted = client
        .submit_job(&JobSubmission::new(InferRequest::new("big-output please")))
        .await
        .unwrap();
    let record = client.wait_for_job(&accepted.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Failed);
    assert_eq!(record.error.unwrap().code, "async_job_record_too_large");
    assert!(record.result.is_none());
    server.stop().await;
}

#[tokio::test]
async fn retryable_failures_are_retried_and_others_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::start(Duration::from_millis(1)).await;
    let server = TestServer::start(&config(
        dir.path(),
        r#""maxAttempts":3"#,
        &format!(
            r#""model":{},"gracefulDegradation":{{"enabled":false}}"#,
            backend.model_config()
        ),
    ))
    .await;
    let client = server.client();
    let submit = |input: &str| JobSubmission::new(InferRequest::new(input));

    let flaky = client.submit_job(&submit("flaky once")).await.unwrap();
    let record = client.wait_for_job(&flaky.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.attempts, 2);
    assert_eq!(backend.log.calls_for("flaky once"), 2);

    let broken = client.submit_job(&submit("broken")).await.unwrap();
    let record = client.wait_for_job(&broken.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Failed);
    assert_eq!(record.attempts, 3);
    assert_eq!(record.error.unwrap().code, "provider_upstream_error");
    assert_eq!(
        backend.log.calls_for("broken"),
        3,
        "never more than maxAttempts"
    );

    // 413 is not retryable: one attempt.
    let too_long = client
        .submit_job(&JobSubmission::new(InferRequest {
            max_tokens: Some(192),
            ..InferRequest::new("w ".repeat(8_000))
        }))
        .await
        .unwrap();
    let record = client.wait_for_job(&too_long.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Failed);
    assert_eq!(record.attempts, 1);
    assert_eq!(
        record.error.unwrap().code,
        ErrorCode::RequestContextWindowExceeded.as_str()
    );
    assert!(server.metric("ray_jobs_retries_total").await >= 3.0);
    server.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_backend_call() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::start(Duration::from_millis(1)).await;
    let receiver = Receiver::start(None).await;
    let server = TestServer::start(&config(
        dir.path(),
        "",
        &format!(r#""model":{}"#, backend.model_config()),
    ))
    .await;
    let client = server.client();
    let accepted = client
        .submit_job(
            &JobSubmission::new(InferRequest::new("slow work")).with_callback(receiver.url()),
        )
        .await
        .unwrap();
    let log = backend.log.clone();
    assert!(eventually(Duration::from_secs(10), || log.calls_for("slow work") == 1).await);
    assert_eq!(
        client.job(&accepted.id).await.unwrap().status,
        JobStatus::Running
    );

    let cancelled = client.cancel_job(&accepted.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.completed_at.is_some());
    assert!(
        eventually(Duration::from_secs(10), || log
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1)
        .await,
        "the backend saw its call dropped"
    );
    // Cancelling again answers the same record; the callback reports the cancellation.
    assert_eq!(
        client.cancel_job(&accepted.id).await.unwrap().status,
        JobStatus::Cancelled
    );
    assert!(
        eventually(Duration::from_secs(10), || !receiver
            .of(&accepted.id)
            .is_empty())
        .await
    );
    assert_eq!(receiver.of(&accepted.id)[0].status, "cancelled");
    let record = client.wait_for_job(&accepted.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);

    // A queued job is cancelled before it runs; a finished one cannot be.
    let done = client
        .submit_job(&JobSubmission::new(InferRequest::new("quick")))
        .await
        .unwrap();
    client.wait_for_job(&done.id, WAIT).await.unwrap();
    let error = client.cancel_job(&done.id).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::JobNotCancellable));
    assert_eq!(error.status(), Some(409));
    assert_eq!(
        backend.log.calls_for("slow work"),
        1,
        "a cancelled job is not retried"
    );
    server.stop().await;
}

#[tokio::test]
async fn callbacks_are_signed_retried_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    const SECRET: &[u8] = b"test-signing-secret-0123456789";
    let receiver = Receiver::start(Some(SECRET)).await;
    let config = ray_core::config::ConfigLoader::new()
        .with_json("test.json", config(dir.path(), "", ""))
        .with_override("server.port", 0.into())
        .load()
        .unwrap()
        .config;
    let runtime = ray_runtime::Runtime::builder(config)
        .callback_signing_secret(Some(SECRET.to_vec()))
        .build()
        .unwrap();
    let server = TestServer::start_runtime(runtime).await;
    let client = server.client();
    let accepted = client
        .submit_job(
            &JobSubmission::new(InferRequest::new("callback-fail-first, then fine"))
                .with_callback(receiver.url()),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || receiver.of(&accepted.id).len()
            == 2)
        .await
    );
    let deliveries = receiver.of(&accepted.id);
    assert_eq!(
        deliveries
            .iter()
            .map(|d| d.delivery_attempt)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(deliveries.iter().all(|d| d.signature_valid == Some(true)));
    assert!(deliveries.iter().all(|d| d.status == "succeeded"));
    // The record is written right after the receiver answers.
    let delivered = poll_until(Duration::from_secs(10), || {
        let client = client.clone();
        let id = accepted.id.clone();
        async move {
            let record = client.job(&id).await.unwrap();
            record.callback.unwrap().status == CallbackStatus::Delivered
        }
    })
    .await;
    assert!(delivered);
    let callback = client.job(&accepted.id).await.unwrap().callback.unwrap();
    assert_eq!(callback.status, CallbackStatus::Delivered);
    assert_eq!(callback.attempts, 2);
    assert!(callback.delivered_at.is_some());
    assert!(callback.last_error.unwrap().contains("500"));
    let queue = client.health().await.unwrap().async_queue.unwrap();
    assert!(queue.callback_signing);
    // The index that /health counts from follows the record a moment after it is written.
    let counted = poll_until(Duration::from_secs(5), || {
        let client = client.clone();
        async move {
            client
                .health()
                .await
                .unwrap()
                .async_queue
                .unwrap()
                .callback_delivered
                == 1
        }
    })
    .await;
    assert!(counted);
    server.stop().await;
}

#[tokio::test]
async fn a_callback_to_a_host_outside_the_host_policy_is_refused_naming_callback_url() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(None).await;
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"allowedHosts":["127.0.0.1"]}"#).unwrap();
    let config = ray_core::config::ConfigLoader::new()
        .with_json("test.json", config(&dir.path().join("store"), "", ""))
        .with_env([("RAY_POLICY_FILE", policy.display().to_string())])
        .with_override("server.port", 0.into())
        .load()
        .unwrap()
        .config;
    let server = TestServer::start_runtime(ray_runtime::Runtime::new(config).unwrap()).await;
    // A public address the queue's own rules would accept, but not a host the policy allows.
    let refused = server
        .raw(&post(
            "/v1/jobs",
            r#"{"input":"x","callbackUrl":"https://hooks.elsewhere.example/ray"}"#,
        ))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.code(), "invalid_request");
    let body = refused.json();
    assert_eq!(body["error"]["details"]["param"], "callbackUrl", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"hooks.elsewhere.example\" is not among the host policy's allowedHosts"),
        "{message}"
    );
    assert!(job_files(&dir.path().join("store")).is_empty());
    // The host the policy allows is accepted and the callback delivered.
    let accepted = server
        .client()
        .submit_job(&JobSubmission::new(InferRequest::new("fine")).with_callback(receiver.url()))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || receiver.of(&accepted.id).len()
            == 1)
        .await
    );
    assert_eq!(
        job_files(&dir.path().join("store")),
        vec![format!("{}.json", accepted.id)]
    );
    server.stop().await;
}

#[tokio::test]
async fn job_routes_answer_disabled_and_follow_the_check_order() {
    let server = TestServer::start_with_keys(
        r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}},
            "auth":{"enabled":true},
            "rateLimit":{"enabled":true,"maxRequests":1,"windowMs":60000}}"#,
        Some("key-one"),
    )
    .await;
    for request in [
        "GET /v1/jobs HTTP/1.1",
        "GET /v1/jobs/job_0123456789abcdef HTTP/1.1",
        "DELETE /v1/jobs/job_0123456789abcdef HTTP/1.1",
    ] {
        let unauthenticated = server
            .raw(format!("{request}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        assert_eq!(unauthenticated.status, 401, "{request}");
        for _ in 0..2 {
            let response = server
                .raw(
                    format!(
                        "{request}\r\nHost: x\r\nAuthorization: Bearer key-one\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
            assert_eq!(response.status, 503, "{request}");
            assert_eq!(response.code(), "async_queue_disabled");
            assert_eq!(response.header("retry-after"), None);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn wait_for_job_gives_up_at_its_deadline_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&config(
        dir.path(),
        "",
        r#""model":{"adapter":{"kind":"mock","latencyMs":1500}}"#,
    ))
    .await;
    let client = server.client();
    let accepted = client
        .submit_job(&JobSubmission::new(InferRequest::new("take your time")))
        .await
        .unwrap();
    let short = WaitOptions {
        timeout: Duration::from_millis(200),
        ..WAIT
    };
    let error = client.wait_for_job(&accepted.id, short).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    let record = client.wait_for_job(&accepted.id, WAIT).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded, "{record:?}");
    assert_eq!(record.attempts, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_or_failing_receiver_is_given_up_after_max_callback_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(None).await;
    let server = TestServer::start(&config(
        dir.path(),
        r#""callbackTimeoutMs":300,"maxCallbackAttempts":2"#,
        "",
    ))
    .await;
    let client = server.client();
    let mut ids = Vec::new();
    for prompt in ["callback-slow", "callback-always-fail"] {
        let accepted = client
            .submit_job(
                &JobSubmission::new(InferRequest::new(prompt)).with_callback(receiver.url()),
            )
            .await
            .unwrap();
        ids.push(accepted.id);
    }
    for (id, error) in ids.iter().zip(["timed out", "503"]) {
        let settled = poll_until(Duration::from_secs(20), || {
            let client = client.clone();
            let id = id.clone();
            async move {
                let callback = client.job(&id).await.unwrap().callback.unwrap();
                callback.status == CallbackStatus::Failed
            }
        })
        .await;
        assert!(settled, "{id}: the callback was given up");
        let record = client.job(id).await.unwrap();
        // The job itself succeeded; only its delivery failed, after exactly two attempts.
        assert_eq!(record.status, JobStatus::Succeeded);
        let callback = record.callback.unwrap();
        assert_eq!(callback.attempts, 2, "{callback:?}");
        assert!(callback.delivered_at.is_none());
        let last_error = callback.last_error.unwrap();
        assert!(last_error.contains(error), "{id}: {last_error}");
        assert_eq!(
            receiver.of(id).len(),
            2,
            "{id}: two deliveries reached the receiver"
        );
    }
    let metrics = client.metrics_text().await.unwrap();
    assert_eq!(
        util::metric_value(&metrics, "ray_job_callbacks_failed_total"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        util::metric_value(&metrics, "ray_job_callback_attempt_failures_total"),
        Some(4.0)
    );
    server.stop().await;
}

/// The dispatcher holds back a job only while the model it names cannot answer: a job for a
/// live model runs while the default model's backend is down, and jobs for the dead model
/// (named or by default) wait without spending attempts on refusals.
#[tokio::test]
async fn a_job_waits_for_its_own_model_not_the_default_one() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = serde_json::json!({
        "profile": "tiny",
        "models": [
            {"id": "dead-model", "warmOnBoot": false,
             "adapter": {"kind": "openai-compatible",
                         "baseUrl": format!("http://127.0.0.1:{dead}"), "timeoutMs": 2000}},
            {"id": "live-model", "adapter": {"kind": "mock", "latencyMs": 0}},
        ],
        "defaultModel": "dead-model",
        "asyncQueue": {"enabled": true, "storageDir": dir.path().display().to_string(),
                       "minFreeStorageMiB": 1, "pollIntervalMs": 20, "maxJobs": 200},
    });
    let server = TestServer::start(&config.to_string()).await;
    let readyz = b"GET /readyz?model=dead-model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(
        poll_until(Duration::from_secs(10), || async {
            server.raw(readyz).await.status == 503
        })
        .await,
        "the dead model's backend is never seen down"
    );
    let client = server.client();
    let named = |input: &str, model: Option<&str>| {
        JobSubmission::new(InferRequest {
            model: model.map(String::from),
            ..InferRequest::new(input)
        })
    };
    let held_default = client
        .submit_job(&named("to the default", None))
        .await
        .unwrap();
    // More due jobs for the dead model than the dispatcher could look past one by one.
    let mut held_named = Vec::new();
    for i in 0..70 {
        let job = named(&format!("to the dead one {i}"), Some("dead-model"));
        held_named.push(client.submit_job(&job).await.unwrap().id);
    }
    let live = client
        .submit_job(&named("to the live one", Some("live-model")))
        .await
        .unwrap();
    let wait = WaitOptions {
        timeout: Duration::from_secs(5),
        ..WAIT
    };
    let record = client.wait_for_job(&live.id, wait).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.result.unwrap().model, "live-model");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in held_named.iter().take(3).chain([&held_default.id]) {
        let record = client.job(id).await.unwrap();
        assert_eq!(record.status, JobStatus::Queued, "{id}");
        assert_eq!(record.attempts, 0, "{id}: no attempt spent on a refusal");
    }
    server.stop().await;
}

/// Jobs routed by rules (no model named) run on the model the rules choose: a job a rule
/// sends to a live model runs while the default model is down, and one a rule sends to a
/// dead model gives its attempt back each time it is refused before any backend sees it.
#[tokio::test]
async fn a_job_routed_by_a_rule_waits_for_the_model_the_rule_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_adapter = serde_json::json!({"kind": "openai-compatible",
        "baseUrl": format!("http://127.0.0.1:{dead}"), "timeoutMs": 2000});
    let config = serde_json::json!({
        "profile": "tiny",
        "models": [
            {"id": "dead-default", "warmOnBoot": false, "adapter": dead_adapter},
            {"id": "live-model", "adapter": {"kind": "mock", "latencyMs": 0}},
            {"id": "dead-other", "warmOnBoot": false, "adapter": dead_adapter},
        ],
        "defaultModel": "dead-default",
        "routing": {"rules": [
            {"name": "summaries", "tasks": ["summarize"], "model": "live-model"},
            {"name": "labels", "tasks": ["classify"], "model": "dead-other"},
        ]},
        "asyncQueue": {"enabled": true, "storageDir": dir.path().display().to_string(),
                       "minFreeStorageMiB": 1, "pollIntervalMs": 20},
    });
    let server = TestServer::start(&config.to_string()).await;
    for model in ["dead-default", "dead-other"] {
        let readyz =
            format!("GET /readyz?model={model} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(
            poll_until(Duration::from_secs(10), || async {
                server.raw(readyz.as_bytes()).await.status == 503
            })
            .await,
            "{model}'s backend is never seen down"
        );
    }
    let client = server.client();
    let with_task = |task: &str| {
        JobSubmission::new(InferRequest {
            task: Some(task.into()),
            ..InferRequest::new(format!("a job to {task}"))
        })
    };
    let summary = client.submit_job(&with_task("summarize")).await.unwrap();
    let label = client.submit_job(&with_task("classify")).await.unwrap();
    let wait = WaitOptions {
        timeout: Duration::from_secs(5),
        ..WAIT
    };
    let record = client.wait_for_job(&summary.id, wait).await.unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.result.unwrap().model, "live-model");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let record = client.job(&label.id).await.unwrap();
    assert_eq!(record.status, JobStatus::Queued, "{record:?}");
    assert_eq!(record.attempts, 0, "refused before sending: {record:?}");
    server.stop().await;
}
