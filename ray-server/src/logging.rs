//! JSON logs: one object per line, `{"ts","service","level","message",...fields}`, errors to
//! stderr and everything else to stdout, filtered by `telemetry.logLevel`.

use std::fmt::{self, Write as _};
use std::io::Write;

use ray_core::config::LogLevel;
use ray_core::json_text::{push_i64, push_string as push_json_string, push_u64};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Longest string field value kept in a log line.
pub const MAX_FIELD_CHARS: usize = 8_192;

/// Buffered bytes that trigger an immediate write.
pub const WRITE_THRESHOLD_BYTES: usize = 32 * 1024;
/// How long a line may wait in the buffer at most.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Batches log lines: lines are appended to a buffer that is written out when it passes
/// [`WRITE_THRESHOLD_BYTES`] or every [`FLUSH_INTERVAL`], whichever comes first, so a busy
/// gateway pays one write per batch instead of one per line, and nothing wakes up per line.
/// Error lines go to stderr at once (after the pending stdout lines, to keep order). Memory is
/// bounded by the threshold.
#[derive(Debug, Clone)]
pub struct LogWriter {
    shared: std::sync::Arc<WriterState>,
}

#[derive(Debug, Default)]
struct WriterState {
    buffer: parking_lot::Mutex<Vec<u8>>,
    /// Taken while still holding `buffer`, so batches are written in the order they were cut.
    output: parking_lot::Mutex<()>,
}

impl WriterState {
    fn write_out(&self, mut buffer: parking_lot::MutexGuard<'_, Vec<u8>>) {
        if buffer.is_empty() {
            return;
        }
        let bytes = std::mem::replace(&mut *buffer, Vec::with_capacity(WRITE_THRESHOLD_BYTES));
        let _output = self.output.lock();
        drop(buffer);
        let _ = std::io::stdout().lock().write_all(&bytes);
    }
}

impl LogWriter {
    /// Starts the flusher thread (it sleeps between flushes; it never wakes per line).
    pub fn spawn() -> std::io::Result<LogWriter> {
        let shared = std::sync::Arc::new(WriterState::default());
        let weak = std::sync::Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("ray-log".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    match weak.upgrade() {
                        Some(state) => state.write_out(state.buffer.lock()),
                        None => return,
                    }
                }
            })?;
        Ok(LogWriter { shared })
    }

    fn write(&self, error: bool, line: &str) {
        let mut buffer = self.shared.buffer.lock();
        if error {
            self.shared.write_out(buffer);
            let _output = self.shared.output.lock();
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            return;
        }
        buffer.extend_from_slice(line.as_bytes());
        if buffer.len() >= WRITE_THRESHOLD_BYTES {
            self.shared.write_out(buffer);
        }
    }

    /// Writes every buffered line now.
    pub fn flush(&self) {
        self.shared.write_out(self.shared.buffer.lock());
    }
}

/// Formats events as JSON lines.
#[derive(Debug)]
pub struct JsonLayer {
    service: String,
    writer: Option<LogWriter>,
}

impl JsonLayer {
    /// A layer that stamps every line with `service` and writes it directly.
    pub fn new(service: impl Into<String>) -> JsonLayer {
        JsonLayer {
            service: service.into(),
            writer: None,
        }
    }

    /// A layer that batches its lines through a [`LogWriter`].
    pub fn with_writer(service: impl Into<String>, writer: LogWriter) -> JsonLayer {
        JsonLayer {
            service: service.into(),
            writer: Some(writer),
        }
    }

    /// The line for one event (without the trailing newline). Fields are written straight into
    /// the line as they are visited, with no intermediate map: this runs once per request.
    pub fn format(&self, event: &Event<'_>) -> String {
        let mut visitor = FieldVisitor {
            message: None,
            fields: String::with_capacity(192),
        };
        event.record(&mut visitor);
        let mut line = String::with_capacity(96 + visitor.fields.len());
        line.push_str("{\"ts\":\"");
        ray_core::time::push_now_rfc3339(&mut line);
        line.push_str("\",\"service\":");
        push_json_string(&mut line, &self.service);
        line.push_str(",\"level\":\"");
        line.push_str(level_name(*event.metadata().level()));
        line.push_str("\",\"message\":");
        push_json_string(&mut line, visitor.message.as_deref().unwrap_or(""));
        line.push_str(&visitor.fields);
        line.push('}');
        line
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

impl<S: Subscriber> Layer<S> for JsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = self.format(event);
        line.push('\n');
        let error = *event.metadata().level() == Level::ERROR;
        if let Some(writer) = &self.writer {
            writer.write(error, &line);
            return;
        }
        // One write per line, so concurrent lines never interleave.
        if error {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        } else {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
    }
}

struct FieldVisitor {
    message: Option<String>,
    /// `,"key":value` for every field but the message, in order.
    fields: String,
}

impl FieldVisitor {
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if matches!(name, "ts" | "service" | "level") {
            return false;
        }
        self.fields.push(',');
        push_json_string(&mut self.fields, name);
        self.fields.push(':');
        true
    }
}

fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_FIELD_CHARS || text.chars().count() <= MAX_FIELD_CHARS {
        std::borrow::Cow::Borrowed(text)
    } else {
        let mut cut: String = text.chars().take(MAX_FIELD_CHARS).collect();
        cut.push('…');
        std::borrow::Cow::Owned(cut)
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(bounded(value).into_owned());
        } else if self.key(field) {
            push_json_string(&mut self.fields, &bounded(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // The message: written once into its own string.
            let mut message = String::with_capacity(32);
            let _ = write!(message, "{value:?}");
            if message.len() > MAX_FIELD_CHARS {
                message = bounded(&message).into_owned();
            }
            self.message = Some(message);
        } else {
            let text = format!("{value:?}");
            self.record_str(field, &text);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            push_i64(&mut self.fields, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            push_u64(&mut self.fields, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.fields, "{value}");
            } else {
                self.fields.push_str("null");
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.fields.push_str(if value { "true" } else { "false" });
        }
    }
}

/// The filter for a configured level.
pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// Installs the JSON logger as the global subscriber, writing through a [`LogWriter`] thread
/// (or directly if the thread cannot start). Returns the writer so the caller can flush it at
/// exit; `None` if a subscriber was installed already or no thread was started.
pub fn init(service: &str, level: LogLevel) -> Option<LogWriter> {
    let writer = LogWriter::spawn().ok();
    let layer = match &writer {
        Some(writer) => JsonLayer::with_writer(service, writer.clone()),
        None => JsonLayer::new(service),
    };
    let subscriber = tracing_subscriber::registry().with(layer.with_filter(level_filter(level)));
    tracing::subscriber::set_global_default(subscriber).ok()?;
    writer
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    struct Capture {
        layer: JsonLayer,
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.lines.lock().push(self.layer.format(event));
        }
    }

    #[test]
    fn formats_the_reference_shape() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture {
            layer: JsonLayer::new("ray-gateway"),
            lines: lines.clone(),
        });
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                status = 503u16,
                route = "/v1/infer",
                cached = false,
                ratio = 0.5,
                quote = "say \"hi\"\n",
                "request rejected"
            );
        });
        let line: serde_json::Value = serde_json::from_str(&lines.lock()[0]).unwrap();
        assert_eq!(line["service"], "ray-gateway");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "request rejected");
        assert_eq!(line["status"], 503);
        assert_eq!(line["route"], "/v1/infer");
        assert_eq!(line["cached"], false);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["quote"], "say \"hi\"\n");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn long_fields_are_bounded() {
        let long = "x".repeat(MAX_FIELD_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), MAX_FIELD_CHARS + 1);
    }
}
