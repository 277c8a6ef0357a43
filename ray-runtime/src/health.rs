//! Health and readiness: the provider's state (probe results cached for one second, refreshes
//! coalesced, overridden by warm-up state), queue, cache and pressure.

use std::sync::atomic::Ordering;

use ray_core::config::redacted_json;
use ray_core::wire::{
    CacheHealth, DegradationHealth, DetectedCapabilities, Health, LifecycleHealth, ModelHealth,
    ModelIdentity, PressureFlags, ProviderHealth, ProviderStatus, QueueHealth, Readiness,
    RuntimeHealth, overall_status,
};
use ray_models::ProviderHealthReport;
use tokio::time::Instant;

use crate::managed::{lifecycle_status, lifecycle_view};
use crate::model_health::{WarmState, combine, mismatched, status_to_u8};
use crate::registry::ModelEntry;
use crate::runtime::Runtime;

impl Runtime {
    /// The default model's backend health: the probe (cached one second) combined with
    /// warm-up state.
    pub async fn provider_health(&self) -> ProviderHealth {
        let model = self.model().clone();
        self.provider_health_of_entry(&model).await
    }

    /// The backend health of the model `name` (id or alias).
    pub async fn provider_health_of(&self, name: &str) -> Option<ProviderHealth> {
        let live = self.live();
        let model = live.registry.get(name)?.clone();
        Some(self.provider_health_of_entry(&model).await)
    }

    pub(crate) async fn provider_health_of_entry(&self, model: &ModelEntry) -> ProviderHealth {
        let provider = &model.provider;
        let health = &model.health;
        // A managed model that is not loaded has no process to probe: the lifecycle says.
        let lifecycle = self.lifecycle_of(model);
        if let Some(status) = &lifecycle
            && let Some((provider_status, error)) = self.managed_status(status)
        {
            let mut details = serde_json::Map::new();
            details.insert("rayLifecycleState".into(), status.state.name().into());
            if let Some(error) = error {
                details.insert("error".into(), error.into());
            }
            if let Some(process) = self.managed_process(model, status) {
                details.insert(
                    "rayBackendProcess".into(),
                    serde_json::to_value(process).unwrap_or_default(),
                );
            }
            return ProviderHealth {
                status: provider_status,
                checked_at: ray_core::time::now_rfc3339(),
                latency_ms: None,
                detected_capabilities: provider.capabilities(),
                details: Some(serde_json::Value::Object(details)),
                model_identity: None,
            };
        }
        let (report, checked_at) = if provider.has_health_probe() {
            self.follow_process(model);
            health.probe(provider.as_ref()).await
        } else {
            let mut report = ProviderHealthReport::status(ProviderStatus::Ready);
            report.capabilities = provider.capabilities();
            (report, ray_core::time::now_rfc3339())
        };
        health
            .last_status
            .store(status_to_u8(report.status), Ordering::Relaxed);
        health.note_probe(report.status);
        let warm = health.warm();
        let process = health.process().or_else(|| {
            lifecycle
                .as_ref()
                .and_then(|status| self.managed_process(model, status))
        });
        let status = health.with_process(combine(&warm, report.status));
        let mut details = match report.details {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let (warm_status, warm_message) = match &warm {
            WarmState::Idle => ("not_configured", None),
            WarmState::Pending => ("pending", None),
            WarmState::Warming => ("warming", None),
            WarmState::Ready => ("ready", None),
            WarmState::Failed(message) => ("failed", Some(message.clone())),
        };
        details.insert("rayWarmupStatus".into(), warm_status.into());
        if let Some(message) = warm_message {
            details.insert("rayWarmupMessage".into(), message.into());
        }
        if let Some(process) = process {
            details.insert(
                "rayBackendProcess".into(),
                serde_json::to_value(process).unwrap_or_default(),
            );
        }
        let capabilities = report.capabilities.or_else(|| provider.capabilities());
        let model_identity = model_identity(model, capabilities.as_ref());
        // A backend serving another model is not ready when the config says it must match.
        let status = match &model_identity {
            Some(identity) if !identity.matches && identity.required => {
                details.insert(
                    "error".into(),
                    format!(
                        "the backend serves {:?}, not the configured modelRef {:?} \
                         (model.adapter.requireBackendModelMatch)",
                        identity.reported, identity.configured
                    )
                    .into(),
                );
                ProviderStatus::Unavailable
            }
            _ => status,
        };
        ProviderHealth {
            status,
            checked_at,
            latency_ms: report.latency.map(|d| d.as_millis() as u64),
            detected_capabilities: capabilities,
            details: Some(serde_json::Value::Object(details)),
            model_identity,
        }
    }
}

impl Runtime {
    /// A managed model's process as `/health` shows it (`rayBackendProcess`), while one runs:
    /// `starting` while it loads, else `running`; its restarts are its loads after the first.
    fn managed_process(
        &self,
        model: &ModelEntry,
        status: &crate::lifecycle::ModelStatus,
    ) -> Option<crate::backend::BackendProcess> {
        let index = model.lifecycle?;
        let pid = self.inner.managed.as_ref()?.driver.pid(index)?;
        let restarts = u32::try_from(status.loads.saturating_sub(1)).unwrap_or(u32::MAX);
        Some(match status.state {
            crate::lifecycle::ModelState::Loading => {
                crate::backend::BackendProcess::Starting { pid, restarts }
            }
            _ => crate::backend::BackendProcess::Running { pid, restarts },
        })
    }

