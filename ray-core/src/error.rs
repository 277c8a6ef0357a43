//! The error model: one list of stable error codes, their HTTP status and retry hint, and the
//! error body every route returns.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Every error Ray reports on the wire, as a stable `snake_case` code.
///
/// The code decides the HTTP status ([`ErrorCode::status`]) and whether a `Retry-After` header
/// is sent ([`ErrorCode::retry_after_secs`]). The mapping is exhaustive on purpose: adding a code
/// forces a decision about its status and retry hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request failed validation (a field is missing, malformed or out of range).
    InvalidRequest,
    /// The body is not valid JSON.
    InvalidJson,
    /// The HTTP request itself could not be parsed.
    InvalidHttpRequest,
    /// Authentication is enabled and the Bearer token is missing or wrong.
    Unauthorized,
    /// No route matches the method and path.
    NotFound,
    /// No job with that id exists (or it was pruned).
    JobNotFound,
    /// The job exists but is already finished, so it cannot be cancelled.
    JobNotCancellable,
    /// `Expect: 100-continue` was sent without a `Content-Length`.
    LengthRequired,
    /// The body is larger than `server.requestBodyLimitBytes`.
    BodyTooLarge,
    /// The request's token cost is larger than a scheduler token budget, so it could never run.
    RequestTokenBudgetExceeded,
    /// Prompt plus output tokens exceed the model's context window.
    RequestContextWindowExceeded,
    /// A job record would be larger than the record size cap.
    AsyncJobRecordTooLarge,
    /// The request target (URL) is too long.
    RequestTargetTooLarge,
    /// The `Content-Type` is not JSON.
    UnsupportedMediaType,
    /// The `Content-Encoding` is something other than `identity`.
    UnsupportedContentEncoding,
    /// An `Expect` header other than `100-continue`.
    UnsupportedExpectation,
    /// The client's rate-limit window is exhausted.
    RateLimited,
    /// The request headers are too large or too many.
    RequestHeadersTooLarge,
    /// An unexpected failure inside the gateway.
    GatewayError,
    /// The response could not be serialised.
    ResponseSerializationFailed,
    /// The backend answered with a non-2xx status.
    ProviderUpstreamError,
    /// The backend could not be reached (connection refused, reset, DNS, ...).
    ProviderRequestFailed,
    /// The backend answered 2xx with a body Ray cannot use.
    ProviderInvalidResponse,
    /// The backend's output breaks a limit (for example it is far longer than `maxTokens` allows).
    ProviderResultInvalid,
    /// Preparing the prompt for the backend failed.
    ProviderPreparationInvalid,
    /// The backend's response body is larger than the response cap.
    ProviderResponseTooLarge,
    /// The request to the backend would be larger than the request cap.
    ProviderRequestTooLarge,
    /// The backend is down; readiness says so too.
    ProviderUnavailable,
    /// The backend is still loading or warming up.
    ProviderWarming,
    /// The scheduler queue (or a token budget for queued work) is full.
    QueueFull,
    /// The scheduler's estimate of when the request would start lies beyond its deadline (or
    /// its priority class's `maxWaitMs`), so it is refused at once instead of timing out in
    /// the queue; `Retry-After` comes from the estimate.
    QueueWaitExceedsDeadline,
    /// Memory pressure is critical and the last-resort guard refuses new work.
    MemoryPressureCritical,
    /// The gateway is shutting down and takes no new work.
    ShuttingDown,
    /// The durable job store holds `asyncQueue.maxJobs` jobs already.
    AsyncQueueFull,
    /// Free space under `asyncQueue.storageDir` is below `asyncQueue.minFreeStorageMiB`.
    AsyncQueueStorageLow,
    /// The async job queue is disabled in the config.
    AsyncQueueDisabled,
    /// The job store refuses writes (permission, read-only file system, I/O error); the queue
    /// takes jobs again by itself once a write succeeds.
    AsyncQueueUnavailable,
    /// The cluster's shared state (NATS JetStream) cannot be reached now; the node keeps
    /// serving its own models.
    ClusterUnavailable,
    /// The model needs more memory than `lifecycle.memoryBudgetMiB` allows even with every
    /// other model unloaded, so it is never loaded; retrying does not help.
    ModelDoesNotFit,
    /// The model is not loaded and its load (measured the last time it loaded) cannot finish
    /// before the request's deadline, or its load failed a moment ago; `Retry-After` says when
    /// it should be ready.
    ModelLoading,
    /// The job's stored record is damaged (it cannot be read or parsed) and was moved to
    /// `quarantine/`; its request and result are not served.
    JobRecordDamaged,
    /// Recovery found more job files than it is allowed to scan. Kept for compatibility: this
    /// version never sends it, because recovery never refuses to start.
    AsyncQueueRecoveryLimitExceeded,
    /// The request did not finish within `scheduler.requestTimeoutMs` (queue wait plus execution).
    RequestTimeout,
    /// A single backend call took longer than the adapter's `timeoutMs`.
    ProviderTimeout,
    /// The request was aborted before it finished (the caller left).
    RequestAborted,
    /// A request names a parameter Ray does not support (OpenAI-compatible routes), or a value
    /// of one it supports only partly (`n` other than 1, say).
    UnsupportedParameter,
    /// A request names a model this gateway does not serve.
    ModelNotFound,
    /// The model cannot do what the request asks (embeddings from a model without the
    /// capability, for example); the message names the model and the capability.
    ModelCapabilityUnsupported,
    /// A streamed request produced no token within `streaming.firstTokenTimeoutMs` of starting.
    StreamFirstTokenTimeout,
    /// A stream produced no token for `streaming.idleTimeoutMs`.
    StreamIdleTimeout,
    /// A stream ran longer than `streaming.totalTimeoutMs`.
    StreamTotalTimeout,
    /// The backend's answer to a `json_schema` request is not JSON following the schema (the
    /// grammar was cut short by `max_tokens`, or the backend ignored it).
    StructuredOutputInvalid,
}

