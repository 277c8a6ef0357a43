//! `POST /v1/embeddings` in OpenAI's shape: the request, its validation with the limits named,
//! the response, and the base64 form of a vector (little-endian `f32` bytes, standard alphabet,
//! as OpenAI sends it).
//!
//! ```
//! use ray_core::wire::embeddings::{EmbeddingsRequest, EncodingFormat};
//!
//! let request: EmbeddingsRequest = serde_json::from_str(
//!     r#"{"model": "bge-small", "input": ["a queue", "a permit"], "encoding_format": "base64"}"#,
//! )?;
//! let valid = request.validate()?;
//! assert_eq!(valid.inputs, ["a queue", "a permit"]);
//! assert_eq!(valid.encoding, EncodingFormat::Base64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, RayError};

/// Most inputs in one request.
pub const MAX_EMBEDDING_INPUTS: usize = 32;
/// Most characters (Unicode scalar values) in one input.
pub const MAX_EMBEDDING_INPUT_CHARS: usize = 8_192;

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// The model; must be one this gateway serves when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A string, or an array of 1 to [`MAX_EMBEDDING_INPUTS`] strings. Arrays of token ids are
    /// refused with `unsupported_parameter`.
    #[serde(default)]
    pub input: Value,
    /// `float` (the default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Not supported: the model's own dimension is always returned (`null` is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field; any is refused with `unsupported_parameter`.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// How the vectors of a response are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// A base64 string of the little-endian `f32` bytes.
    Base64,
}

/// A request that passed [`EmbeddingsRequest::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEmbeddings {
    /// The texts, in request order; each non-empty and at most [`MAX_EMBEDDING_INPUT_CHARS`].
    pub inputs: Vec<String>,
    /// The encoding of the answer.
    pub encoding: EncodingFormat,
}

fn invalid(param: &str, message: String) -> RayError {
    RayError::invalid_request(format!("{param}: {message}"))
        .with_details(serde_json::json!({ "param": param }))
}

fn unsupported(param: &str, why: &str) -> RayError {
    RayError::new(ErrorCode::UnsupportedParameter, format!("{param}: {why}"))
        .with_details(serde_json::json!({ "param": param }))
}

fn check_text(param: &str, text: &str) -> Result<(), RayError> {
    if text.is_empty() {
        return Err(invalid(param, "must not be empty".into()));
    }
    let chars = text.chars().count();
    if chars > MAX_EMBEDDING_INPUT_CHARS {
        return Err(invalid(
            param,
            format!("is {chars} characters long; at most {MAX_EMBEDDING_INPUT_CHARS} are allowed"),
        )
        .with_details(serde_json::json!({
            "param": param, "chars": chars, "maxChars": MAX_EMBEDDING_INPUT_CHARS,
        })));
    }
    Ok(())
}

impl EmbeddingsRequest {
    /// A request for one text.
    pub fn one(text: impl Into<String>) -> EmbeddingsRequest {
        EmbeddingsRequest {
            input: Value::String(text.into()),
            ..EmbeddingsRequest::default()
        }
    }

    /// A request for several texts.
    pub fn many<S: Into<String>>(texts: impl IntoIterator<Item = S>) -> EmbeddingsRequest {
        EmbeddingsRequest {
            input: Value::Array(texts.into_iter().map(|t| Value::String(t.into())).collect()),
            ..EmbeddingsRequest::default()
        }
    }

    /// The same request with another encoding (`"float"` or `"base64"`).
    pub fn with_encoding(mut self, encoding: EncodingFormat) -> EmbeddingsRequest {
        self.encoding_format = Some(
            match encoding {
                EncodingFormat::Float => "float",
                EncodingFormat::Base64 => "base64",
            }
            .into(),
        );
        self
    }

