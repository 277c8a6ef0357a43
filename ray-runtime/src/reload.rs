//! Reloading the config of a running runtime: what a new config changes at once, and what
//! waits for a restart.
//!
//! A reload swaps the runtime's live part whole: the effective config, the models built from
//! it and the rate limiter. Requests already running keep the one they started with (each runs
//! on a pinned handle), so a reload never cuts or mixes a request. A model whose definition did
//! not change keeps its entry (its queue, its health, its counters); a changed model gets a new
//! entry while its old one finishes what it holds; a removed model takes no new request and
//! finishes what it holds.
//!
//! Managed models (under the `lifecycle` section) change live too, without cutting work: a
//! model whose process changed drains (it takes no new request and finishes those in flight),
//! unloads and loads again with its new definition (at once when pinned or when requests wait,
//! else on the next request); one whose only change is `resident`, `minResidentMs` or
//! `idleUnloadMs` takes them at once without a restart; a removed one drains and stops; a new
//! one is added `unloaded`.
//!
//! Some parts are built once, at start, around a listener, a store or a child process: the
//! sections in [`RESTART_SECTIONS`] and a model Ray supervises outside the lifecycle
//! (`supervise: true` without a `lifecycle` section). A change to one of them is reported in
//! [`ReloadReport::not_applied`] and the running value stays; the rest of the new config
//! applies.

use std::sync::Arc;

use ray_core::config::{ConfigError, ModelConfig, RayConfig, ValidConfig};
use serde::Serialize;

use crate::backend::ondemand::ManagedProcess;
use crate::builder::{build_entry, managed_model, warn_unsized};
use crate::footprint::MeasuredFootprints;
use crate::lifecycle::LifecycleModel;
use crate::lifecycle::ModelFit;
use crate::managed::Managed;
use crate::model_health::WarmState;
use crate::registry::{ModelEntry, Registry};
use crate::runtime::{Runtime, RuntimeError};
use crate::shared::{MemoryRateLimitStore, RateLimiter};
use crate::state::Live;

/// The sections a running gateway cannot change, with why: each is built once, at start.
pub const RESTART_SECTIONS: &[(&str, &str)] = &[
    ("server", "the listener is bound at start"),
    (
        "asyncQueue",
        "the job queue and its store are opened at start",
    ),
    ("cache", "the result cache is sized at start"),
    ("telemetry", "logging is set up at start"),
    (
        "gracefulDegradation",
        "the pressure monitor is set up at start",
    ),
    (
        "lifecycle",
        "the managed models' lifecycle is set up at start",
    ),
    ("hooks", "the hook runner is set up at start"),
    ("cluster", "the node joins the cluster at start"),
];

/// Why a supervised model's change waits for a restart.
const SUPERVISED: &str = "Ray runs this model's llama-server, started with the gateway";

/// One change a reload left for a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotApplied {
    /// The config field (`server`, `models[embedder]`, ...).
    pub field: String,
    /// Why it cannot change while the gateway runs.
    pub reason: String,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Whether anything changed at all.
    pub changed: bool,
    /// The top-level fields whose new values are now in effect.
    pub applied: Vec<String>,
    /// Models added (they take requests now).
    pub models_added: Vec<String>,
    /// Models whose definition changed (new requests use the new one; running ones finish on
    /// the old one).
    pub models_changed: Vec<String>,
    /// Models removed (they take no new request; running ones finish).
    pub models_removed: Vec<String>,
    /// Changes that wait for a restart; the running values stay.
    pub not_applied: Vec<NotApplied>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config, with the parts that cannot change kept as they run, is not valid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A model of the new config cannot get its provider.
    #[error(transparent)]
    Provider(#[from] RuntimeError),
}

/// A model of the new config before anything changes.
enum Planned {
    /// Its running entry serves on.
    Kept(Arc<ModelEntry>),
    /// A new entry for a changed model, and the running one.
    Changed(ModelEntry, Arc<ModelEntry>),
    /// A new model's entry.
    Added(ModelEntry),
}

impl Planned {
    fn id(&self) -> &str {
        match self {
            Planned::Kept(entry) | Planned::Changed(_, entry) => &entry.id,
            Planned::Added(entry) => &entry.id,
        }
    }
}

/// Whether Ray runs a process for this model.
fn supervised(model: &ModelConfig) -> bool {
    model
        .adapter
        .launch_profile()
        .is_some_and(|launch| launch.supervise)
}