impl ErrorCode {
    /// Whether a job attempt that failed with this code may be tried again: the errors with a
    /// 5xx status (queue full, timeouts, backend failures, gateway errors), as the reference
    /// retries them.
    pub fn is_retryable(self) -> bool {
        self.status() >= 500
    }

    /// Whether a request refused with this code never ran: the gateway was shutting down,
    /// or the scheduler had no room for it (`queue_full`, `queue_wait_exceeds_deadline`). A
    /// job attempt refused this way is given back rather than counted.
    pub fn is_refused_before_running(self) -> bool {
        matches!(
            self,
            ErrorCode::ShuttingDown | ErrorCode::QueueFull | ErrorCode::QueueWaitExceedsDeadline
        )
    }

    /// All codes, in declaration order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidHttpRequest,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::JobNotFound,
        ErrorCode::JobNotCancellable,
        ErrorCode::LengthRequired,
        ErrorCode::BodyTooLarge,
        ErrorCode::RequestTokenBudgetExceeded,
        ErrorCode::RequestContextWindowExceeded,
        ErrorCode::AsyncJobRecordTooLarge,
        ErrorCode::RequestTargetTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UnsupportedContentEncoding,
        ErrorCode::UnsupportedExpectation,
        ErrorCode::RateLimited,
        ErrorCode::RequestHeadersTooLarge,
        ErrorCode::GatewayError,
        ErrorCode::ResponseSerializationFailed,
        ErrorCode::ProviderUpstreamError,
        ErrorCode::ProviderRequestFailed,
        ErrorCode::ProviderInvalidResponse,
        ErrorCode::ProviderResultInvalid,
        ErrorCode::ProviderPreparationInvalid,
        ErrorCode::ProviderResponseTooLarge,
        ErrorCode::ProviderRequestTooLarge,
        ErrorCode::ProviderUnavailable,
        ErrorCode::ProviderWarming,
        ErrorCode::QueueFull,
        ErrorCode::QueueWaitExceedsDeadline,
        ErrorCode::MemoryPressureCritical,
        ErrorCode::ShuttingDown,
        ErrorCode::AsyncQueueFull,
        ErrorCode::AsyncQueueStorageLow,
        ErrorCode::AsyncQueueDisabled,
        ErrorCode::AsyncQueueUnavailable,
        ErrorCode::ClusterUnavailable,
        ErrorCode::ModelDoesNotFit,
        ErrorCode::ModelLoading,
        ErrorCode::JobRecordDamaged,
        ErrorCode::AsyncQueueRecoveryLimitExceeded,
        ErrorCode::RequestTimeout,
        ErrorCode::ProviderTimeout,
        ErrorCode::RequestAborted,
        ErrorCode::UnsupportedParameter,
        ErrorCode::ModelNotFound,
        ErrorCode::ModelCapabilityUnsupported,
        ErrorCode::StreamFirstTokenTimeout,
        ErrorCode::StreamIdleTimeout,
        ErrorCode::StreamTotalTimeout,
        ErrorCode::StructuredOutputInvalid,
    ];

    /// The wire name, e.g. `"queue_full"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidHttpRequest => "invalid_http_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::JobNotFound => "job_not_found",
            ErrorCode::JobNotCancellable => "job_not_cancellable",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::RequestTokenBudgetExceeded => "request_token_budget_exceeded",
            ErrorCode::RequestContextWindowExceeded => "request_context_window_exceeded",
            ErrorCode::AsyncJobRecordTooLarge => "async_job_record_too_large",
            ErrorCode::RequestTargetTooLarge => "request_target_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UnsupportedContentEncoding => "unsupported_content_encoding",
            ErrorCode::UnsupportedExpectation => "unsupported_expectation",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestHeadersTooLarge => "request_headers_too_large",
            ErrorCode::GatewayError => "gateway_error",
            ErrorCode::ResponseSerializationFailed => "response_serialization_failed",
            ErrorCode::ProviderUpstreamError => "provider_upstream_error",
            ErrorCode::ProviderRequestFailed => "provider_request_failed",
            ErrorCode::ProviderInvalidResponse => "provider_invalid_response",
            ErrorCode::ProviderResultInvalid => "provider_result_invalid",
            ErrorCode::ProviderPreparationInvalid => "provider_preparation_invalid",
            ErrorCode::ProviderResponseTooLarge => "provider_response_too_large",
            ErrorCode::ProviderRequestTooLarge => "provider_request_too_large",
            ErrorCode::ProviderUnavailable => "provider_unavailable",
            ErrorCode::ProviderWarming => "provider_warming",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::QueueWaitExceedsDeadline => "queue_wait_exceeds_deadline",
            ErrorCode::MemoryPressureCritical => "memory_pressure_critical",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::AsyncQueueFull => "async_queue_full",
            ErrorCode::AsyncQueueStorageLow => "async_queue_storage_low",
            ErrorCode::AsyncQueueDisabled => "async_queue_disabled",
            ErrorCode::AsyncQueueUnavailable => "async_queue_unavailable",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::ModelDoesNotFit => "model_does_not_fit",
            ErrorCode::ModelLoading => "model_loading",
            ErrorCode::JobRecordDamaged => "job_record_damaged",
            ErrorCode::AsyncQueueRecoveryLimitExceeded => "async_queue_recovery_limit_exceeded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::ProviderTimeout => "provider_timeout",
            ErrorCode::RequestAborted => "request_aborted",
            ErrorCode::UnsupportedParameter => "unsupported_parameter",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::ModelCapabilityUnsupported => "model_capability_unsupported",
            ErrorCode::StreamFirstTokenTimeout => "stream_first_token_timeout",
            ErrorCode::StreamIdleTimeout => "stream_idle_timeout",
            ErrorCode::StreamTotalTimeout => "stream_total_timeout",
            ErrorCode::StructuredOutputInvalid => "structured_output_invalid",
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidHttpRequest
            | ErrorCode::UnsupportedParameter
            | ErrorCode::ModelCapabilityUnsupported => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound | ErrorCode::JobNotFound | ErrorCode::ModelNotFound => 404,
            ErrorCode::JobNotCancellable => 409,
            ErrorCode::JobRecordDamaged => 410,
            ErrorCode::LengthRequired => 411,
            ErrorCode::BodyTooLarge
            | ErrorCode::RequestTokenBudgetExceeded
            | ErrorCode::RequestContextWindowExceeded
            | ErrorCode::AsyncJobRecordTooLarge => 413,
            ErrorCode::RequestTargetTooLarge => 414,
            ErrorCode::UnsupportedMediaType | ErrorCode::UnsupportedContentEncoding => 415,
            ErrorCode::UnsupportedExpectation => 417,
            ErrorCode::RateLimited => 429,
            ErrorCode::RequestHeadersTooLarge => 431,
            ErrorCode::GatewayError | ErrorCode::ResponseSerializationFailed => 500,
            ErrorCode::ProviderUpstreamError
            | ErrorCode::ProviderRequestFailed
            | ErrorCode::ProviderInvalidResponse
            | ErrorCode::ProviderResultInvalid
            | ErrorCode::ProviderPreparationInvalid
            | ErrorCode::ProviderResponseTooLarge
            | ErrorCode::ProviderRequestTooLarge
            | ErrorCode::StructuredOutputInvalid => 502,
            ErrorCode::ProviderUnavailable
            | ErrorCode::ProviderWarming
            | ErrorCode::QueueFull
            | ErrorCode::QueueWaitExceedsDeadline
            | ErrorCode::MemoryPressureCritical
            | ErrorCode::ShuttingDown
            | ErrorCode::AsyncQueueFull
            | ErrorCode::AsyncQueueStorageLow
            | ErrorCode::AsyncQueueDisabled
            | ErrorCode::AsyncQueueUnavailable
            | ErrorCode::ClusterUnavailable
            | ErrorCode::ModelDoesNotFit
            | ErrorCode::ModelLoading
            | ErrorCode::AsyncQueueRecoveryLimitExceeded => 503,
            ErrorCode::RequestTimeout
            | ErrorCode::ProviderTimeout
            | ErrorCode::RequestAborted
            | ErrorCode::StreamFirstTokenTimeout
            | ErrorCode::StreamIdleTimeout
            | ErrorCode::StreamTotalTimeout => 504,
        }
    }

    /// The default `Retry-After` in seconds, or `None` when retrying as-is will not help.
    ///
    /// `rate_limited` computes its own value from the client's window, see
    /// [`RayError::with_retry_after`]; the `1` here is only its floor.
    pub const fn retry_after_secs(self) -> Option<u32> {
        match self {
            ErrorCode::QueueFull
            | ErrorCode::QueueWaitExceedsDeadline
            | ErrorCode::AsyncQueueFull
            | ErrorCode::RateLimited
            | ErrorCode::ClusterUnavailable => Some(1),
            ErrorCode::ProviderWarming | ErrorCode::ShuttingDown | ErrorCode::ModelLoading => {
                Some(2)
            }
            ErrorCode::RequestTimeout
            | ErrorCode::ProviderTimeout
            | ErrorCode::ProviderUnavailable
            | ErrorCode::MemoryPressureCritical
            | ErrorCode::StreamFirstTokenTimeout
            | ErrorCode::StreamIdleTimeout
            | ErrorCode::StreamTotalTimeout
            | ErrorCode::AsyncQueueUnavailable => Some(5),
            ErrorCode::AsyncQueueStorageLow => Some(30),
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidHttpRequest
            | ErrorCode::Unauthorized
            | ErrorCode::NotFound
            | ErrorCode::JobNotFound
            | ErrorCode::JobNotCancellable
            | ErrorCode::JobRecordDamaged
            | ErrorCode::LengthRequired
            | ErrorCode::BodyTooLarge
            | ErrorCode::RequestTokenBudgetExceeded
            | ErrorCode::RequestContextWindowExceeded
            | ErrorCode::AsyncJobRecordTooLarge
            | ErrorCode::RequestTargetTooLarge
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::UnsupportedContentEncoding
            | ErrorCode::UnsupportedExpectation
            | ErrorCode::RequestHeadersTooLarge
            | ErrorCode::GatewayError
            | ErrorCode::ResponseSerializationFailed
            | ErrorCode::ProviderUpstreamError
            | ErrorCode::ProviderRequestFailed
            | ErrorCode::ProviderInvalidResponse
            | ErrorCode::ProviderResultInvalid
            | ErrorCode::ProviderPreparationInvalid
            | ErrorCode::ProviderResponseTooLarge
            | ErrorCode::ProviderRequestTooLarge
            | ErrorCode::StructuredOutputInvalid
            | ErrorCode::AsyncQueueDisabled
            | ErrorCode::AsyncQueueRecoveryLimitExceeded
            | ErrorCode::RequestAborted
            | ErrorCode::UnsupportedParameter
            | ErrorCode::ModelNotFound
            | ErrorCode::ModelDoesNotFit
            | ErrorCode::ModelCapabilityUnsupported => None,
        }
    }

    /// Whether the rejection is expected backpressure or client error (logged at `warn`) rather
    /// than a failure worth an `error` line.
    pub const fn is_rejection(self) -> bool {
        self.status() < 500
            || matches!(
                self,
                ErrorCode::QueueFull
                    | ErrorCode::QueueWaitExceedsDeadline
                    | ErrorCode::RequestTimeout
                    | ErrorCode::ProviderTimeout
                    | ErrorCode::StreamFirstTokenTimeout
                    | ErrorCode::StreamIdleTimeout
                    | ErrorCode::StreamTotalTimeout
                    | ErrorCode::AsyncQueueFull
                    | ErrorCode::AsyncQueueStorageLow
                    | ErrorCode::AsyncQueueDisabled
                    | ErrorCode::AsyncQueueUnavailable
                    | ErrorCode::ClusterUnavailable
                    | ErrorCode::ModelLoading
                    | ErrorCode::ProviderWarming
                    | ErrorCode::ShuttingDown
                    | ErrorCode::MemoryPressureCritical
            )
    }

    /// Parses a wire name back into a code.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == name)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as Ray reports it: a code, a human message and optional structured details.
