//! The adapters against backends that misbehave in ways a real `llama-server` cannot be made
//! to: a loopback stub that writes raw HTTP. Everything a real server can do (errors it really
//! returns, dying, loading, slow generation, API keys) is tested against the real one in
//! `ray-server/tests/llama_e2e.rs`.
//!
//! Covered here: a 5xx with a body longer than the 4 KiB excerpt, a declared body over the
//! 1 MiB cap, a streamed answer whose text passes the cap, a redirect, a 200 whose JSON is not
//! an answer, a body that stops arriving, a stream cut off before its end, an error event in
//! the middle of a stream, and an event that never ends; and the context window a backend
//! reported, kept while it is down.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ray_models::http::BackendSettings;
use ray_models::{
    LlamaCppProvider, LlamaCppSettings, OpenAiProvider, OpenAiSettings, PreparedPrompt,
    PromptFormat, Provider, ProviderError, ProviderRequest, StreamEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the stub does on a connection, in order.
#[derive(Debug, Clone)]
enum Act {
    Write(Vec<u8>),
    Sleep(Duration),
}

/// A backend that answers every connection with the same script, and records the requests.
struct Stub {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start(script: Vec<Act>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut socket).await;
                    seen.lock().push(request);
                    for act in script {
                        match act {
                            Act::Write(bytes) => {
                                if socket.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Act::Sleep(pause) => tokio::time::sleep(pause).await,
                        }
                    }
                });
            }
        });
        Stub {
            url,
            requests,
            accept,
        }
    }

    /// Stops listening: connections to it are refused from now on, as to a dead backend.
    async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }

    fn settings(&self, timeout: Duration) -> BackendSettings {
        BackendSettings {
            base_url: self.url.clone(),
            timeout,
            headers: [("x-ray-test".to_string(), "yes".to_string())].into(),
            api_key: Some("sk-test".into()),
        }
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Act {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Act::Write(bytes)
}

fn stream_head() -> Act {
    Act::Write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_vec(),
    )
}

fn openai(stub: &Stub, timeout: Duration) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiSettings {
        backend: stub.settings(timeout),
        model_ref: "stub-model".into(),
    })
    .unwrap()
}

fn llama(stub: &Stub, timeout: Duration) -> LlamaCppProvider {
    LlamaCppProvider::new(LlamaCppSettings {
        backend: stub.settings(timeout),
        model_ref: "stub-model".into(),
        model_context_window: 4096,
        cache_prompt: true,
        slot_id: None,
        slot_snapshot_timeout: Duration::from_millis(250),
        slot_state_ttl: Duration::from_millis(250),
        scaffold_entries: 8,
        recommended_format: None,
        launch_preset: None,
    })
    .unwrap()
}