    /// Checks every field and the limits, naming the field at fault.
    pub fn validate(&self) -> Result<ValidEmbeddings, RayError> {
        if let Some(name) = self.other.keys().next() {
            return Err(unsupported(
                name,
                "this parameter is not supported on /v1/embeddings",
            ));
        }
        if self.dimensions.as_ref().is_some_and(|d| !d.is_null()) {
            return Err(unsupported(
                "dimensions",
                "the model's own dimension is always returned; shortening vectors is not supported",
            ));
        }
        let encoding = match self.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(invalid(
                    "encoding_format",
                    format!("must be float or base64, got {other:?}"),
                ));
            }
        };
        let inputs = match &self.input {
            Value::Null => return Err(invalid("input", "is required".into())),
            Value::String(text) => {
                check_text("input", text)?;
                vec![text.clone()]
            }
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(invalid("input", "must not be an empty array".into()));
                }
                if items.len() > MAX_EMBEDDING_INPUTS {
                    return Err(invalid(
                        "input",
                        format!(
                            "has {} items; at most {MAX_EMBEDDING_INPUTS} are allowed per request",
                            items.len()
                        ),
                    )
                    .with_details(serde_json::json!({
                        "param": "input", "inputs": items.len(), "maxInputs": MAX_EMBEDDING_INPUTS,
                    })));
                }
                let mut inputs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let param = format!("input[{i}]");
                    match item {
                        Value::String(text) => {
                            check_text(&param, text)?;
                            inputs.push(text.clone());
                        }
                        Value::Number(_) | Value::Array(_) => {
                            return Err(unsupported(
                                &param,
                                "token ids are not supported; send the text",
                            ));
                        }
                        _ => return Err(invalid(&param, "must be a string".into())),
                    }
                }
                inputs
            }
            _ => {
                return Err(invalid(
                    "input",
                    "must be a string or an array of strings".into(),
                ));
            }
        };
        Ok(ValidEmbeddings { inputs, encoding })
    }
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// Always `"list"`.
    pub object: String,
    /// One vector per input, in request order.
    pub data: Vec<Embedding>,
    /// The model that computed them.
    pub model: String,
    /// Tokens read.
    pub usage: EmbeddingsUsage,
}

/// One vector of an [`EmbeddingsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `"embedding"`.
    pub object: String,
    /// The position of its input in the request.
    pub index: u32,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// A vector as numbers or as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`: the little-endian `f32` bytes in standard base64.
    Base64(String),
}

impl EmbeddingVector {
    /// The vector in `encoding`.
    pub fn encode(values: &[f32], encoding: EncodingFormat) -> EmbeddingVector {
        match encoding {
            EncodingFormat::Float => EmbeddingVector::Float(values.to_vec()),
            EncodingFormat::Base64 => EmbeddingVector::Base64(base64_f32(values)),
        }
    }

    /// The numbers, decoding base64 when needed.
    pub fn to_f32(&self) -> Result<Vec<f32>, Base64Error> {
        match self {
            EmbeddingVector::Float(values) => Ok(values.clone()),
            EmbeddingVector::Base64(text) => f32_from_base64(text),
        }
    }
}

/// `usage` of an embeddings answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// The same (nothing is generated).
    pub total_tokens: u64,
}

