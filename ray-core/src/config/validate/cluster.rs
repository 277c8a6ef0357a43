//! The rules of the `cluster` section: NATS URLs, the node's identity and labels, the key and
//! credentials variables, and the models its labels name.

use super::address::{ParsedUrl, is_env_var_name};
use super::diagnostic::Diagnostic;
use crate::config::cluster::*;

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
    use std::collections::BTreeMap;

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
