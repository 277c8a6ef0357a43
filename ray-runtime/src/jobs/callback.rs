//! Callback delivery: `POST {"job": record}` to the job's `callbackUrl` once it has finished,
//! signed with HMAC-SHA256, retried with backoff up to `maxCallbackAttempts`, through a client
//! that follows no redirects, uses no proxy and connects only to addresses its resolver checked.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hmac::{Hmac, Mac};
use ray_core::time::{format_unix_millis, unix_millis_now};
use ray_core::wire::CallbackStatus;
use ray_core::wire::jobs::{limits::ERROR_MESSAGE_MAX_CHARS, truncate_chars};
use reqwest::Url;
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::address::{CallbackPolicy, GuardedResolver, HostLookup};
use super::{CALLBACK_CONCURRENCY, JobQueue, bump};

/// The header carrying the Unix time (seconds) a delivery was signed at.
pub const TIMESTAMP_HEADER: &str = "x-ray-timestamp";
/// The header carrying `v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-ray-signature";
/// The header carrying the job id.
const JOB_ID_HEADER: &str = "x-ray-job-id";
/// The job id again, under the name receivers use to drop duplicate deliveries.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The header carrying the delivery attempt number (1, 2, ...).
const ATTEMPT_HEADER: &str = "x-ray-delivery-attempt";

/// The signature header value for `body` sent at `timestamp` (Unix seconds): `v1=` and the hex
/// HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Sends callbacks.
#[derive(Debug)]
pub(crate) struct CallbackClient {
    pub(crate) policy: CallbackPolicy,
    http: reqwest::Client,
    secret: Option<Arc<[u8]>>,
    timeout: Duration,
}

impl CallbackClient {
    pub(crate) fn new(
        config: &ray_core::config::AsyncQueueConfig,
        secret: Option<Vec<u8>>,
        lookup: Arc<dyn HostLookup>,
    ) -> Result<CallbackClient, String> {
        let policy = CallbackPolicy::new(config, lookup);
        let timeout = Duration::from_millis(config.callback_timeout_ms.max(1));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(2)
            .user_agent(concat!("ray-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the callback client: {e}"))?;
        Ok(CallbackClient {
            policy,
            http,
            secret: secret.map(Arc::from),
            timeout,
        })
    }

    /// Whether deliveries are signed.
    pub(crate) fn signs(&self) -> bool {
        self.secret.is_some()
    }

    /// One delivery attempt: `Ok` on a 2xx, else why not.
    pub(crate) async fn send(
        &self,
        url: &str,
        job_id: &str,
        attempt: u32,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let headers = [(JOB_ID_HEADER, job_id), (IDEMPOTENCY_HEADER, job_id)];
        self.post_signed(url, &headers, attempt, body).await
    }

    /// One delivery attempt of an event hook's event (`x-ray-event`, `x-ray-event-id`, and the
    /// event id as idempotency key), signed like a callback.
    pub(crate) async fn post_event(
        &self,
        url: &str,
        event_id: &str,
        kind: &str,
        attempt: u32,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let headers = [
            ("x-ray-event", kind),
            ("x-ray-event-id", event_id),
            (IDEMPOTENCY_HEADER, event_id),
        ];
        self.post_signed(url, &headers, attempt, body).await
    }

    async fn post_signed(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        attempt: u32,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let url = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        self.policy.check_literal(&url)?;
        let timestamp = unix_millis_now() / 1_000;
        let mut request = self
            .http
            .post(url)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header(ATTEMPT_HEADER, attempt.to_string())
            .header(TIMESTAMP_HEADER, timestamp.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, sign(secret, timestamp, &body));
        }
        let response = request.body(body).send().await.map_err(|e| chain(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!(
                "the receiver answered {status}; redirects are not followed"
            ))
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// An error and its causes, joined: reqwest's top-level message alone says little ("error
/// sending request"), the cause says what happened (refused address, timeout, reset).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl JobQueue {
    /// Delivers due callbacks, [`CALLBACK_CONCURRENCY`] at a time.
    pub(crate) async fn callback_loop(self: Arc<Self>) {
        let mut deliveries: JoinSet<()> = JoinSet::new();
        loop {
            while deliveries.try_join_next().is_some() {}
            if self.stopping.load(Ordering::SeqCst) {
                if deliveries.join_next().await.is_none() {
                    return;
                }
                continue;
            }
            let next = if deliveries.len() < CALLBACK_CONCURRENCY as usize {
                self.next_due(Instant::now())
            } else {
                Due::Wait
            };
            match next {
                Due::Now(id) => {
                    deliveries.spawn(self.clone().deliver(id));
                }
                Due::At(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake_callbacks.notified() => {}
                        Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
                    }
                }
                Due::Wait => {
                    tokio::select! {
                        () = self.wake_callbacks.notified() => {}
                        Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
                    }
                }
            }
        }
    }

