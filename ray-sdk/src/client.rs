//! `RayClient`: one method per route.

use std::time::Duration;

use bytes::Bytes;
use ray_core::wire::{Health, InferRequest, InferResponse, Readiness};
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

mod jobs;

pub use jobs::WaitOptions;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body accepted.
pub const DEFAULT_RESPONSE_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// A typed client for a Ray gateway.
///
/// Cheap to clone (the connection pool is shared). Redirects are never followed.
#[derive(Debug, Clone)]
pub struct RayClient {
    base_url: String,
    http: reqwest::Client,
    response_limit: usize,
}

/// Builds a [`RayClient`].
#[derive(Debug, Clone)]
pub struct RayClientBuilder {
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
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

    /// Largest response body accepted (default 2 MiB).
    pub fn response_limit(mut self, bytes: usize) -> RayClientBuilder {
        self.response_limit = bytes;
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
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(Error::transport)?;
        Ok(RayClient {
            base_url: self.base_url.trim_end_matches('/').to_string(),
            http,
            response_limit: self.response_limit,
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
            response_limit: DEFAULT_RESPONSE_LIMIT_BYTES,
            headers: HeaderMap::new(),
        }
    }

    /// The gateway's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /v1/infer`.
    pub async fn infer(&self, request: &InferRequest) -> Result<InferResponse, Error> {
        self.post("/v1/infer", request).await
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
        let mut response = request.send().await.map_err(Error::transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
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
