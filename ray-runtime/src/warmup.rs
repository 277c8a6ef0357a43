//! Warm-up: the provider's own preparation, then the configured warm-up requests through the
//! normal request path, retried with backoff in the background until it succeeds.

use std::time::Duration;

use std::sync::Arc;

use ray_core::RayError;
use ray_core::config::WarmupRequest;
use ray_core::wire::InferRequest;
use tokio::task::JoinHandle;

use crate::context::RequestContext;
use crate::jobs::{DRAIN_TIMEOUT, JobQueue};
use crate::model_health::WarmState;
use crate::plan::PlanOptions;
use crate::registry::ModelEntry;
use crate::runtime::Runtime;
use crate::telemetry::inc;

/// The delay before warm-up attempt `attempt + 1`: 2 s doubling to at most 15 s.
pub fn warmup_retry_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(4);
    Duration::from_secs(2 * (1 << exponent)).min(Duration::from_secs(15))
}

/// Background work owned by whoever called [`Runtime::start`]. Dropping it (or calling
/// [`Background::shutdown`]) stops the work.
#[derive(Debug, Default)]
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
    /// The job queue's loops, which get a grace period at shutdown.
    job_tasks: Vec<JoinHandle<()>>,
    jobs: Option<Arc<JobQueue>>,
    /// The log summaries, written out at shutdown.
    logs: Option<Arc<crate::log_policy::LogBook>>,
    /// The tasks reloads started.
    reloaded: Option<Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>>,
}

impl Background {
    /// Stops every task and waits for them to end. The job queue first stops starting jobs
    /// and delivering callbacks and gets up to [`DRAIN_TIMEOUT`] to finish what is running;
    /// whatever is cut off then is queued again at the next start.
    pub async fn shutdown(mut self) {
        if let Some(jobs) = self.jobs.take() {
            jobs.begin_stop();
            let job_tasks = std::mem::take(&mut self.job_tasks);
            let aborts: Vec<_> = job_tasks.iter().map(JoinHandle::abort_handle).collect();
            let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
                for task in job_tasks {
                    let _ = task.await;
                }
            })
            .await;
            // Cut off what did not finish in time (a no-op for the loops that ended).
            for abort in aborts {
                abort.abort();
            }
            if drained.is_err() {
                tracing::warn!(
                    timeout_ms = DRAIN_TIMEOUT.as_millis() as u64,
                    "async queue stop timeout reached; interrupted jobs run again at the next start"
                );
            }
        }
        if let Some(reloaded) = self.reloaded.take() {
            self.tasks.append(&mut reloaded.lock());
        }
        for task in self.tasks.iter().chain(&self.job_tasks) {
            task.abort();
        }
        for task in self.tasks.drain(..).chain(self.job_tasks.drain(..)) {
            let _ = task.await;
        }
        // The counts folded since the last summary lines.
        if let Some(logs) = self.logs.take() {
            logs.flush(true);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(reloaded) = self.reloaded.take() {
            self.tasks.append(&mut reloaded.lock());
        }
        for task in self.tasks.iter().chain(&self.job_tasks) {
            task.abort();
        }
    }
}

fn warmup_inference(warmup: &WarmupRequest) -> InferRequest {
    InferRequest {
        input: warmup.input.clone(),
        system: warmup.system.clone(),
        max_tokens: Some(warmup.max_tokens.unwrap_or(1)),
        seed: warmup.seed,
        stop: warmup.stop.clone(),
        response_format: warmup.response_format.clone(),
        cache: Some(false),
        template_id: warmup.template_id.clone(),
        template_variables: warmup.template_variables.clone(),
        ..InferRequest::default()
    }
}

impl Runtime {
    /// Warms every model up once: the provider's own warm-up, then each model's
    /// `adapter.warmupRequests` (default one `{"input":"ping"}`) through the normal request
    /// path (greedy, uncached, not counted as client requests). Stops at the first failure.
    pub async fn warm_up(&self) -> Result<(), RayError> {
        for model in self.live().registry.entries().to_vec() {
            self.warm_up_model(&model).await?;
        }
        Ok(())
    }

    async fn warm_up_model(&self, model: &Arc<ModelEntry>) -> Result<(), RayError> {
        let health = &model.health;
        inc(&self.inner.metrics.warmup_attempts);
        health.set_warm(WarmState::Warming);
        let result = self.warm_up_once(model).await;
        match &result {
            Ok(()) => health.set_warm(WarmState::Ready),
            Err(error) => {
                inc(&self.inner.metrics.warmup_failures);
                health.set_warm(WarmState::Failed(error.to_string()));
            }
        }
        result
    }

    async fn warm_up_once(&self, model: &Arc<ModelEntry>) -> Result<(), RayError> {
        model.provider.warm_up().await?;
        let Some(http) = model.config.adapter.http() else {
            return Ok(());
        };
        if model.config.role() == ray_core::config::ModelRole::Embedding {
            // Embedding models take no generation requests.
            return Ok(());
        }
        let default = [WarmupRequest {
            input: Some("ping".into()),
            system: None,
            max_tokens: None,
            seed: None,
            stop: None,
            response_format: None,
            template_id: None,
            template_variables: None,
        }];
        let requests = http
            .warmup_requests
            .filter(|r| !r.is_empty())
            .unwrap_or(&default);
        for warmup in requests {
            let mut request = warmup_inference(warmup);
            request.model = Some(model.id.clone());
            self.infer_with(
                Box::new(request),
                &RequestContext::default(),
                PlanOptions {
                    greedy: true,
                    internal: true,
                    ..PlanOptions::default()
                },
                false,
            )
            .await?;
        }
        Ok(())
    }

