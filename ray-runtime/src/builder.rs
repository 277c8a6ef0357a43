//! Building a [`Runtime`]: the registry of models with their providers, the result cache,
//! the pressure monitor and the durable job queue.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ray_cache::CacheBounds;
use ray_core::config::ValidConfig;
use ray_models::Provider;
use tokio::time::Instant;

use crate::backend::ondemand::{ManagedProcess, ProcessDriver};
use crate::footprint::{MeasuredFootprints, footprint_key};
use crate::ids::IdSource;
use crate::jobs::{FileJobStore, JobQueue, JobStore};
use crate::lifecycle::{Lifecycle, LifecycleModel, LifecycleSettings, LifecycleShell};
use crate::managed::Managed;
use crate::pressure::{PressureMonitor, PressureSources};
use crate::registry::{ModelEntry, Registry};
use crate::runtime::{Runtime, RuntimeError};
use crate::shared::{
    MemoryRateLimitStore, MemoryResultStore, RateLimitStore, RateLimiter, ResultStore,
};
use crate::state::{Inner, Live};
use crate::telemetry::{EmbedMetrics, RuntimeMetrics};

/// Builds a [`Runtime`], optionally with a provider or a job store of your own.
pub struct RuntimeBuilder {
    pub(crate) config: ValidConfig,
    /// Providers of your own, by model id (`None`: the default model).
    pub(crate) providers: Vec<(Option<String>, Arc<dyn Provider>)>,
    pub(crate) job_store: Option<Arc<dyn JobStore>>,
    pub(crate) callback_secret: Option<Option<Vec<u8>>>,
    pub(crate) pressure_sources: PressureSources,
    pub(crate) result_store: Option<Arc<dyn ResultStore>>,
    pub(crate) rate_limit_store: Option<Arc<dyn RateLimitStore>>,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("profile", &self.config.profile)
            .field("custom_providers", &self.providers.len())
            .field("custom_job_store", &self.job_store.is_some())
            .field("pressure_sources", &self.pressure_sources)
            .field("custom_result_store", &self.result_store.is_some())
            .field("custom_rate_limit_store", &self.rate_limit_store.is_some())
            .finish()
    }
}

