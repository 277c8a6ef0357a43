//! JSON logs: one object per line, `{"ts","service","level","message",...fields}`, errors to
//! stderr and everything else to stdout, filtered by `telemetry.logLevel`.

use std::fmt::{self, Write as _};
use std::io::Write;

use ray_core::config::LogLevel;
use ray_core::json_text::{
    push_escaped, push_i64, push_key, push_string as push_json_string, push_u64,
};
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

    /// The line for one event (without the trailing newline).
    pub fn format(&self, event: &Event<'_>) -> String {
        let mut line = String::with_capacity(256);
        self.format_into(event, &mut line);
        line
    }

    /// Appends the line for one event (without the trailing newline) to `line`. Fields are
    /// written straight into the line as they are visited, with no intermediate map or
    /// string: this runs once per request.
    pub fn format_into(&self, event: &Event<'_>, line: &mut String) {
        line.push_str("{\"ts\":\"");
        ray_core::time::push_now_rfc3339(line);
        line.push_str("\",\"service\":");
        push_json_string(line, &self.service);
        line.push_str(",\"level\":\"");
        line.push_str(level_name(*event.metadata().level()));
        line.push('"');
        let mut visitor = FieldVisitor {
            line,
            message: Message::Unwritten,
        };
        event.record(&mut visitor);
        if matches!(visitor.message, Message::Unwritten) {
            visitor.line.push_str(",\"message\":\"\"");
        }
        visitor.line.push('}');
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
        // One buffer per thread, reused line after line (a fresh one if an event is logged
        // while this thread formats another).
        thread_local! {
            static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
        }
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.emit(event, &mut line);
                if line.capacity() > 64 * 1024 {
                    *line = String::with_capacity(512);
                }
            }
            Err(_) => self.emit(event, &mut String::new()),
        });
    }
}

impl JsonLayer {
    fn emit(&self, event: &Event<'_>, line: &mut String) {
        self.format_into(event, line);
        line.push('\n');
        let error = *event.metadata().level() == Level::ERROR;
        if let Some(writer) = &self.writer {
            writer.write(error, line);
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

struct FieldVisitor<'a> {
    /// The line: `,"key":value` is appended for every field, in order.
    line: &'a mut String,
    message: Message,
}

/// Where the line stands with its `message`, which comes right after `level`.
enum Message {
    /// Not written yet.
    Unwritten,
    /// Written as `""` at this offset because another field came first; a message visited
    /// later replaces it.
    Placeholder(usize),
    /// Written.
    Written,
}

impl FieldVisitor<'_> {
    /// Writes the key of a field that is not the message; `false` for the names the line
    /// already has.
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if matches!(name, "ts" | "service" | "level") {
            return false;
        }
        if matches!(self.message, Message::Unwritten) {
            self.line.push_str(",\"message\":");
            self.message = Message::Placeholder(self.line.len());
            self.line.push_str("\"\"");
        }
        self.line.push(',');
        push_key(self.line, name);
        true
    }

    /// Writes the message (bounded) from `write`, which writes it through a [`Bounded`].
    fn message(&mut self, write: impl FnOnce(&mut Bounded<'_>)) {
        match self.message {
            Message::Unwritten => {
                self.line.push_str(",\"message\":\"");
                write(&mut Bounded::new(self.line));
                self.line.push('"');
                self.message = Message::Written;
            }
            Message::Placeholder(at) => {
                // Not how tracing's macros order fields (the message comes first), but kept
                // right if an event does.
                let mut text = String::from("\"");
                write(&mut Bounded::new(&mut text));
                text.push('"');
                self.line.replace_range(at..at + 2, &text);
                self.message = Message::Written;
            }
            Message::Written => {}
        }
    }
}

/// Appends text escaped for a JSON string, keeping at most [`MAX_FIELD_CHARS`] chars and
/// marking a cut with `…`.
struct Bounded<'a> {
    out: &'a mut String,
    room: usize,
    cut: bool,
}

impl<'a> Bounded<'a> {
    fn new(out: &'a mut String) -> Bounded<'a> {
        Bounded {
            out,
            room: MAX_FIELD_CHARS,
            cut: false,
        }
    }
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let kept = ray_core::wire::jobs::first_chars(text, self.room);
        push_escaped(self.out, kept);
        if kept.len() < text.len() {
            self.out.push('…');
            self.cut = true;
        } else {
            self.room -= text.chars().count();
        }
        Ok(())
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(|out| {
                let _ = out.write_str(value);
            });
        } else if self.key(field) {
            self.line.push('"');
            let _ = Bounded::new(self.line).write_str(value);
            self.line.push('"');
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message(|out| {
                let _ = write!(out, "{value:?}");
            });
        } else if self.key(field) {
            self.line.push('"');
            let _ = write!(Bounded::new(self.line), "{value:?}");
            self.line.push('"');
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            push_i64(self.line, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            push_u64(self.line, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.line, "{value}");
            } else {
                self.line.push_str("null");
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.line.push_str(if value { "true" } else { "false" });
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

    fn capture(log: impl FnOnce()) -> Vec<String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture {
            layer: JsonLayer::new("ray-gateway"),
            lines: lines.clone(),
        });
        tracing::subscriber::with_default(subscriber, log);
        lines.lock().clone()
    }

    #[test]
    fn the_message_follows_the_level_and_fields_keep_their_order() {
        let lines = capture(|| {
            tracing::info!(status = 200u16, code = %"queue_full", latency_ms = 3u64, "request completed");
            tracing::info!(status = 200u16);
        });
        let tail = |line: &str| line[line.find(",\"service\"").unwrap()..].to_string();
        assert_eq!(
            tail(&lines[0]),
            ",\"service\":\"ray-gateway\",\"level\":\"info\",\"message\":\"request completed\",\"status\":200,\"code\":\"queue_full\",\"latency_ms\":3}"
        );
        assert_eq!(
            tail(&lines[1]),
            ",\"service\":\"ray-gateway\",\"level\":\"info\",\"message\":\"\",\"status\":200}"
        );
    }

    #[test]
    fn long_fields_are_bounded() {
        let long = "é".repeat(MAX_FIELD_CHARS + 10);
        let exact = "x".repeat(MAX_FIELD_CHARS);
        let lines = capture(|| {
            tracing::info!(error = long.as_str(), shown = %exact, "{long}");
        });
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        for key in ["message", "error"] {
            let text = line[key].as_str().unwrap();
            assert_eq!(text.chars().count(), MAX_FIELD_CHARS + 1, "{key}");
            assert!(text.ends_with("é…"), "{key}");
        }
        assert_eq!(line["shown"], exact.as_str());
    }
}
