//! Server-Sent Events out: the encoder and the streamed response around a runtime stream.
//!
//! A streamed response commits to `200` only once its first event exists: errors before it
//! (queue full, the queue deadline, the first-token deadline, the backend refusing) are ordinary
//! error responses with their status and `Retry-After`; errors after it end the stream with an
//! error event.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use ray_core::RayError;
use ray_core::wire::InferEvent;
use ray_runtime::InferStream;

use crate::gateway::http::Body;

/// One event: an optional `event:` line, one `data:` line per line of `data`, a blank line.
/// Lines of `data` may end with LF, CRLF or CR; each becomes its own `data:` line, so any text
/// decodes back to itself with the line endings made LF.
pub fn encode(name: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// A JSON value as one event.
pub fn encode_json<T: serde::Serialize>(name: Option<&str>, value: &T) -> Bytes {
    // Compact JSON has no raw line breaks, so it is always a single data line.
    let data = serde_json::to_string(value).unwrap_or_else(|error| {
        format!(r#"{{"error":{{"code":"response_serialization_failed","message":"{error}"}}}}"#)
    });
    encode(name, &data)
}

/// Turns the events of a runtime stream into SSE frames.
pub trait Encoder: Send + 'static {
    /// Called once, before the first event, with the stream's request id.
    fn begin(&mut self, request_id: &str) {
        let _ = request_id;
    }
    /// The frames for one event.
    fn event(&mut self, event: &InferEvent) -> Vec<Bytes>;
    /// The frames that end the stream after a failure.
    fn error(&mut self, error: &RayError) -> Vec<Bytes>;
    /// The frames after the final event (OpenAI's `[DONE]`).
    fn end(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
}

/// How a stream starts: with a response, or with an error before any byte was sent.
#[derive(Debug)]
pub enum Started {
    /// The stream started; the response streams the rest.
    Streaming(Response<Body>),
    /// It failed before its first event.
    Failed(RayError),
}

/// Waits for the stream's first event, then answers `200 text/event-stream` with every event
/// encoded by `encoder`. A client that disconnects drops the body and with it the stream.
pub async fn respond<E: Encoder>(mut stream: InferStream, mut encoder: E) -> Started {
    encoder.begin(stream.request_id());
    let first = match stream.next().await {
        Some(Ok(event)) => event,
        Some(Err(error)) => return Started::Failed(error),
        None => {
            return Started::Failed(RayError::new(
                ray_core::ErrorCode::GatewayError,
                "The stream ended before its first event",
            ));
        }
    };
    let mut frames = encoder.event(&first);
    let finished = matches!(first, InferEvent::Done(_));
    if finished {
        frames.extend(encoder.end());
    }
    let head = futures_util::stream::iter(frames);
    let body: std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> = if finished {
        Box::pin(head)
    } else {
        let rest = futures_util::stream::unfold(Some((stream, encoder)), |state| async move {
            let (mut stream, mut encoder) = state?;
            match stream.next().await {
                Some(Ok(event)) => {
                    let mut frames = encoder.event(&event);
                    if matches!(event, InferEvent::Done(_)) {
                        frames.extend(encoder.end());
                        return Some((frames, None));
                    }
                    Some((frames, Some((stream, encoder))))
                }
                Some(Err(error)) => Some((encoder.error(&error), None)),
                None => None,
            }
        })
        .flat_map(futures_util::stream::iter);
        Box::pin(head.chain(rest))
    };
    let frames = body.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Started::Streaming(response)
}

/// The `/v1/infer` event format: `delta`, `done`, `error`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RayEvents;

impl Encoder for RayEvents {
    fn event(&mut self, event: &InferEvent) -> Vec<Bytes> {
        match event {
            InferEvent::Delta(delta) => vec![encode_json(Some("delta"), delta)],
            InferEvent::Done(response) => vec![encode_json(Some("done"), response)],
            InferEvent::Error(body) => vec![encode_json(Some("error"), body)],
        }
    }

    fn error(&mut self, error: &RayError) -> Vec<Bytes> {
        vec![encode_json(Some("error"), &error.to_body())]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A decoder written from the SSE rules, independent of the encoder.
    fn decode(bytes: &[u8]) -> Vec<(Option<String>, String)> {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let mut events = Vec::new();
        let (mut name, mut data, mut has_data) = (None, String::new(), false);
        for line in text.split('\n') {
            if line.is_empty() {
                if has_data {
                    events.push((name.take(), std::mem::take(&mut data)));
                }
                has_data = false;
                name = None;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = Some(value.to_string()),
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        events
    }

    #[test]
    fn events_have_their_name_and_data() {
        let bytes = encode(Some("delta"), r#"{"text":"hi"}"#);
        assert_eq!(&bytes[..], b"event: delta\ndata: {\"text\":\"hi\"}\n\n");
        let bytes = encode(None, "a\nb\r\nc\rd");
        assert_eq!(&bytes[..], b"data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    proptest! {
        /// Any text survives the round trip, line endings made LF.
        #[test]
        fn any_text_round_trips(data in "\\PC*(\\r\\n|\\n|\\r)?\\PC*", name in proptest::option::of("[a-z]{1,8}")) {
            let bytes = encode(name.as_deref(), &data);
            let events = decode(&bytes);
            prop_assert_eq!(events.len(), 1);
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&events[0].1, &expected);
            prop_assert_eq!(&events[0].0, &name);
        }

        /// JSON payloads (with any strings inside) are one data line and parse back.
        #[test]
        fn json_events_parse_back(text in "\\PC*") {
            let value = serde_json::json!({ "text": text });
            let bytes = encode_json(Some("delta"), &value);
            let events = decode(&bytes);
            prop_assert_eq!(events.len(), 1);
            let parsed: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
            prop_assert_eq!(parsed, value);
        }
    }
}