/// Whether an entry built under `old` for `old_model` behaves as one built under `new` for
/// `model` would: the same definition and the same global settings an entry is built from
/// (queue limits, priority, tuning, stream deadlines, prompt compiler).
fn same_entry(
    old: &RayConfig,
    new: &RayConfig,
    old_model: &ModelConfig,
    model: &ModelConfig,
) -> bool {
    old_model == model
        && old.scheduler == new.scheduler
        && old.priority == new.priority
        && old.adaptive_tuning == new.adaptive_tuning
        && old.streaming == new.streaming
        && old.prompt_compiler == new.prompt_compiler
}

/// Sets `next` back to `running` when they differ, and says so in `kept`.
fn keep<T: PartialEq + Clone>(kept: &mut Vec<NotApplied>, name: &str, running: &T, next: &mut T) {
    if running != next {
        let reason = RESTART_SECTIONS
            .iter()
            .find(|(section, _)| *section == name)
            .map_or("it is set up at start", |(_, reason)| reason);
        kept.push(NotApplied {
            field: name.to_string(),
            reason: format!("{reason}; restart the gateway to apply it"),
        });
        *next = running.clone();
    }
}

/// `next` with every part that cannot change while running set back to `running`'s, and the
/// list of those parts. `lifecycle_runs`: the runtime runs a lifecycle, so the models it
/// manages (supervised ones) change live.
fn keep_running_parts(
    running: &RayConfig,
    next: &RayConfig,
    lifecycle_runs: bool,
) -> (RayConfig, Vec<NotApplied>) {
    let mut config = next.clone();
    let mut kept = Vec::new();
    keep(&mut kept, "server", &running.server, &mut config.server);
    keep(
        &mut kept,
        "asyncQueue",
        &running.async_queue,
        &mut config.async_queue,
    );
    keep(&mut kept, "cache", &running.cache, &mut config.cache);
    keep(
        &mut kept,
        "telemetry",
        &running.telemetry,
        &mut config.telemetry,
    );
    keep(
        &mut kept,
        "gracefulDegradation",
        &running.graceful_degradation,
        &mut config.graceful_degradation,
    );
    keep(
        &mut kept,
        "lifecycle",
        &running.lifecycle,
        &mut config.lifecycle,
    );
    keep(&mut kept, "hooks", &running.hooks, &mut config.hooks);
    keep(&mut kept, "cluster", &running.cluster, &mut config.cluster);
    // Supervised models outside a lifecycle keep their running definitions: added ones wait,
    // removed ones stay.
    let supervised = |model: &ModelConfig| !lifecycle_runs && supervised(model);
    let mut models: Vec<ModelConfig> = Vec::new();
    for model in next.model_entries() {
        let old = running.model_entries().iter().find(|m| m.id == model.id);
        match old {
            Some(old) if (supervised(old) || supervised(model)) && old != model => {
                kept.push(NotApplied {
                    field: format!("models[{}]", model.id),
                    reason: format!("{SUPERVISED}; restart the gateway to apply its change"),
                });
                models.push(old.clone());
            }
            None if supervised(model) => kept.push(NotApplied {
                field: format!("models[{}]", model.id),
                reason: format!("{SUPERVISED}; restart the gateway to add it"),
            }),
            _ => models.push(model.clone()),
        }
    }
    for old in running.model_entries().iter().filter(|m| supervised(m)) {
        if !models.iter().any(|m| m.id == old.id) {
            kept.push(NotApplied {
                field: format!("models[{}]", old.id),
                reason: format!("{SUPERVISED}; restart the gateway to remove it"),
            });
            models.push(old.clone());
        }
    }
    if next.models.is_empty() && models.len() == 1 {
        config.model = models.remove(0);
    } else {
        config.models = models;
    }
    (config, kept)
}

