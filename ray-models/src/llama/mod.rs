//! The llama.cpp backend: everything the OpenAI-compatible adapter does, plus the native
//! endpoints: capability detection from `/props`, exact token counts from `/tokenize`, the
//! model's own chat template through `/apply-template`, `/completion` with `cache_prompt` and
//! `id_slot`, health from `/health`, `/slots` and `/metrics`.

mod caps;
mod format;
mod generate;
mod health;
mod native;
mod prompt;

use std::collections::hash_map::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use ray_cache::{Cache, CacheBounds};
use ray_core::config::PromptFormatPreference;
use ray_core::wire::DetectedCapabilities;

use self::caps::Caps;
use self::format::ChatShape;
use self::native::{BackendMetrics, Slot};
use self::prompt::Scaffold;
use crate::error::ProviderError;
use crate::http::{BackendClient, BackendSettings};
use crate::provider::{
    EmbeddingOutput, EmbeddingRequest, PreparedPrompt, Provider, ProviderHealthReport,
    ProviderOutput, ProviderRequest, TokenStream,
};
use crate::upstream::CallTimeout;
pub(crate) use generate::is_json_object;

/// How long detected capabilities are reused.
pub const CAPABILITY_TTL: Duration = Duration::from_secs(60);
/// Prepared prompts remembered (with their token counts).
const PREPARED_ENTRIES: usize = 256;
/// Bytes of prepared prompts remembered at most.
const PREPARED_BYTES: u64 = 2 * 1024 * 1024;

/// Settings of a [`LlamaCppProvider`].
#[derive(Debug, Clone)]
pub struct LlamaCppSettings {
    /// How to reach `llama-server`.
    pub backend: BackendSettings,
    /// The model name sent on chat requests.
    pub model_ref: String,
    /// `model.contextWindow`: the detected window is capped at it.
    pub model_context_window: u32,
    /// Ask llama.cpp to reuse the slot's prompt cache.
    pub cache_prompt: bool,
    /// Pin every request to this slot.
    pub slot_id: Option<u32>,
    /// Timeout of a `/slots` snapshot.
    pub slot_snapshot_timeout: Duration,
    /// How long a `/slots` snapshot is reused.
    pub slot_state_ttl: Duration,
    /// Template scaffolds remembered.
    pub scaffold_entries: usize,
    /// The operator's preferred prompt format (`model.operational.recommendedPromptFormat`).
    pub recommended_format: Option<PromptFormatPreference>,
    /// The launch preset, for diagnostics.
    pub launch_preset: Option<String>,
}

#[derive(Debug)]
struct Prepared {
    text: Arc<str>,
    tokens: Option<u32>,
}

/// A `llama-server` backend.
pub struct LlamaCppProvider {
    client: BackendClient,
    settings: LlamaCppSettings,
    caps: Mutex<Option<(Instant, Caps)>>,
    caps_refresh: tokio::sync::Mutex<()>,
    prepared: Mutex<Cache<u128, Arc<Prepared>>>,
    scaffolds: Mutex<Cache<String, Arc<Scaffold>>>,
    /// Scaffolds of the model's chat template for plain requests, by whether the request has
    /// a system prompt.
    chat_scaffolds: Mutex<[ChatShape; 2]>,
    slots: Mutex<Option<(Instant, Vec<Slot>)>>,
    metrics: Mutex<BackendMetrics>,
    reachable: AtomicBool,
    /// The context window the backend last reported (0: never): kept while it does not
    /// answer, so the window does not move to a configured guess during an outage.
    last_window: AtomicU32,
    hash_keys: (RandomState, RandomState),
}

impl std::fmt::Debug for LlamaCppProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCppProvider")
            .field("base_url", &self.client.url(""))
            .field("model_ref", &self.settings.model_ref)
            .finish()
    }
}

impl LlamaCppProvider {
    /// A provider for one `llama-server`.
    pub fn new(settings: LlamaCppSettings) -> Result<LlamaCppProvider, ProviderError> {
        let prepared = Cache::<u128, Arc<Prepared>>::new(
            CacheBounds {
                max_entries: PREPARED_ENTRIES,
                max_bytes: PREPARED_BYTES,
                ttl: Some(Duration::from_secs(3600)),
            },
            |_key, value| 48 + value.text.len() as u64,
        );
        let scaffolds = Cache::<String, Arc<Scaffold>>::new(
            CacheBounds {
                max_entries: settings.scaffold_entries.max(1),
                max_bytes: 4 * 1024 * 1024,
                ttl: Some(Duration::from_secs(24 * 3600)),
            },
            |key, _value| 256 + key.len() as u64,
        );
        Ok(LlamaCppProvider {
            client: BackendClient::new(settings.backend.clone())?,
            settings,
            caps: Mutex::new(None),
            last_window: AtomicU32::new(0),
            caps_refresh: tokio::sync::Mutex::new(()),
            prepared: Mutex::new(prepared),
            scaffolds: Mutex::new(scaffolds),
            chat_scaffolds: Mutex::new([ChatShape::Unknown, ChatShape::Unknown]),
            slots: Mutex::new(None),
            metrics: Mutex::new(BackendMetrics::default()),
            reachable: AtomicBool::new(false),
            hash_keys: (RandomState::new(), RandomState::new()),
        })
    }

    fn short_timeout(&self, cap: Duration) -> Duration {
        self.client.timeout().min(cap)
    }
}

#[async_trait]
impl Provider for LlamaCppProvider {
    fn kind(&self) -> &'static str {
        "llama.cpp"
    }

    fn prepares_with_backend(&self) -> bool {
        true
    }

    async fn prepare(
        &self,
        request: &ProviderRequest,
    ) -> Result<Option<PreparedPrompt>, ProviderError> {
        self.prepare_prompt(request).await
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        self.generate(request).await
    }

    /// Streams the answer. `adapter.timeoutMs` bounds each wait for the backend here (the
    /// first byte, then each next piece), not the whole stream; JSON mode is not repaired,
    /// since its text has already gone out.
    async fn stream(&self, request: &ProviderRequest) -> Result<TokenStream, ProviderError> {
        let timeout = CallTimeout::EachWait(self.client.timeout());
        Ok(self.start(request, timeout).await?.stream)
    }

    async fn health(&self) -> ProviderHealthReport {
        self.probe().await
    }

    fn has_health_probe(&self) -> bool {
        true
    }

    async fn warm_up(&self) -> Result<(), ProviderError> {
        self.warm().await
    }

    fn capabilities(&self) -> Option<DetectedCapabilities> {
        Some(self.to_capabilities(&self.known_caps()))
    }

    fn context_window(&self) -> Option<u32> {
        // Not answering now: what it said last, until it says otherwise.
        self.window(&self.known_caps())
            .or_else(|| Some(self.last_window.load(Ordering::Relaxed)).filter(|w| *w > 0))
    }

    fn backend_replaced(&self, base_url: Option<&str>) {
        if let Some(base_url) = base_url {
            self.client.set_base_url(base_url);
        }
        // Another process: what the old one said no longer holds.
        self.last_window.store(0, Ordering::Relaxed);
        *self.caps.lock() = None;
        self.forget_chat_scaffolds();
        self.prepared.lock().clear();
    }

    fn supports_embeddings(&self) -> bool {
        true
    }

    /// `POST /v1/embeddings`, served by `llama-server --embeddings --pooling mean|cls|last`;
    /// without those flags the backend's refusal becomes `model_capability_unsupported`
    /// naming the flag to add.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingOutput, ProviderError> {
        crate::embed::http_embed(&self.client, &self.settings.model_ref, request).await
    }
}