    /// What a managed model's backend status is from its lifecycle alone, with the reason it
    /// cannot serve: unavailable while it failed a moment ago or when it needs more than the
    /// whole memory budget (it would never load), else as [`lifecycle_status`] says. `None`:
    /// it is loaded, so its probe says.
    pub(crate) fn managed_status(
        &self,
        status: &crate::lifecycle::ModelStatus,
    ) -> Option<(ProviderStatus, Option<String>)> {
        let budget = self.inner.managed.as_ref()?.shell.budget_mib();
        if status.footprint_mib > budget && !status.state.holds_memory() {
            let error = format!(
                "model_does_not_fit: it needs {} MiB, more than the whole {budget} MiB memory \
                 budget; it never loads",
                status.footprint_mib
            );
            return Some((ProviderStatus::Unavailable, Some(error)));
        }
        let provider = lifecycle_status(&status.state)?;
        let error = match &status.state {
            crate::lifecycle::ModelState::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        Some((provider, error))
    }

    /// Whether the model `name` (id or alias) would take a request now rather than refuse it
    /// at once: not in cooldown, its backend not known to be down or starting. A managed model
    /// that is not loaded takes it (the request loads it), unless it failed a moment ago or
    /// can never fit the budget. `false` for an unknown name, and for every model once the
    /// gateway shuts down.
    pub fn takes_requests(&self, name: &str) -> bool {
        if self
            .inner
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return false;
        }
        let live = self.live();
        let Some(model) = live.registry.get(name) else {
            return false;
        };
        if model
            .cooldown_refusal(tokio::time::Instant::now())
            .is_some()
        {
            return false;
        }
        match self
            .lifecycle_of(model)
            .and_then(|status| self.managed_status(&status))
        {
            Some((status, _)) => status != ProviderStatus::Unavailable,
            None => model.health.refusal().is_none(),
        }
    }

    /// `model`'s backend status now, without probing: a managed model's lifecycle says while
    /// it is not loaded, else its last probe (what `ray_provider_status` reports).
    pub(crate) fn status_now_of(&self, model: &ModelEntry) -> ProviderStatus {
        self.lifecycle_of(model)
            .and_then(|status| self.managed_status(&status))
            .map_or_else(
                || model.health.status_now(model.provider.has_health_probe()),
                |(status, _)| status,
            )
    }

