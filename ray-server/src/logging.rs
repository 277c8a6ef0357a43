//! JSON logs: one object per line, `{"ts","service","level","message",...fields}`, errors to
//! stderr and everything else to stdout, filtered by `telemetry.logLevel`.

use std::fmt;
use std::io::Write;

use ray_core::config::LogLevel;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Longest string field value kept in a log line.
pub const MAX_FIELD_CHARS: usize = 8_192;

/// Formats events as JSON lines.
#[derive(Debug)]
pub struct JsonLayer {
    service: String,
}

impl JsonLayer {
    /// A layer that stamps every line with `service`.
    pub fn new(service: impl Into<String>) -> JsonLayer {
        JsonLayer {
            service: service.into(),
        }
    }

    /// The line for one event (without the trailing newline).
    pub fn format(&self, event: &Event<'_>) -> String {
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(ray_core::time::now_rfc3339()));
        line.insert("service".into(), Value::String(self.service.clone()));
        line.insert(
            "level".into(),
            Value::String(level_name(*event.metadata().level()).into()),
        );
        line.insert(
            "message".into(),
            Value::String(visitor.message.unwrap_or_default()),
        );
        for (key, value) in visitor.fields {
            line.entry(key).or_insert(value);
        }
        serde_json::to_string(&line).unwrap_or_default()
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
        // One write per line, so concurrent lines never interleave.
        if *event.metadata().level() == Level::ERROR {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        } else {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(String, Value)>,
}

fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_FIELD_CHARS {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX_FIELD_CHARS).collect();
        cut.push('…');
        cut
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(bounded(value));
        } else {
            self.fields
                .push((field.name().into(), Value::String(bounded(value))));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name().into(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name().into(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name().into(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name().into(), value.into()));
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

/// Installs the JSON logger as the global subscriber. Returns false if one was installed
/// already (tests install several servers in one process).
pub fn init(service: &str, level: LogLevel) -> bool {
    let subscriber = tracing_subscriber::registry()
        .with(JsonLayer::new(service).with_filter(level_filter(level)));
    tracing::subscriber::set_global_default(subscriber).is_ok()
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
                "request rejected"
            );
        });
        let line: Value = serde_json::from_str(&lines.lock()[0]).unwrap();
        assert_eq!(line["service"], "ray-gateway");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "request rejected");
        assert_eq!(line["status"], 503);
        assert_eq!(line["route"], "/v1/infer");
        assert_eq!(line["cached"], false);
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn long_fields_are_bounded() {
        let long = "x".repeat(MAX_FIELD_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), MAX_FIELD_CHARS + 1);
    }
}
