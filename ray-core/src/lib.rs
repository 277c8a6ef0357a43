//! Ray's vocabulary, shared by the runtime, the server and the SDK.
//!
//! Ray is a small inference gateway for one cheap VPS in front of `llama-server` (or any
//! OpenAI-compatible backend). This crate holds what every other part agrees on, and nothing
//! that needs an async runtime or a network stack, so the SDK can depend on it cheaply.
//!
//! - `config` (the default cargo feature `config`): the `RayConfig` tree with the JSON names
//!   of the existing Ray, the seven profiles' defaults, layering (profile, file, `RAY_*`
//!   variables, explicit overrides) through `ConfigLoader`, validation that reports every
//!   problem with its JSON path, and the JSON Schema of a config file. A client that only speaks the wire turns it off
//!   (`default-features = false`), as `ray-sdk` does.
//! - [`error`]: [`ErrorCode`], the one list of stable error codes with their HTTP status and
//!   `Retry-After` hint, and [`RayError`], the error that crosses every boundary.
//! - [`wire`]: the request and response types of `/v1/infer`, `/v1/jobs`, `/readyz` and
//!   `/health`.
//! - [`time`]: RFC 3339 timestamps.
//! - [`json_text`]: JSON string literals and integers written by hand, as `serde_json` writes
//!   them, for the hot paths.
//!
//! # Example
//!
//! Check a request against the wire limits:
//!
//! ```
//! use ray_core::wire::InferRequest;
//! use ray_core::ErrorCode;
//!
//! let bad = InferRequest::new("   ");
//! let error = bad.validate().unwrap_err();
//! assert_eq!(error.code(), ErrorCode::InvalidRequest);
//! assert_eq!(error.status(), 400);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "config")]
pub mod config;
pub mod error;
pub mod json_schema;
pub mod json_text;
pub mod sse;
pub mod time;
pub mod wire;

pub use error::{ErrorBody, ErrorCode, ErrorObject, RayError};
