//! The client's error: opaque, with predicates, so it can grow without breaking callers.

use std::fmt;
use std::time::Duration;

use ray_core::{ErrorBody, ErrorCode};

#[derive(Debug)]
enum Kind {
    /// The server answered with an error body.
    Api,
    /// The request timed out.
    Timeout,
    /// The connection failed.
    Connect,
    /// The response could not be read or parsed.
    Decode,
    /// The request could not be built (bad URL, ...).
    Builder,
}

/// An error from [`RayClient`](crate::RayClient).
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    status: Option<u16>,
    code: Option<ErrorCode>,
    message: String,
    details: Option<serde_json::Value>,
    retry_after: Option<Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn from_inner(inner: Inner) -> Error {
        Error {
            inner: Box::new(inner),
        }
    }

    pub(crate) fn api(status: u16, body: &[u8], retry_after: Option<Duration>) -> Error {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(body) => Error::from_inner(Inner {
                kind: Kind::Api,
                status: Some(status),
                code: Some(body.error.code),
                message: body.error.message,
                details: body.error.details,
                retry_after,
                source: None,
            }),
            Err(_) => match serde_json::from_slice::<ray_core::wire::openai::OpenAiErrorBody>(body)
            {
                // The OpenAI-compatible routes answer in OpenAI's shape, Ray's code inside.
                Ok(body) => Error::from_inner(Inner {
                    kind: Kind::Api,
                    status: Some(status),
                    code: body.error.code.as_deref().and_then(ErrorCode::parse),
                    message: body.error.message,
                    details: body
                        .error
                        .param
                        .map(|param| serde_json::json!({ "param": param })),
                    retry_after,
                    source: None,
                }),
                Err(_) => Error::from_inner(Inner {
                    kind: Kind::Api,
                    status: Some(status),
                    code: None,
                    message: format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(512)])
                    ),
                    details: None,
                    retry_after,
                    source: None,
                }),
            },
        }
    }

    pub(crate) fn transport(error: reqwest::Error) -> Error {
        let kind = if error.is_timeout() {
            Kind::Timeout
        } else if error.is_connect() {
            Kind::Connect
        } else if error.is_builder() {
            Kind::Builder
        } else if error.is_decode() || error.is_body() {
            Kind::Decode
        } else {
            Kind::Connect
        };
        Error::from_inner(Inner {
            kind,
            status: error.status().map(|s| s.as_u16()),
            code: None,
            message: error.to_string(),
            details: None,
            retry_after: None,
            source: Some(Box::new(error)),
        })
    }

    pub(crate) fn decode(message: String) -> Error {
        Error::from_inner(Inner {
            kind: Kind::Decode,
            status: None,
            code: None,
            message,
            details: None,
            retry_after: None,
            source: None,
        })
    }

    /// A client-side deadline passed (for example while waiting for a job).
    pub(crate) fn deadline(message: String) -> Error {
        Error::from_inner(Inner {
            kind: Kind::Timeout,
            status: None,
            code: None,
            message,
            details: None,
            retry_after: None,
            source: None,
        })
    }

    pub(crate) fn builder(message: String) -> Error {
        Error::from_inner(Inner {
            kind: Kind::Builder,
            status: None,
            code: None,
            message,
            details: None,
            retry_after: None,
            source: None,
        })
    }

    /// Ray's error code, when the server answered with an error body.
    pub fn code(&self) -> Option<ErrorCode> {
        self.inner.code
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The server's (or the transport's) message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The error body's `details`.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.inner.details.as_ref()
    }

    /// The server's `Retry-After`, when it sent one: wait this long before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Whether the client-side timeout expired.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout)
    }

    /// Whether the server could not be reached.
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Connect)
    }

    /// Whether the server answered with an error status.
    pub fn is_api(&self) -> bool {
        matches!(self.inner.kind, Kind::Api)
    }

    /// Whether retrying later may succeed: the server sent `Retry-After` (queue full, rate
    /// limited, timeouts, warming up), or the connection failed.
    pub fn is_retryable(&self) -> bool {
        self.inner.retry_after.is_some() || self.is_connect()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ray_sdk::Error")
            .field("kind", &self.inner.kind)
            .field("status", &self.inner.status)
            .field("code", &self.inner.code)
            .field("message", &self.inner.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.inner.status, self.inner.code) {
            (Some(status), Some(code)) => {
                write!(f, "ray answered {status} {code}: {}", self.inner.message)
            }
            _ => f.write_str(&self.inner.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