    /// Starts the runtime's background work: per model, warm-up with retry (when its
    /// `warmOnBoot` is set) and the backend monitor; the tick that writes the log summaries;
    /// and the job queue's dispatcher, callback deliveries and pruning when
    /// `asyncQueue.enabled` is set. Call it once, from inside a Tokio runtime, after the
    /// listener is bound; keep the returned [`Background`] for as long as the runtime serves.
    pub fn start(&self) -> Background {
        let mut background = Background::default();
        if let Some(jobs) = &self.inner.jobs {
            if !jobs.callbacks.signs() {
                tracing::warn!(
                    variable = %self.live().config.async_queue.callback_signing_secret_env,
                    "job callbacks are sent unsigned: the signing secret variable is not set"
                );
            }
            background.job_tasks = vec![
                tokio::spawn(jobs.clone().dispatch_loop(self.clone())),
                tokio::spawn(jobs.clone().callback_loop()),
                tokio::spawn(jobs.clone().sweep_loop()),
                tokio::spawn(jobs.clone().store_probe_loop()),
            ];
            background.jobs = Some(jobs.clone());
        }
        let runtime = self.clone();
        background.tasks.push(tokio::spawn(async move {
            runtime.inner.metrics.logs.flush_loop().await;
        }));
        background.logs = Some(self.inner.metrics.logs.clone());
        if !self.inner.hooks.is_empty() {
            let hooks = self.inner.hooks.clone();
            background
                .tasks
                .push(tokio::spawn(async move { hooks.run().await }));
            let runtime = self.clone();
            background
                .tasks
                .push(tokio::spawn(async move { runtime.watch_loop().await }));
        }
        for model in self.live().registry.entries() {
            background.tasks.extend(self.start_model_tasks(model));
        }
        background.reloaded = Some(self.inner.reload_tasks.clone());
        background
    }

    /// Starts the background work of one model: its warm-up (when `warmOnBoot` is set and the
    /// lifecycle does not load it) and its backend monitor. Both end once a reload removed or
    /// replaced the model.
    pub(crate) fn start_model_tasks(&self, model: &Arc<ModelEntry>) -> Vec<JoinHandle<()>> {
        // The loops read the current models, never the ones of a pinned handle.
        let runtime = Runtime {
            inner: self.inner.clone(),
            pinned: None,
        };
        let mut tasks = Vec::new();
        if model.config.warm_on_boot && model.lifecycle.is_none() {
            let runtime = runtime.clone();
            let model = model.clone();
            tasks.push(tokio::spawn(async move {
                runtime.warm_loop(&model).await;
            }));
        }
        if model.provider.has_health_probe() {
            let model = model.clone();
            tasks.push(tokio::spawn(async move {
                runtime.monitor_loop(&model).await;
            }));
        }
        tasks
    }

    /// Probes one model's backend every [`crate::HEALTH_MONITOR_INTERVAL`] (or at once after a
    /// failed call); a backend that answers again ends the model's cooldown and retries a
    /// failed warm-up.
    async fn monitor_loop(&self, model: &Arc<ModelEntry>) {
        let health = &model.health;
        loop {
            tokio::select! {
                () = tokio::time::sleep(crate::model_health::HEALTH_MONITOR_INTERVAL) => {}
                () = health.probe_now.notified() => {}
            }
            if !self.serves(model) {
                return;
            }
            self.provider_health_of_entry(model).await;
            let probed = health.probed_status();
            let reachable = probed != ray_core::wire::ProviderStatus::Unavailable;
            if probed == ray_core::wire::ProviderStatus::Ready {
                model.note_success();
            }
            if reachable && matches!(health.warm(), WarmState::Failed(_)) {
                health.retry_warm.notify_one();
            }
        }
    }

    async fn warm_loop(&self, model: &Arc<ModelEntry>) {
        let mut attempt: u32 = 0;
        loop {
            if !self.serves(model) {
                return;
            }
            attempt += 1;
            match self.warm_up_model(model).await {
                Ok(()) if attempt == 1 => {
                    tracing::info!(model = %model.id, provider = model.provider.kind(), "provider warmed");
                    return;
                }
                Ok(()) => {
                    tracing::info!(model = %model.id, attempts = attempt, "provider warmup recovered");
                    return;
                }
                Err(error) => {
                    let delay = warmup_retry_delay(attempt);
                    let message = if attempt == 1 {
                        "provider warmup failed after gateway start"
                    } else {
                        "provider warmup retry failed"
                    };
                    tracing::warn!(
                        model = %model.id,
                        code = %error.code(),
                        error = error.message(),
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        "{message}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = model.health.retry_warm.notified() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_to_fifteen_seconds() {
        let delays: Vec<u64> = (1..=7).map(|a| warmup_retry_delay(a).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 15, 15, 15, 15]);
    }
}
