//! The HTTP gateway: the listener and connection handling ([`server`], [`idle`]), head limits
//! ([`head`]), the app that routes a request ([`app`], and `router`) through the guards at the
//! edge (API keys in [`auth`], the runtime's rate limiter keyed by [`client`]) to the runtime, JSON and SSE
//! responses ([`http`], [`sse`]), the OpenAI door (`openai`, `embeddings`), the status page
//! ([`status`]) and the cluster link ([`cluster`]). It never imports the operator tools.

pub mod app;
pub mod auth;
pub mod client;
pub mod cluster;
mod counters;
mod embeddings;
pub mod head;
pub mod http;
pub mod idle;
mod jobs;
mod openai;
pub mod reload;
mod reload_source;
mod route;
mod router;
pub mod server;
pub mod sse;
pub mod status;
