//! Names Ray reserves for itself: the model name `auto`, the `llama-server` flags it generates
//! from a launch profile and the headers an adapter may not set. A leaf: the validator and the
//! field-limits table read it.

/// The virtual model name that asks for routing by rules.
pub const AUTO_MODEL: &str = "auto";

/// Flags `llama-server` options that Ray generates from the launch profile, with short aliases.
pub const GENERATED_LLAMA_FLAGS: &[&str] = &[
    "--model",
    "-m",
    "--alias",
    "-a",
    "--host",
    "--port",
    "--ctx-size",
    "-c",
    "--parallel",
    "-np",
    "--threads",
    "-t",
    "--threads-batch",
    "-tb",
    "--threads-http",
    "--batch-size",
    "-b",
    "--ubatch-size",
    "-ub",
    "--cache-prompt",
    "--no-cache-prompt",
    "--cache-reuse",
    "--cache-ram",
    "-cram",
    "--cont-batching",
    "-cb",
    "--no-cont-batching",
    "-nocb",
    "--metrics",
    "--slots",
    "--no-slots",
    "--warmup",
    "--no-warmup",
    "--kv-unified",
    "-kvu",
    "--no-kv-unified",
    "--cache-idle-slots",
    "--no-cache-idle-slots",
    "--context-shift",
    "--no-context-shift",
];

/// Header names an adapter may not set: hop-by-hop headers and those Ray computes itself.
pub const RESERVED_ADAPTER_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];
