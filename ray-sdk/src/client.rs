//! `RayClient`: one method per route.

use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use ray_core::sse::{SseDecoder, SseEvent};
use ray_core::wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion, CompletionRequest,
    ModelList,
};
use ray_core::wire::{Health, InferEvent, InferRequest, InferResponse, Readiness};
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

mod embeddings;
mod jobs;

pub use jobs::WaitOptions;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body accepted.
pub const DEFAULT_RESPONSE_LIMIT_BYTES: usize = 2 * 1024 * 1024;
/// Default limit on a whole streamed response (the server's `streaming` deadlines end streams
/// sooner; this is the client's own backstop).
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest single event of a stream accepted.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// A typed client for a Ray gateway.
///
/// Cheap to clone (the connection pool is shared). Redirects are never followed.
#[derive(Debug, Clone)]
pub struct RayClient {
    base_url: String,
    http: reqwest::Client,
    response_limit: usize,
    stream_timeout: Duration,
    timeout: Duration,
}

/// Builds a [`RayClient`].
#[derive(Debug, Clone)]
pub struct RayClientBuilder {
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
    stream_timeout: Duration,
    response_limit: usize,
    headers: HeaderMap,
}

impl RayClientBuilder {
    /// Sends `Authorization: Bearer <key>` with every request.
    pub fn api_key(mut self, key: impl Into<String>) -> RayClientBuilder {
        self.api_key = Some(key.into());
        self
    }

    /// Per-request timeout (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> RayClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Longest a streamed response may take, first byte to last (default 10 minutes).
    pub fn stream_timeout(mut self, timeout: Duration) -> RayClientBuilder {
        self.stream_timeout = timeout;
        self
    }

    /// Largest response body accepted (default 2 MiB).
    pub fn response_limit(mut self, bytes: usize) -> RayClientBuilder {
        self.response_limit = bytes;
        self
    }

    /// Sends `X-Ray-Priority` with every request, so the OpenAI-compatible routes run in this
    /// class (never above what the API key may use). On `/v1/infer` and jobs, set the
    /// request's own `priority` instead ([`InferRequest::with_priority`]).
    pub fn priority(mut self, priority: ray_core::wire::Priority) -> RayClientBuilder {
        if let Ok(value) = HeaderValue::from_str(&priority.to_string()) {
            self.headers.insert("x-ray-priority", value);
        }
        self
    }

