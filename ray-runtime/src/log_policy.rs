//! The log policy: which requests write a line (`telemetry.accessLog`), and the summariser that
//! keeps refusals and repeated failures to at most one line per second per code.
//!
//! Every refusal is counted in metrics; in the log, the first refusal of a code writes a line at
//! once, and those that follow within the second are counted and written as one line with the
//! count (`count` is always "requests since the last line of this kind and code"). Failures
//! (errors that need a human) also write at once, and repeats of the same code within the
//! second are folded the same way, so a dead backend under load writes one line a second, not
//! one per request. A background tick ([`Runtime::start`](crate::Runtime::start)) writes pending counts once their
//! second is over, and [`crate::Background::shutdown`] writes what is left.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ray_core::config::{AccessLog, TelemetryConfig};
use ray_core::wire::InferResponse;
use ray_core::{ErrorCode, RayError};

/// How often the background tick writes counts whose second is over.
pub(crate) const FLUSH_TICK: Duration = Duration::from_millis(250);

/// The shortest time between two lines of one kind and code.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

/// The access-log decisions for one runtime: its config and its counts.
#[derive(Debug, Clone, Copy)]
pub struct LogPolicy<'a> {
    book: &'a LogBook,
    config: &'a TelemetryConfig,
}

impl<'a> LogPolicy<'a> {
    /// The policy of `config` over the counts in `book`.
    pub(crate) fn new(book: &'a LogBook, config: &'a TelemetryConfig) -> LogPolicy<'a> {
        LogPolicy { book, config }
    }

    /// Whether a successful request writes its access line: always with `all`, one in
    /// `accessLogSampleEvery` with `sampled`, never with `errors` or `off`.
    pub fn log_success(&self) -> bool {
        match self.config.access_log {
            AccessLog::All => true,
            AccessLog::Errors | AccessLog::Off => false,
            AccessLog::Sampled => {
                let every = u64::from(self.config.access_log_sample_every.max(1));
                self.book
                    .successes
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(every)
            }
        }
    }

    /// Counts a refused request (a rejection code). `Some(count)` when it writes its access
    /// line now, `count` being the refusals of this code since the last line (this one
    /// included); `None` when it is folded into the next summary line.
    pub fn log_refusal(&self, code: ErrorCode) -> Option<u64> {
        self.book.note(Kind::RequestRejected, code)
    }

    /// Counts a failed request. `Some(count)` when it writes its access line now (as
    /// [`LogPolicy::log_refusal`]); `None` when it is folded into the next summary line, or
    /// with `accessLog: off` (the runtime's own `inference failed` line still says it).
    pub fn log_failure(&self, code: ErrorCode) -> Option<u64> {
        if self.config.access_log == AccessLog::Off {
            return None;
        }
        self.book.note(Kind::RequestFailed, code)
    }
}

/// Runs `future` (one HTTP request) as an access-log scope: the refusals the runtime sees
/// inside it are left to the access line the caller writes, so each refusal is counted in the
/// log once. Outside such a scope (an embedding program, a job, a stream that already
/// answered 200) the runtime summarises them itself.
///
/// (A plain function returning the scope's future: an `async fn` would hold `future` twice,
/// as its argument and inside the scope it awaits, and every request moves this future.)
pub fn access_scope<F: Future>(future: F) -> impl Future<Output = F::Output> {
    ACCESS_SCOPE.scope((), future)
}

tokio::task_local! {
    static ACCESS_SCOPE: ();
}

fn in_access_scope() -> bool {
    ACCESS_SCOPE.try_with(|()| ()).is_ok()
}

/// What a line says; each kind has its own windows per code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `request rejected` (warn): the access line of a refusal.
    RequestRejected,
    /// `request failed` (error): the access line of a failure.
    RequestFailed,
    /// `inference rejected` (warn): a refusal outside an access scope.
    InferenceRejected,
    /// `inference failed` (error): a failed inference.
    InferenceFailed,
    /// `slow inference request` (warn); one window for every code.
    SlowRequest,
}

