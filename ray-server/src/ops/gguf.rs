//! The GGUF header reader, shared with the runtime's footprint estimate: see
//! [`ray_runtime::footprint::gguf`].

pub use ray_runtime::footprint::gguf::*;