    /// An extra header sent with every request (`Authorization` and `Content-Type` are the
    /// client's own).
    pub fn header(mut self, name: &'static str, value: &str) -> Result<RayClientBuilder, Error> {
        let value = HeaderValue::from_str(value)
            .map_err(|e| Error::builder(format!("header {name}: {e}")))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Builds the client.
    pub fn build(self) -> Result<RayClient, Error> {
        let mut headers = self.headers;
        if let Some(key) = &self.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| Error::builder("the API key is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        // The timeout is set per request: whole answers and streams need different ones.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(Error::transport)?;
        Ok(RayClient {
            base_url: self.base_url.trim_end_matches('/').to_string(),
            http,
            response_limit: self.response_limit,
            stream_timeout: self.stream_timeout,
            timeout: self.timeout,
        })
    }
}

impl RayClient {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:3000`) with defaults.
    pub fn new(base_url: impl Into<String>) -> Result<RayClient, Error> {
        RayClient::builder(base_url).build()
    }

    /// A builder for the gateway at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> RayClientBuilder {
        RayClientBuilder {
            base_url: base_url.into(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            stream_timeout: DEFAULT_STREAM_TIMEOUT,
            response_limit: DEFAULT_RESPONSE_LIMIT_BYTES,
            headers: HeaderMap::new(),
        }
    }

    /// The gateway's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /v1/infer`. A request with `stream: true` is answered whole too; use
    /// [`RayClient::infer_stream`] for the events.
    pub async fn infer(&self, request: &InferRequest) -> Result<InferResponse, Error> {
        if request.stream == Some(true) {
            let whole = InferRequest {
                stream: None,
                ..request.clone()
            };
            return self.post("/v1/infer", &whole).await;
        }
        self.post("/v1/infer", request).await
    }

    /// `POST /v1/infer` with `"stream": true`: the events as they come, [`InferEvent::Delta`]s
    /// then one [`InferEvent::Done`]. A failure before the stream starts is this call's error;
    /// one after it is the stream's last item, an `Err` with the server's code. Dropping the
    /// stream closes the connection, which stops the generation on the server.
    pub async fn infer_stream(
        &self,
        request: &InferRequest,
    ) -> Result<EventStream<InferEvent>, Error> {
        let body = InferRequest {
            stream: Some(true),
            ..request.clone()
        };
        let response = self.open_stream("/v1/infer", &body).await?;
        Ok(EventStream::new(response, |event: SseEvent| {
            let name = event.event.as_deref().unwrap_or("message");
            match InferEvent::parse(name, &event.data) {
                Ok(InferEvent::Error(body)) => {
                    let status = body.error.code.status();
                    let data = serde_json::to_vec(&body).unwrap_or_default();
                    Parsed::Failed(Error::api(status, &data, None))
                }
                Ok(event @ InferEvent::Done(_)) => Parsed::Last(event),
                Ok(event) => Parsed::Item(event),
                Err(message) => Parsed::Failed(Error::decode(message)),
            }
        }))
    }

    /// `POST /v1/chat/completions` (OpenAI-compatible), not streamed.
    pub async fn chat_completions(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<ChatCompletion, Error> {
        let whole = ChatCompletionRequest {
            stream: None,
            stream_options: None,
            ..request.clone()
        };
        self.post("/v1/chat/completions", &whole).await
    }

    /// `POST /v1/chat/completions` streamed: the chunks until `[DONE]`.
    pub async fn chat_completions_stream(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<EventStream<ChatCompletionChunk>, Error> {
        let body = ChatCompletionRequest {
            stream: Some(true),
            ..request.clone()
        };
        let response = self.open_stream("/v1/chat/completions", &body).await?;
        Ok(EventStream::new(
            response,
            openai_chunk::<ChatCompletionChunk>,
        ))
    }

    /// `POST /v1/completions` (OpenAI-compatible legacy text endpoint), not streamed.
    pub async fn completions(&self, request: &CompletionRequest) -> Result<Completion, Error> {
        let whole = CompletionRequest {
            stream: None,
            stream_options: None,
            ..request.clone()
        };
        self.post("/v1/completions", &whole).await
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<ModelList, Error> {
        self.get_json("/v1/models").await
    }

    /// `GET /health` (the full snapshot; needs a key when auth is on). A gateway whose
    /// provider is unavailable answers 503 with the same body, which is returned here as `Ok`
    /// with that status in it.
    pub async fn health(&self) -> Result<Health, Error> {
        self.snapshot("/health").await
    }

    /// `GET /readyz`. A gateway that is not ready answers 503 with the same body, which is
    /// returned here as `Ok` with [`Readiness::is_ready`] false.
    pub async fn ready(&self) -> Result<Readiness, Error> {
        self.snapshot("/readyz").await
    }

    /// A state document that comes with 200, or with 503 when the state is bad. A 503 with an
    /// error body instead (the gateway shutting down, say) is an error.
    async fn snapshot<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let (status, body, retry_after) = self.send(self.http.get(self.url(path))).await?;
        match status {
            200 => decode(&body),
            503 => decode(&body).map_err(|_| Error::api(status, &body, retry_after)),
            _ => Err(Error::api(status, &body, retry_after)),
        }
    }

    /// `GET /livez`: whether the process answers at all.
    pub async fn live(&self) -> Result<bool, Error> {
        let (status, _, _) = self.send(self.http.get(self.url("/livez"))).await?;
        Ok(status == 200)
    }

    /// `GET /metrics` as Prometheus text.
    pub async fn metrics_text(&self) -> Result<String, Error> {
        let (status, body, retry_after) = self.send(self.http.get(self.url("/metrics"))).await?;
        if status != 200 {
            return Err(Error::api(status, &body, retry_after));
        }
        String::from_utf8(body.to_vec()).map_err(|e| Error::decode(e.to_string()))
    }

    /// `GET /v1/config`: the effective config (secrets redacted) with capability hints.
    pub async fn config(&self) -> Result<serde_json::Value, Error> {
        self.get_json("/v1/config").await
    }

    /// Sends a POST whose answer is an event stream; a non-2xx answer is the error.
    async fn open_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::builder(e.to_string()))?;
        let request = self
            .http
            .post(self.url(path))
            .timeout(self.stream_timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream")
            .body(bytes);
        let response = request.send().await.map_err(Error::transport)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(Error::transport)?;
        Err(Error::api(status, &body, retry_after))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let (status, body, retry_after) = self.send(self.http.get(self.url(path))).await?;
        if (200..300).contains(&status) {
            decode(&body)
        } else {
            Err(Error::api(status, &body, retry_after))
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::builder(e.to_string()))?;
        let request = self
            .http
            .post(self.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(bytes);
        let (status, body, retry_after) = self.send(request).await?;
        if (200..300).contains(&status) {
            decode(&body)
        } else {
            Err(Error::api(status, &body, retry_after))
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Bytes, Option<Duration>), Error> {
        let mut response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(Error::transport)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        if response
            .content_length()
            .is_some_and(|len| len as usize > self.response_limit)
        {
            return Err(Error::decode(format!(
                "the response is larger than {} bytes",
                self.response_limit
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Error::transport)? {
            if body.len() + chunk.len() > self.response_limit {
                return Err(Error::decode(format!(
                    "the response is larger than {} bytes",
                    self.response_limit
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, Bytes::from(body), retry_after))
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::decode(format!("unexpected response: {e}")))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// What one event of a stream is.
enum Parsed<T> {
    /// An item, more to come.
    Item(T),
    /// The last item.
    Last(T),
    /// The end marker, no item.
    End,
    /// A failure, which ends the stream.
    Failed(Error),
}

/// One OpenAI stream event: a chunk, an error, or the end (`[DONE]`).
fn openai_chunk<T: DeserializeOwned>(event: SseEvent) -> Parsed<T> {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Parsed::End;
    }
    let value: serde_json::Value = match serde_json::from_str(data) {
        Ok(value) => value,
        Err(e) => return Parsed::Failed(Error::decode(format!("stream event: {e}"))),
    };
    if value.get("error").is_some() {
        let status = value["error"]["code"]
            .as_str()
            .and_then(ray_core::ErrorCode::parse)
            .map_or(500, |code| code.status());
        return Parsed::Failed(Error::api(status, data.as_bytes(), None));
    }
    match serde_json::from_value(value) {
        Ok(chunk) => Parsed::Item(chunk),
        Err(e) => Parsed::Failed(Error::decode(format!("stream chunk: {e}"))),
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The events of a streamed response, decoded as they arrive. Ends after the last event (or
/// after an error, which is its last item). Dropping it closes the connection.
pub struct EventStream<T> {
    body: ByteStream,
    decoder: SseDecoder,
    parse: fn(SseEvent) -> Parsed<T>,
    done: bool,
}

impl<T> std::fmt::Debug for EventStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> EventStream<T> {
    fn new(response: reqwest::Response, parse: fn(SseEvent) -> Parsed<T>) -> EventStream<T> {
        EventStream {
            body: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            parse,
            done: false,
        }
    }
}

impl<T> Unpin for EventStream<T> {}

impl<T> Stream for EventStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decoder.next_event() {
                Ok(Some(event)) => match (this.parse)(event) {
                    Parsed::Item(item) => return Poll::Ready(Some(Ok(item))),
                    Parsed::Last(item) => {
                        this.done = true;
                        return Poll::Ready(Some(Ok(item)));
                    }
                    Parsed::End => {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    Parsed::Failed(error) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                Ok(None) => {}
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::decode(error.to_string()))));
                }
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    if let Err(error) = this.decoder.feed(&bytes) {
                        this.done = true;
                        return Poll::Ready(Some(Err(Error::decode(error.to_string()))));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::transport(error))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::decode(
                        "the stream ended before its last event".into(),
                    ))));
                }
            }
        }
    }
}
