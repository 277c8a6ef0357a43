//! Backend errors and their mapping into Ray's error codes.

use std::time::Duration;

use ray_core::{ErrorCode, RayError};

/// Largest upstream body kept in an error's details.
pub const UPSTREAM_BODY_EXCERPT_BYTES: usize = 4_096;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The backend could not be reached: connection refused or reset, DNS, TLS.
    #[error("backend request failed: {message}")]
    RequestFailed {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend answered with a non-2xx status.
    #[error("backend answered HTTP {status}")]
    Upstream {
        /// The HTTP status.
        status: u16,
        /// The start of the body (at most 4 KiB).
        body: String,
    },
    /// One backend call took longer than the adapter's `timeoutMs`.
    #[error("backend call timed out after {after:?}")]
    Timeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// The backend answered 2xx with a body Ray cannot use.
    #[error("backend response is invalid: {reason}")]
    InvalidResponse {
        /// What is wrong with it.
        reason: String,
    },
    /// The backend's output breaks a limit.
    #[error("backend result rejected: {reason}")]
    ResultInvalid {
        /// Which limit.
        reason: String,
    },
    /// The backend's response body exceeds the response cap.
    #[error("backend response is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The request to the backend would exceed the request cap.
    #[error("backend request would be larger than {limit} bytes")]
    RequestTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// Preparing the prompt failed.
    #[error("prompt preparation failed: {reason}")]
    PreparationInvalid {
        /// Why.
        reason: String,
    },
    /// The backend is known to be down or still loading.
    #[error("backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// Whether it is loading (warming) rather than down.
        warming: bool,
    },
    /// The answer to a `json_schema` request does not parse or does not follow the schema.
    #[error("the answer does not follow the requested JSON schema: {reason}")]
    SchemaMismatch {
        /// Where and how it breaks the schema.
        reason: String,
    },
    /// The backend cannot do what the request asks (tools on a backend without them).
    #[error("{reason}")]
    Unsupported {
        /// The request parameter (`tools`).
        param: String,
        /// Why, naming the model.
        reason: String,
    },
    /// The backend cannot do what was asked (embeddings from a chat-only server, say).
    #[error("the backend does not support {capability}: {reason}")]
    CapabilityMissing {
        /// The capability, e.g. `embeddings`.
        capability: &'static str,
        /// Why, or what the operator should change.
        reason: String,
    },
    /// Prompt plus output exceed the backend's context window.
    #[error(
        "prompt ({prompt_tokens} tokens) plus maxTokens ({max_tokens}) exceed the context window of {context_window}"
    )]
    ContextWindowExceeded {
        /// Prompt tokens.
        prompt_tokens: u32,
        /// Requested output tokens.
        max_tokens: u32,
        /// The window per slot.
        context_window: u32,
    },
}

impl ProviderError {
    /// A network-level failure with its source.
    pub fn request_failed(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ProviderError {
        ProviderError::RequestFailed {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// An upstream error, keeping at most [`UPSTREAM_BODY_EXCERPT_BYTES`] of the body.
    pub fn upstream(status: u16, body: &[u8]) -> ProviderError {
        let mut end = body.len().min(UPSTREAM_BODY_EXCERPT_BYTES);
        while end > 0 && std::str::from_utf8(&body[..end]).is_err() {
            end -= 1;
        }
        ProviderError::Upstream {
            status,
            body: String::from_utf8_lossy(&body[..end]).into_owned(),
        }
    }

    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProviderError::RequestFailed { .. } => ErrorCode::ProviderRequestFailed,
            ProviderError::Upstream { .. } => ErrorCode::ProviderUpstreamError,
            ProviderError::Timeout { .. } => ErrorCode::ProviderTimeout,
            ProviderError::InvalidResponse { .. } => ErrorCode::ProviderInvalidResponse,
            ProviderError::ResultInvalid { .. } => ErrorCode::ProviderResultInvalid,
            ProviderError::ResponseTooLarge { .. } => ErrorCode::ProviderResponseTooLarge,
            ProviderError::RequestTooLarge { .. } => ErrorCode::ProviderRequestTooLarge,
            ProviderError::PreparationInvalid { .. } => ErrorCode::ProviderPreparationInvalid,
            ProviderError::Unavailable { warming: true, .. } => ErrorCode::ProviderWarming,
            ProviderError::Unavailable { warming: false, .. } => ErrorCode::ProviderUnavailable,
            ProviderError::ContextWindowExceeded { .. } => ErrorCode::RequestContextWindowExceeded,
            ProviderError::SchemaMismatch { .. } => ErrorCode::StructuredOutputInvalid,
            ProviderError::Unsupported { .. } => ErrorCode::UnsupportedParameter,
            ProviderError::CapabilityMissing { .. } => ErrorCode::ModelCapabilityUnsupported,
        }
    }
}

/// Longest part of a backend's error message quoted in Ray's, in chars.
const UPSTREAM_MESSAGE_CHARS: usize = 300;

/// The backend's own error message in an error body: `error.message` of an OpenAI-shaped or
/// llama-server body, `error` or `message` when it is a string, else the body's first line
/// when it is short text. At most [`UPSTREAM_MESSAGE_CHARS`] chars.
fn upstream_message(body: &str) -> Option<String> {
    let said = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => [
            value.pointer("/error/message"),
            value.get("error"),
            value.get("message"),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| v.as_str().map(str::to_string))?,
        Err(_) => body.lines().next()?.trim().to_string(),
    };
    let said = said.trim();
    if said.is_empty() || said.starts_with('<') {
        // Nothing, or an HTML page: the details keep the body.
        return None;
    }
    Some(said.chars().take(UPSTREAM_MESSAGE_CHARS).collect())
}

