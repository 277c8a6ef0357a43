//! The NATS server of a cluster, for the node that hosts it: a `nats-server` unit with
//! JetStream and its config file. A node hosts NATS when one of its `cluster.natsUrls` is on
//! loopback; the other nodes reach it over the private network (see `docs/deploy.md`).

use ray_core::config::{ClusterConfig, is_loopback_host};

use super::UNIT_DIR;

/// The NATS unit's file name.
pub const NATS_UNIT: &str = "ray-nats.service";
/// Where the NATS config is installed.
pub const NATS_CONFIG_PATH: &str = "/etc/ray/nats.conf";
/// The JetStream store (systemd `StateDirectory=ray-nats`).
pub const NATS_STORE_DIR: &str = "/var/lib/ray-nats";
/// The Debian package's binary.
pub const NATS_BINARY: &str = "/usr/sbin/nats-server";
/// What JetStream may keep on disk: registry records and jobs are small.
pub const NATS_MAX_FILE_STORE: &str = "1G";
/// What JetStream may keep in memory (the streams here are on disk).
pub const NATS_MAX_MEMORY_STORE: &str = "64M";
/// The unit's memory ceiling: NATS stays small beside the models.
pub const NATS_MEMORY_MAX_MIB: u64 = 256;

/// The port of the first loopback NATS URL, when this node hosts NATS.
pub fn hosted_port(cluster: &ClusterConfig) -> Option<u16> {
    cluster.nats_urls.iter().find_map(|url| {
        let rest = url.split_once("://")?.1.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (rest, 4222),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        is_loopback_host(host).then_some(port)
    })
}

/// The unit file.
pub fn nats_unit(header: &str) -> String {
    format!(
        "{header}\
[Unit]
Description=NATS with JetStream for the Ray cluster (registry and shared jobs)
Documentation=https://github.com/ray-runtime/ray/blob/main/docs/deploy.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
DynamicUser=true
StateDirectory=ray-nats
ExecStart={NATS_BINARY} -c {NATS_CONFIG_PATH}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
TimeoutStopSec=30
MemoryAccounting=true
MemoryMax={NATS_MEMORY_MAX_MIB}M
NoNewPrivileges=true
CapabilityBoundingSet=
PrivateTmp=true
PrivateDevices=true
ProtectSystem=strict
ProtectHome=true
ProtectKernelModules=true
ProtectKernelTunables=true
ProtectControlGroups=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=true
LockPersonality=true
MemoryDenyWriteExecute=true
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"
    )
}

/// The NATS config: JetStream on disk under the state directory, listening on loopback only.
/// Peers on other VPSes need `listen` on the private address, TLS and accounts: see
/// `docs/deploy.md`.
pub fn nats_config(header: &str, port: u16) -> String {
    format!(
        "{header}\
listen: 127.0.0.1:{port}
server_name: ray-nats
jetstream {{
  store_dir: \"{NATS_STORE_DIR}\"
  max_memory_store: {NATS_MAX_MEMORY_STORE}
  max_file_store: {NATS_MAX_FILE_STORE}
}}
"
    )
}

/// Where the unit is installed.
pub fn unit_path() -> String {
    format!("{UNIT_DIR}/{NATS_UNIT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_url_means_this_node_hosts_nats() {
        let mut cluster: ClusterConfig = serde_json::from_value(serde_json::json!({
            "natsUrls": ["nats://10.0.0.2:4222", "nats://127.0.0.1:4333"],
            "nodeId": "a", "advertiseUrl": "http://10.0.0.1:8080", "clusterKeyEnv": "K"
        }))
        .unwrap();
        assert_eq!(hosted_port(&cluster), Some(4333));
        cluster.nats_urls = vec!["nats://10.0.0.2:4222".into()];
        assert_eq!(hosted_port(&cluster), None);
        cluster.nats_urls = vec!["nats://localhost".into()];
        assert_eq!(hosted_port(&cluster), Some(4222));
    }
}
