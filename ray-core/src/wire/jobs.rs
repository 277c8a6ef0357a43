//! The async job API: a submission, the job record the gateway keeps, listings, and the
//! queue's health snapshot.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::infer::{InferRequest, InferResponse};
use crate::error::RayError;

/// Limits of the job API, as documented in `docs/jobs.md`.
pub mod limits {
    /// Longest job id in chars (ids are `[A-Za-z0-9_-]`).
    pub const JOB_ID_MAX_CHARS: usize = 128;
    /// Longest `callbackUrl` in chars.
    pub const CALLBACK_URL_MAX_CHARS: usize = 2_048;
    /// Jobs per listing page when `limit` is left out.
    pub const DEFAULT_LIST_LIMIT: u32 = 50;
    /// Most jobs per listing page.
    pub const MAX_LIST_LIMIT: u32 = 200;
    /// Longest error message kept in a record, in chars.
    pub const ERROR_MESSAGE_MAX_CHARS: usize = 8_192;
}

/// Whether `id` can name a job: 1 to 128 chars of `[A-Za-z0-9_-]`.
pub fn is_valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= limits::JOB_ID_MAX_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The body of `POST /v1/jobs`: every field of [`InferRequest`] plus `callbackUrl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSubmission {
    /// The inference request, run later through the same path as `POST /v1/infer`.
    #[serde(flatten)]
    pub request: InferRequest,
    /// Where to `POST {"job": record}` once the job has finished (absolute `http` or `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl JobSubmission {
    /// A submission of `request` without a callback.
    pub fn new(request: InferRequest) -> JobSubmission {
        JobSubmission {
            request,
            callback_url: None,
        }
    }

    /// The same submission with a callback URL.
    pub fn with_callback(mut self, url: impl Into<String>) -> JobSubmission {
        self.callback_url = Some(url.into());
        self
    }
}

// `#[serde(flatten)]` cannot be combined with the request's `deny_unknown_fields`, so the
// submission takes `callbackUrl` out of the object and hands the rest to `InferRequest`, which
// still refuses unknown fields by name.
impl<'de> Deserialize<'de> for JobSubmission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JobSubmission, D::Error> {
        use serde::de::Error;
        let mut object = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let callback_url = match object.remove("callbackUrl") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(url)) => Some(url),
            Some(_) => return Err(D::Error::custom("callbackUrl: must be a string")),
        };
        let request = InferRequest::deserialize(serde_json::Value::Object(object))
            .map_err(D::Error::custom)?;
        Ok(JobSubmission {
            request,
            callback_url,
        })
    }
}

/// Where a job stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to run (first time, or for a retry after `nextAttemptAt`).
    Queued,
    /// An attempt is running.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished without one; `error` says why.
    Failed,
    /// Cancelled by `DELETE /v1/jobs/{id}` before it finished.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job has finished (succeeded, failed or cancelled) and will not run again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Where a callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    /// Not delivered yet: the job has not finished, or a delivery is to be retried.
    Pending,
    /// A delivery was answered with a 2xx.
    Delivered,
    /// Every delivery attempt failed.
    Failed,
}

impl CallbackStatus {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallbackStatus::Pending => "pending",
            CallbackStatus::Delivered => "delivered",
            CallbackStatus::Failed => "failed",
        }
    }
}

/// The durable record of one job: what `GET /v1/jobs/{id}` answers and what a callback carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// `job_` followed by 16 hex chars.
    pub id: String,
    /// Where the job stands.
    pub status: JobStatus,
    /// The request as submitted (validated at submission).
    pub request: InferRequest,
    /// When the job was accepted (RFC 3339).
    pub created_at: String,
    /// When the record last changed.
    pub updated_at: String,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Attempts started so far (an attempt counts from its start, so one interrupted by a crash
    /// counts too).
    pub attempts: u32,
    /// `asyncQueue.maxAttempts` when the job was accepted.
    pub max_attempts: u32,
    /// When a queued job's next attempt may start (after a retryable failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The inference response, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<InferResponse>>,
    /// Why the last attempt failed (kept on a queued job waiting for its retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// The callback, when the submission named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<JobCallback>,
}

impl JobRecord {
    /// A job just accepted: `queued`, no attempt yet, its callback (when `callback_url` is set)
    /// pending; `now` is its creation time.
    pub fn queued(
        id: String,
        request: InferRequest,
        max_attempts: u32,
        callback_url: Option<String>,
        now: String,
    ) -> JobRecord {
        JobRecord {
            id,
            status: JobStatus::Queued,
            request,
            created_at: now.clone(),
            updated_at: now,
            started_at: None,
            completed_at: None,
            attempts: 0,
            max_attempts,
            next_attempt_at: None,
            result: None,
            error: None,
            callback: callback_url.map(|url| JobCallback {
                url,
                status: CallbackStatus::Pending,
                attempts: 0,
                last_attempt_at: None,
                delivered_at: None,
                last_error: None,
                next_attempt_at: None,
            }),
        }
    }
}