impl RuntimeBuilder {
    /// Serves the default model with this provider instead of the one its adapter names.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> RuntimeBuilder {
        self.providers.push((None, provider));
        self
    }

    /// Serves the model `id` (an id of `models`, or `model.id`) with this provider instead of
    /// the one its adapter names. [`RuntimeBuilder::build`] refuses an id that is not
    /// configured.
    pub fn provider_for(
        mut self,
        id: impl Into<String>,
        provider: Arc<dyn Provider>,
    ) -> RuntimeBuilder {
        self.providers.push((Some(id.into()), provider));
        self
    }

    /// Keeps job records in this store instead of the file store under
    /// `asyncQueue.storageDir` (only used when `asyncQueue.enabled` is true).
    pub fn job_store(mut self, store: Arc<dyn JobStore>) -> RuntimeBuilder {
        self.job_store = Some(store);
        self
    }

    /// Keeps results in this store instead of the in-memory cache `cache` describes (only
    /// used when `cache.enabled` is true).
    pub fn result_store(mut self, store: Arc<dyn ResultStore>) -> RuntimeBuilder {
        self.result_store = Some(store);
        self
    }

    /// Keeps the rate limiter's windows in this store instead of the in-memory key table
    /// `rateLimit` describes (only used when `rateLimit.enabled` is true).
    pub fn rate_limit_store(mut self, store: Arc<dyn RateLimitStore>) -> RuntimeBuilder {
        self.rate_limit_store = Some(store);
        self
    }

    /// Signs callbacks with this secret (`None`: unsigned) instead of the one in the variable
    /// named by `asyncQueue.callbackSigningSecretEnv`.
    pub fn callback_signing_secret(mut self, secret: Option<Vec<u8>>) -> RuntimeBuilder {
        self.callback_secret = Some(secret);
        self
    }

    /// Reads the pressure signals from `sources` instead of this machine's `/proc` and
    /// `/sys/fs/cgroup`: a fabricated directory in tests, or another view of the host.
    pub fn pressure_sources(mut self, sources: PressureSources) -> RuntimeBuilder {
        self.pressure_sources = sources;
        self
    }

    /// Builds the runtime. Needs no async context; call [`Runtime::start`] from one.
    ///
    /// With `asyncQueue.enabled`, this opens the job store and recovers it (records of
    /// interrupted attempts are rewritten, unusable entries set aside with a warning), so the
    /// queue is consistent before the first request arrives.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let config = self.config;
        let jobs = if config.async_queue.enabled {
            Some(Arc::new(open_jobs(
                &config,
                self.job_store,
                self.callback_secret,
            )?))
        } else {
            None
        };
        let default_id = config.default_model_id().to_string();
        let mut own: Vec<(String, Arc<dyn Provider>)> = Vec::new();
        for (id, provider) in self.providers {
            let id = id.unwrap_or_else(|| default_id.clone());
            if !config.model_entries().iter().any(|m| m.id == id) {
                return Err(RuntimeError::Provider {
                    kind: provider.kind().into(),
                    message: format!("no configured model has the id {id:?}"),
                });
            }
            own.retain(|(other, _)| *other != id);
            own.push((id, provider));
        }
        let mut entries = Vec::new();
        for model in config.model_entries() {
            entries.push(build_entry(&config, model, &own)?);
        }
        let managed = open_lifecycle(&config, &mut entries);
        let entries: Vec<Arc<ModelEntry>> = entries.into_iter().map(Arc::new).collect();
        let registry = Registry::new(entries, &default_id);
        let cache = config.cache.enabled.then(|| {
            let bounds = CacheBounds {
                max_entries: config.cache.max_entries as usize,
                max_bytes: config.cache.max_bytes,
                ttl: (config.cache.ttl_ms > 0).then(|| Duration::from_millis(config.cache.ttl_ms)),
            };
            Arc::new(MemoryResultStore::new(bounds)) as Arc<dyn ResultStore>
        });
        let cache = match self.result_store {
            Some(store) if config.cache.enabled => Some(store),
            _ => cache,
        };
        let rate_limiter = config.rate_limit.enabled.then(|| {
            let store = self
                .rate_limit_store
                .clone()
                .unwrap_or_else(|| Arc::new(MemoryRateLimitStore::new(&config.rate_limit)));
            Arc::new(RateLimiter::new(config.rate_limit.clone(), store))
        });
        let hooks = open_hooks(&config)?;
        if let Some(managed) = &managed {
            let sink = hooks.clone();
            managed
                .shell
                .on_transition(Arc::new(move |model, transition| {
                    let mut fields = serde_json::Map::new();
                    fields.insert("model".into(), model.into());
                    fields.insert("from".into(), transition.from.into());
                    fields.insert("to".into(), transition.to.into());
                    fields.insert("reason".into(), transition.reason.clone().into());
                    sink.emit("model_lifecycle_changed", fields);
                }));
        }
        if let Some(jobs) = &jobs {
            let sink = hooks.clone();
            jobs.set_hooks(Arc::new(move |kind, fields| sink.emit(kind, fields)));
        }
        Ok(Runtime {
            inner: Arc::new(Inner {
                pressure: PressureMonitor::new(
                    config.graceful_degradation.clone(),
                    self.pressure_sources,
                ),
                telemetry: config.telemetry.clone(),
                live: parking_lot::RwLock::new(Arc::new(Live {
                    config,
                    registry,
                    rate_limiter,
                })),
                reload_tasks: Arc::default(),
                reloading: tokio::sync::Mutex::new(()),
                own_providers: own,
                rate_limit_store: self.rate_limit_store,
                cache,
                metrics: RuntimeMetrics::default(),
                ids: IdSource::default(),
                started: Instant::now(),
                jobs,
                embeddings: EmbedMetrics::default(),
                hooks,
                managed,
                closing: std::sync::atomic::AtomicBool::new(false),
            }),
            pinned: None,
        })
    }
}

