//! The embeddings route.

use ray_core::wire::embeddings::{EmbeddingsRequest, EmbeddingsResponse};

use super::RayClient;
use crate::error::Error;

impl RayClient {
    /// `POST /v1/embeddings` (OpenAI-compatible): one vector per input. With
    /// `encoding_format: base64` each vector arrives as base64 text;
    /// [`EmbeddingVector::to_f32`](ray_core::wire::embeddings::EmbeddingVector::to_f32) reads
    /// either form. A model without the capability answers an error whose code is
    /// `model_capability_unsupported`.
    pub async fn embeddings(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, Error> {
        self.post("/v1/embeddings", request).await
    }
}