impl Runtime {
    /// Makes `next` the running config, as far as a running runtime can: the models, the
    /// routing rules, the limits, the rate limit, priority and the rest change at once; the
    /// parts built at start keep running as they are and are named in the report. Requests in
    /// progress finish on the config they started with.
    ///
    /// A config that is not valid once those parts are kept, or a model whose provider cannot
    /// be built, changes nothing. One reload runs at a time.
    pub async fn reload(&self, next: ValidConfig) -> Result<ReloadReport, ReloadError> {
        let _one = self.inner.reloading.lock().await;
        let live = self.inner.live.read().clone();
        let running = &live.config;
        let managed = self.inner.managed.as_ref();
        let (merged, not_applied) = keep_running_parts(running, &next, managed.is_some());
        let (merged, _warnings) = ValidConfig::new(merged)?;
        let mut report = ReloadReport {
            not_applied,
            ..ReloadReport::default()
        };
        let old_json = serde_json::to_value(running.get()).unwrap_or_default();
        let new_json = serde_json::to_value(merged.get()).unwrap_or_default();
        if let (Some(old), Some(new)) = (old_json.as_object(), new_json.as_object()) {
            let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                if old.get(name) != new.get(name) {
                    report.applied.push(name.clone());
                }
            }
        }
        report.changed = !report.applied.is_empty();
        if !report.changed {
            if !report.not_applied.is_empty() {
                self.emit_reloaded(&report);
            }
            return Ok(report);
        }
        // Every entry is built before anything changes: a model whose provider cannot be built
        // leaves the running config whole.
        let mut planned: Vec<Planned> = Vec::new();
        for model in merged.model_entries() {
            let old = live.registry.entries().iter().find(|e| e.id == model.id);
            match old {
                // An entry tied to a process outside the lifecycle is never rebuilt here.
                Some(old)
                    if (old.lifecycle.is_none() && supervised(&old.config))
                        || same_entry(running, &merged, &old.config, model) =>
                {
                    planned.push(Planned::Kept(old.clone()));
                }
                Some(old) => {
                    let entry = build_entry(&merged, model, &self.inner.own_providers)?;
                    report.models_changed.push(model.id.clone());
                    planned.push(Planned::Changed(entry, old.clone()));
                }
                None => {
                    let entry = build_entry(&merged, model, &self.inner.own_providers)?;
                    report.models_added.push(model.id.clone());
                    planned.push(Planned::Added(entry));
                }
            }
        }
        for old in live.registry.entries() {
            if !planned.iter().any(|p| p.id() == old.id) {
                report.models_removed.push(old.id.clone());
            }
        }
        // Managed models: the lifecycle learns of the new, changed and removed ones.
        let sizes = managed.map(|managed| Sizes {
            fits: crate::lifecycle::fit(&merged, std::path::Path::new("/"))
                .map(|(_, _, fits)| fits)
                .unwrap_or_default(),
            kept: MeasuredFootprints::open(&managed.state_dir),
        });
        let mut entries: Vec<Arc<ModelEntry>> = Vec::new();
        let mut fresh: Vec<Arc<ModelEntry>> = Vec::new();
        // Managed models that stop, once no new request can reach them.
        let mut retired: Vec<usize> = Vec::new();
        for plan in planned {
            let entry = match plan {
                Planned::Kept(entry) => {
                    entries.push(entry);
                    continue;
                }
                Planned::Changed(mut entry, old) => {
                    if let (Some(managed), Some(sizes)) = (managed, &sizes) {
                        let index = change_managed(managed, &merged, sizes, &mut entry, &old);
                        retired.extend(index);
                    }
                    entry
                }
                Planned::Added(mut entry) => {
                    if let (Some(managed), Some(sizes)) = (managed, &sizes) {
                        add_managed(managed, &merged, sizes, &mut entry);
                    }
                    entry
                }
            };
            let entry = Arc::new(entry);
            fresh.push(entry.clone());
            entries.push(entry);
        }
        retired.extend(
            live.registry
                .entries()
                .iter()
                .filter(|old| !entries.iter().any(|e| e.id == old.id))
                .filter_map(|old| old.lifecycle),
        );
        let registry = Registry::new(entries, merged.default_model_id());
        let rate_limiter = if merged.rate_limit == running.rate_limit {
            live.rate_limiter.clone()
        } else if merged.rate_limit.enabled {
            let store = self
                .inner
                .rate_limit_store
                .clone()
                .unwrap_or_else(|| Arc::new(MemoryRateLimitStore::new(&merged.rate_limit)));
            Some(Arc::new(RateLimiter::new(merged.rate_limit.clone(), store)))
        } else {
            None
        };
        *self.inner.live.write() = Arc::new(Live {
            config: merged,
            registry,
            rate_limiter,
        });
        // Removed managed models drain and stop once no new request can reach them.
        if let Some(managed) = managed {
            for index in retired {
                managed.shell.retire(index);
            }
        }
        // Models that came with this config get their warm-up and backend monitor; those of
        // models gone end by themselves (see `Runtime::serves`).
        let mut tasks = self.inner.reload_tasks.lock();
        tasks.retain(|task| !task.is_finished());
        for model in fresh {
            tasks.extend(self.start_model_tasks(&model));
        }
        drop(tasks);
        self.emit_reloaded(&report);
        Ok(report)
    }

    /// The `config_reloaded` event of `report`.
    fn emit_reloaded(&self, report: &ReloadReport) {
        let mut fields = serde_json::Map::new();
        fields.insert("applied".into(), report.applied.clone().into());
        fields.insert("modelsAdded".into(), report.models_added.clone().into());
        fields.insert("modelsChanged".into(), report.models_changed.clone().into());
        fields.insert("modelsRemoved".into(), report.models_removed.clone().into());
        fields.insert(
            "notApplied".into(),
            serde_json::to_value(&report.not_applied).unwrap_or_default(),
        );
        self.inner.hooks.emit("config_reloaded", fields);
    }

    /// Whether `model` is one of the models the runtime serves now (a reload may have
    /// removed or replaced it): the loops of a model that is not end.
    pub(crate) fn serves(&self, model: &Arc<ModelEntry>) -> bool {
        self.inner
            .live
            .read()
            .registry
            .entries()
            .iter()
            .any(|e| Arc::ptr_eq(e, model))
    }
}