const KINDS: [Kind; 5] = [
    Kind::RequestRejected,
    Kind::RequestFailed,
    Kind::InferenceRejected,
    Kind::InferenceFailed,
    Kind::SlowRequest,
];

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::RequestRejected => 0,
            Kind::RequestFailed => 1,
            Kind::InferenceRejected => 2,
            Kind::InferenceFailed => 3,
            Kind::SlowRequest => 4,
        }
    }

    /// The summary line for `count` lines folded since the last one.
    fn summarise(self, code: ErrorCode, count: u64) {
        let status = code.status();
        match self {
            Kind::RequestRejected => {
                tracing::warn!(code = %code, status, count, summary = true, "request rejected");
            }
            Kind::RequestFailed => {
                tracing::error!(code = %code, status, count, summary = true, "request failed");
            }
            Kind::InferenceRejected => {
                tracing::warn!(code = %code, count, summary = true, "inference rejected");
            }
            Kind::InferenceFailed => {
                tracing::error!(code = %code, count, summary = true, "inference failed");
            }
            Kind::SlowRequest => {
                tracing::warn!(count, summary = true, "slow inference request");
            }
        }
    }
}

/// The counts behind the summaries: one window per kind and error code.
#[derive(Debug)]
pub(crate) struct LogBook {
    clock: std::time::Instant,
    /// Successful requests seen, for `sampled`.
    successes: AtomicU64,
    /// `KINDS.len() × ErrorCode::ALL.len()` windows, kind-major.
    windows: Vec<Window>,
}

impl Default for LogBook {
    fn default() -> LogBook {
        LogBook {
            clock: std::time::Instant::now(),
            successes: AtomicU64::new(0),
            windows: (0..KINDS.len() * ErrorCode::ALL.len())
                .map(|_| Window::default())
                .collect(),
        }
    }
}

impl LogBook {
    /// The log lines of a finished inference: a slow-request warning, an `inference failed`
    /// error, or (outside an [`access_scope`]) an `inference rejected` warning, each folded
    /// into one line a second per code when it repeats.
    pub(crate) fn log_outcome(
        &self,
        telemetry: &TelemetryConfig,
        request_id: &str,
        outcome: Result<&InferResponse, &RayError>,
    ) {
        let book = self;
        match outcome {
            Ok(response) => {
                let threshold = telemetry.slow_request_threshold_ms;
                if threshold > 0
                    && response.latency_ms >= threshold
                    && let Some(count) = book.note(Kind::SlowRequest, ErrorCode::GatewayError)
                {
                    tracing::warn!(
                        request_id = %response.id,
                        latency_ms = response.latency_ms,
                        queue_time_ms = response.queue_time_ms,
                        model_id = %response.model,
                        count,
                        "slow inference request"
                    );
                }
            }
            Err(error) if error.code().is_rejection() => {
                if in_access_scope() {
                    return;
                }
                if let Some(count) = book.note(Kind::InferenceRejected, error.code()) {
                    tracing::warn!(request_id = %request_id, code = %error.code(), error = error.message(), count, "inference rejected");
                }
            }
            Err(error) => {
                if let Some(count) = book.note(Kind::InferenceFailed, error.code()) {
                    tracing::error!(request_id = %request_id, code = %error.code(), error = error.message(), count, "inference failed");
                }
            }
        }
    }

    /// Writes the summary lines whose second is over; every [`FLUSH_TICK`] until dropped.
    pub(crate) async fn flush_loop(&self) {
        let mut tick = tokio::time::interval(FLUSH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(false);
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn window(&self, kind: Kind, code: ErrorCode) -> &Window {
        let code_index = match kind {
            Kind::SlowRequest => 0,
            _ => ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0),
        };
        &self.windows[kind.index() * ErrorCode::ALL.len() + code_index]
    }

    /// Counts one event; `Some(count)` when its line is due now.
    fn note(&self, kind: Kind, code: ErrorCode) -> Option<u64> {
        let window = self.window(kind, code);
        window.pending.fetch_add(1, Ordering::AcqRel);
        window.claim(self.now_ms(), false)
    }

    /// Writes a summary line for every window with folded events whose second is over (every
    /// such window when `all`, at shutdown).
    pub(crate) fn flush(&self, all: bool) {
        let now = self.now_ms();
        for kind in KINDS {
            for (index, code) in ErrorCode::ALL.iter().enumerate() {
                let window = &self.windows[kind.index() * ErrorCode::ALL.len() + index];
                if window.pending.load(Ordering::Acquire) == 0 {
                    continue;
                }
                if let Some(count) = window.claim(now, all) {
                    kind.summarise(*code, count);
                }
            }
        }
    }
}

/// Never written a line.
const NEVER: u64 = u64::MAX;

/// The events of one kind and code since its last line.
#[derive(Debug)]
struct Window {
    /// Events not yet in a line.
    pending: AtomicU64,
    /// When the last line was written ([`LogBook::now_ms`]), or [`NEVER`].
    last_line_ms: AtomicU64,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            pending: AtomicU64::new(0),
            last_line_ms: AtomicU64::new(NEVER),
        }
    }
}

