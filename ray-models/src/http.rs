//! The HTTP client every backend adapter shares: one pooled connection set, no redirects,
//! request and response bodies capped, per-call timeouts, errors mapped to [`ProviderError`].

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ProviderError;

/// Largest request body sent to a backend.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest response body read from a backend.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Settings of a [`BackendClient`].
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Base URL, with or without a trailing slash.
    pub base_url: String,
    /// Default timeout of one call.
    pub timeout: Duration,
    /// Extra headers sent with every call.
    pub headers: BTreeMap<String, String>,
    /// Bearer token sent as `Authorization`, when the backend needs one.
    pub api_key: Option<String>,
}

/// An HTTP client bound to one backend. Clones share the base URL: when the backend moves
/// ([`BackendClient::set_base_url`]), every clone follows.
#[derive(Debug, Clone)]
pub struct BackendClient {
    base_url: std::sync::Arc<parking_lot::RwLock<std::sync::Arc<str>>>,
    timeout: Duration,
    http: reqwest::Client,
}

/// A backend response that was read completely.
#[derive(Debug, Clone)]
pub struct BackendResponse {
    /// HTTP status.
    pub status: u16,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Bytes,
}

impl BackendResponse {
    /// Parses the body as JSON, as an `InvalidResponse` error when it is not what was expected.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|error| ProviderError::InvalidResponse {
            reason: format!("the backend's JSON does not match: {error}"),
        })
    }
}

impl BackendClient {
    /// A client for one backend. Fails only if the headers are invalid (validation refuses
    /// those earlier).
    pub fn new(settings: BackendSettings) -> Result<BackendClient, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                ProviderError::PreparationInvalid {
                    reason: format!("header name {name:?}: {e}"),
                }
            })?;
            let value =
                HeaderValue::from_str(value).map_err(|e| ProviderError::PreparationInvalid {
                    reason: format!("header {name}: {e}"),
                })?;
            headers.insert(name, value);
        }
        if let Some(key) = &settings.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ProviderError::PreparationInvalid {
                    reason: "the backend API key is not a valid header value".into(),
                }
            })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            // Below llama-server's 5 s keep-alive, so Ray never reuses a connection the
            // backend is about to close for idleness.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|error| {
                ProviderError::request_failed("cannot build the HTTP client", error)
            })?;
        Ok(BackendClient {
            base_url: std::sync::Arc::new(parking_lot::RwLock::new(
                settings.base_url.trim_end_matches('/').into(),
            )),
            timeout: settings.timeout,
            http,
        })
    }

    /// The default per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.read())
    }

    /// Points the client at `base_url` from now on (a backend process Ray started on a port
    /// it picked). Calls already sent are not moved.
    pub fn set_base_url(&self, base_url: &str) {
        *self.base_url.write() = base_url.trim_end_matches('/').into();
    }

    /// `GET path`, reading the whole body. Non-2xx statuses are returned, not errors.
    pub async fn get(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<BackendResponse, ProviderError> {
        let request = self.http.get(self.url(path)).timeout(timeout);
        self.send(request, timeout).await
    }

    /// `POST path` with a JSON body, reading the whole body. Non-2xx statuses are returned.
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<BackendResponse, ProviderError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ProviderError::PreparationInvalid {
            reason: format!("the request cannot be serialised: {e}"),
        })?;
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(ProviderError::RequestTooLarge {
                limit: MAX_REQUEST_BYTES,
            });
        }
        let request = self.http.post(self.url(path)).body(bytes).timeout(timeout);
        self.send(request, timeout).await
    }

    /// `POST path` and, on success, parse the JSON answer; non-2xx is `Upstream`.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ProviderError> {
        let response = self.post(path, body, timeout).await?;
        if !(200..300).contains(&response.status) {
            return Err(upstream_error(&response));
        }
        response.json()
    }

    /// `POST path` and return the response for streaming (the body is not read). Non-2xx is
    /// `Upstream` with the start of the body.
    pub async fn post_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        first_byte_timeout: Duration,
    ) -> Result<reqwest::Response, ProviderError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ProviderError::PreparationInvalid {
            reason: format!("the request cannot be serialised: {e}"),
        })?;
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(ProviderError::RequestTooLarge {
                limit: MAX_REQUEST_BYTES,
            });
        }
        // `llama-server` closes the connection after every streamed answer while its headers
        // say keep-alive, so a pooled connection would be reused just as it closes and the
        // next call would fail with "connection closed before message completed". A streamed
        // call therefore gets a connection of its own (a loopback connect costs ~0.1 ms).
        let request = self
            .http
            .post(self.url(path))
            .header(header::CONNECTION, "close")
            .body(bytes);
        let response = tokio::time::timeout(first_byte_timeout, request.send())
            .await
            .map_err(|_| ProviderError::Timeout {
                after: first_byte_timeout,
            })?
            .map_err(|e| transport_error(e, first_byte_timeout))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = read_capped(response, first_byte_timeout).await?;
            return Err(upstream_error(&BackendResponse { status, body }));
        }
        Ok(response)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<BackendResponse, ProviderError> {
        // The overall timeout covers the body too, so a backend that trickles its answer cannot
        // hold the call past it.
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(e, timeout))?;
            let status = response.status().as_u16();
            let body = read_capped(response, timeout).await?;
            Ok(BackendResponse { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ProviderError::Timeout { after: timeout })?
    }
}

pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<Bytes, ProviderError> {
    if response
        .content_length()
        .is_some_and(|len| len as usize > MAX_RESPONSE_BYTES)
    {
        return Err(ProviderError::ResponseTooLarge {
            limit: MAX_RESPONSE_BYTES,
        });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, timeout))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ProviderError::ResponseTooLarge {
                limit: MAX_RESPONSE_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Maps a reqwest failure: timeouts to `Timeout`, everything else to `RequestFailed`, whose
/// message ends with the innermost cause (`connection refused`, `connection reset by peer`, ...)
/// so an operator can tell them apart.
pub fn transport_error(error: reqwest::Error, timeout: Duration) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout { after: timeout };
    }
    let what = if error.is_connect() {
        "cannot connect to the backend"
    } else if error.is_redirect() || error.status().is_some_and(|s| s.is_redirection()) {
        "the backend answered with a redirect, which is not followed"
    } else {
        "the backend connection failed"
    };
    let mut cause: &dyn std::error::Error = &error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let message = if std::ptr::addr_eq(cause, &error) {
        what.to_string()
    } else {
        format!("{what} ({cause})")
    };
    ProviderError::request_failed(message, error)
}

/// The error for a non-2xx backend answer.
pub fn upstream_error(response: &BackendResponse) -> ProviderError {
    // llama.cpp reports an overlong prompt as HTTP 400 `exceed_context_size_error`.
    if response.status == 400
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&response.body)
        && value["error"]["type"] == "exceed_context_size_error"
    {
        let prompt_tokens = value["error"]["n_prompt_tokens"].as_u64().unwrap_or(0) as u32;
        let context_window = value["error"]["n_ctx"].as_u64().unwrap_or(0) as u32;
        return ProviderError::ContextWindowExceeded {
            prompt_tokens,
            max_tokens: 0,
            context_window,
        };
    }
    if (300..400).contains(&response.status) {
        return ProviderError::RequestFailed {
            message: format!(
                "the backend answered with a redirect ({}), which is not followed",
                response.status
            ),
            source: None,
        };
    }
    ProviderError::upstream(response.status, &response.body)
}
