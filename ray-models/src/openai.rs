//! The OpenAI-compatible backend: `/v1/chat/completions`, health from `/v1/models` (falling
//! back to `/health`), and the chat wire types shared with the llama.cpp adapter.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use ray_core::wire::{Availability, DetectedCapabilities, ProviderDiagnostics, ProviderStatus};
use serde::Deserialize;

use crate::error::ProviderError;
use crate::http::{BackendClient, BackendSettings};
use crate::provider::{
    EmbeddingOutput, EmbeddingRequest, Provider, ProviderHealthReport, ProviderOutput,
    ProviderRequest, TokenStream,
};
use crate::upstream::{self, CallTimeout};

mod stream;
mod wire;

pub(crate) use stream::{check_schema, open_chat};
pub(crate) use wire::{ChatMessage, LlamaTimings, chat_request, finish_reason, messages_of};

/// Settings of an [`OpenAiProvider`].
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// How to reach the backend.
    pub backend: BackendSettings,
    /// The model name sent in requests.
    pub model_ref: String,
}

/// A backend speaking the OpenAI chat completions API.
#[derive(Debug)]
pub struct OpenAiProvider {
    client: BackendClient,
    model_ref: String,
}

impl OpenAiProvider {
    /// A provider for one backend.
    pub fn new(settings: OpenAiSettings) -> Result<OpenAiProvider, ProviderError> {
        Ok(OpenAiProvider {
            client: BackendClient::new(settings.backend)?,
            model_ref: settings.model_ref,
        })
    }

    fn diagnostics(&self) -> ProviderDiagnostics {
        ProviderDiagnostics {
            request_shape: "openai-chat".into(),
            model_ref: Some(self.model_ref.clone()),
            ..ProviderDiagnostics::default()
        }
    }
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    id: String,
}

/// Health from `GET /v1/models` (the model must be listed when there is a list), falling back
/// to `GET /health`.
pub(crate) async fn openai_health(client: &BackendClient, model_ref: &str) -> ProviderHealthReport {
    let started = Instant::now();
    let timeout = client.timeout().min(Duration::from_secs(5));
    let mut details = serde_json::Map::new();
    match client.get("/v1/models", timeout).await {
        Ok(response) if (200..300).contains(&response.status) => {
            if let Ok(list) = response.json::<ModelList>()
                && !list.data.is_empty()
            {
                let ids: Vec<&str> = list.data.iter().map(|m| m.id.as_str()).collect();
                let status = if ids.contains(&model_ref) {
                    ProviderStatus::Ready
                } else {
                    details.insert(
                        "error".into(),
                        format!("the backend does not serve model {model_ref:?}").into(),
                    );
                    details.insert(
                        "availableModels".into(),
                        ids.iter().take(10).copied().collect::<Vec<_>>().into(),
                    );
                    ProviderStatus::Unavailable
                };
                return ProviderHealthReport {
                    status,
                    latency: Some(started.elapsed()),
                    capabilities: None,
                    details: Some(details.into()),
                };
            }
        }
        Ok(response) => {
            details.insert("modelsStatus".into(), response.status.into());
        }
        Err(error) => {
            details.insert("modelsError".into(), error.to_string().into());
        }
    }
    let status = match client.get("/health", timeout).await {
        Ok(response) if (200..300).contains(&response.status) => ProviderStatus::Ready,
        Ok(response) => {
            details.insert("healthStatus".into(), response.status.into());
            ProviderStatus::Unavailable
        }
        Err(error) => {
            details.insert("healthError".into(), error.to_string().into());
            ProviderStatus::Unavailable
        }
    };
    ProviderHealthReport {
        status,
        latency: Some(started.elapsed()),
        capabilities: None,
        details: Some(details.into()),
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        "openai-compatible"
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        let body = chat_request(&self.model_ref, request);
        let timeout = CallTimeout::Whole(self.client.timeout());
        let stream = open_chat(&self.client, &body, self.diagnostics(), timeout).await?;
        upstream::collect(check_schema(stream, request)).await
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<TokenStream, ProviderError> {
        let body = chat_request(&self.model_ref, request);
        let timeout = CallTimeout::EachWait(self.client.timeout());
        let stream = open_chat(&self.client, &body, self.diagnostics(), timeout).await?;
        Ok(check_schema(stream, request))
    }

    async fn health(&self) -> ProviderHealthReport {
        let mut report = openai_health(&self.client, &self.model_ref).await;
        report.capabilities = self.capabilities();
        report
    }

    fn has_health_probe(&self) -> bool {
        true
    }

    fn supports_embeddings(&self) -> bool {
        true
    }

    /// `POST /v1/embeddings` with `modelRef`; a backend that does not serve it answers
    /// `model_capability_unsupported` (501) or its own error.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingOutput, ProviderError> {
        crate::embed::http_embed(&self.client, &self.model_ref, request).await
    }

    fn capabilities(&self) -> Option<DetectedCapabilities> {
        Some(DetectedCapabilities {
            model_ref: Some(self.model_ref.clone()),
            json_mode: Availability::Unknown,
            streaming: Availability::Available,
            ..DetectedCapabilities::default()
        })
    }
}
