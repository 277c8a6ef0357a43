//! Runnable examples of Ray; this library is empty on purpose.
//!
//! - `embed_runtime`: hosts `ray_runtime::Runtime` in-process, with no HTTP at all:
//!   `cargo run -p ray-examples --example embed_runtime`
//! - `custom_provider`: a backend of your own (the `ray_models::Provider` trait) hosted by the
//!   runtime, with admission, cache, dedupe and readiness working for it:
//!   `cargo run -p ray-examples --example custom_provider`
//! - `client`: calls a running `ray-server` with the typed SDK:
//!   `cargo run -p ray-examples --example client -- http://127.0.0.1:3000`
//!
//! The example configs live in `examples/config/`.
