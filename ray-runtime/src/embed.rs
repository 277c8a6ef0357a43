//! `Runtime::embed`: the embeddings path. Validate, check the model's capability, refuse under
//! critical memory pressure or while the backend is down, answer each input from the result
//! cache when it can, admit the rest through the model's scheduler (cost: their estimated
//! tokens) within the request deadline, call the provider once under the permit, store every
//! vector in the cache, and count it all in the `ray_embeddings_*` metrics.
//!
//! The entry point takes the model entry to use ([`Runtime::embed_on`]), so a router can send
//! the request to the model with the `embedding` role; [`Runtime::embed`] uses the default
//! model.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ray_core::wire::embeddings::{
    Embedding, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
};
use ray_core::wire::{CountTriple, Lane, ProviderDiagnostics};
use ray_core::{ErrorCode, RayError};
use ray_models::EmbeddingRequest;
use ray_scheduler::JobSpec;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::degrade::memory_critical;
use crate::outcome::CachedResult;
use crate::registry::ModelEntry;
use crate::respond::provider_failure;
use crate::runtime::Runtime;
use crate::telemetry::inc;

impl Runtime {
    /// Computes one vector per input, in OpenAI's embeddings shape, with the model the request
    /// names (id, alias or `modelRef`), else the one the routing rules choose for the
    /// `embeddings` route, else the first model with the `embedding` role, else the default.
    ///
    /// Each input is answered from the result cache when it can be (the key is the model id
    /// and the text); the others are admitted through the model's scheduler as one job whose
    /// cost is their estimated tokens (chars / 4), within `scheduler.requestTimeoutMs`. A model
    /// whose provider computes no embeddings answers `400 model_capability_unsupported`.
    /// Dropping the future releases the queue place, the permit and the backend call.
    pub async fn embed(&self, request: EmbeddingsRequest) -> Result<EmbeddingsResponse, RayError> {
        self.embed_in(request, &crate::context::RequestContext::default())
            .await
    }

    /// [`Runtime::embed`] for a request that arrived with `context` (the API key, for the
    /// routing rules).
    pub async fn embed_in(
        &self,
        request: EmbeddingsRequest,
        context: &crate::context::RequestContext,
    ) -> Result<EmbeddingsResponse, RayError> {
        let facts = crate::routing::RouteFacts {
            route: Some(ray_core::config::RouteKind::Embeddings),
            model: request.model.clone(),
            api_key_id: context.api_key_id.clone(),
            task: context.task.clone(),
            ..crate::routing::RouteFacts::default()
        };
        let live = self.live();
        let choice = crate::routing::choose(&live.config.routing.rules, &live.registry, &facts);
        let model = match choice {
            Ok(choice) => live.registry.at(choice.model).clone(),
            Err(error) => {
                inc(&self.inner.embeddings.requests);
                self.inner.embeddings.errors.add(error.code());
                return Err(error);
            }
        };
        self.embed_on(&model, request).await
    }

