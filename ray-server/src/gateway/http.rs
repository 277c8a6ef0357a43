//! HTTP plumbing: response builders, the error body, and reading a JSON request body within the
//! content rules and the size limit.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use ray_core::wire::InferResponse;
use ray_core::{ErrorCode, RayError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The response body type of every route.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A request's body: as it arrives, or already read (a request that was checked for
/// forwarding to a peer before it was served here).
pub type RequestBody = http_body_util::Either<Incoming, http_body_util::Full<Bytes>>;

/// Media types accepted on POST routes.
pub const SUPPORTED_MEDIA_TYPES: [&str; 2] = ["application/json", "application/*+json"];

const JSON: &str = "application/json; charset=utf-8";

/// A full body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response with a trailing newline.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut bytes = Vec::with_capacity(2048);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => {
            bytes.push(b'\n');
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            response
        }
        Err(error) => error_response(&RayError::new(
            ErrorCode::ResponseSerializationFailed,
            format!("The response could not be serialised: {error}"),
        )),
    }
}

/// The answer of `/v1/infer`, written by hand ([`InferResponse::write_json`]: the bytes
/// serde would write, at a fraction of the cost), with a trailing newline.
pub fn infer_json(response: &InferResponse) -> Response<Body> {
    let mut text = String::with_capacity(1024 + response.output.len());
    response.write_json(&mut text);
    text.push('\n');
    let mut answer = Response::new(full(text));
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    answer
}

/// A plain-text response.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `204 No Content` for `/favicon.ico`: Ray has no icon, and a browser that opens the status
/// page asks for one; cached for a day so it asks once.
pub fn no_icon() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// The error body, with `Retry-After` when the code has one and `WWW-Authenticate` on 401.
pub fn error_response(error: &RayError) -> Response<Body> {
    error_response_with(error, &error.to_body())
}

/// An error answer with `body` (Ray's shape or another route's), the error's status,
/// `Retry-After` when its code has one and `WWW-Authenticate` on 401.
pub fn error_response_with<T: Serialize>(error: &RayError, body: &T) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(status, body);
    let headers = response.headers_mut();
    if let Some(seconds) = error.retry_after_secs() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if error.code() == ErrorCode::Unauthorized {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ray\""),
        );
    }
    response
}

