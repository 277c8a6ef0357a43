//! Metrics: lock-free counters and histograms on the hot path, and a snapshot that renders as
//! Prometheus text or as the existing Ray's JSON view.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ray_core::ErrorCode;

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations with a sum and a count.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One sample of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Appended to the family name: empty, `_bucket`, `_sum` or `_count`.
    pub suffix: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// A metric family: a name, help text, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// Prometheus name, e.g. `ray_requests_total`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The existing Ray's JSON name (`requests.total`), for `/metrics?format=json`.
    pub json_name: Option<&'static str>,
    /// Samples.
    pub samples: Vec<Sample>,
}

/// Every metric at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// The families, in exposition order.
    pub families: Vec<MetricFamily>,
}

impl MetricsSnapshot {
    /// Adds an unlabelled counter.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        json_name: Option<&'static str>,
        value: f64,
    ) {
        self.push(name, help, MetricKind::Counter, json_name, value);
    }

    /// Adds an unlabelled gauge.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        json_name: Option<&'static str>,
        value: f64,
    ) {
        self.push(name, help, MetricKind::Gauge, json_name, value);
    }

    /// Adds a gauge that has a sample only when its source could be read. The family is
    /// always listed (its `HELP` and `TYPE`), so the set of families does not depend on the
    /// machine; an unavailable source has no sample, never a made-up zero.
    pub fn optional_gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        json_name: Option<&'static str>,
        value: Option<f64>,
    ) {
        self.optional(name, help, MetricKind::Gauge, json_name, value);
    }

    /// Like [`MetricsSnapshot::optional_gauge`], for a counter.
    pub fn optional_counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        json_name: Option<&'static str>,
        value: Option<f64>,
    ) {
        self.optional(name, help, MetricKind::Counter, json_name, value);
    }

    fn optional(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        json_name: Option<&'static str>,
        value: Option<f64>,
    ) {
        self.families.push(MetricFamily {
            name,
            help,
            kind,
            json_name,
            samples: value
                .into_iter()
                .map(|value| Sample {
                    suffix: "",
                    labels: Vec::new(),
                    value,
                })
                .collect(),
        });
    }

    /// Adds a labelled family.
    pub fn labelled(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        samples: Vec<Sample>,
    ) {
        self.families.push(MetricFamily {
            name,
            help,
            kind,
            json_name: None,
            samples,
        });
    }

    /// Adds a labelled counter whose samples, summed, also appear in the JSON view.
    pub fn labelled_counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        json_name: &'static str,
        samples: Vec<Sample>,
    ) {
        self.families.push(MetricFamily {
            name,
            help,
            kind: MetricKind::Counter,
            json_name: Some(json_name),
            samples,
        });
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        json_name: Option<&'static str>,
        value: f64,
    ) {
        self.families.push(MetricFamily {
            name,
            help,
            kind,
            json_name,
            samples: vec![Sample {
                suffix: "",
                labels: Vec::new(),
                value,
            }],
        });
    }

    /// Appends another snapshot's families (the server adds its own).
    pub fn extend(&mut self, other: MetricsSnapshot) {
        self.families.extend(other.families);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus_text(&self) -> String {
        let mut out = String::with_capacity(self.families.len() * 160);
        for family in &self.families {
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            for sample in &family.samples {
                out.push_str(family.name);
                out.push_str(sample.suffix);
                if !sample.labels.is_empty() {
                    out.push('{');
                    for (i, (key, value)) in sample.labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{key}=\"{}\"", escape_label(value));
                    }
                    out.push('}');
                }
                out.push(' ');
                push_value(&mut out, sample.value);
                out.push('\n');
            }
        }
        out
    }

    /// The existing Ray's JSON view: `{"counters":{...},"gauges":{...}}` keyed by the dotted
    /// names, for families that have one (labelled families are summed).
    pub fn to_json(&self) -> serde_json::Value {
        let mut counters = serde_json::Map::new();
        let mut gauges = serde_json::Map::new();
        for family in &self.families {
            let Some(name) = family.json_name else {
                continue;
            };
            if family.samples.is_empty() {
                // An unavailable source: absent, as in the existing Ray's JSON.
                continue;
            }
            let total: f64 = family
                .samples
                .iter()
                .filter(|s| s.suffix.is_empty())
                .map(|s| s.value)
                .sum();
            let value = serde_json::Number::from_f64(total)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            match family.kind {
                MetricKind::Counter => counters.insert(name.into(), value),
                MetricKind::Gauge | MetricKind::Histogram => gauges.insert(name.into(), value),
            };
        }
        serde_json::json!({ "counters": counters, "gauges": gauges })
    }
}

fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Latency buckets in seconds, from 1 ms to 2 minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A histogram of durations with fixed buckets, updated without locks.
#[derive(Debug)]
pub struct Histogram {
    buckets: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with the given upper bounds (seconds, ascending).
    pub fn new(buckets: &'static [f64]) -> Histogram {
        Histogram {
            buckets,
            counts: buckets.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(index) = self.buckets.iter().position(|bound| seconds <= *bound) {
            self.counts[index].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The family's samples: cumulative buckets, `+Inf`, sum and count.
    pub fn samples(&self) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(self.buckets.len() + 3);
        let mut cumulative = 0;
        for (bound, count) in self.buckets.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            samples.push(Sample {
                suffix: "_bucket",
                labels: vec![("le", format_bound(*bound))],
                value: cumulative as f64,
            });
        }
        let count = self.count.load(Ordering::Relaxed);
        samples.push(Sample {
            suffix: "_bucket",
            labels: vec![("le", "+Inf".into())],
            value: count as f64,
        });
        samples.push(Sample {
            suffix: "_sum",
            labels: Vec::new(),
            value: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        });
        samples.push(Sample {
            suffix: "_count",
            labels: Vec::new(),
            value: count as f64,
        });
        samples
    }
}

fn format_bound(bound: f64) -> String {
    let text = format!("{bound}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A counter per [`ErrorCode`], indexed by the code's position in [`ErrorCode::ALL`].
#[derive(Debug)]
pub struct CodeCounters {
    counts: Vec<AtomicU64>,
}

impl Default for CodeCounters {
    fn default() -> CodeCounters {
        CodeCounters {
            counts: ErrorCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl CodeCounters {
    /// Counts one error.
    pub fn add(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.counts[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors counted so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// One sample per code seen at least once, labelled `code`.
    pub fn samples(&self) -> Vec<Sample> {
        ErrorCode::ALL
            .iter()
            .zip(&self.counts)
            .filter_map(|(code, count)| {
                let value = count.load(Ordering::Relaxed);
                (value > 0).then(|| Sample {
                    suffix: "",
                    labels: vec![("code", code.as_str().to_string())],
                    value: value as f64,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut snapshot = MetricsSnapshot::default();
        snapshot.counter("ray_x_total", "Things.", Some("x.total"), 3.0);
        snapshot.gauge("ray_ratio", "A ratio.", None, 0.25);
        let histogram = Histogram::new(&[0.1, 1.0]);
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_secs(5));
        snapshot.labelled(
            "ray_latency_seconds",
            "Latency.",
            MetricKind::Histogram,
            histogram.samples(),
        );
        let text = snapshot.to_prometheus_text();
        assert!(text.contains("# TYPE ray_x_total counter\nray_x_total 3\n"));
        assert!(text.contains("ray_ratio 0.25\n"));
        assert!(text.contains("ray_latency_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("ray_latency_seconds_bucket{le=\"1.0\"} 1\n"));
        assert!(text.contains("ray_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ray_latency_seconds_sum 5.05\n"));
        assert_eq!(snapshot.to_json()["counters"]["x.total"], 3.0);
        snapshot.labelled_counter(
            "ray_by_cause_total",
            "By cause.",
            "by.cause",
            vec![
                Sample {
                    suffix: "",
                    labels: vec![("cause", "a".into())],
                    value: 2.0,
                },
                Sample {
                    suffix: "",
                    labels: vec![("cause", "b".into())],
                    value: 5.0,
                },
            ],
        );
        assert_eq!(snapshot.to_json()["counters"]["by.cause"], 7.0);
    }

    #[test]
    fn unavailable_gauges_list_the_family_without_a_sample() {
        let mut snapshot = MetricsSnapshot::default();
        snapshot.optional_gauge("ray_absent", "Absent.", Some("absent"), None);
        snapshot.optional_gauge("ray_present", "Present.", Some("present"), Some(2.5));
        let text = snapshot.to_prometheus_text();
        assert_eq!(
            text,
            "# HELP ray_absent Absent.\n# TYPE ray_absent gauge\n\
             # HELP ray_present Present.\n# TYPE ray_present gauge\nray_present 2.5\n"
        );
        let json = snapshot.to_json();
        assert!(json["gauges"].get("absent").is_none());
        assert_eq!(json["gauges"]["present"], 2.5);
    }

    #[test]
    fn escapes_label_values() {
        let mut snapshot = MetricsSnapshot::default();
        snapshot.labelled(
            "ray_l",
            "L.",
            MetricKind::Counter,
            vec![Sample {
                suffix: "",
                labels: vec![("route", "a\"b\\c\nd".into())],
                value: 1.0,
            }],
        );
        assert!(
            snapshot
                .to_prometheus_text()
                .contains(r#"ray_l{route="a\"b\\c\nd"} 1"#)
        );
    }
}