    /// Takes the earliest due callback out of the due order.
    fn next_due(&self, now: Instant) -> Due {
        if self.store_health.is_failing() {
            // A delivery could not be recorded; the probe wakes this loop on recovery.
            return Due::Wait;
        }
        self.with_state(|state| {
            let Some((&slot, id)) = state.due.first_key_value() else {
                return Due::Wait;
            };
            if slot.0 > now {
                return Due::At(slot.0);
            }
            let id = id.clone();
            state.due.remove(&slot);
            if let Some(callback) = state.jobs.get_mut(&id).and_then(|e| e.callback.as_mut()) {
                callback.due = None;
                callback.delivering = true;
            }
            state.active_deliveries += 1;
            Due::Now(id)
        })
    }

    async fn deliver(self: Arc<Self>, id: String) {
        let _active = ActiveDelivery(&self, id.clone());
        let unwritten = self.with_state(|s| {
            s.jobs
                .get_mut(&id)
                .and_then(|entry| entry.unwritten_callback.take())
        });
        if let Some(record) = unwritten {
            // A delivery already made whose outcome the store did not take: its outcome is
            // written now, and the callback is not sent again for it.
            self.write_outcome(&id, *record).await;
            return;
        }
        let record = match self.read(&id).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                if !matches!(error, super::StoreError::Damaged(_)) {
                    self.store_failed("read a job to deliver its callback", &error);
                } else {
                    tracing::error!(job_id = %id, error = %error, "cannot deliver a callback: the job's record is damaged");
                }
                self.retry_later(&id, self.store_retry_delay(1));
                return;
            }
        };
        let Some(callback) = record.callback.clone() else {
            return;
        };
        if callback.status != CallbackStatus::Pending || !record.status.is_terminal() {
            self.with_state(|s| s.apply(&record, Instant::now()));
            return;
        }
        let Some(lock) = self.entry_lock(&id) else {
            return;
        };
        let max = self.settings.max_callback_attempts;
        // Each attempt is on disk before it is sent, so one the process died during counts
        // and the next carries the next number (a restart's recovery fails a callback whose
        // cut-off attempt was the last). None is left here only if a reload lowered
        // `maxCallbackAttempts` below the attempts made: the callback fails without another.
        let exhausted = callback.attempts >= max;
        let attempt = if exhausted {
            callback.attempts
        } else {
            callback.attempts + 1
        };
        // The body's `callback.attempts` counts the attempts made before this one.
        let body = serde_json::to_vec(&serde_json::json!({ "job": &record })).unwrap_or_default();
        let mut record = record;
        let outcome = if exhausted {
            Err(callback.last_error.clone().unwrap_or_else(|| {
                format!("no delivery attempt is left ({attempt} made, maxCallbackAttempts {max})")
            }))
        } else {
            {
                let _guard = lock.lock().await;
                let mut marked = record.clone();
                let now = format_unix_millis(unix_millis_now() as i64);
                if let Some(callback) = marked.callback.as_mut() {
                    callback.attempts = attempt;
                    callback.last_attempt_at = Some(now.clone());
                    callback.next_attempt_at = None;
                }
                marked.updated_at = now;
                if self.write_patiently(&marked).await.is_err() {
                    // Not sent: an attempt that cannot be recorded is not made.
                    self.retry_later(&id, self.store_retry_delay(1));
                    return;
                }
                record = marked;
            }
            bump(&self.stats.deliveries);
            self.callbacks.send(&callback.url, &id, attempt, body).await
        };

        // Only this delivery changes a finished job's record, so the one written above is
        // current.
        let now_ms = unix_millis_now() as i64;
        let now = format_unix_millis(now_ms);
        if let Some(callback) = record.callback.as_mut() {
            callback.attempts = attempt;
            if !exhausted {
                callback.last_attempt_at = Some(now.clone());
            }
            callback.next_attempt_at = None;
            match &outcome {
                Ok(()) => {
                    callback.status = CallbackStatus::Delivered;
                    callback.delivered_at = Some(now.clone());
                    bump(&self.stats.callbacks_delivered);
                }
                Err(reason) => {
                    bump(&self.stats.deliveries_failed);
                    callback.last_error = Some(truncate_chars(reason, ERROR_MESSAGE_MAX_CHARS));
                    if attempt >= max {
                        callback.status = CallbackStatus::Failed;
                        bump(&self.stats.callbacks_failed);
                        tracing::warn!(job_id = %id, attempts = attempt, error = %reason, "job callback failed; no attempt left");
                        if let Some(hooks) = self.hooks.get() {
                            let mut fields = serde_json::Map::new();
                            fields.insert("jobId".into(), id.to_string().into());
                            fields.insert("attempts".into(), attempt.into());
                            fields.insert("error".into(), reason.clone().into());
                            hooks("callback_gave_up", fields);
                        }
                    } else {
                        let delay =
                            super::retry_delay(self.settings.poll_interval, attempt, self.jitter());
                        callback.next_attempt_at =
                            Some(format_unix_millis(now_ms + delay.as_millis() as i64));
                        tracing::warn!(job_id = %id, attempt, retry_in_ms = delay.as_millis() as u64, error = %reason, "job callback delivery failed");
                    }
                }
            }
        }
        record.updated_at = now;
        self.write_outcome(&id, record).await;
    }

    /// Writes a delivery's outcome and brings the index in line. When the store does not take
    /// it, the store still says pending with the attempt counted: the outcome is kept in the
    /// index and written at the next turn, without sending the callback again (if the process
    /// stops first, the restart sends it again as the next attempt: at least once).
    async fn write_outcome(&self, id: &str, record: ray_core::wire::JobRecord) {
        let Some(lock) = self.entry_lock(id) else {
            return;
        };
        let _guard = lock.lock().await;
        if self.write_patiently(&record).await.is_err() {
            self.with_state(|s| {
                if let Some(entry) = s.jobs.get_mut(id) {
                    entry.unwritten_callback = Some(Box::new(record));
                }
            });
            self.retry_later(id, self.store_retry_delay(1));
            return;
        }
        self.with_state(|s| {
            if let Some(callback) = s.jobs.get_mut(id).and_then(|e| e.callback.as_mut()) {
                callback.delivering = false;
            }
            s.apply(&record, Instant::now());
        });
        self.after_change(&record);
    }

    fn retry_later(&self, id: &str, delay: Duration) {
        self.with_state(|state| {
            let slot = state.slot(Instant::now() + delay);
            if let Some(callback) = state.jobs.get_mut(id).and_then(|e| e.callback.as_mut()) {
                callback.delivering = false;
                if callback.due.is_none() && callback.status == CallbackStatus::Pending {
                    callback.due = Some(slot);
                    state.due.insert(slot, id.to_string());
                }
            }
        });
        self.wake_callbacks.notify_one();
    }
}

enum Due {
    Now(String),
    At(Instant),
    Wait,
}

/// Counts a delivery as active until dropped (also when the task is aborted), and clears the
/// job's delivering mark.
struct ActiveDelivery<'a>(&'a JobQueue, String);

impl Drop for ActiveDelivery<'_> {
    fn drop(&mut self) {
        let id = &self.1;
        self.0.with_state(|s| {
            s.active_deliveries = s.active_deliveries.saturating_sub(1);
            if let Some(callback) = s.jobs.get_mut(id).and_then(|e| e.callback.as_mut()) {
                callback.delivering = false;
            }
        });
    }
}

#[cfg(test)]
mod tests;
