use super::*;

fn parse(json: &str) -> Result<InferRequest, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn max_tokens_is_floored_and_negative_becomes_zero() {
    assert_eq!(
        parse(r#"{"maxTokens":120.9}"#).unwrap().max_tokens,
        Some(120)
    );
    assert_eq!(parse(r#"{"maxTokens":-5}"#).unwrap().max_tokens, Some(0));
}

#[test]
fn unknown_fields_are_rejected() {
    let error = parse(r#"{"input":"x","maxTokenz":3}"#).unwrap_err();
    assert!(error.to_string().contains("maxTokenz"), "{error}");
}

#[test]
fn response_format_rejects_other_types() {
    assert!(parse(r#"{"responseFormat":{"type":"xml"}}"#).is_err());
    let no_schema = parse(r#"{"input":"x","responseFormat":{"type":"json_schema"}}"#).unwrap();
    assert!(
        no_schema
            .validate()
            .unwrap_err()
            .message()
            .contains("json_schema"),
        "json_schema needs its schema"
    );
    let with_schema = parse(
        r#"{"input":"x","responseFormat":{"type":"json_schema",
            "json_schema":{"name":"s","schema":{"type":"object"}}}}"#,
    )
    .unwrap();
    assert!(with_schema.validate().is_ok());
    assert!(with_schema.extensions().json_schema.is_some());
    let ok = parse(r#"{"responseFormat":{"type":"json_object"}}"#).unwrap();
    assert_eq!(
        ok.response_format.unwrap().kind,
        ResponseFormatKind::JsonObject
    );
}

#[test]
fn seed_must_be_an_integer() {
    assert!(parse(r#"{"seed":1.5}"#).is_err());
    let req = parse(r#"{"input":"x","seed":9007199254740992}"#).unwrap();
    assert!(req.validate().is_err());
}

#[test]
fn empty_input_is_invalid() {
    let error = parse(r#"{"input":"   "}"#).unwrap().validate().unwrap_err();
    assert_eq!(error.message(), "input: input must be a non-empty string");
    let error = InferRequest::default().validate().unwrap_err();
    assert!(error.message().starts_with("input:"));
}

#[test]
fn template_cannot_be_combined_with_input() {
    let req = parse(r#"{"templateId":"email.follow_up.v1","input":"x"}"#).unwrap();
    let problems = req.problems();
    assert!(problems[0].starts_with("templateId:"), "{problems:?}");
}

#[test]
fn every_problem_is_reported() {
    let req = InferRequest {
        input: Some("ok".into()),
        stop: Some(vec![String::new(); 17]),
        dedupe_key: Some("k".repeat(600)),
        metadata: Some([("__proto__".to_string(), "x".to_string())].into()),
        ..InferRequest::default()
    };
    let problems = req.problems();
    assert!(problems.iter().any(|p| p.starts_with("stop:")));
    assert!(problems.iter().any(|p| p.starts_with("stop[0]:")));
    assert!(problems.iter().any(|p| p.starts_with("dedupeKey:")));
    assert!(problems.iter().any(|p| p.contains("reserved")));
}

#[test]
fn template_values_render_as_written() {
    let req =
        parse(r#"{"templateId":"t","templateVariables":{"a":"s","b":2.5,"c":true}}"#).unwrap();
    let vars = req.template_variables.unwrap();
    assert_eq!(vars["a"].render(), "s");
    assert_eq!(vars["b"].render(), "2.5");
    assert_eq!(vars["c"].render(), "true");
}
