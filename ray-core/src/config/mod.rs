//! The configuration: the `RayConfig` tree, the seven profiles, layering (profile, file,
//! `RAY_*` environment, explicit overrides), validation with JSON paths, and the JSON Schema.
//! Behind the default cargo feature `config`.
//!
//! Load a config the way `ray-server` does:
//!
//! ```
//! use ray_core::config::ConfigLoader;
//!
//! let loaded = ConfigLoader::new()
//!     .with_json("ray.json", r#"{"profile":"tiny","scheduler":{"maxQueue":16}}"#)
//!     .with_env([("RAY_SCHEDULER_CONCURRENCY", "1")])
//!     .load()?;
//! assert_eq!(loaded.config.scheduler.max_queue, 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cluster;
mod duplicates;
mod env;
mod explain_models;
mod hooks;
mod lifecycle;
mod limits;
mod load;
mod policy;
mod priority;
mod profiles;
mod reserved;
mod schema;
mod types;
mod validate;

pub use cluster::{
    ClusterConfig, DEFAULT_HEARTBEAT_MS, DEFAULT_OVERFLOW_AFTER_MS, MIN_CLUSTER_KEY_BYTES,
};
pub use env::{ENV_VARS, EnvKind, EnvScope, EnvVar, OTHER_RAY_VARS, parse_env_value};
pub use explain_models::explain_models;
pub use hooks::{
    DEFAULT_HOOK_TIMEOUT_MS, HOOK_EVENTS, HookConfig, MAX_HOOK_ARG_CHARS, MAX_HOOK_ARGS, MAX_HOOKS,
};
pub use lifecycle::{
    DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_MIN_RESIDENT_MS, DEFAULT_RESERVE_MIB, DEFAULT_SWAP_BATCH_MS,
    DEFAULT_SWAP_BATCH_REQUESTS, LifecycleConfig, MIN_MEMORY_BUDGET_MIB,
};
pub use limits::{
    FIELD_LIMITS, FieldLimit, HEADER_VALUE_MAX_CHARS, Limit, limits_of, rule_path, schema_keywords,
};
pub use load::{
    ConfigError, ConfigLoader, LoadedConfig, MAX_CONFIG_FILE_BYTES, ValidConfig, redacted_json,
};
pub use policy::{HostPolicy, POLICY_FILE_ENV};
pub use priority::{
    ApiKeyPriority, ClassConfig, MAX_CLASS_WAIT_MS, MAX_PRIORITY_KEYS, MAX_PRIORITY_WEIGHT,
    PriorityClasses, PriorityConfig,
};
pub use profiles::{
    DEFAULT_BASE_URL, DEFAULT_LLAMA_BINARY, DEFAULT_MODEL_DIR, adapter_defaults, profile_defaults,
};
pub use reserved::{GENERATED_LLAMA_FLAGS, RESERVED_ADAPTER_HEADERS};
pub use types::*;
pub use validate::{
    AUTO_MODEL, Diagnostic, ParsedUrl, Severity, is_allowed_host_pattern, is_env_var_name,
    is_loopback_host, validate,
};

/// The JSON Schema of a config file (draft 2020-12).
///
/// Fields left out of a file come from the selected profile, so the schema requires a field
/// only where no profile has a value under it (an entry of a list, a section such as
/// `cluster`), and an adapter may leave out `kind` (it then has the fields of the profile's
/// adapter kind).
pub fn json_schema() -> serde_json::Value {
    schema::json_schema()
}