    /// [`Runtime::embed`] on a given model entry (the one a router chose).
    pub(crate) async fn embed_on(
        &self,
        model: &Arc<ModelEntry>,
        request: EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, RayError> {
        let started = Instant::now();
        let this = self.pinned();
        let metrics = &this.inner.embeddings;
        inc(&metrics.requests);
        let request_id = this.inner.ids.next("req_");
        let result = this.embed_run(model, &request_id, request, started).await;
        metrics.duration.observe(started.elapsed());
        match &result {
            Ok(_) => inc(&metrics.succeeded),
            Err(error) => {
                metrics.errors.add(error.code());
                if error.code().is_rejection() {
                    tracing::warn!(request_id = %request_id, code = %error.code(), error = error.message(), "embeddings rejected");
                } else {
                    tracing::error!(request_id = %request_id, code = %error.code(), error = error.message(), "embeddings failed");
                }
            }
        }
        result
    }

    async fn embed_run(
        &self,
        model: &Arc<ModelEntry>,
        request_id: &str,
        request: EmbeddingsRequest,
        started: Instant,
    ) -> Result<EmbeddingsResponse, RayError> {
        let inner = &self.inner;
        let live = self.live();
        let config = &live.config;
        let metrics = &inner.embeddings;
        let valid = request.validate()?;
        if !model.provider.supports_embeddings() {
            return Err(capability_unsupported(
                &model.id,
                &format!(
                    "its {} provider does not compute embeddings",
                    model.provider.kind()
                ),
            ));
        }
        metrics
            .inputs
            .fetch_add(valid.inputs.len() as u64, Ordering::Relaxed);

        // The cache first: a hit costs nothing, even under pressure or with the backend down.
        let keys: Vec<u128> = valid
            .inputs
            .iter()
            .map(|text| cache_key(&model.id, text))
            .collect();
        let mut found: Vec<Option<(Arc<[f32]>, u64)>> = vec![None; keys.len()];
        if let Some(cache) = &inner.cache {
            cache.get_each(&keys, &mut |index, hit| {
                found[index] = hit.and_then(|hit| {
                    let tokens = hit.tokens.map_or(0, |t| t.prompt);
                    hit.embedding.clone().map(|vector| (vector, tokens))
                });
            });
        }
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        metrics.cache_hits.fetch_add(hits, Ordering::Relaxed);
        if inner.cache.is_some() {
            metrics
                .cache_misses
                .fetch_add(keys.len() as u64 - hits, Ordering::Relaxed);
        }

        // The texts to compute, each once even when the request repeats it.
        let mut missing: Vec<&str> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for (text, slot) in valid.inputs.iter().zip(&found) {
            if slot.is_none() && !position.contains_key(text.as_str()) {
                position.insert(text, missing.len());
                missing.push(text);
            }
        }
        if !missing.is_empty() {
            let pressure = self.pressure_snapshot(model);
            if inner.pressure.refuses(&pressure.signals) {
                inc(&inner.metrics.memory_critical_refusals);
                return Err(memory_critical(config, &pressure.signals.memory));
            }
            if let Some(refusal) = model.refusal(tokio::time::Instant::now()) {
                return Err(refusal);
            }
            let computed = self
                .embed_missing(model, request_id, &missing, started)
                .await?;
            let mut fresh = Vec::new();
            for (slot, (text, key)) in found.iter_mut().zip(valid.inputs.iter().zip(&keys)) {
                if slot.is_some() {
                    continue;
                }
                let (vector, tokens) = computed[position[text.as_str()]].clone();
                if inner.cache.is_some() {
                    fresh.push((*key, Arc::new(cached(&vector, tokens))));
                }
                *slot = Some((vector, tokens));
            }
            if let Some(cache) = &inner.cache {
                cache.insert(&mut fresh.into_iter());
            }
        }

        let mut prompt_tokens = 0;
        let data = found
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(index, (vector, tokens))| {
                prompt_tokens += tokens;
                Embedding {
                    object: "embedding".into(),
                    index: index as u32,
                    embedding: EmbeddingVector::encode(&vector, valid.encoding),
                }
            })
            .collect();
        Ok(EmbeddingsResponse {
            object: "list".into(),
            data,
            model: model.id.clone(),
            usage: EmbeddingsUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        })
    }

