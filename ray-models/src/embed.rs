//! Embeddings from a backend's OpenAI-style `POST /v1/embeddings` (llama.cpp's `llama-server
//! --embeddings` serves it), shared by the llama.cpp and OpenAI-compatible adapters, and the
//! mock's vectors.

use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::http::{BackendClient, upstream_error};
use crate::provider::{EmbeddingOutput, EmbeddingRequest};

/// Most inputs sent to the backend in one call. A 4096-dimension vector is about 80 KB of JSON
/// numbers, so 8 of them stay well under the 1 MiB response cap; larger requests are sent as
/// several calls, one after the other.
pub(crate) const BACKEND_BATCH: usize = 8;

#[derive(Debug, Serialize)]
struct Body<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<Item>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

/// Embeds `request.inputs` through `POST /v1/embeddings`, in batches of [`BACKEND_BATCH`].
pub(crate) async fn http_embed(
    client: &BackendClient,
    model_ref: &str,
    request: &EmbeddingRequest,
) -> Result<EmbeddingOutput, ProviderError> {
    let mut output = EmbeddingOutput {
        vectors: Vec::with_capacity(request.inputs.len()),
        prompt_tokens: Some(0),
    };
    for batch in request.inputs.chunks(BACKEND_BATCH) {
        let body = Body {
            model: model_ref,
            input: batch,
            encoding_format: "float",
        };
        let response = client
            .post("/v1/embeddings", &body, client.timeout())
            .await?;
        if !(200..300).contains(&response.status) {
            return Err(unsupported(response.status, &response.body)
                .unwrap_or_else(|| upstream_error(&response)));
        }
        let answer: Answer = response.json()?;
        let vectors = in_order(answer.data, batch.len())?;
        if let Some(first) = output.vectors.first()
            && vectors[0].len() != first.len()
        {
            return Err(invalid("the vectors of two batches differ in dimension"));
        }
        output.vectors.extend(vectors);
        output.prompt_tokens = match (output.prompt_tokens, answer.usage) {
            (
                Some(sum),
                Some(Usage {
                    prompt_tokens: Some(tokens),
                }),
            ) => Some(sum + tokens),
            _ => None,
        };
    }
    Ok(output)
}

fn invalid(reason: &str) -> ProviderError {
    ProviderError::InvalidResponse {
        reason: reason.to_string(),
    }
}

/// The vectors by `index`, checked: one per input, one dimension, finite numbers.
fn in_order(items: Vec<Item>, expected: usize) -> Result<Vec<Vec<f32>>, ProviderError> {
    if items.len() != expected {
        return Err(ProviderError::InvalidResponse {
            reason: format!(
                "the backend sent {} vectors for {expected} inputs",
                items.len()
            ),
        });
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in items {
        let slot = vectors
            .get_mut(item.index)
            .ok_or_else(|| invalid("a vector's index is out of range"))?;
        if slot.is_some() {
            return Err(invalid("two vectors have the same index"));
        }
        *slot = Some(item.embedding);
    }
    let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
    let dimension = vectors.first().map_or(0, Vec::len);
    if dimension == 0 {
        return Err(invalid("the backend sent an empty vector"));
    }
    if vectors.iter().any(|v| v.len() != dimension) {
        return Err(invalid("the backend's vectors differ in dimension"));
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(invalid(
            "a vector holds a value that is not a finite number",
        ));
    }
    Ok(vectors)
}

/// A backend's way of saying it does not serve embeddings: llama.cpp answers 501
/// `not_supported_error` without `--embeddings`, and 400 when its pooling type is `none`.
fn unsupported(status: u16, body: &[u8]) -> Option<ProviderError> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value["error"]["message"].as_str().unwrap_or_default();
    if status == 501 || value["error"]["type"] == "not_supported_error" {
        return Some(ProviderError::CapabilityMissing {
            capability: "embeddings",
            reason: format!(
                "the backend answered HTTP {status} ({message}); start llama-server with --embeddings"
            ),
        });
    }
    if status == 400 && message.contains("Pooling type 'none'") {
        return Some(ProviderError::CapabilityMissing {
            capability: "embeddings",
            reason: format!(
                "the backend answered HTTP 400 ({message}); start llama-server with --pooling mean (or cls, last)"
            ),
        });
    }
    None
}

/// Dimension of the mock's vectors.
pub(crate) const MOCK_DIMENSION: usize = 32;

/// A deterministic unit vector for `text`: FNV-1a of the text seeds a SplitMix64 sequence,
/// whose values in [-1, 1) are normalised to length 1.
pub(crate) fn mock_vector(text: &str) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut values: Vec<f64> = (0..MOCK_DIMENSION)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    for value in &mut values {
        *value /= norm;
    }
    values.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_vectors_are_deterministic_unit_vectors() {
        let a = mock_vector("a queue");
        assert_eq!(a, mock_vector("a queue"));
        assert_ne!(a, mock_vector("a permit"));
        assert_eq!(a.len(), MOCK_DIMENSION);
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn backend_answers_are_checked() {
        let item = |index, embedding: Vec<f32>| Item { index, embedding };
        let ordered = in_order(vec![item(1, vec![2.0]), item(0, vec![1.0])], 2).unwrap();
        assert_eq!(ordered, [vec![1.0], vec![2.0]]);
        assert!(in_order(vec![item(0, vec![1.0])], 2).is_err());
        assert!(in_order(vec![item(0, vec![1.0]), item(0, vec![1.0])], 2).is_err());
        assert!(in_order(vec![item(0, vec![1.0]), item(1, vec![1.0, 2.0])], 2).is_err());
        assert!(in_order(vec![item(0, vec![])], 1).is_err());
        assert!(in_order(vec![item(5, vec![1.0])], 1).is_err());
    }

    #[test]
    fn llama_cpp_without_embeddings_is_unsupported() {
        let sample =
            include_str!("../../tools/llama-fixture/samples/error_embeddings_disabled.txt");
        let body = sample.split("\n--- HTTP").next().unwrap();
        let error = unsupported(501, body.as_bytes()).unwrap();
        assert_eq!(
            error.code(),
            ray_core::ErrorCode::ModelCapabilityUnsupported
        );
        assert!(error.to_string().contains("--embeddings"), "{error}");
        let pooling = br#"{"error":{"code":400,"message":"Pooling type 'none' is not OAI compatible. Please use a different pooling type","type":"invalid_request_error"}}"#;
        assert!(
            unsupported(400, pooling)
                .unwrap()
                .to_string()
                .contains("--pooling")
        );
        assert!(
            unsupported(
                400,
                br#"{"error":{"message":"Input content cannot be empty"}}"#
            )
            .is_none()
        );
    }
}
