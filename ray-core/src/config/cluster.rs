//! The optional `cluster` section: several nodes sharing a node registry through NATS
//! JetStream, and forwarding requests to a peer when the local model cannot serve them. Without
//! the section a node runs alone and opens no connection.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Several nodes sharing state through NATS JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222` or `tls://host:4222`), 1 to 16.
    #[schemars(length(min = 1, max = 16))]
    pub nats_urls: Vec<String>,
    /// A NATS `.creds` file (JWT and NKey seed) to connect with. Never in the config itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// The environment variable holding the NATS credentials (a `.creds` file's contents or a
    /// token). Never in the config or the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_env: Option<String>,
    /// This node's id in the registry: 1 to 64 letters, digits, `-` or `_`, unique per node.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub node_id: String,
    /// The base URL peers use to reach this node's gateway (`http(s)://host:port`).
    pub advertise_url: String,
    /// This node's region (placement prefers peers of the same region), at most 64 chars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// This node's labels (at most 32; placement prefers peers that share one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How often this node writes its record, 200 to 60000 ms (default 2000). A record expires
    /// after three missed heartbeats (of the node that created the registry bucket: a node
    /// with a slower heartbeat writes three times per expiry instead, and `/health` says so in
    /// `cluster.lastError`). Every node of a cluster should use the same value.
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 200, max = 60_000))]
    pub heartbeat_ms: u64,
    /// Forward a request to a peer when the local model's estimated wait is longer than this
    /// (ms, 0 to 600000, default 5000; 0: only when the local model is not ready or in
    /// cooldown). The estimate is the requests ahead divided by the permits, times the recent
    /// time per execution; before the first execution has finished, the oldest waiting
    /// request's wait so far stands in for that time.
    #[serde(default = "default_overflow_after_ms")]
    #[schemars(range(max = 600_000))]
    pub overflow_after_ms: u64,
    /// The environment variable holding the key nodes sign forwarded requests with (the same
    /// on every node, at least 16 bytes).
    pub cluster_key_env: String,
    /// Labels a peer must carry to serve a model, by model id: a model pinned to labels is
    /// never forwarded to a node without them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// The default `cluster.heartbeatMs`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 2_000;
/// The default `cluster.overflowAfterMs`.
pub const DEFAULT_OVERFLOW_AFTER_MS: u64 = 5_000;
/// The shortest cluster key accepted, in bytes.
pub const MIN_CLUSTER_KEY_BYTES: usize = 16;

fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}

fn default_overflow_after_ms() -> u64 {
    DEFAULT_OVERFLOW_AFTER_MS
}