/// Why a job attempt failed.
///
/// `code` is one of Ray's error codes (`provider_timeout`, `queue_full`, ...) or a job code:
/// `job_recovered` (an attempt was interrupted by a restart; the job was queued again) or
/// `job_recovery_attempts_exhausted` (the same, with no attempt left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobError {
    /// A stable `snake_case` code.
    pub code: String,
    /// Human-readable explanation (at most 8192 chars).
    pub message: String,
    /// Structured details, as in the error body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl JobError {
    /// The record's form of a Ray error, with its message cut to the record limit.
    pub fn from_ray(error: &RayError) -> JobError {
        JobError {
            code: error.code().as_str().to_string(),
            message: truncate_chars(error.message(), limits::ERROR_MESSAGE_MAX_CHARS),
            details: error.details().cloned(),
        }
    }

    /// A job error with a code of its own.
    pub fn new(code: &str, message: impl Into<String>) -> JobError {
        JobError {
            code: code.to_string(),
            message: truncate_chars(&message.into(), limits::ERROR_MESSAGE_MAX_CHARS),
            details: None,
        }
    }
}

/// The first `max` chars of `text`, as a new string ([`first_chars`] borrows them).
pub fn truncate_chars(text: &str, max: usize) -> String {
    first_chars(text, max).to_string()
}

/// The first `max` chars of `text`.
pub fn first_chars(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    text.char_indices()
        .nth(max)
        .map_or(text, |(end, _)| &text[..end])
}

/// The callback of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCallback {
    /// The URL the record is posted to.
    pub url: String,
    /// Where delivery stands.
    pub status: CallbackStatus,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the last attempt was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// When a delivery was answered with a 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// Why the last attempt failed (at most 8192 chars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due, while a retry waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// The body of a `202` from `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAccepted {
    /// The job's id.
    pub id: String,
    /// Always `queued`.
    pub status: JobStatus,
    /// When the job was accepted.
    pub created_at: String,
    /// `/v1/jobs/<id>`, also in the `Location` header.
    pub location: String,
}

/// One job in a listing: the record without its request and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// The job's id.
    pub id: String,
    /// Where it stands.
    pub status: JobStatus,
    /// When it was accepted.
    pub created_at: String,
    /// When its record last changed.
    pub updated_at: String,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The code of the last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The callback's state, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_status: Option<CallbackStatus>,
}

/// The body of `GET /v1/jobs`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    /// At most `limit` jobs, newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The query of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobListQuery {
    /// Only jobs in one of these states; all when empty.
    pub statuses: Vec<JobStatus>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl JobListQuery {
    /// Parses `status=queued,failed&limit=20&cursor=...` (percent-encoded or not; `status`
    /// may also repeat). Unknown parameters and bad values are refused with a message naming
    /// them.
    pub fn parse(query: Option<&str>) -> Result<JobListQuery, RayError> {
        let mut parsed = JobListQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode(value).ok_or_else(|| {
                RayError::invalid_request(format!("{key}: {value:?} is not valid percent-encoding"))
            })?;
            let value = decoded.as_str();
            match key {
                "status" => {
                    if value.split(',').all(str::is_empty) {
                        return Err(RayError::invalid_request(
                            "status: names no status; use queued, running, succeeded, failed or \
                             cancelled (comma-separated), or leave the parameter out",
                        ));
                    }
                    for name in value.split(',').filter(|s| !s.is_empty()) {
                        let status = JobStatus::parse(name).ok_or_else(|| {
                            RayError::invalid_request(format!(
                                "status: unknown job status {name:?}; use queued, running, \
                                 succeeded, failed or cancelled"
                            ))
                        })?;
                        if !parsed.statuses.contains(&status) {
                            parsed.statuses.push(status);
                        }
                    }
                }
                "limit" => {
                    let limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|l| (1..=limits::MAX_LIST_LIMIT).contains(l))
                        .ok_or_else(|| {
                            RayError::invalid_request(format!(
                                "limit: must be a whole number from 1 to {}, got {value:?}",
                                limits::MAX_LIST_LIMIT
                            ))
                        })?;
                    parsed.limit = Some(limit);
                }
                "cursor" => {
                    if value.is_empty() || value.len() > 256 {
                        return Err(RayError::invalid_request(
                            "cursor: must be the nextCursor of a previous page",
                        ));
                    }
                    parsed.cursor = Some(value.to_string());
                }
                other => {
                    return Err(RayError::invalid_request(format!(
                        "unknown query parameter {other:?}; use status, limit or cursor"
                    )));
                }
            }
        }
        Ok(parsed)
    }

    /// The query string (without `?`), empty when nothing is set.
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        if !self.statuses.is_empty() {
            let names: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
            parts.push(format!("status={}", names.join(",")));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(cursor) = &self.cursor {
            parts.push(format!("cursor={cursor}"));
        }
        parts.join("&")
    }
}