/// What sizing the managed models of a reloaded config takes: their fits, and the measured
/// footprints kept in the state directory (read once per reload).
struct Sizes {
    fits: Vec<ModelFit>,
    kept: MeasuredFootprints,
}

/// How the lifecycle sees `entry` under `config`, and its process; `None` when it is not a
/// managed model there.
fn managed_of(
    config: &ValidConfig,
    sizes: &Sizes,
    entry: &ModelEntry,
) -> Option<(LifecycleModel, ManagedProcess)> {
    let lifecycle = config.lifecycle.as_ref()?;
    let fit = sizes.fits.iter().find(|f| f.id == entry.id)?;
    let managed = managed_model(lifecycle, entry, fit, &sizes.kept)?;
    warn_unsized(fit);
    Some(managed)
}

/// A managed model's new entry takes its old entry's place in the lifecycle; when its process
/// changed, the lifecycle restarts it without cutting work (see
/// [`crate::lifecycle::Lifecycle::reconfigure`]); when only its settings (`resident`,
/// `minResidentMs`, `idleUnloadMs`) changed, it takes them without a restart (see
/// [`crate::lifecycle::Lifecycle::retune`]). Returns the lifecycle index to retire once
/// the new registry is in place, when the model is no longer managed.
fn change_managed(
    managed: &Managed,
    config: &ValidConfig,
    sizes: &Sizes,
    entry: &mut ModelEntry,
    old: &ModelEntry,
) -> Option<usize> {
    let Some(index) = old.lifecycle else {
        // It was not managed before (an unmanaged model that now has a launch profile to
        // supervise): it joins the lifecycle as a new model.
        add_managed(managed, config, sizes, entry);
        return None;
    };
    // No longer managed: the lifecycle's model stops once drained.
    let (model, process) = managed_of(config, sizes, entry)?;
    entry.lifecycle = Some(index);
    entry.health.set_warm(WarmState::Idle);
    let settings = |m: &ModelConfig| (m.resident, m.min_resident_ms, m.idle_unload_ms);
    let same_process = old.config.adapter.launch_profile() == Some(&process.launch)
        && old.config.adapter.http().and_then(|h| h.api_key_env) == process.api_key_env.as_deref();
    if !same_process {
        managed.driver.replace(index, process);
        managed.shell.reconfigure(index, model);
    } else if settings(&old.config) != settings(&entry.config) {
        managed.shell.retune(index, model);
    }
    None
}

/// A managed model a reload added joins the lifecycle `unloaded`.
fn add_managed(managed: &Managed, config: &ValidConfig, sizes: &Sizes, entry: &mut ModelEntry) {
    let Some((model, process)) = managed_of(config, sizes, entry) else {
        return;
    };
    entry.health.set_warm(WarmState::Idle);
    // Removed by an earlier reload and back now: it takes its old place (its process, if still
    // draining, stops first; its pid file, port and slot files stay its own).
    if let Some(index) = managed.shell.retired_index_of(&entry.id) {
        managed.driver.replace(index, process);
        managed.shell.revive(index, model);
        entry.lifecycle = Some(index);
        return;
    }
    let index = managed.driver.add(process);
    let added = managed.shell.add(model);
    debug_assert_eq!(
        index, added,
        "the driver and the lifecycle index models alike"
    );
    entry.lifecycle = Some(added);
}

#[cfg(test)]
mod tests;
