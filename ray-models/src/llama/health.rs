//! Health and warm-up: `/health` (503 while loading), then `/slots` and `/metrics` when the
//! backend is up.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ray_core::wire::{Availability, ProviderStatus};

use super::LlamaCppProvider;
use super::native::{BackendMetrics, Slot, parse_metrics, parse_slots};
use crate::error::ProviderError;
use crate::openai::openai_health;
use crate::provider::ProviderHealthReport;

impl LlamaCppProvider {
    pub(super) async fn slot_snapshot(&self) -> Option<Vec<Slot>> {
        if let Some((at, slots)) = self.slots.lock().as_ref()
            && at.elapsed() < self.settings.slot_state_ttl
        {
            return Some(slots.clone());
        }
        let timeout = self.short_timeout(self.settings.slot_snapshot_timeout);
        match self.client.get("/slots", timeout).await {
            Ok(response) if (200..300).contains(&response.status) => {
                let slots = parse_slots(&response.body)?;
                *self.slots.lock() = Some((Instant::now(), slots.clone()));
                Some(slots)
            }
            Ok(response) if response.status == 404 || response.status == 501 => {
                *self.slots.lock() = Some((Instant::now(), Vec::new()));
                Some(Vec::new())
            }
            // A slow or failing snapshot reuses the last one.
            _ => self.slots.lock().as_ref().map(|(_, s)| s.clone()),
        }
    }

    pub(super) async fn backend_metrics(&self) -> Option<BackendMetrics> {
        let timeout = self.short_timeout(self.settings.slot_snapshot_timeout);
        match self.client.get("/metrics", timeout).await {
            Ok(response) if (200..300).contains(&response.status) => {
                let metrics = parse_metrics(&String::from_utf8_lossy(&response.body));
                *self.metrics.lock() = metrics;
                Some(metrics)
            }
            _ => None,
        }
    }

    /// [`crate::Provider::health`] for llama.cpp.
    pub(super) async fn probe(&self) -> ProviderHealthReport {
        let started = Instant::now();
        let timeout = self.short_timeout(Duration::from_secs(5));
        let mut details = serde_json::Map::new();
        let status = match self.client.get("/health", timeout).await {
            Ok(response) if (200..300).contains(&response.status) => ProviderStatus::Ready,
            Ok(response) => {
                let body = String::from_utf8_lossy(&response.body).to_lowercase();
                details.insert("backendStatus".into(), response.status.into());
                if body.contains("loading") {
                    ProviderStatus::Warming
                } else if body.contains("no slot") {
                    ProviderStatus::Degraded
                } else {
                    ProviderStatus::Unavailable
                }
            }
            Err(error) => {
                details.insert("error".into(), error.to_string().into());
                ProviderStatus::Unavailable
            }
        };
        let reachable = status != ProviderStatus::Unavailable;
        let was_reachable = self.reachable.swap(reachable, Ordering::Relaxed);
        // The backend came (back) up: what it can do may have changed with it, so detect
        // again (JSON mode, probed at warm-up, is kept until the next warm-up).
        let came_up = reachable && !was_reachable;
        let latency = started.elapsed();
        if reachable {
            let caps = self.caps(came_up).await;
            let (slots, metrics) = tokio::join!(self.slot_snapshot(), async {
                if caps.metrics == Availability::Unavailable {
                    None
                } else {
                    self.backend_metrics().await
                }
            });
            if let Some(slots) = slots {
                let processing = slots.iter().filter(|s| s.is_processing).count();
                details.insert("slotsProcessing".into(), processing.into());
                details.insert("slotsIdle".into(), (slots.len() - processing).into());
                details.insert(
                    "slots".into(),
                    serde_json::to_value(&slots).unwrap_or_default(),
                );
            }
            if let Some(metrics) = metrics {
                if let Some(v) = metrics.requests_processing {
                    details.insert("requestsProcessing".into(), v.into());
                }
                if let Some(v) = metrics.requests_deferred {
                    details.insert("requestsDeferred".into(), v.into());
                }
            }
        }
        ProviderHealthReport {
            status,
            latency: Some(latency),
            capabilities: Some(self.to_capabilities(&self.known_caps())),
            details: Some(details.into()),
        }
    }

    /// [`crate::Provider::warm_up`] for llama.cpp.
    pub(super) async fn warm(&self) -> Result<(), ProviderError> {
        let caps = self.caps(true).await;
        if !caps.errors.is_empty()
            && caps.n_ctx.is_none()
            && caps.tokenize != Availability::Available
        {
            // Nothing answered: the backend is down or still loading.
            let health = openai_health(&self.client, &self.settings.model_ref).await;
            if health.status != ProviderStatus::Ready {
                return Err(ProviderError::Unavailable {
                    reason: caps.errors.join("; "),
                    warming: false,
                });
            }
        }
        let json_mode = self.probe_json_mode().await;
        if let Some((_, cached)) = self.caps.lock().as_mut() {
            cached.json_mode = json_mode;
        }
        Ok(())
    }
}
