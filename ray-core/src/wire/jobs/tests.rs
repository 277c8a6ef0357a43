use super::*;

#[test]
fn a_submission_takes_callback_url_and_refuses_unknown_fields() {
    let parsed: JobSubmission =
        serde_json::from_str(r#"{"input":"x","callbackUrl":"https://h.example/ray"}"#).unwrap();
    assert_eq!(parsed.request.input.as_deref(), Some("x"));
    assert_eq!(
        parsed.callback_url.as_deref(),
        Some("https://h.example/ray")
    );
    let error =
        serde_json::from_str::<JobSubmission>(r#"{"input":"x","callbackUrI":"h"}"#).unwrap_err();
    assert!(error.to_string().contains("callbackUrI"), "{error}");
    let error =
        serde_json::from_str::<JobSubmission>(r#"{"input":"x","callbackUrl":3}"#).unwrap_err();
    assert!(error.to_string().contains("callbackUrl"), "{error}");
    // It serialises flat.
    let json = serde_json::to_value(&parsed).unwrap();
    assert_eq!(json["callbackUrl"], "https://h.example/ray");
    assert_eq!(json["input"], "x");
}

#[test]
fn job_ids_are_checked() {
    assert!(is_valid_job_id("job_0123456789abcdef"));
    assert!(is_valid_job_id("A-b_9"));
    assert!(!is_valid_job_id(""));
    assert!(!is_valid_job_id("job/../x"));
    assert!(!is_valid_job_id(&"a".repeat(129)));
}

#[test]
fn list_queries_parse_and_name_what_is_wrong() {
    let q = JobListQuery::parse(Some("status=queued,failed&limit=20&cursor=abc")).unwrap();
    assert_eq!(q.statuses, vec![JobStatus::Queued, JobStatus::Failed]);
    assert_eq!(q.limit, Some(20));
    assert_eq!(q.cursor.as_deref(), Some("abc"));
    assert_eq!(
        q.to_query_string(),
        "status=queued,failed&limit=20&cursor=abc"
    );
    assert_eq!(JobListQuery::parse(None).unwrap(), JobListQuery::default());
    let error = JobListQuery::parse(Some("status=done")).unwrap_err();
    assert!(error.message().starts_with("status:"), "{error}");
    let error = JobListQuery::parse(Some("limit=0")).unwrap_err();
    assert!(error.message().starts_with("limit:"), "{error}");
    let error = JobListQuery::parse(Some("limit=201")).unwrap_err();
    assert!(error.message().starts_with("limit:"), "{error}");
    let error = JobListQuery::parse(Some("page=2")).unwrap_err();
    assert!(error.message().contains("page"), "{error}");
    // Encoded commas (as most HTTP clients send them) and repeated parameters work too.
    let q = JobListQuery::parse(Some("status=queued%2Cfailed&status=running")).unwrap();
    assert_eq!(
        q.statuses,
        vec![JobStatus::Queued, JobStatus::Failed, JobStatus::Running]
    );
    let error = JobListQuery::parse(Some("status=%zz")).unwrap_err();
    assert!(error.message().starts_with("status:"), "{error}");
    // A status parameter that names none is a mistake, not "every status".
    for query in ["status=", "status", "status=,", "status=queued&status="] {
        let error = JobListQuery::parse(Some(query)).unwrap_err();
        assert!(error.message().starts_with("status:"), "{query}: {error}");
    }
}

#[test]
fn terminal_states() {
    assert!(!JobStatus::Queued.is_terminal());
    assert!(!JobStatus::Running.is_terminal());
    assert!(JobStatus::Succeeded.is_terminal());
    assert!(JobStatus::Failed.is_terminal());
    assert!(JobStatus::Cancelled.is_terminal());
}

#[test]
fn long_error_messages_are_cut() {
    let error = JobError::new("x", "é".repeat(10_000));
    assert_eq!(
        error.message.chars().count(),
        limits::ERROR_MESSAGE_MAX_CHARS
    );
}
