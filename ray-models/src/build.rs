//! Building the provider a config's adapter names.

use std::sync::Arc;
use std::time::Duration;

use ray_core::config::{AdapterConfig, ModelConfig, RayConfig};

use crate::error::ProviderError;
use crate::http::BackendSettings;
use crate::llama::{LlamaCppProvider, LlamaCppSettings};
use crate::mock::MockProvider;
use crate::openai::{OpenAiProvider, OpenAiSettings};
use crate::provider::Provider;

/// The provider for `config.model.adapter`. The backend API key, when `apiKeyEnv` names a
/// variable, is read from the process environment now.
pub fn provider_from_config(config: &RayConfig) -> Result<Arc<dyn Provider>, ProviderError> {
    provider_for_model(config, &config.model)
}

/// The provider for one model's adapter (`model` is `config.model` or an entry of
/// `config.models`). The backend API key, when `apiKeyEnv` names a variable, is read from the
/// process environment now.
pub fn provider_for_model(
    config: &RayConfig,
    model: &ModelConfig,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let backend =
        |base_url: &str,
         timeout_ms: u64,
         api_key_env: Option<&str>,
         headers: Option<&std::collections::BTreeMap<String, String>>| BackendSettings {
            base_url: base_url.to_string(),
            timeout: Duration::from_millis(timeout_ms),
            headers: headers.cloned().unwrap_or_default(),
            api_key: api_key_env
                .and_then(|name| std::env::var(name).ok())
                .map(|key| key.trim().to_string())
                .filter(|key| !key.is_empty()),
        };
    match &model.adapter {
        AdapterConfig::Mock(mock) => Ok(Arc::new(MockProvider::new(
            model.id.clone(),
            config.profile.as_str(),
            mock.seed.clone(),
            Duration::from_millis(mock.latency_ms),
        ))),
        AdapterConfig::OpenAiCompatible(adapter) => {
            Ok(Arc::new(OpenAiProvider::new(OpenAiSettings {
                backend: backend(
                    &adapter.base_url,
                    adapter.timeout_ms,
                    adapter.api_key_env.as_deref(),
                    adapter.headers.as_ref(),
                ),
                model_ref: adapter.model_ref.clone(),
            })?))
        }
        AdapterConfig::LlamaCpp(adapter) => {
            Ok(Arc::new(LlamaCppProvider::new(LlamaCppSettings {
                backend: backend(
                    &adapter.base_url,
                    adapter.timeout_ms,
                    adapter.api_key_env.as_deref(),
                    adapter.headers.as_ref(),
                ),
                model_ref: adapter.model_ref.clone(),
                model_context_window: model.context_window,
                cache_prompt: adapter.cache_prompt.unwrap_or(true),
                slot_id: adapter.slot_id,
                slot_snapshot_timeout: Duration::from_millis(
                    adapter.slot_snapshot_timeout_ms.unwrap_or(250),
                ),
                slot_state_ttl: Duration::from_millis(adapter.slot_state_ttl_ms.unwrap_or(250)),
                scaffold_entries: adapter.prompt_scaffold_cache_entries.unwrap_or(128) as usize,
                recommended_format: config
                    .model
                    .operational
                    .as_ref()
                    .and_then(|o| o.recommended_prompt_format),
                launch_preset: adapter.launch_profile.as_ref().and_then(|l| {
                    serde_json::to_value(l.preset)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                }),
            })?))
        }
    }
}