/// A base64 text that is not four-aligned standard base64 of whole `f32`s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64 vector: {0}")]
pub struct Base64Error(&'static str);

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `values` as little-endian `f32` bytes in standard base64 with padding.
pub fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes [`base64_f32`]'s output.
pub fn f32_from_base64(text: &str) -> Result<Vec<f32>, Base64Error> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return Err(Base64Error("length is not a multiple of 4"));
    }
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    for (index, quad) in text.chunks(4).enumerate() {
        let last = index + 1 == text.len() / 4;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in quad.iter().enumerate() {
            let value = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if last && i >= 2 => {
                    pad += 1;
                    0
                }
                _ => return Err(Base64Error("a character outside the standard alphabet")),
            };
            if pad > 0 && c != b'=' {
                return Err(Base64Error("data after padding"));
            }
            n = (n << 6) | u32::from(value);
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        bytes.extend_from_slice(&decoded[..3 - pad]);
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(Base64Error("the bytes are not whole f32 values"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> EmbeddingsRequest {
        serde_json::from_str(json).unwrap()
    }

    fn refusal(json: &str) -> RayError {
        parse(json).validate().unwrap_err()
    }

    #[test]
    fn accepts_a_string_or_strings_and_both_encodings() {
        let one = parse(r#"{"input":"hi","model":"m","user":"u1","dimensions":null}"#);
        let valid = one.validate().unwrap();
        assert_eq!(valid.inputs, ["hi"]);
        assert_eq!(valid.encoding, EncodingFormat::Float);
        let many = parse(r#"{"input":["a","b"],"encoding_format":"base64"}"#);
        let valid = many.validate().unwrap();
        assert_eq!(valid.inputs, ["a", "b"]);
        assert_eq!(valid.encoding, EncodingFormat::Base64);
        assert_eq!(
            EmbeddingsRequest::many(["a", "b"])
                .validate()
                .unwrap()
                .inputs,
            ["a", "b"]
        );
    }

    #[test]
    fn refusals_name_the_field_and_the_limit() {
        let cases: &[(&str, ErrorCode, &str)] = &[
            (r#"{}"#, ErrorCode::InvalidRequest, "input"),
            (r#"{"input":""}"#, ErrorCode::InvalidRequest, "input"),
            (r#"{"input":[]}"#, ErrorCode::InvalidRequest, "input"),
            (
                r#"{"input":["a",""]}"#,
                ErrorCode::InvalidRequest,
                "input[1]",
            ),
            (
                r#"{"input":["a",7]}"#,
                ErrorCode::UnsupportedParameter,
                "input[1]",
            ),
            (
                r#"{"input":[[1,2,3]]}"#,
                ErrorCode::UnsupportedParameter,
                "input[0]",
            ),
            (
                r#"{"input":["a",{}]}"#,
                ErrorCode::InvalidRequest,
                "input[1]",
            ),
            (r#"{"input":7}"#, ErrorCode::InvalidRequest, "input"),
            (
                r#"{"input":"a","encoding_format":"int8"}"#,
                ErrorCode::InvalidRequest,
                "encoding_format",
            ),
            (
                r#"{"input":"a","dimensions":256}"#,
                ErrorCode::UnsupportedParameter,
                "dimensions",
            ),
            (
                r#"{"input":"a","truncate":true}"#,
                ErrorCode::UnsupportedParameter,
                "truncate",
            ),
        ];
        for (json, code, param) in cases {
            let error = refusal(json);
            assert_eq!(error.code(), *code, "{json}: {error}");
            assert_eq!(error.details().unwrap()["param"], *param, "{json}");
            assert!(error.message().starts_with(param), "{json}: {error}");
        }
        let many = serde_json::json!({ "input": vec!["x"; MAX_EMBEDDING_INPUTS + 1] });
        let error = serde_json::from_value::<EmbeddingsRequest>(many)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.message().contains("at most 32"), "{error}");
        let long = EmbeddingsRequest::one("é".repeat(MAX_EMBEDDING_INPUT_CHARS + 1));
        let error = long.validate().unwrap_err();
        assert!(error.message().contains("at most 8192"), "{error}");
        let exact = EmbeddingsRequest::one("é".repeat(MAX_EMBEDDING_INPUT_CHARS));
        assert!(
            exact.validate().is_ok(),
            "the limit counts characters, not bytes"
        );
    }

    #[test]
    fn base64_matches_the_standard_encoding_and_round_trips() {
        // 1.0f32 is 00 00 80 3f; 1.0, 2.0 is 00 00 80 3f 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
        for len in 0..9 {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * -0.37 + 1e-7).collect();
            assert_eq!(f32_from_base64(&base64_f32(&values)).unwrap(), values);
        }
        assert!(f32_from_base64("AACAP").is_err());
        assert!(f32_from_base64("AAC*Pw==").is_err());
        assert!(f32_from_base64("AA==AAAA").is_err());
        assert!(f32_from_base64("AAAA").is_err(), "3 bytes are not an f32");
    }

    #[test]
    fn vectors_read_back_from_either_form() {
        let float: EmbeddingVector = serde_json::from_str("[0.5,-1.25]").unwrap();
        let base64: EmbeddingVector = serde_json::from_str("\"AAAAPwAAoL8=\"").unwrap();
        assert_eq!(float.to_f32().unwrap(), [0.5, -1.25]);
        assert_eq!(base64.to_f32().unwrap(), [0.5, -1.25]);
    }
}
