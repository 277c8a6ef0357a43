//! The priority a request runs with: what it asked for (`priority` in the body, or the
//! `X-Ray-Priority` header on the OpenAI routes), lowered to its API key's highest class, and
//! who it counts as for fair share (the API key, else the client address).

use ray_core::config::PriorityConfig;
use ray_core::wire::{InferRequest, Priority, PriorityClass, PriorityDiagnostics};
use ray_core::{ErrorCode, RayError};

use ray_core::wire::PriorityHealth;
use ray_scheduler::{Scheduler, StateSnapshot};

use crate::context::RequestContext;
use crate::metrics::{MetricKind, MetricsSnapshot, Sample};
use crate::runtime::Runtime;

/// The priority decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// The priority it runs with.
    pub(crate) priority: Priority,
    /// What it asked for, when it asked.
    pub(crate) requested: Option<Priority>,
    /// Whether the key's ceiling lowered it.
    pub(crate) clamped: bool,
    /// Its fair-share sender: a hash of the API key id or client address, 0 for neither.
    pub(crate) sender: u64,
    /// Its sender's weight.
    pub(crate) weight: u32,
}

impl Default for Admission {
    fn default() -> Admission {
        Admission {
            priority: Priority::of(PriorityClass::Interactive),
            requested: None,
            clamped: false,
            sender: 0,
            weight: 1,
        }
    }
}

impl Admission {
    /// The diagnostics of a request that ran with `priority` after waiting `queue_wait_ms`.
    pub(crate) fn diagnostics(
        &self,
        priority: Priority,
        queue_wait_ms: u64,
    ) -> PriorityDiagnostics {
        PriorityDiagnostics {
            class: priority.class,
            level: priority.level,
            requested: self.requested.map(|p| p.to_string()),
            clamped: self.clamped,
            queue_wait_ms,
        }
    }
}

/// Parses a request's `priority` field (400 naming the field when it is not a priority).
pub(crate) fn parse_field(text: &str) -> Result<Priority, RayError> {
    Priority::parse(text).map_err(|message| {
        RayError::new(
            ErrorCode::InvalidRequest,
            format!("Invalid priority: {message}"),
        )
        .with_details(serde_json::json!({ "param": "priority" }))
    })
}

/// Decides the priority of `request` arriving on `context`; `default` is the class used when
/// it asks for none (`interactive` for HTTP requests, `batch` for jobs).
pub(crate) fn decide(
    config: &PriorityConfig,
    request: &InferRequest,
    context: &RequestContext,
    default: PriorityClass,
) -> Result<Admission, RayError> {
    let requested = match request.priority.as_deref() {
        Some(text) => Some(parse_field(text)?),
        None => context.priority,
    };
    let asked = requested.unwrap_or(Priority::of(default));
    let key = context.api_key_id.as_deref();
    let (ceiling, weight) = config.ceiling_and_weight(key);
    let (priority, clamped) = asked.clamp_to(ceiling);
    let sender = match (key, context.client.as_deref()) {
        (Some(key), _) => hash_of("key", key),
        (None, Some(client)) => hash_of("client", client),
        (None, None) => 0,
    };
    Ok(Admission {
        priority,
        requested,
        clamped,
        sender,
        weight,
    })
}

/// The priority side of one model's queue, for `/health`.
pub(crate) fn health(scheduler: &Scheduler, snapshot: &StateSnapshot) -> PriorityHealth {
    let settings = scheduler.settings();
    let by_class = |value: &dyn Fn(PriorityClass) -> u64| {
        PriorityClass::ALL
            .into_iter()
            .map(|c| (c.as_str().to_string(), value(c)))
            .collect()
    };
    let counters = &snapshot.counters;
    PriorityHealth {
        reserved_interactive: settings.reserved_interactive,
        lower_class_in_flight: snapshot.lower_in_flight,
        service_time_estimate_ms: snapshot.service_estimate.map(|d| d.as_millis() as u64),
        estimated_wait_ms: match scheduler.estimated_waits() {
            Some(waits) => by_class(&|c| waits[c.index()].as_millis() as u64),
            None => Default::default(),
        },
        max_wait_ms: by_class(&|c| settings.max_wait(c).as_millis() as u64),
        waiting: PriorityClass::ALL
            .into_iter()
            .map(|c| (c.as_str().to_string(), snapshot.depth_by_class[c.index()]))
            .collect(),
        started: by_class(&|c| counters.started_by_class[c.index()]),
        refused_wait: by_class(&|c| counters.rejected_wait_by_class[c.index()]),
        aged_starts: counters.aged_starts,
    }
}