    /// Admits one job for `texts` and runs the provider under its permit; each vector comes
    /// back with its share of the backend's token count.
    async fn embed_missing(
        &self,
        model: &Arc<ModelEntry>,
        request_id: &str,
        texts: &[&str],
        started: Instant,
    ) -> Result<Vec<(Arc<[f32]>, u64)>, RayError> {
        let inner = &self.inner;
        let metrics = &inner.embeddings;
        let estimates: Vec<u64> = texts
            .iter()
            .map(|text| (text.chars().count() as u64).div_ceil(4).max(1))
            .collect();
        let cost = u32::try_from(estimates.iter().sum::<u64>()).unwrap_or(u32::MAX);
        model.scheduler.check_budget(cost)?;
        let spec = JobSpec::new(cost, Lane::Short, None);
        let deadline =
            started + Duration::from_millis(self.live().config.scheduler.request_timeout_ms);
        let provider_request = EmbeddingRequest {
            request_id: request_id.to_string(),
            inputs: texts.iter().map(|t| (*t).to_string()).collect(),
        };
        let execute = async {
            let _lease = self.lease(model, deadline).await?;
            let permit = model.scheduler.admit(spec, deadline).await?;
            metrics.queue_wait.observe(permit.waited());
            inc(&metrics.provider_calls);
            let result = model.provider.embed(&provider_request).await;
            drop(permit);
            result.map_err(|error| match provider_failure(self, model, error) {
                error if error.code() == ErrorCode::ModelCapabilityUnsupported => {
                    capability_unsupported(&model.id, error.message())
                }
                error => error,
            })
        };
        let output = match tokio::time::timeout_at(deadline, execute).await {
            Ok(output) => output?,
            Err(_elapsed) => return Err(self.request_timeout()),
        };
        if output.vectors.len() != texts.len() {
            return Err(RayError::new(
                ErrorCode::ProviderInvalidResponse,
                format!(
                    "The provider returned {} vectors for {} inputs",
                    output.vectors.len(),
                    texts.len()
                ),
            ));
        }
        let shares = apportion(output.prompt_tokens, &estimates);
        metrics
            .prompt_tokens
            .fetch_add(shares.iter().sum(), Ordering::Relaxed);
        Ok(output
            .vectors
            .into_iter()
            .map(Arc::from)
            .zip(shares)
            .collect())
    }
}

/// `400 model_capability_unsupported` for embeddings, naming the model.
fn capability_unsupported(model_id: &str, why: &str) -> RayError {
    RayError::new(
        ErrorCode::ModelCapabilityUnsupported,
        format!("The model {model_id:?} cannot compute embeddings: {why}"),
    )
    .with_details(serde_json::json!({
        "param": "model", "model": model_id, "capability": "embeddings",
    }))
}

/// The result-cache key of one text's vector: a domain tag, the model id and the text, so it
/// never meets a generation's key.
fn cache_key(model_id: &str, text: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(b"ray-embeddings\0");
    hasher.update(model_id.as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

fn cached(vector: &Arc<[f32]>, tokens: u64) -> CachedResult {
    CachedResult {
        output: String::new(),
        finish_reason: None,
        tokens: Some(CountTriple::new(tokens, 0)),
        degraded: false,
        provider: ProviderDiagnostics::default(),
        weight: 4 * vector.len() as u64 + 64,
        embedding: Some(vector.clone()),
    }
}

/// Splits the backend's token count over the inputs in proportion to their estimates, so a
/// cached vector keeps its own share and a request's shares add up to the backend's count.
/// Without a count, each input is charged its estimate.
fn apportion(total: Option<u64>, estimates: &[u64]) -> Vec<u64> {
    let Some(total) = total else {
        return estimates.to_vec();
    };
    let sum: u64 = estimates.iter().sum::<u64>().max(1);
    let mut shares: Vec<u64> = estimates.iter().map(|e| total * e / sum).collect();
    let given: u64 = shares.iter().sum();
    if let Some(last) = shares.last_mut() {
        *last += total - given;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_backend_count() {
        assert_eq!(apportion(Some(10), &[1, 1, 2]), [2, 2, 6]);
        assert_eq!(apportion(Some(7), &[3, 4]), [3, 4]);
        assert_eq!(apportion(None, &[3, 4]), [3, 4]);
        assert_eq!(apportion(Some(0), &[3]), [0]);
    }

    #[test]
    fn keys_differ_by_model_and_text() {
        assert_eq!(cache_key("m", "a"), cache_key("m", "a"));
        assert_ne!(cache_key("m", "a"), cache_key("n", "a"));
        assert_ne!(cache_key("m", "ab"), cache_key("ma", "b"));
    }
}