/// The registry entry of `model`: with the provider of your own given for its id, else the
/// one its adapter names.
pub(crate) fn build_entry(
    config: &ValidConfig,
    model: &ray_core::config::ModelConfig,
    own: &[(String, Arc<dyn Provider>)],
) -> Result<ModelEntry, RuntimeError> {
    let provider = match own.iter().find(|(id, _)| *id == model.id) {
        Some((_, provider)) => provider.clone(),
        None => ray_models::provider_for_model(config, model).map_err(|error| {
            RuntimeError::Provider {
                kind: model.adapter.kind().into(),
                message: format!("model {:?}: {error}", model.id),
            }
        })?,
    };
    Ok(ModelEntry::new(config, model, provider))
}

/// The lifecycle of the managed models (llama.cpp launch profiles with `supervise`) when the
/// config has a `lifecycle` section: each one's footprint (measured when a measurement is kept
/// in `stateDir`, else estimated), the budget, and a driver that starts their processes once
/// the shell starts. Marks each managed entry with its index.
fn open_lifecycle(config: &ValidConfig, entries: &mut [ModelEntry]) -> Option<Managed> {
    let lifecycle = config.lifecycle.as_ref()?;
    let (budget_mib, budget_source, fits) = crate::lifecycle::fit(config, Path::new("/"))?;
    if fits.is_empty() {
        return None;
    }
    let state_dir = PathBuf::from(&lifecycle.state_dir);
    let kept = MeasuredFootprints::open(&state_dir);
    let mut models = Vec::new();
    let mut processes = Vec::new();
    for fit in fits {
        let Some(entry) = entries.iter_mut().find(|e| e.id == fit.id) else {
            continue;
        };
        let Some((model, process)) = managed_model(lifecycle, entry, &fit, &kept) else {
            continue;
        };
        warn_unsized(&fit);
        entry.lifecycle = Some(models.len());
        // Its process is warmed by its own load (`/health` answers once the model is loaded);
        // a warm-up request at boot would load every managed model in turn.
        entry.health.set_warm(crate::model_health::WarmState::Idle);
        models.push(model);
        processes.push(process);
    }
    let core = Lifecycle::new(
        LifecycleSettings {
            budget_mib,
            drain_timeout: Duration::from_millis(lifecycle.drain_timeout_ms),
            swap_batch_requests: lifecycle.swap_batch_requests,
            swap_batch: Duration::from_millis(lifecycle.swap_batch_ms),
        },
        models,
        Instant::now(),
    );
    let driver = ProcessDriver::new(processes, Some(state_dir.clone()));
    let shell = LifecycleShell::new(core, driver.clone());
    driver.attach(shell.clone());
    Some(Managed {
        shell,
        driver,
        budget_source,
        state_dir,
    })
}

/// Warns when a managed model could not be sized (its model file cannot be read).
pub(crate) fn warn_unsized(fit: &crate::lifecycle::ModelFit) {
    if let Some(problem) = &fit.problem {
        tracing::warn!(
            model = %fit.id,
            problem = %problem,
            "cannot size a managed model: it counts as 0 MiB until its first load is measured"
        );
    }
}

