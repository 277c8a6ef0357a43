//! The optional `cluster` section: several nodes sharing a node registry through NATS
//! JetStream, and forwarding requests to a peer when the local model cannot serve them. Without
//! the section a node runs alone and opens no connection.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{Diagnostic, ParsedUrl, is_env_var_name};

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
    /// after three missed heartbeats. Every node of a cluster should use the same value.
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 200, max = 60_000))]
    pub heartbeat_ms: u64,
    /// Forward a request to a peer when the local model's estimated wait is longer than this
    /// (ms, 0 to 600000, default 5000; 0: only when the local model is not ready or in
    /// cooldown).
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

/// The rules of the `cluster` section; `models` are the configured model ids and aliases.
pub(crate) fn validate_cluster(cluster: &ClusterConfig, models: &[&str]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut error = |path: &str, message: String| {
        out.push(Diagnostic::error(format!("cluster.{path}"), message));
    };
    if cluster.nats_urls.is_empty() || cluster.nats_urls.len() > 16 {
        error(
            "natsUrls",
            format!("must list 1 to 16 URLs, got {}", cluster.nats_urls.len()),
        );
    }
    for (i, url) in cluster.nats_urls.iter().enumerate() {
        if let Err(why) = nats_url(url) {
            error(&format!("natsUrls[{i}]"), why);
        }
    }
    if cluster.credentials_file.is_some() && cluster.credentials_env.is_some() {
        error(
            "credentialsEnv",
            "set credentialsFile or credentialsEnv, not both".into(),
        );
    }
    if let Some(file) = &cluster.credentials_file
        && (file.trim().is_empty() || file.len() > 4_096)
    {
        error(
            "credentialsFile",
            "must be a path of 1 to 4096 chars".into(),
        );
    }
    if let Some(env) = &cluster.credentials_env
        && !is_env_var_name(env)
    {
        error(
            "credentialsEnv",
            format!("must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {env:?}"),
        );
    }
    let id = &cluster.node_id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        error(
            "nodeId",
            format!("must be 1 to 64 letters, digits, '-' or '_', got {id:?}"),
        );
    }
    match ParsedUrl::parse(&cluster.advertise_url) {
        Ok(url) if url.host == "0.0.0.0" || url.host == "::" => error(
            "advertiseUrl",
            "must be an address peers can reach, not a wildcard bind address".into(),
        ),
        Ok(_) => {}
        Err(why) => error(
            "advertiseUrl",
            format!("{why}, got {:?}", cluster.advertise_url),
        ),
    }
    if let Some(region) = &cluster.region
        && (region.trim().is_empty() || region.chars().count() > 64)
    {
        error("region", "must be 1 to 64 chars".into());
    }
    if cluster.labels.len() > 32 {
        error(
            "labels",
            format!("must have at most 32 entries, got {}", cluster.labels.len()),
        );
    }
    for (key, value) in cluster.labels.iter().chain(
        cluster
            .model_labels
            .values()
            .flat_map(|labels| labels.iter()),
    ) {
        if key.is_empty() || key.len() > 64 || value.len() > 256 {
            error(
                "labels",
                format!("label {key:?}: keys must be 1 to 64 chars, values at most 256"),
            );
        }
    }
    if !(200..=60_000).contains(&cluster.heartbeat_ms) {
        error(
            "heartbeatMs",
            format!("must be 200 to 60000, got {}", cluster.heartbeat_ms),
        );
    }
    if cluster.overflow_after_ms > 600_000 {
        error(
            "overflowAfterMs",
            format!("must be at most 600000, got {}", cluster.overflow_after_ms),
        );
    }
    if !is_env_var_name(&cluster.cluster_key_env) {
        error(
            "clusterKeyEnv",
            format!(
                "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {:?}",
                cluster.cluster_key_env
            ),
        );
    }
    for model in cluster.model_labels.keys() {
        if !models.contains(&model.as_str()) {
            error(
                &format!("modelLabels.{model}"),
                format!(
                    "names no configured model; the models are: {}",
                    models.join(", ")
                ),
            );
        }
    }
    out
}

fn nats_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "must be nats://host:port or tls://host:port, got {url:?}"
        ));
    };
    if !matches!(scheme, "nats" | "tls") {
        return Err(format!("the scheme must be nats or tls, got {scheme:?}"));
    }
    let host_port = rest.trim_end_matches('/');
    if host_port.is_empty()
        || host_port.contains('@')
        || host_port.contains('/')
        || host_port
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        || url.len() > 2_048
    {
        return Err(format!(
            "must be nats://host:port with no credentials or path (credentials go in \
             credentialsFile or credentialsEnv), got {url:?}"
        ));
    }
    if let Some((_, port)) = host_port.rsplit_once(':')
        && !host_port.ends_with(']')
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("the port must be 1 to 65535, got {port:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            nats_urls: vec!["nats://127.0.0.1:4222".into()],
            credentials_file: None,
            credentials_env: None,
            node_id: "fsn-1".into(),
            advertise_url: "http://10.0.0.2:8080".into(),
            region: Some("fsn".into()),
            labels: BTreeMap::new(),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            overflow_after_ms: DEFAULT_OVERFLOW_AFTER_MS,
            cluster_key_env: "RAY_CLUSTER_KEY".into(),
            model_labels: BTreeMap::new(),
        }
    }

    fn paths(c: &ClusterConfig) -> Vec<String> {
        validate_cluster(c, &["m"])
            .into_iter()
            .map(|d| d.path)
            .collect()
    }

    #[test]
    fn a_good_section_passes_and_each_bad_field_is_named() {
        assert!(paths(&config()).is_empty());
        let mut c = config();
        c.nats_urls = vec![
            "http://x:4222".into(),
            "nats://u:p@x:4222".into(),
            "nats://x:0".into(),
        ];
        assert_eq!(
            paths(&c),
            [
                "cluster.natsUrls[0]",
                "cluster.natsUrls[1]",
                "cluster.natsUrls[2]"
            ]
        );
        let mut c = config();
        c.nats_urls.clear();
        c.node_id = "a b".into();
        c.advertise_url = "http://0.0.0.0:8080".into();
        c.heartbeat_ms = 10;
        c.overflow_after_ms = 700_000;
        c.cluster_key_env = "1X".into();
        c.credentials_env = Some("NATS-CREDS".into());
        c.model_labels
            .insert("nope".into(), BTreeMap::from([("a".into(), "b".into())]));
        assert_eq!(
            paths(&c),
            [
                "cluster.natsUrls",
                "cluster.credentialsEnv",
                "cluster.nodeId",
                "cluster.advertiseUrl",
                "cluster.heartbeatMs",
                "cluster.overflowAfterMs",
                "cluster.clusterKeyEnv",
                "cluster.modelLabels.nope",
            ]
        );
    }
}
