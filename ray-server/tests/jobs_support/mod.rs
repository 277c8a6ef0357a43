//! Loopback doubles for the job tests: an OpenAI-compatible backend that counts its calls per
//! prompt and notices cancelled calls, and a callback receiver that checks signatures.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// Serves `handler` on a loopback port until the test ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// What the backend has seen.
#[derive(Debug, Default)]
pub struct BackendLog {
    /// Chat completion calls per prompt (the user message).
    pub calls: Mutex<HashMap<String, u32>>,
    /// Calls whose client went away before the answer.
    pub cancelled: AtomicU64,
    /// Calls that had started (including cancelled ones).
    pub started: AtomicU64,
}

impl BackendLog {
    pub fn calls_for(&self, prompt: &str) -> u32 {
        self.calls.lock().get(prompt).copied().unwrap_or(0)
    }
}

struct Cancelled(Arc<BackendLog>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A fake OpenAI-compatible backend on loopback. Prompts containing `slow` take 30 s;
/// prompts containing `flaky` get a 503 on their first call; prompts containing `broken`
/// always get a 503; prompts containing `big-output` get 8 KB back; every
/// other call takes `latency`.
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub log: Arc<BackendLog>,
}

impl FakeBackend {
    pub async fn start(latency: Duration) -> FakeBackend {
        let log = Arc::new(BackendLog::default());
        let shared = log.clone();
        let addr = serve(move |request: Request<Incoming>| {
            let log = shared.clone();
            async move {
                let path = request.uri().path().to_string();
                match path.as_str() {
                    "/v1/models" => json_response(
                        StatusCode::OK,
                        serde_json::json!({"object":"list","data":[{"id":"fake","object":"model"}]}),
                    ),
                    "/health" => json_response(StatusCode::OK, serde_json::json!({"status":"ok"})),
                    "/v1/chat/completions" => {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let prompt = body["messages"]
                            .as_array()
                            .and_then(|m| m.last())
                            .and_then(|m| m["content"].as_str())
                            .unwrap_or("")
                            .to_string();
                        let calls = {
                            let mut calls = log.calls.lock();
                            let n = calls.entry(prompt.clone()).or_insert(0);
                            *n += 1;
                            *n
                        };
                        log.started.fetch_add(1, Ordering::SeqCst);
                        let mut guard = Cancelled(log.clone(), false);
                        let delay = if prompt.contains("slow") {
                            Duration::from_secs(30)
                        } else {
                            latency
                        };
                        tokio::time::sleep(delay).await;
                        guard.1 = true;
                        if prompt.contains("broken") || (prompt.contains("flaky") && calls == 1)
                        {
                            return json_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                serde_json::json!({"error":{"message":"busy"}}),
                            );
                        }
                        let output = if prompt.contains("big-output") {
                            "x".repeat(8_000)
                        } else {
                            format!("echo: {prompt}")
                        };
                        json_response(
                            StatusCode::OK,
                            serde_json::json!({
                                "id": "chatcmpl-1",
                                "object": "chat.completion",
                                "model": "fake",
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": output}}],
                                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
                            }),
                        )
                    }
                    _ => json_response(StatusCode::NOT_FOUND, serde_json::json!({})),
                }
            }
        })
        .await;
        FakeBackend { addr, log }
    }

    /// The `model` section of a Ray config pointing at this backend.
    pub fn model_config(&self) -> String {
        format!(
            r#"{{"adapter":{{"kind":"openai-compatible","baseUrl":"http://{}","modelRef":"fake","timeoutMs":60000}}}}"#,
            self.addr
        )
    }
}

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job_id: String,
    pub status: String,
    pub attempts: u64,
    pub delivery_attempt: u32,
    pub signature_valid: Option<bool>,
    pub record: serde_json::Value,
}

/// A callback receiver on loopback. With `secret`, it checks `x-ray-signature`.
pub struct Receiver {
    pub addr: SocketAddr,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    pub fail_first: Arc<AtomicU64>,
}

impl Receiver {
    /// By the job's prompt: `callback-fail-first` gets 500 on its first delivery,
    /// `callback-always-fail` 503 on every one, `callback-slow` an answer after 3 s (and so
    /// `callback-hold`, for a job the fake backend must not hold: it holds any `slow`).
    pub async fn start(secret: Option<&'static [u8]>) -> Receiver {
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let fail_first = Arc::new(AtomicU64::new(0));
        let log = deliveries.clone();
        let failed = fail_first.clone();
        let addr = serve(move |request: Request<Incoming>| {
            let log = log.clone();
            let failed = failed.clone();
            async move {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let signature = header("x-ray-signature");
                let timestamp = header("x-ray-timestamp");
                let delivery_attempt: u32 = header("x-ray-delivery-attempt")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let signature_valid = secret.map(|secret| {
                    let timestamp: u64 = timestamp.and_then(|t| t.parse().ok()).unwrap_or(0);
                    signature.as_deref()
                        == Some(ray_runtime::jobs::sign(secret, timestamp, &body).as_str())
                });
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let record = value["job"].clone();
                let prompt = record["request"]["input"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let delivery = Delivery {
                    job_id: record["id"].as_str().unwrap_or("").to_string(),
                    status: record["status"].as_str().unwrap_or("").to_string(),
                    attempts: record["attempts"].as_u64().unwrap_or(0),
                    delivery_attempt,
                    signature_valid,
                    record,
                };
                log.lock().push(delivery);
                if prompt.contains("callback-slow") || prompt.contains("callback-hold") {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                }
                if prompt.contains("callback-always-fail") {
                    return json_response(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({}));
                }
                if prompt.contains("callback-fail-first") && delivery_attempt == 1 {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return json_response(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({}));
                }
                json_response(StatusCode::OK, serde_json::json!({"ok": true}))
            }
        })
        .await;
        Receiver {
            addr,
            deliveries,
            fail_first,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/ray", self.addr)
    }

    /// Deliveries of `job_id` so far.
    pub fn of(&self, job_id: &str) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .iter()
            .filter(|d| d.job_id == job_id)
            .cloned()
            .collect()
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`], for checks that need to await.
pub async fn poll_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
