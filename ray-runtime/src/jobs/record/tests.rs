use proptest::prelude::*;
use ray_core::time::format_unix_millis;
use ray_core::wire::{CountTriple, Diagnostics, InferRequest, InferResponse, JobCallback, Usage};

use ray_core::ErrorCode;

use super::*;

fn response() -> InferResponse {
    InferResponse {
        id: "req_0123456789abcdef".into(),
        model: "tiny-dev".into(),
        output: "done".into(),
        usage: Usage {
            chars: CountTriple::new(4, 4),
            tokens: None,
        },
        cached: false,
        deduplicated: false,
        queue_time_ms: 0,
        latency_ms: 3,
        degraded: false,
        diagnostics: Box::new(Diagnostics::default()),
        finish_reason: None,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        tool_calls: None,
        logprobs: None,
    }
}

fn record(status: JobStatus, attempts: u32, max_attempts: u32) -> JobRecord {
    JobRecord {
        id: "job_0123456789abcdef".into(),
        status,
        request: InferRequest::new("hello"),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:01.000Z".into(),
        started_at: None,
        completed_at: None,
        attempts,
        max_attempts,
        next_attempt_at: None,
        result: (status == JobStatus::Succeeded).then(|| Box::new(response())),
        error: None,
        callback: None,
    }
}

const NOW: &str = "2026-01-02T00:00:00.000Z";

#[test]
fn parse_checks_what_the_queue_relies_on() {
    let good = record(JobStatus::Queued, 0, 3);
    let bytes = encode(&good, 1 << 20).unwrap();
    assert_eq!(parse("job_0123456789abcdef", &bytes).unwrap(), good);

    let error = parse("job_ffffffffffffffff", &bytes).unwrap_err();
    assert!(error.contains("does not match"), "{error}");
    assert!(
        parse("job_0123456789abcdef", b"{")
            .unwrap_err()
            .contains("not a valid job record")
    );
    assert!(parse("job_0123456789abcdef", b"").is_err());
    assert!(parse("job_0123456789abcdef", b"[]").is_err());

    let mut bad_time = good.clone();
    bad_time.updated_at = "yesterday".into();
    let error = parse("job_0123456789abcdef", &encode(&bad_time, 1 << 20).unwrap()).unwrap_err();
    assert!(error.contains("updatedAt"), "{error}");

    let mut no_result = record(JobStatus::Succeeded, 1, 3);
    no_result.result = None;
    let error = parse(
        "job_0123456789abcdef",
        &encode(&no_result, 1 << 20).unwrap(),
    )
    .unwrap_err();
    assert!(error.contains("no result"), "{error}");

    let mut zero = good;
    zero.max_attempts = 0;
    assert!(parse("job_0123456789abcdef", &encode(&zero, 1 << 20).unwrap()).is_err());
}

#[test]
fn encode_refuses_records_over_the_cap() {
    let record = record(JobStatus::Queued, 0, 3);
    let size = encode(&record, 1 << 20).unwrap().len();
    assert!(encode(&record, size as u64).is_ok());
    let error = encode(&record, size as u64 - 1).unwrap_err();
    assert_eq!(
        error,
        TooLarge {
            bytes: size,
            limit: size as u64 - 1
        }
    );
}

#[test]
fn an_interrupted_attempt_is_queued_again_or_fails_without_attempts_left() {
    let mut running = record(JobStatus::Running, 2, 3);
    assert!(recover(&mut running, 5, NOW));
    assert_eq!(running.status, JobStatus::Queued);
    assert_eq!(running.attempts, 2, "the interrupted attempt stays counted");
    assert_eq!(running.error.as_ref().unwrap().code, JOB_RECOVERED);
    assert_eq!(running.updated_at, NOW);

    let mut exhausted = record(JobStatus::Running, 3, 3);
    assert!(recover(&mut exhausted, 5, NOW));
    assert_eq!(exhausted.status, JobStatus::Failed);
    assert_eq!(
        exhausted.error.as_ref().unwrap().code,
        JOB_RECOVERY_ATTEMPTS_EXHAUSTED
    );
    assert_eq!(exhausted.completed_at.as_deref(), Some(NOW));

    let mut queued = record(JobStatus::Queued, 1, 3);
    assert!(!recover(&mut queued, 5, NOW));
}

#[test]
fn a_pending_callback_without_attempts_left_fails() {
    let callback = |attempts| JobCallback {
        url: "http://h.example/".into(),
        status: CallbackStatus::Pending,
        attempts,
        last_attempt_at: None,
        delivered_at: None,
        last_error: Some("the receiver answered 500".into()),
        next_attempt_at: Some(NOW.into()),
    };
    let mut used_up = record(JobStatus::Succeeded, 1, 3);
    used_up.callback = Some(callback(5));
    assert!(recover(&mut used_up, 5, NOW));
    assert_eq!(
        used_up.callback.as_ref().unwrap().status,
        CallbackStatus::Failed
    );

    // With a next attempt planned, the attempts ran out because the limit was lowered: the
    // real error stays.
    assert_eq!(
        used_up.callback.as_ref().unwrap().last_error.as_deref(),
        Some("the receiver answered 500")
    );

    // Recorded before it was sent and never settled: the last delivery was cut off.
    let mut cut_off = record(JobStatus::Succeeded, 1, 3);
    cut_off.callback = Some(JobCallback {
        next_attempt_at: None,
        ..callback(5)
    });
    assert!(recover(&mut cut_off, 5, NOW));
    let callback_now = cut_off.callback.as_ref().unwrap();
    assert_eq!(callback_now.status, CallbackStatus::Failed);
    assert!(
        callback_now.last_error.as_deref().is_some_and(
            |e| e.contains("attempt 5 was cut off") && e.contains("maxCallbackAttempts 5")
        ),
        "{callback_now:?}"
    );

    let mut resumes = record(JobStatus::Succeeded, 1, 3);
    resumes.callback = Some(callback(2));
    assert!(!recover(&mut resumes, 5, NOW));
    assert_eq!(
        resumes.callback.as_ref().unwrap().status,
        CallbackStatus::Pending
    );
}