/// How the lifecycle sees the managed model of `entry` (its fit: `fit`), and the process its
/// driver runs for it; `None` when the entry has no launch profile.
pub(crate) fn managed_model(
    lifecycle: &ray_core::config::LifecycleConfig,
    entry: &ModelEntry,
    fit: &crate::lifecycle::ModelFit,
    kept: &MeasuredFootprints,
) -> Option<(LifecycleModel, ManagedProcess)> {
    let launch = entry.config.adapter.launch_profile().cloned()?;
    let load_time = kept
        .get(&fit.id, &footprint_key(&launch))
        .map(|m| Duration::from_millis(m.load_ms));
    let model = LifecycleModel {
        id: fit.id.clone(),
        footprint_mib: fit.footprint_mib,
        resident: fit.resident,
        min_resident: Duration::from_millis(lifecycle.min_resident_ms(&entry.config)),
        idle_unload: lifecycle
            .idle_unload_ms(&entry.config)
            .map(Duration::from_millis),
        load_time,
    };
    let process = ManagedProcess {
        id: fit.id.clone(),
        api_key_env: entry
            .config
            .adapter
            .http()
            .and_then(|h| h.api_key_env.map(String::from)),
        launch,
    };
    Some((model, process))
}

/// Opens the job queue: its store, the callback secret, recovery.
fn open_jobs(
    config: &ValidConfig,
    store: Option<Arc<dyn JobStore>>,
    secret: Option<Option<Vec<u8>>>,
) -> Result<JobQueue, RuntimeError> {
    let queue_config = &config.async_queue;
    let store: Arc<dyn JobStore> = match store {
        Some(store) => store,
        None => Arc::new(
            FileJobStore::open(&queue_config.storage_dir, queue_config.max_record_bytes)
                .map_err(|e| RuntimeError::Jobs(e.to_string()))?,
        ),
    };
    let secret = match secret {
        Some(secret) => secret,
        None => signing_secret_from_env(&queue_config.callback_signing_secret_env)?,
    };
    if let Some(secret) = &secret
        && secret.len() < MIN_SIGNING_SECRET_BYTES
    {
        return Err(RuntimeError::Jobs(format!(
            "the callback signing secret must be at least {MIN_SIGNING_SECRET_BYTES} bytes, got {}",
            secret.len()
        )));
    }
    let callbacks =
        crate::jobs::CallbackClient::new(queue_config, secret, Arc::new(crate::jobs::SystemLookup))
            .map_err(RuntimeError::Jobs)?;
    JobQueue::open(queue_config, store, callbacks).map_err(|e| RuntimeError::Jobs(e.to_string()))
}

/// The event hooks of the config; URL hooks get a client with the callback rules and secret.
fn open_hooks(config: &ValidConfig) -> Result<crate::hooks::Hooks, RuntimeError> {
    let urls = if config.hooks.iter().any(|h| h.url.is_some()) {
        let queue_config = &config.async_queue;
        let secret = signing_secret_from_env(&queue_config.callback_signing_secret_env)?;
        Some(
            crate::jobs::CallbackClient::new(
                queue_config,
                secret,
                Arc::new(crate::jobs::SystemLookup),
            )
            .map_err(RuntimeError::Jobs)?,
        )
    } else {
        None
    };
    Ok(crate::hooks::Hooks::new(config.hooks.clone(), urls))
}

/// The shortest callback signing secret accepted.
const MIN_SIGNING_SECRET_BYTES: usize = ray_core::config::MIN_CALLBACK_SECRET_BYTES;

/// The secret in the variable `name`: unset or empty is `None` (callbacks go unsigned).
fn signing_secret_from_env(name: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
    let value = std::env::var_os(name);
    if let Some(problem) = ray_core::config::callback_secret_problem(name, value.as_deref()) {
        return Err(RuntimeError::Jobs(problem));
    }
    Ok(value
        .filter(|v| !v.is_empty())
        .and_then(|v| v.into_string().ok())
        .map(String::into_bytes))
}

impl Runtime {
    /// A runtime for a validated config, with the providers its adapters name.
    pub fn new(config: ValidConfig) -> Result<Runtime, RuntimeError> {
        Runtime::builder(config).build()
    }

    /// A builder, to plug in providers of your own.
    pub fn builder(config: ValidConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            providers: Vec::new(),
            job_store: None,
            callback_secret: None,
            pressure_sources: PressureSources::system(),
            result_store: None,
            rate_limit_store: None,
        }
    }
}
