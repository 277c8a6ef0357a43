use super::*;

#[test]
fn every_code_round_trips_through_its_wire_name() {
    for code in ErrorCode::ALL {
        let json = serde_json::to_string(code).unwrap();
        assert_eq!(json, format!("\"{}\"", code.as_str()));
        assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
    }
}

#[test]
fn retry_after_follows_the_reference_rules() {
    assert_eq!(ErrorCode::QueueFull.retry_after_secs(), Some(1));
    assert_eq!(ErrorCode::AsyncQueueFull.retry_after_secs(), Some(1));
    assert_eq!(ErrorCode::RequestTimeout.retry_after_secs(), Some(5));
    assert_eq!(ErrorCode::ProviderTimeout.retry_after_secs(), Some(5));
    assert_eq!(ErrorCode::AsyncQueueStorageLow.retry_after_secs(), Some(30));
    assert_eq!(ErrorCode::InvalidRequest.retry_after_secs(), None);
    assert_eq!(ErrorCode::RequestAborted.retry_after_secs(), None);
}

#[test]
fn statuses_match_the_reference_table() {
    assert_eq!(ErrorCode::InvalidJson.status(), 400);
    assert_eq!(ErrorCode::Unauthorized.status(), 401);
    assert_eq!(ErrorCode::LengthRequired.status(), 411);
    assert_eq!(ErrorCode::RequestTokenBudgetExceeded.status(), 413);
    assert_eq!(ErrorCode::RequestTargetTooLarge.status(), 414);
    assert_eq!(ErrorCode::UnsupportedContentEncoding.status(), 415);
    assert_eq!(ErrorCode::UnsupportedExpectation.status(), 417);
    assert_eq!(ErrorCode::RateLimited.status(), 429);
    assert_eq!(ErrorCode::RequestHeadersTooLarge.status(), 431);
    assert_eq!(ErrorCode::ProviderUpstreamError.status(), 502);
    assert_eq!(ErrorCode::QueueFull.status(), 503);
    assert_eq!(ErrorCode::ProviderTimeout.status(), 504);
}

#[test]
fn error_body_serialises_without_empty_details() {
    let error = RayError::new(ErrorCode::QueueFull, "The request queue is full");
    let json = serde_json::to_string(&error.to_body()).unwrap();
    assert_eq!(
        json,
        r#"{"error":{"code":"queue_full","message":"The request queue is full"}}"#
    );
}