impl From<ProviderError> for RayError {
    fn from(error: ProviderError) -> RayError {
        let details = match &error {
            ProviderError::Upstream { status, body } => Some(serde_json::json!({
                "upstreamStatus": status, "upstreamBody": body,
            })),
            ProviderError::Timeout { after } => Some(serde_json::json!({
                "timeoutMs": after.as_millis() as u64,
            })),
            ProviderError::ResponseTooLarge { limit }
            | ProviderError::RequestTooLarge { limit } => {
                Some(serde_json::json!({ "limitBytes": limit }))
            }
            ProviderError::ContextWindowExceeded {
                prompt_tokens,
                max_tokens,
                context_window,
            } => Some(serde_json::json!({
                "promptTokens": prompt_tokens,
                "maxTokens": max_tokens,
                "totalTokens": prompt_tokens + max_tokens,
                "contextWindow": context_window,
            })),
            ProviderError::Unsupported { param, .. } => Some(serde_json::json!({ "param": param })),
            ProviderError::SchemaMismatch { .. } => {
                Some(serde_json::json!({ "param": "response_format" }))
            }
            ProviderError::CapabilityMissing { capability, .. } => {
                Some(serde_json::json!({ "capability": capability }))
            }
            _ => None,
        };
        let code = error.code();
        let mut message = error.to_string();
        if let ProviderError::Upstream { body, .. } = &error
            && let Some(said) = upstream_message(body)
        {
            // What the backend said, so a client that sees only the message knows why.
            message = format!("{message}: {said}");
        }
        if let Some(first) = message.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let ray_error = RayError::new(code, message);
        match details {
            Some(details) => ray_error.with_details(details),
            None => ray_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_error_quotes_what_the_backend_said() {
        let message = |body: &str| {
            RayError::from(ProviderError::upstream(500, body.as_bytes()))
                .message()
                .to_string()
        };
        assert_eq!(
            message(
                r#"{"error":{"code":500,"message":"output does not match","type":"server_error"}}"#
            ),
            "Backend answered HTTP 500: output does not match"
        );
        assert_eq!(
            message(r#"{"error":"model not loaded"}"#),
            "Backend answered HTTP 500: model not loaded"
        );
        assert_eq!(
            message("upstream connect error\nmore"),
            "Backend answered HTTP 500: upstream connect error"
        );
        assert_eq!(
            message("<html><body>502</body></html>"),
            "Backend answered HTTP 500"
        );
        assert_eq!(message(""), "Backend answered HTTP 500");
        assert!(message(&"x".repeat(5_000)).chars().count() < 340);
    }

    #[test]
    fn upstream_errors_keep_a_bounded_excerpt() {
        let body = "é".repeat(5_000);
        let ProviderError::Upstream { body, .. } = ProviderError::upstream(500, body.as_bytes())
        else {
            unreachable!()
        };
        assert!(body.len() <= UPSTREAM_BODY_EXCERPT_BYTES);
        assert!(
            body.chars().all(|c| c == 'é'),
            "never cuts a character in half"
        );
    }

    #[test]
    fn codes_follow_the_reference() {
        let error = RayError::from(ProviderError::Timeout {
            after: Duration::from_secs(2),
        });
        assert_eq!(error.code(), ErrorCode::ProviderTimeout);
        assert_eq!(error.retry_after_secs(), Some(5));
        assert_eq!(error.details().unwrap()["timeoutMs"], 2_000);
        let error = RayError::from(ProviderError::upstream(503, b"busy"));
        assert_eq!(error.status(), 502);
        assert_eq!(error.details().unwrap()["upstreamStatus"], 503);
    }
}