impl Runtime {
    /// The `ray_scheduler_*` families of priority admission: one sample per model (and class).
    pub(crate) fn priority_metrics(&self, m: &mut MetricsSnapshot) {
        let live = self.live();
        let entries = live.registry.entries();
        let snapshots: Vec<(String, StateSnapshot, Option<[std::time::Duration; 3]>)> = entries
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    e.scheduler.snapshot(),
                    e.scheduler.estimated_waits(),
                )
            })
            .collect();
        let per_class = |value: &dyn Fn(&StateSnapshot, PriorityClass) -> f64| -> Vec<Sample> {
            snapshots
                .iter()
                .flat_map(|(model, snapshot, _)| {
                    PriorityClass::ALL.into_iter().map(move |class| Sample {
                        suffix: "",
                        labels: vec![("model", model.clone()), ("class", class.as_str().into())],
                        value: value(snapshot, class),
                    })
                })
                .collect()
        };
        m.labelled(
            "ray_scheduler_started_total",
            "Requests that got a permit, by model and priority class.",
            MetricKind::Counter,
            per_class(&|s, c| s.counters.started_by_class[c.index()] as f64),
        );
        m.labelled(
            "ray_scheduler_refused_wait_total",
            "Requests refused at once with queue_wait_exceeds_deadline (their estimated start lay \
             past their deadline or class bound), by model and class.",
            MetricKind::Counter,
            per_class(&|s, c| s.counters.rejected_wait_by_class[c.index()] as f64),
        );
        m.labelled(
            "ray_scheduler_waiting",
            "Requests waiting for a permit, by model and class.",
            MetricKind::Gauge,
            per_class(&|s, c| f64::from(s.depth_by_class[c.index()])),
        );
        m.labelled(
            "ray_scheduler_estimated_wait_seconds",
            "How long a new request of the class would wait for a permit, by the service-time \
             estimate (no sample before a request finished).",
            MetricKind::Gauge,
            snapshots
                .iter()
                .filter_map(|(model, _, waits)| waits.map(|w| (model, w)))
                .flat_map(|(model, waits)| {
                    PriorityClass::ALL.into_iter().map(move |class| Sample {
                        suffix: "",
                        labels: vec![("model", model.clone()), ("class", class.as_str().into())],
                        value: waits[class.index()].as_secs_f64(),
                    })
                })
                .collect(),
        );
        let per_model = |value: &dyn Fn(&StateSnapshot) -> Option<f64>| -> Vec<Sample> {
            snapshots
                .iter()
                .filter_map(|(model, snapshot, _)| {
                    value(snapshot).map(|value| Sample {
                        suffix: "",
                        labels: vec![("model", model.clone())],
                        value,
                    })
                })
                .collect()
        };
        m.labelled(
            "ray_scheduler_service_time_estimate_seconds",
            "The running estimate of how long one request holds a permit.",
            MetricKind::Gauge,
            per_model(&|s| s.service_estimate.map(|d| d.as_secs_f64())),
        );
        m.labelled(
            "ray_scheduler_aged_starts_total",
            "Requests started ahead of the preferred order because their wait bound required it.",
            MetricKind::Counter,
            per_model(&|s| Some(s.counters.aged_starts as f64)),
        );
    }
}

/// The sender's fairness bucket: FNV-1a of `kind` and `value` (a key id from the config or a
/// client address: short, and not chosen freely enough to aim a collision at another sender;
/// a collision would only share a fairness bucket).
fn hash_of(kind: &str, value: &str) -> u64 {
    // 0 stands for "nobody in particular".
    crate::ids::fnv1a(&[kind.as_bytes(), value.as_bytes()]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_core::config::ApiKeyPriority;

    fn context(key: Option<&str>, client: Option<&str>) -> RequestContext {
        RequestContext {
            api_key_id: key.map(str::to_string),
            client: client.map(str::to_string),
            ..RequestContext::default()
        }
    }

    #[test]
    fn a_key_cannot_run_above_its_class_and_others_get_the_default() {
        let mut config = PriorityConfig::default();
        config.api_keys.push(ApiKeyPriority {
            id: "0123abcd".into(),
            max_class: PriorityClass::Batch,
            weight: 3,
        });
        let asking = |text: &str| InferRequest {
            priority: Some(text.into()),
            ..InferRequest::default()
        };
        let limited = context(Some("0123abcd"), None);
        let decided = decide(
            &config,
            &asking("interactive:4"),
            &limited,
            PriorityClass::Interactive,
        )
        .unwrap();
        assert_eq!(decided.priority, Priority::of(PriorityClass::Batch));
        assert!(decided.clamped);
        assert_eq!(decided.weight, 3);
        let decided = decide(
            &config,
            &asking("background:2"),
            &limited,
            PriorityClass::Interactive,
        )
        .unwrap();
        assert_eq!(decided.priority.to_string(), "background:2");
        assert!(!decided.clamped);

        let other = context(Some("ffff0000"), None);
        let decided = decide(
            &config,
            &InferRequest::default(),
            &other,
            PriorityClass::Batch,
        )
        .unwrap();
        assert_eq!(decided.priority, Priority::of(PriorityClass::Batch));
        assert_eq!(decided.weight, 1);
        assert_ne!(
            decided.sender,
            decide(
                &config,
                &InferRequest::default(),
                &limited,
                PriorityClass::Batch
            )
            .unwrap()
            .sender
        );

        let error = decide(
            &config,
            &asking("urgent"),
            &other,
            PriorityClass::Interactive,
        )
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest);
        assert!(error.message().contains("priority"), "{}", error.message());
    }

    #[test]
    fn without_a_key_clients_are_told_apart_by_address() {
        let config = PriorityConfig::default();
        let a = decide(
            &config,
            &InferRequest::default(),
            &context(None, Some("10.0.0.1")),
            PriorityClass::Interactive,
        )
        .unwrap();
        let b = decide(
            &config,
            &InferRequest::default(),
            &context(None, Some("10.0.0.2")),
            PriorityClass::Interactive,
        )
        .unwrap();
        let nobody = decide(
            &config,
            &InferRequest::default(),
            &context(None, None),
            PriorityClass::Interactive,
        )
        .unwrap();
        assert_ne!(a.sender, b.sender);
        assert_eq!(nobody.sender, 0);
        let header = RequestContext {
            priority: Some(Priority::of(PriorityClass::Background)),
            ..context(None, None)
        };
        assert_eq!(
            decide(
                &config,
                &InferRequest::default(),
                &header,
                PriorityClass::Interactive
            )
            .unwrap()
            .priority
            .class,
            PriorityClass::Background
        );
    }
}