/// Decodes `%XX` escapes and `+` (as a space, the form encoding); `None` for a bad escape or
/// bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The job queue in `/health` (`asyncQueue`), present when `asyncQueue.enabled` is true.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsyncQueueHealth {
    /// `asyncQueue.enabled`.
    pub enabled: bool,
    /// The store is at least `pressureThreshold` full, free space is below the minimum, or
    /// the store refuses writes (`storeFailing`).
    pub degraded: bool,
    /// The job store refuses writes: from the first failed write until a write (or the probe
    /// made every second meanwhile) succeeds. Submissions are refused meanwhile.
    #[serde(default)]
    pub store_failing: bool,
    /// Why the store refuses writes, while it does (the last failure's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// The kind of that failure: `space`, `permission` (including a read-only file system)
    /// or `io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error_kind: Option<String>,
    /// When the store started refusing writes (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_failing_since: Option<String>,
    /// Writes that failed since then.
    #[serde(default)]
    pub store_failed_writes: u64,
    /// Jobs waiting to run.
    pub queued: u32,
    /// Jobs with an attempt in progress.
    pub running: u32,
    /// Attempts executing in the runtime right now.
    pub active_inference_jobs: u32,
    /// Finished jobs with a result, still retained.
    pub succeeded: u32,
    /// Finished jobs without one, still retained.
    pub failed: u32,
    /// Cancelled jobs, still retained.
    pub cancelled: u32,
    /// Callbacks not delivered yet (waiting for their job, due, or waiting for a retry).
    pub callback_pending: u32,
    /// Deliveries in progress.
    pub active_callback_deliveries: u32,
    /// Callbacks delivered, of retained jobs.
    pub callback_delivered: u32,
    /// Callbacks that failed every attempt, of retained jobs.
    pub callback_failed: u32,
    /// Job and callback retries waiting for their time.
    pub retry_scheduled: u32,
    /// Queued jobs waiting for a retry.
    pub job_retry_scheduled: u32,
    /// Callbacks waiting for a retry.
    pub callback_retry_scheduled: u32,
    /// Jobs retained (any state).
    pub total_jobs: u32,
    /// `asyncQueue.maxJobs`.
    pub max_jobs: u32,
    /// (totalJobs + pendingAdmissions) / maxJobs.
    pub jobs_ratio: f64,
    /// jobsRatio ≥ pressureThreshold.
    pub jobs_pressure: bool,
    /// 0.9.
    pub pressure_threshold: f64,
    /// Submissions between admission and their durable write.
    pub pending_admissions: u32,
    /// Free space under `storageDir` for the gateway's user, when the store can tell.
    #[serde(
        default,
        rename = "availableStorageMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_storage_mib: Option<f64>,
    /// `asyncQueue.minFreeStorageMiB`.
    #[serde(rename = "minFreeStorageMiB")]
    pub min_free_storage_mib: u64,
    /// Space reserved for pending admissions (each one `maxRecordBytes`).
    #[serde(rename = "reservedAdmissionMiB")]
    pub reserved_admission_mib: f64,
    /// availableStorageMiB − reservedAdmissionMiB.
    #[serde(
        default,
        rename = "effectiveAvailableStorageMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub effective_available_storage_mib: Option<f64>,
    /// minFreeStorageMiB / availableStorageMiB (1 or more means low).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_reserve_ratio: Option<f64>,
    /// availableStorageMiB < minFreeStorageMiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_low: Option<bool>,
    /// minFreeStorageMiB / effectiveAvailableStorageMiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_admission_reserve_ratio: Option<f64>,
    /// effectiveAvailableStorageMiB < minFreeStorageMiB: new jobs are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_admission_low: Option<bool>,
    /// `asyncQueue.maxRecordBytes`.
    pub max_record_bytes: u64,
    /// Store entries set aside (quarantined) since start: stale temp files, unreadable or
    /// invalid records.
    pub quarantined_files: u64,
    /// How long the oldest queued job has waited since it was accepted.
    pub oldest_queued_age_ms: u64,
    /// Callbacks carry an `x-ray-signature` (the secret variable is set).
    pub callback_signing: bool,
    /// `asyncQueue.completedTtlMs`.
    pub completed_ttl_ms: u64,
    /// `asyncQueue.pollIntervalMs` (the base of the retry backoff).
    pub poll_interval_ms: u64,
    /// `asyncQueue.dispatchConcurrency`.
    pub dispatch_concurrency: u32,
    /// Deliveries allowed at once.
    pub callback_concurrency: u32,
    /// `asyncQueue.maxAttempts`.
    pub max_attempts: u32,
    /// `asyncQueue.callbackTimeoutMs`.
    pub callback_timeout_ms: u64,
    /// `asyncQueue.maxCallbackAttempts`.
    pub max_callback_attempts: u32,
}

#[cfg(test)]
mod tests;