    /// The lifecycle status of `model`, when it is a managed model under the `lifecycle`
    /// section.
    pub(crate) fn lifecycle_of(&self, model: &ModelEntry) -> Option<crate::lifecycle::ModelStatus> {
        let index = model.lifecycle?;
        self.inner.managed.as_ref()?.shell.status_at(index)
    }
}

/// A model's configured `modelRef` against the model its backend reports, once it has.
fn model_identity(
    model: &ModelEntry,
    capabilities: Option<&DetectedCapabilities>,
) -> Option<ModelIdentity> {
    let http = model.config.adapter.http()?;
    let reported = capabilities?.backend_model.as_deref()?;
    Some(ModelIdentity::check(
        http.model_ref,
        reported,
        http.require_backend_model_match,
    ))
}

impl Runtime {
    /// Pressure flags the runtime knows about (the server adds rate-limit and HTTP pressure).
    fn pressure_flags(&self) -> PressureFlags {
        let model = self.model();
        let pressure = self.pressure_snapshot(&model);
        let live = self.live();
        let threshold = live.config.graceful_degradation.queue_depth_threshold;
        let entries = live.registry.entries();
        PressureFlags {
            queue: entries.iter().any(|m| m.scheduler.depth() >= threshold),
            preparation: entries.iter().any(|m| m.scheduler.preparation().degraded),
            memory: pressure.signals.memory.degraded,
            memory_critical: self.inner.pressure.refuses(&pressure.signals),
            cpu: pressure.signals.cpu.degraded,
            async_queue: self.jobs().is_some_and(|jobs| jobs.is_degraded()),
            ..PressureFlags::default()
        }
    }

    /// Readiness: 503 while the default model's backend is warming or down, 200 otherwise.
    pub async fn readiness(&self) -> Readiness {
        let model = self.model().clone();
        self.readiness_of_entry(&model).await
    }

    /// Readiness of the model `name` (id or alias); `None` for an unknown name.
    pub async fn readiness_of(&self, name: &str) -> Option<Readiness> {
        let live = self.live();
        let model = live.registry.get(name)?.clone();
        Some(self.readiness_of_entry(&model).await)
    }

    async fn readiness_of_entry(&self, model: &ModelEntry) -> Readiness {
        let provider = self.provider_health_of_entry(model).await;
        let scheduler = model.scheduler.snapshot();
        let status = if model.cooldown.lock().active_until(Instant::now()).is_some() {
            ProviderStatus::Unavailable
        } else {
            provider.status
        };
        let mut readiness = Readiness::new(
            self.live().config.telemetry.service_name.clone(),
            status,
            scheduler.depth(),
            scheduler.in_flight,
            self.pressure_flags(),
        );
        readiness.backend_model_mismatch = mismatched(&provider);
        readiness.refresh();
        readiness
    }

    /// Each model's state, in config order (what `/v1/models` and `/health` list).
    pub async fn models(&self) -> Vec<ModelHealth> {
        let mut out = Vec::new();
        let default = self.model().id.clone();
        for model in self.live().registry.entries() {
            let provider = self.provider_health_of_entry(model).await;
            out.push(self.model_health(model, &provider, model.id == default));
        }
        out
    }

    fn model_health(
        &self,
        model: &ModelEntry,
        provider: &ProviderHealth,
        default: bool,
    ) -> ModelHealth {
        let now = Instant::now();
        let scheduler = model.scheduler.snapshot();
        let cooldown = model.cooldown.lock().clone();
        let lifecycle = self.lifecycle_of(model);
        let state = match &lifecycle {
            // Cooldown first; a managed model not loaded says where it stands in its lifecycle.
            Some(status)
                if status.state != crate::lifecycle::ModelState::Ready
                    && cooldown.active_until(now).is_none() =>
            {
                status.state.name()
            }
            _ => model.state(provider.status, now),
        };
        let remaining = cooldown
            .active_until(now)
            .map(|until| until.saturating_duration_since(now).as_millis() as u64);
        ModelHealth {
            id: model.id.clone(),
            aliases: model.config.aliases.clone(),
            role: model.config.role().as_str().into(),
            default,
            state: state.into(),
            reason: match state {
                "cooldown" => Some("model_cooldown".into()),
                "unloaded" | "draining" | "unloading" => None,
                _ => provider.status.reason().map(str::to_string),
            },
            backend: model.provider.kind().into(),
            context_window: model.context_window(),
            max_output_tokens: model.config.max_output_tokens,
            queue_depth: scheduler.depth(),
            in_flight: scheduler.in_flight,
            concurrency: model.limits.concurrency,
            max_queue: model.limits.max_queue,
            failures: cooldown.failures,
            cooldown_remaining_ms: remaining,
            last_failure: cooldown.reason,
            fallback: model.config.fallback.clone(),
            lifecycle: lifecycle.as_ref().map(lifecycle_view),
        }
    }