/// A request whose prompt is already prepared for `/completion`, so the stub only has to
/// answer that one call.
fn completion_request() -> ProviderRequest {
    let mut request = ProviderRequest::new("req_stub", "hello", 16);
    request.prepared = Some(PreparedPrompt {
        format: PromptFormat::PlainCompletion,
        reason: "test".into(),
        text: Some(Arc::from("hello")),
        tokens: Some(1),
    });
    request
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_long_upstream_error_keeps_its_status_and_a_bounded_excerpt() {
    let body = "x".repeat(20_000);
    let stub = Stub::start(vec![response(
        "500 Internal Server Error",
        "text/plain",
        body.as_bytes(),
    )])
    .await;
    let error = openai(&stub, SECOND)
        .infer(&ProviderRequest::new("req_1", "hi", 8))
        .await
        .unwrap_err();
    match &error {
        ProviderError::Upstream { status, body } => {
            assert_eq!(*status, 500);
            assert_eq!(body.len(), ray_models::UPSTREAM_BODY_EXCERPT_BYTES);
        }
        other => panic!("expected Upstream, got {other:?}"),
    }
    assert_eq!(error.code().as_str(), "provider_upstream_error");
    // The request carried the key, the extra header, and asked for a stream.
    let request = stub.requests.lock()[0].clone();
    assert!(
        request.starts_with("POST /v1/chat/completions "),
        "{request}"
    );
    assert!(
        request.contains("authorization: Bearer sk-test"),
        "{request}"
    );
    assert!(request.contains("x-ray-test: yes"), "{request}");
    assert!(request.contains(r#""stream":true"#), "{request}");
}

#[tokio::test]
async fn a_declared_body_over_the_cap_is_refused_before_reading() {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2000000\r\n\r\n{";
    let stub = Stub::start(vec![
        Act::Write(head.as_bytes().to_vec()),
        Act::Sleep(SECOND * 5),
    ])
    .await;
    let error = openai(&stub, SECOND * 3)
        .infer(&ProviderRequest::new("req_1", "hi", 8))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::ResponseTooLarge { limit } if limit == 1 << 20),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_streamed_answer_over_the_cap_is_refused() {
    let piece = format!(
        "data: {{\"content\":\"{}\",\"stop\":false}}\n\n",
        "y".repeat(60_000)
    );
    let mut script = vec![stream_head()];
    script.extend((0..20).map(|_| Act::Write(piece.clone().into_bytes())));
    let stub = Stub::start(script).await;
    let error = llama(&stub, SECOND * 5)
        .infer(&completion_request())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::ResponseTooLarge { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let redirect =
        "HTTP/1.1 302 Found\r\nlocation: http://example.invalid/\r\ncontent-length: 0\r\n\r\n";
    let stub = Stub::start(vec![Act::Write(redirect.as_bytes().to_vec())]).await;
    let error = openai(&stub, SECOND)
        .infer(&ProviderRequest::new("req_1", "hi", 8))
        .await
        .unwrap_err();
    assert_eq!(
        error.code().as_str(),
        "provider_request_failed",
        "{error:?}"
    );
    assert!(error.to_string().contains("redirect"), "{error}");
}

#[tokio::test]
async fn json_that_is_not_an_answer_is_invalid() {
    let stub = Stub::start(vec![response(
        "200 OK",
        "application/json",
        br#"{"object":"list"}"#,
    )])
    .await;
    let error = openai(&stub, SECOND)
        .infer(&ProviderRequest::new("req_1", "hi", 8))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::InvalidResponse { .. }),
        "{error:?}"
    );
    let stub = Stub::start(vec![response("200 OK", "application/json", b"<html>")]).await;
    let error = openai(&stub, SECOND)
        .infer(&ProviderRequest::new("req_1", "hi", 8))
        .await
        .unwrap_err();
    assert_eq!(
        error.code().as_str(),
        "provider_invalid_response",
        "{error:?}"
    );
}

#[tokio::test]
async fn a_backend_that_stops_sending_times_out() {
    let event = b"data: {\"content\":\"a\",\"stop\":false}\n\n".to_vec();
    let stub = Stub::start(vec![
        stream_head(),
        Act::Write(event),
        Act::Sleep(SECOND * 10),
    ])
    .await;
    let error = llama(&stub, Duration::from_millis(300))
        .infer(&completion_request())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Timeout { after } if after == Duration::from_millis(300)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stream_cut_off_before_its_end_is_invalid() {
    let event = b"data: {\"content\":\"a\",\"stop\":false}\n\n".to_vec();
    let stub = Stub::start(vec![stream_head(), Act::Write(event)]).await;
    let error = llama(&stub, SECOND)
        .infer(&completion_request())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("ended before the answer was complete"),
        "{error}"
    );
    // Streamed, the text that came is delivered before the error.
    let mut stream = llama(&stub, SECOND)
        .stream(&completion_request())
        .await
        .unwrap();
    use futures_util::StreamExt;
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        StreamEvent::Delta("a".into())
    );
    assert!(stream.next().await.unwrap().is_err());
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn an_error_event_mid_stream_is_an_upstream_error() {
    let events = b"data: {\"content\":\"a\",\"stop\":false}\n\ndata: {\"error\":{\"code\":500,\"message\":\"boom\",\"type\":\"server_error\"}}\n\n".to_vec();
    let stub = Stub::start(vec![stream_head(), Act::Write(events)]).await;
    let error = llama(&stub, SECOND)
        .infer(&completion_request())
        .await
        .unwrap_err();
    match error {
        ProviderError::Upstream { status, body } => {
            assert_eq!(status, 500);
            assert!(body.contains("boom"));
        }
        other => panic!("expected Upstream, got {other:?}"),
    }
}

#[tokio::test]
async fn an_event_that_never_ends_is_refused_at_the_cap() {
    let mut script = vec![stream_head(), Act::Write(b"data: ".to_vec())];
    let filler = vec![b'z'; 512 * 1024];
    script.extend((0..12).map(|_| Act::Write(filler.clone())));
    let stub = Stub::start(script).await;
    let error = llama(&stub, SECOND * 5)
        .infer(&completion_request())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::ResponseTooLarge { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_server_that_ignores_stream_true_is_read_whole() {
    let body = br#"{"choices":[{"message":{"content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    let stub = Stub::start(vec![response("200 OK", "application/json", body)]).await;
    let output = openai(&stub, SECOND)
        .infer(&ProviderRequest::new("req_1", "hi", 8))
        .await
        .unwrap();
    assert_eq!(output.text, "whole");
    assert_eq!(
        (output.prompt_tokens, output.completion_tokens),
        (Some(3), Some(1))
    );
}

/// While the backend does not answer, the context window is the one it reported last, not a
/// configured guess (the launch profile's whole `--ctx-size` is not a slot's); another
/// process behind the adapter forgets it.
#[tokio::test]
async fn the_context_window_stays_the_last_reported_while_the_backend_is_down() {
    let props = br#"{"default_generation_settings":{"n_ctx":2048},"total_slots":2}"#;
    let stub = Stub::start(vec![response("200 OK", "application/json", props)]).await;
    let provider = llama(&stub, SECOND);
    provider.warm_up().await.unwrap();
    assert_eq!(provider.context_window(), Some(2048));
    stub.stop().await;
    let error = provider.warm_up().await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Unavailable { .. }),
        "{error:?}"
    );
    assert_eq!(provider.context_window(), Some(2048));
    provider.backend_replaced(None);
    assert_eq!(provider.context_window(), None);
}
