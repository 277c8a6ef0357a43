//! The watcher behind the event hooks: once a second it compares each model's state, the
//! degradation reasons and critical memory with what it saw last, and emits an event for each
//! change (`model_state_changed`, `backend_down`, `backend_recovered`, `degradation_changed`,
//! `memory_critical_started`, `memory_critical_ended`). It runs only when hooks are configured.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::runtime::Runtime;

/// How often the watcher looks.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What the watcher saw last.
#[derive(Debug, Default)]
struct Seen {
    states: HashMap<String, &'static str>,
    degradation: Vec<&'static str>,
    critical: bool,
    /// Models whose backend went down and has not served since.
    down: HashSet<String>,
}

impl Runtime {
    /// Emits an event of type `kind` (one of the documented hook events) with `fields`, for
    /// the hooks that asked for it. Never waits; a full hook queue counts it as dropped.
    pub fn emit_event(&self, kind: &'static str, fields: Map<String, Value>) {
        self.inner.hooks.emit(kind, fields);
    }

    /// Looks every [`WATCH_INTERVAL`] and emits what changed, until the runtime is dropped.
    pub(crate) async fn watch_loop(&self) {
        let mut seen: Option<Seen> = None;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut now = self.look();
            if let Some(before) = &seen {
                now.down = self.emit_changes(before, &now);
            }
            seen = Some(now);
        }
    }

    fn look(&self) -> Seen {
        let states = self
            .model_conditions()
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
        let live = self.live();
        let model = live.registry.default_entry();
        let pressure = self.pressure_snapshot(model);
        let live = self.live();
        let config = &live.config.graceful_degradation;
        let mut degradation = Vec::new();
        if config.enabled {
            if pressure.queue_depth >= config.queue_depth_threshold {
                degradation.push("queue_depth");
            }
            if pressure.signals.memory.degraded {
                degradation.push("memory_pressure");
            }
            if pressure.signals.cpu.degraded {
                degradation.push("cpu_pressure");
            }
        }
        Seen {
            states,
            degradation,
            critical: self.inner.pressure.refuses(&pressure.signals),
            down: HashSet::new(),
        }
    }

    /// Emits the changes from `before` to `now`; answers the models down after them.
    fn emit_changes(&self, before: &Seen, now: &Seen) -> HashSet<String> {
        let hooks = &self.inner.hooks;
        let mut down = before.down.clone();
        for (model, &to) in &now.states {
            let Some(&from) = before.states.get(model) else {
                continue;
            };
            if from == to {
                continue;
            }
            let fields = |extra: Option<(&str, &str)>| {
                let mut fields = Map::new();
                fields.insert("model".into(), model.clone().into());
                fields.insert("from".into(), from.into());
                fields.insert("to".into(), to.into());
                if let Some((key, value)) = extra {
                    fields.insert(key.into(), value.into());
                }
                fields
            };
            hooks.emit("model_state_changed", fields(None));
            // Down once it stops answering (restarts pass through loading); recovered when it
            // serves again, whatever the path.
            let serving = |state: &str| matches!(state, "ready" | "degraded");
            if matches!(to, "unavailable" | "cooldown") && down.insert(model.clone()) {
                hooks.emit("backend_down", fields(None));
            } else if serving(to) && down.remove(model) {
                hooks.emit("backend_recovered", fields(None));
            }
        }
        if before.degradation != now.degradation {
            let mut fields = Map::new();
            fields.insert("from".into(), before.degradation.clone().into());
            fields.insert("to".into(), now.degradation.clone().into());
            hooks.emit("degradation_changed", fields);
        }
        if before.critical != now.critical {
            let kind = if now.critical {
                "memory_critical_started"
            } else {
                "memory_critical_ended"
            };
            hooks.emit(kind, Map::new());
        }
        down
    }
}