    /// The full health snapshot. The queue section is the default model's; every model's
    /// own state is in `models`.
    pub async fn health(&self) -> Health {
        let live = self.live();
        let config = &live.config;
        let model = self.model().clone();
        let provider = self.provider_health_of_entry(&model).await;
        let scheduler = model.scheduler.snapshot();
        let pressure = self.pressure_snapshot(&model);
        let flags = self.pressure_flags();
        let ratio = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
        let s = &model.limits;
        let depth = scheduler.depth();
        let queue = QueueHealth {
            degraded: flags.queue,
            depth,
            depth_ratio: ratio(depth.into(), s.max_queue.into()),
            short_depth: scheduler.short_depth,
            draft_depth: scheduler.draft_depth,
            threshold: config.graceful_degradation.queue_depth_threshold,
            max_queue: s.max_queue,
            in_flight: scheduler.in_flight,
            in_flight_ratio: ratio(scheduler.in_flight.into(), s.concurrency.into()),
            concurrency: s.concurrency,
            queued_tokens: scheduler.queued_tokens,
            queued_tokens_ratio: ratio(scheduler.queued_tokens.into(), s.max_queued_tokens.into()),
            max_queued_tokens: s.max_queued_tokens,
            in_flight_tokens: scheduler.in_flight_tokens,
            in_flight_tokens_ratio: ratio(
                scheduler.in_flight_tokens.into(),
                s.max_inflight_tokens.into(),
            ),
            max_inflight_tokens: s.max_inflight_tokens,
            oldest_wait_ms: scheduler.oldest_wait.as_millis() as u64,
            dedupe_followers: model.flights.followers() as u32,
            rejections: [
                (
                    "request_token_budget_exceeded",
                    scheduler.counters.rejected_token_budget,
                ),
                (
                    "queue_full",
                    scheduler.counters.rejected_queue_depth
                        + scheduler.counters.rejected_queued_tokens,
                ),
                (
                    "queue_wait_exceeds_deadline",
                    scheduler.counters.rejected_wait_by_class.iter().sum(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            priority: crate::priority::health(&model.scheduler, &scheduler),
        };
        let cache = match &self.inner.cache {
            Some(cache) => {
                let stats = cache.stats();
                let c = &config.cache;
                CacheHealth {
                    enabled: true,
                    entries: stats.entries as u32,
                    max_entries: c.max_entries,
                    entries_ratio: ratio(stats.entries as f64, c.max_entries.into()),
                    bytes: stats.bytes,
                    max_bytes: c.max_bytes,
                    bytes_ratio: ratio(stats.bytes as f64, c.max_bytes as f64),
                    ttl_ms: c.ttl_ms,
                    hits: stats.hits,
                    misses: stats.misses,
                    insertions: stats.insertions,
                    evictions: stats.evictions(),
                    expirations: stats.expirations,
                    dropped_oversized_entries: stats.rejected_oversized,
                    dropped_unmeasurable_entries: 0,
                }
            }
            None => CacheHealth {
                enabled: false,
                max_entries: config.cache.max_entries,
                max_bytes: config.cache.max_bytes,
                ttl_ms: config.cache.ttl_ms,
                ..CacheHealth::default()
            },
        };
        let mut models = Vec::new();
        let (mut queue_depth, mut in_flight) = (0u32, 0u32);
        for entry in self.live().registry.entries() {
            let health = if entry.id == model.id {
                self.model_health(entry, &provider, true)
            } else {
                let provider = self.provider_health_of_entry(entry).await;
                self.model_health(entry, &provider, false)
            };
            queue_depth += health.queue_depth;
            in_flight += health.in_flight;
            models.push(health);
        }
        let reasons = provider.status.reason().is_some()
            || flags.reasons().next().is_some()
            || mismatched(&provider);
        Health {
            status: overall_status(provider.status, reasons),
            uptime_ms: self.uptime().as_millis() as u64,
            queue_depth,
            in_flight,
            cache_entries: cache.entries,
            profile: config.profile.as_str().into(),
            model_id: model.id.clone(),
            provider,
            runtime: RuntimeHealth {
                queue,
                preparation: model.scheduler.preparation(),
                cache,
                memory: pressure.signals.memory.clone(),
                cpu: pressure.signals.cpu.clone(),
                degradation: DegradationHealth {
                    enabled: config.graceful_degradation.enabled,
                    refuse_on_critical_memory: config
                        .graceful_degradation
                        .refuse_on_critical_memory,
                    decisions: self.inner.metrics.degradation_counts(),
                    memory_critical_refusals: self
                        .inner
                        .metrics
                        .memory_critical_refusals
                        .load(Ordering::Relaxed),
                },
                adaptive: model.tuner.health(),
            },
            async_queue: self.jobs().map(|jobs| jobs.health()),
            rate_limit: None,
            gateway: None,
            cluster: None,
            models,
            lifecycle: self.inner.managed.as_ref().map(|managed| {
                let statuses = managed.shell.statuses();
                LifecycleHealth {
                    budget_mib: managed.shell.budget_mib(),
                    budget_source: managed.budget_source.describe().into(),
                    committed_mib: managed.shell.committed_mib(),
                    loaded: statuses
                        .iter()
                        .filter(|s| {
                            matches!(
                                s.state,
                                crate::lifecycle::ModelState::Ready
                                    | crate::lifecycle::ModelState::Draining
                            )
                        })
                        .count() as u32,
                    waiting: statuses.iter().map(|s| s.waiting).sum(),
                }
            }),
        }
    }

    /// The effective config as `/v1/config` shows it: secrets redacted, plus capability hints
    /// of the default model.
    pub fn config_view(&self) -> serde_json::Value {
        let live = self.live();
        let config = &live.config;
        let model = self.model();
        let mut view = redacted_json(config);
        let mut hints = serde_json::json!({
            "profile": config.profile.as_str(),
            "modelId": model.id,
            "family": model.config.family,
            "quantization": model.config.quantization,
            "contextWindow": model.context_window(),
            "maxOutputTokens": model.config.max_output_tokens,
            "operational": model.config.operational,
        });
        if let (Some(launch), Some(http)) = (
            model.config.adapter.launch_profile(),
            model.config.adapter.http(),
        ) {
            hints["llamaCpp"] = serde_json::json!({
                "modelRef": http.model_ref,
                "launchPreset": launch.preset,
                "ctxSize": launch.ctx_size,
                "parallel": launch.parallel,
                "cacheRamMiB": launch.cache_ram_mib,
                "cachePrompt": launch.cache_prompt,
            });
        }
        if let Some(capabilities) = model.provider.capabilities() {
            hints["detectedCapabilities"] =
                serde_json::to_value(capabilities).unwrap_or(serde_json::Value::Null);
        }
        if let serde_json::Value::Object(map) = &mut view {
            map.insert("capabilityHints".into(), hints);
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_state_overrides_the_probe() {
        use ProviderStatus::*;
        assert_eq!(combine(&WarmState::Pending, Ready), Warming);
        assert_eq!(combine(&WarmState::Warming, Unavailable), Unavailable);
        assert_eq!(combine(&WarmState::Failed("x".into()), Ready), Unavailable);
        assert_eq!(combine(&WarmState::Ready, Degraded), Degraded);
        assert_eq!(combine(&WarmState::Idle, Ready), Ready);
    }
}