/// Marks a response so the connection is closed after it (used when the request body was not
/// read, so the connection cannot be reused safely).
pub fn close_connection(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Checks the content rules of a POST: JSON media type, identity encoding, a satisfiable
/// `Expect`, and a declared length within the limit. Runs before the body is read.
pub fn check_post_headers(headers: &HeaderMap, limit: u64) -> Result<(), RayError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json_media_type(content_type) {
        let shown: String = content_type.chars().take(64).collect();
        return Err(RayError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type must be application/json, got {shown:?}"),
        )
        .with_details(serde_json::json!({ "supported": SUPPORTED_MEDIA_TYPES })));
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let value = encoding.to_str().unwrap_or("").trim();
        if value.len() > 128 || !value.eq_ignore_ascii_case("identity") {
            return Err(RayError::new(
                ErrorCode::UnsupportedContentEncoding,
                "Content-Encoding must be identity (compressed bodies are not accepted)",
            )
            .with_details(serde_json::json!({ "supported": ["identity"] })));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(expect) = headers.get(header::EXPECT) {
        if !expect
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
        {
            return Err(RayError::new(
                ErrorCode::UnsupportedExpectation,
                "Only Expect: 100-continue is supported",
            ));
        }
        if declared.is_none() {
            return Err(RayError::new(
                ErrorCode::LengthRequired,
                "Expect: 100-continue needs a Content-Length",
            ));
        }
    }
    if let Some(length) = declared
        && length > limit
    {
        return Err(body_too_large(limit));
    }
    Ok(())
}

fn body_too_large(limit: u64) -> RayError {
    RayError::new(
        ErrorCode::BodyTooLarge,
        format!("The request body is larger than server.requestBodyLimitBytes ({limit} bytes)"),
    )
    .with_details(serde_json::json!({ "limitBytes": limit }))
}

/// `application/json` or `application/<x>+json`, parameters allowed, at most 256 chars.
pub fn is_json_media_type(value: &str) -> bool {
    if value.len() > 256 {
        return false;
    }
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return true;
    }
    // `application/<x>+json`, compared without a lower-cased copy.
    let prefix = "application/";
    let suffix = "+json";
    essence.len() > prefix.len() + suffix.len()
        && essence.is_char_boundary(prefix.len())
        && essence.is_char_boundary(essence.len() - suffix.len())
        && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
        && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Reads the whole body, failing with `body_too_large` once it exceeds `limit`.
pub async fn read_body<B>(request: Request<B>, limit: u64) -> Result<Bytes, RayError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = request.into_body();
    if body.size_hint().lower() > limit {
        return Err(body_too_large(limit));
    }
    // Most bodies arrive in one frame: it is kept as it came, without a copy, and the body
    // is not polled again once it says it has ended.
    let mut first: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|error| {
            RayError::new(
                ErrorCode::InvalidHttpRequest,
                format!("The request body could not be read: {error}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            let held = first.as_ref().map_or(0, Bytes::len) + buffer.len();
            if held as u64 + data.len() as u64 > limit {
                return Err(body_too_large(limit));
            }
            match first.take() {
                None if buffer.is_empty() => first = Some(data),
                earlier => {
                    if let Some(earlier) = earlier {
                        buffer.extend_from_slice(&earlier);
                    }
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(first.unwrap_or_else(|| buffer.freeze()))
}

/// Parses a JSON body into `T` in one pass. An empty body counts as `{}`. Malformed JSON is
/// `invalid_json`; valid JSON of the wrong shape is `invalid_request` naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RayError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // The plain parse first; only a body it refuses is parsed again with the field path
    // tracked, for the message (the path costs about a third of a successful parse).
    let mut plain = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(&mut plain)
        && plain.end().is_ok()
    {
        return Ok(value);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| (error.path().to_string(), error.into_inner()))
        .and_then(|value| {
            deserializer
                .end()
                .map(|()| value)
                .map_err(|error| (".".to_string(), error))
        });
    match result {
        Ok(value) => Ok(value),
        Err((path, inner)) => {
            // serde_json also reports some wrong shapes in valid JSON as syntax errors
            // ("expected value" for an enum given null or an array, "trailing characters" for
            // a struct given a longer array), so a syntax error is only believed when the
            // body does not parse as JSON at all.
            let syntax = matches!(
                inner.classify(),
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof
            );
            if syntax && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                return Err(RayError::new(
                    ErrorCode::InvalidJson,
                    format!("The request body is not valid JSON: {inner}"),
                ));
            }
            if first != Some(&b'{') {
                return Err(RayError::invalid_request(
                    "The request body must be a JSON object",
                ));
            }
            let inner = if syntax {
                "invalid type or shape".to_string()
            } else {
                let inner = inner.to_string();
                // serde_json appends " at line 1 column 42"; the field path says more.
                match inner.rfind(" at line ") {
                    Some(index) => inner[..index].to_string(),
                    None => inner,
                }
            };
            let param = field_of(&path, &inner);
            let message = if path == "." || inner.starts_with("unknown field") {
                inner
            } else {
                format!("{path}: {inner}")
            };
            let error = RayError::invalid_request(message);
            Err(match param {
                Some(param) => error.with_details(serde_json::json!({ "param": param })),
                None => error,
            })
        }
    }
}

/// The field a parse error is about (OpenAI's `param`): the path serde reports, with the
/// missing or unknown field it names (`messages`, `messages[0].role`, `max_tokens`).
fn field_of(path: &str, inner: &str) -> Option<String> {
    let named = ["missing field `", "unknown field `"]
        .into_iter()
        .find_map(|prefix| inner.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, named) {
        (".", None) => None,
        (".", Some(name)) => Some(name.to_string()),
        (path, Some(name)) if !inner.starts_with("unknown field") => Some(format!("{path}.{name}")),
        (path, _) => Some(path.to_string()),
    }
}

/// An error in OpenAI's shape, with Ray's status, `Retry-After` and `WWW-Authenticate`.
pub(crate) fn openai_error_response(error: &RayError) -> Response<Body> {
    error_response_with(
        error,
        &ray_core::wire::openai::OpenAiErrorBody::from_error(error),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_json_media_types_only() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.ray+json"));
        assert!(!is_json_media_type("application/+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type(""));
        assert!(!is_json_media_type(&format!(
            "application/json;{}",
            "x".repeat(300)
        )));
    }

    #[test]
    fn post_header_rules() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            check_post_headers(&headers, 10).unwrap_err().code(),
            ErrorCode::UnsupportedMediaType
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            check_post_headers(&headers, 10).unwrap_err().code(),
            ErrorCode::UnsupportedContentEncoding
        );
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        assert_eq!(
            check_post_headers(&headers, 10).unwrap_err().code(),
            ErrorCode::LengthRequired
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert_eq!(
            check_post_headers(&headers, 10).unwrap_err().code(),
            ErrorCode::BodyTooLarge
        );
        headers.insert(header::EXPECT, HeaderValue::from_static("something"));
        assert_eq!(
            check_post_headers(&headers, 10).unwrap_err().code(),
            ErrorCode::UnsupportedExpectation
        );
    }

    #[test]
    fn a_parse_error_names_its_field() {
        use ray_core::wire::openai::ChatCompletionRequest;
        let param = |body: &str| {
            let error = parse_json::<ChatCompletionRequest>(body.as_bytes()).unwrap_err();
            (
                error
                    .details()
                    .and_then(|d| d["param"].as_str())
                    .map(String::from),
                error.message().to_string(),
            )
        };
        let chat =
            |extra: &str| format!(r#"{{"messages":[{{"role":"user","content":"Hi"}}]{extra}}}"#);
        for (body, expected) in [
            (chat(r#","max_tokens":"5""#), "max_tokens"),
            (chat(r#","temperature":"hot""#), "temperature"),
            (chat(r#","stop":5"#), "stop"),
            (
                chat(r#","stream_options":{"include_usage":"yes"}"#),
                "stream_options.include_usage",
            ),
            ("{}".to_string(), "messages"),
            (
                r#"{"messages":[{"content":"x"}]}"#.to_string(),
                "messages[0].role",
            ),
        ] {
            let (param, message) = param(&body);
            assert_eq!(param.as_deref(), Some(expected), "{body}: {message}");
        }
    }

    #[test]
    fn parses_json_bodies() {
        use ray_core::wire::InferRequest;
        let empty: InferRequest = parse_json(b"  ").unwrap();
        assert_eq!(empty, InferRequest::default());
        assert_eq!(
            parse_json::<InferRequest>(b"{nope").unwrap_err().code(),
            ErrorCode::InvalidJson
        );
        let error = parse_json::<InferRequest>(br#"{"temperature":"hot"}"#).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest);
        assert!(
            error.message().starts_with("temperature:"),
            "{}",
            error.message()
        );
        let error = parse_json::<InferRequest>(br#"{"bogus":1}"#).unwrap_err();
        assert!(error.message().contains("bogus"));
        assert_eq!(
            parse_json::<InferRequest>(b"[1]").unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
        // Valid JSON of the wrong shape, which serde_json reports as a syntax error, is an
        // invalid request naming the field, not invalid JSON.
        for (body, field) in [
            (r#"{"responseFormat":[null]}"#, "responseFormat[0]:"),
            (r#"{"responseFormat":[1]}"#, "responseFormat[0]:"),
            (r#"{"responseFormat":["text",null,1]}"#, "responseFormat:"),
            (r#"{"responseFormat":["text",1]}"#, "responseFormat[1]:"),
            (
                r#"{"responseFormat":{"type":null}}"#,
                "responseFormat.type:",
            ),
        ] {
            let error = parse_json::<InferRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{body}");
            assert!(
                error.message().starts_with(field),
                "{body}: {}",
                error.message()
            );
        }
        for body in [r#"{"responseFormat":[null}"#, r#"{"input":"x"} 1"#, "{"] {
            let error = parse_json::<InferRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidJson, "{body}");
        }
    }

    /// Any JSON value, nested, with the request's own field names among the keys.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "(short|draft|text|json_object|email.follow_up.v1|user|assistant)"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    "(input|system|maxTokens|temperature|topP|seed|stop|responseFormat|type|cache|dedupeKey|metadata|promptLane|promptFamily|templateId|templateVariables|stream|history|role|content|[a-zA-Z_]{1,8})",
                    inner,
                    0..8,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::fuzz_config(1024))]

        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            use ray_core::wire::InferRequest;
            if let Err(error) = parse_json::<InferRequest>(&bytes) {
                prop_assert!(matches!(
                    error.code(),
                    ErrorCode::InvalidJson | ErrorCode::InvalidRequest
                ));
            }
        }

        #[test]
        fn arbitrary_json_objects_never_panic(
            fields in proptest::collection::btree_map(
                "(input|system|maxTokens|temperature|topP|seed|stop|responseFormat|cache|dedupeKey|metadata|templateId|templateVariables|stream|[a-z]{1,6})",
                prop_oneof![
                    Just(serde_json::Value::Null),
                    any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                    any::<i64>().prop_map(serde_json::Value::from),
                    ".{0,8}".prop_map(serde_json::Value::from),
                    Just(serde_json::json!({"type": "json_object"})),
                    Just(serde_json::json!(["a", ""])),
                    Just(serde_json::json!({"k": "v"})),
                ],
                0..6,
            ),
        ) {
            use ray_core::wire::InferRequest;
            let body = serde_json::to_vec(&fields).unwrap();
            match parse_json::<InferRequest>(&body) {
                Ok(request) => { let _ = request.validate(); }
                Err(error) => prop_assert_eq!(error.code(), ErrorCode::InvalidRequest),
            }
        }

        #[test]
        fn nested_json_of_any_shape_is_parsed_or_refused_naming_a_field(value in json_value()) {
            use ray_core::wire::InferRequest;
            use ray_core::wire::openai::{ChatCompletionRequest, CompletionRequest};
            let body = serde_json::to_vec(&value).unwrap();
            match parse_json::<InferRequest>(&body) {
                Ok(request) => {
                    if let Err(error) = request.validate() {
                        prop_assert_eq!(error.code(), ErrorCode::InvalidRequest);
                        prop_assert!(!error.message().is_empty());
                    }
                }
                Err(error) => {
                    prop_assert_eq!(error.code(), ErrorCode::InvalidRequest);
                    prop_assert!(!error.message().is_empty());
                }
            }
            for result in [
                parse_json::<ChatCompletionRequest>(&body).map(|r| r.to_infer()),
                parse_json::<CompletionRequest>(&body).map(|r| r.to_infer()),
            ] {
                match result {
                    Ok(Ok(request)) => { let _ = request.validate(); }
                    Ok(Err(error)) | Err(error) => prop_assert!(matches!(
                        error.code(),
                        ErrorCode::InvalidRequest | ErrorCode::UnsupportedParameter
                    )),
                }
            }
        }
    }
}