///
/// This is what crosses the runtime boundary: crate-level errors convert into it, the server
/// renders it as [`ErrorBody`], and the SDK parses it back.
#[derive(Debug, Clone, PartialEq)]
pub struct RayError {
    code: ErrorCode,
    message: Cow<'static, str>,
    details: Option<serde_json::Value>,
    retry_after_secs: Option<u32>,
    before_sending: bool,
}

impl RayError {
    /// A new error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> RayError {
        RayError {
            code,
            message: message.into(),
            details: None,
            retry_after_secs: code.retry_after_secs(),
            before_sending: false,
        }
    }

    /// Marks the error as given before the request reached any backend (a model in
    /// cooldown, or a backend known to be down or starting): nothing was sent, so a job
    /// attempt that ends with it is given back rather than counted. Not part of the wire.
    pub fn before_sending(mut self) -> RayError {
        self.before_sending = true;
        self
    }

    /// Whether the request never reached a backend (see [`RayError::before_sending`]).
    pub fn is_before_sending(&self) -> bool {
        self.before_sending
    }

    /// Drops the [`RayError::before_sending`] mark: another model of the same request was
    /// sent it (a fallback chain whose last model refused).
    pub fn after_sending(mut self) -> RayError {
        self.before_sending = false;
        self
    }

    /// Shorthand for an `invalid_request` error.
    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> RayError {
        RayError::new(ErrorCode::InvalidRequest, message)
    }

    /// Attaches structured details (serialised under `error.details`).
    pub fn with_details(mut self, details: serde_json::Value) -> RayError {
        self.details = Some(details);
        self
    }

    /// Overrides the `Retry-After` value (seconds, at least 1).
    pub fn with_retry_after(mut self, seconds: u32) -> RayError {
        self.retry_after_secs = Some(seconds.max(1));
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The structured details, if any.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }

    /// The `Retry-After` value in seconds, if the client should retry later.
    pub fn retry_after_secs(&self) -> Option<u32> {
        self.retry_after_secs
    }

    /// The wire body for this error.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: self.message.to_string(),
                details: self.details.clone(),
            },
        }
    }
}

impl fmt::Display for RayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RayError {}

impl From<ErrorBody> for RayError {
    fn from(body: ErrorBody) -> RayError {
        let mut error = RayError::new(body.error.code, body.error.message);
        error.details = body.error.details;
        error
    }
}

/// The JSON body of every error response: `{"error":{"code":...,"message":...,"details":...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorObject,
}

/// The inner object of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorObject {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Optional structured details (limits, the offending field, upstream status, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests;