impl Window {
    /// Takes the pending count if a line is due (or `force`); only one caller wins a second.
    fn claim(&self, now_ms: u64, force: bool) -> Option<u64> {
        let last = self.last_line_ms.load(Ordering::Acquire);
        let interval = SUMMARY_INTERVAL.as_millis() as u64;
        if !force && last != NEVER && now_ms < last.saturating_add(interval) {
            return None;
        }
        self.last_line_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let count = self.pending.swap(0, Ordering::AcqRel);
        (count > 0).then_some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_lines(window: &Window, events: &[u64]) -> Vec<(u64, u64)> {
        let mut lines = Vec::new();
        for &at in events {
            window.pending.fetch_add(1, Ordering::AcqRel);
            if let Some(count) = window.claim(at, false) {
                lines.push((at, count));
            }
        }
        lines
    }

    #[test]
    fn the_first_event_writes_at_once_and_the_rest_of_its_second_is_folded() {
        let window = Window::default();
        let lines = window_lines(&window, &[0, 10, 500, 999, 1_000, 1_001, 2_500]);
        assert_eq!(lines, vec![(0, 1), (1_000, 4), (2_500, 2)]);
        assert_eq!(window.pending.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_flush_writes_the_folded_count_once_its_second_is_over() {
        let window = Window::default();
        window_lines(&window, &[0, 100, 200]);
        assert_eq!(window.claim(900, false), None, "still within the second");
        assert_eq!(window.claim(1_000, false), Some(2));
        assert_eq!(window.claim(5_000, false), None, "nothing pending");
        window.pending.fetch_add(3, Ordering::AcqRel);
        assert_eq!(window.claim(5_001, true), Some(3), "forced at shutdown");
    }

    #[test]
    fn every_event_is_in_exactly_one_line_under_contention() {
        let book = std::sync::Arc::new(LogBook::default());
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let book = book.clone();
                let written = written.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        if let Some(count) = book.note(Kind::RequestRejected, ErrorCode::QueueFull)
                        {
                            written.fetch_add(count, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let window = book.window(Kind::RequestRejected, ErrorCode::QueueFull);
        let rest = window.claim(u64::MAX - 1, true).unwrap_or(0);
        assert_eq!(written.load(Ordering::Relaxed) + rest, 200_000);
    }

    #[test]
    fn each_access_log_mode_picks_its_success_lines() {
        let book = LogBook::default();
        let mut config = ray_core::config::profile_defaults(ray_core::config::Profile::Sub1b)
            .telemetry
            .clone();
        let picked = |config: &TelemetryConfig| -> Vec<bool> {
            let policy = LogPolicy {
                book: &book,
                config,
            };
            (0..7).map(|_| policy.log_success()).collect()
        };
        assert_eq!(config.access_log, AccessLog::Errors);
        assert_eq!(picked(&config), [false; 7]);
        config.access_log = AccessLog::All;
        assert_eq!(picked(&config), [true; 7]);
        config.access_log = AccessLog::Off;
        assert_eq!(picked(&config), [false; 7]);
        config.access_log = AccessLog::Sampled;
        config.access_log_sample_every = 3;
        assert_eq!(
            picked(&config),
            [true, false, false, true, false, false, true]
        );
        // Failures write their line unless the access log is off; refusals always count.
        config.access_log = AccessLog::Off;
        let policy = LogPolicy {
            book: &book,
            config: &config,
        };
        assert_eq!(policy.log_failure(ErrorCode::ProviderUnavailable), None);
        assert_eq!(policy.log_refusal(ErrorCode::QueueFull), Some(1));
        config.access_log = AccessLog::Errors;
        let policy = LogPolicy {
            book: &book,
            config: &config,
        };
        assert_eq!(policy.log_failure(ErrorCode::ProviderUnavailable), Some(1));
    }

    #[test]
    fn kinds_and_codes_have_their_own_windows() {
        let book = LogBook::default();
        assert_eq!(
            book.note(Kind::RequestRejected, ErrorCode::QueueFull),
            Some(1)
        );
        assert_eq!(
            book.note(Kind::RequestRejected, ErrorCode::RateLimited),
            Some(1)
        );
        assert_eq!(
            book.note(Kind::InferenceRejected, ErrorCode::QueueFull),
            Some(1)
        );
        assert_eq!(book.note(Kind::RequestRejected, ErrorCode::QueueFull), None);
    }
}