#[test]
fn only_server_side_errors_are_retried() {
    for code in [
        ErrorCode::QueueFull,
        ErrorCode::RequestTimeout,
        ErrorCode::RequestAborted,
        ErrorCode::ProviderTimeout,
        ErrorCode::ProviderUpstreamError,
        ErrorCode::ProviderRequestFailed,
        ErrorCode::GatewayError,
        ErrorCode::ProviderUnavailable,
    ] {
        assert!(code.is_retryable(), "{code}");
    }
    for code in [
        ErrorCode::InvalidRequest,
        ErrorCode::RequestContextWindowExceeded,
        ErrorCode::RequestTokenBudgetExceeded,
        ErrorCode::AsyncJobRecordTooLarge,
    ] {
        assert!(!code.is_retryable(), "{code}");
    }
}

fn status() -> impl Strategy<Value = JobStatus> {
    prop::sample::select(JobStatus::ALL.to_vec())
}

fn time() -> impl Strategy<Value = String> {
    (0i64..4_102_444_800_000).prop_map(format_unix_millis)
}

prop_compose! {
    fn callback()(
        url in "http://[a-z]{1,12}\\.example/[a-z0-9/]{0,20}",
        status in prop::sample::select(vec![
            CallbackStatus::Pending, CallbackStatus::Delivered, CallbackStatus::Failed,
        ]),
        attempts in 0u32..10,
        last_error in proptest::option::of(".{0,40}"),
        next in proptest::option::of(time()),
    ) -> JobCallback {
        JobCallback {
            url, status, attempts, last_attempt_at: None, delivered_at: None, last_error,
            next_attempt_at: next,
        }
    }
}

prop_compose! {
    fn any_record()(
        hex in "[0-9a-f]{16}",
        status in status(),
        input in "\\PC{1,60}",
        // As clients write them: serde_json parses short decimals exactly, but not every
        // 17-digit one (it is built without `float_roundtrip`).
        temperature in proptest::option::of((0u32..=200).prop_map(|t| f64::from(t) / 100.0)),
        max_attempts in 1u32..10,
        attempts_seed in 0u32..12,
        created in time(),
        updated in time(),
        next in proptest::option::of(time()),
        callback in proptest::option::of(callback()),
        error in proptest::option::of(("[a-z_]{1,20}", ".{0,60}")),
    ) -> JobRecord {
        JobRecord {
            id: format!("job_{hex}"),
            status,
            request: InferRequest { temperature, ..InferRequest::new(input) },
            created_at: created,
            updated_at: updated,
            started_at: None,
            completed_at: None,
            attempts: attempts_seed.min(max_attempts),
            max_attempts,
            next_attempt_at: next,
            result: (status == JobStatus::Succeeded).then(|| Box::new(response())),
            error: error.map(|(code, message)| JobError::new(&code, message)),
            callback,
        }
    }
}

proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse("job_0123456789abcdef", &bytes);
    }

    #[test]
    fn damaged_records_are_refused_or_still_valid(record in any_record(), cut in 0usize..400, flip in any::<u8>()) {
        let mut bytes = encode(&record, 1 << 20).unwrap();
        let at = cut % bytes.len();
        bytes[at] ^= flip | 1;
        if let Ok(parsed) = parse(&record.id, &bytes) {
            // A flip that still parses must still satisfy every check.
            prop_assert_eq!(&parsed.id, &record.id);
            prop_assert!(parsed.max_attempts > 0);
        }
        // Cut before the closing brace: never a record.
        bytes.truncate(at.min(bytes.len() - 2));
        prop_assert!(parse(&record.id, &bytes).is_err());
    }

    #[test]
    fn records_round_trip(record in any_record()) {
        let bytes = encode(&record, 1 << 20).unwrap();
        prop_assert_eq!(parse(&record.id, &bytes).unwrap(), record);
    }

    #[test]
    fn recovery_leaves_no_job_running_and_keeps_every_attempt(record in any_record(), max_callback in 1u32..10) {
        let mut recovered = record.clone();
        let changed = recover(&mut recovered, max_callback, NOW);
        prop_assert_ne!(recovered.status, JobStatus::Running);
        prop_assert_eq!(recovered.attempts, record.attempts);
        prop_assert_eq!(&recovered.result, &record.result);
        if record.status.is_terminal() {
            prop_assert_eq!(recovered.status, record.status);
        }
        if let Some(callback) = &recovered.callback
            && recovered.status.is_terminal()
        {
            prop_assert!(callback.status != CallbackStatus::Pending || callback.attempts < max_callback);
        }
        prop_assert_eq!(changed, recovered != record);
        // Recovery is idempotent: a second start changes nothing more.
        let mut again = recovered.clone();
        prop_assert!(!recover(&mut again, max_callback, NOW));
        // And what it wrote parses back.
        let bytes = encode(&recovered, 1 << 20).unwrap();
        prop_assert_eq!(parse(&recovered.id, &bytes).unwrap(), recovered);
    }
}
