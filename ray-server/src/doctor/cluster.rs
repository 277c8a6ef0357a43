//! The `cluster` check: with a `cluster` section, the cluster key is in the environment file
//! and every NATS URL answers with JetStream enabled.

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ray_core::config::{ClusterConfig, MIN_CLUSTER_KEY_BYTES};

use super::{Finding, Level};
use crate::deploy::envfile::EnvFile;

const C: &str = "cluster";
/// How long one NATS server may take to greet.
const NATS_TIMEOUT: Duration = Duration::from_secs(3);

/// The findings of the `cluster` check (none without a `cluster` section).
pub(super) fn check(cluster: Option<&ClusterConfig>, env: Option<&EnvFile>) -> Vec<Finding> {
    let Some(cluster) = cluster else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |level, code, message: String| {
        out.push(Finding {
            check: C,
            level,
            code,
            message,
        });
    };
    let key = env
        .and_then(|f| f.get(&cluster.cluster_key_env))
        .map(str::len)
        .filter(|len| *len > 0);
    match key {
        None => push(
            Level::Error,
            "cluster_key_missing",
            format!(
                "cluster.clusterKeyEnv names {0}, which the environment file does not set: the \
                 gateway will not start. Add `{0}=<key>` with the same key on every node (make \
                 one with `od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'`).",
                cluster.cluster_key_env
            ),
        ),
        Some(len) if len < MIN_CLUSTER_KEY_BYTES => push(
            Level::Error,
            "cluster_key_weak",
            format!(
                "{} is {len} bytes; the cluster key must have at least {MIN_CLUSTER_KEY_BYTES}",
                cluster.cluster_key_env
            ),
        ),
        Some(_) => {}
    }
    for url in &cluster.nats_urls {
        match greet(url) {
            Ok(true) => push(
                Level::Ok,
                "cluster_ok",
                format!("{url} answers with JetStream enabled"),
            ),
            Ok(false) => push(
                Level::Error,
                "cluster_nats_no_jetstream",
                format!(
                    "{url} answers but JetStream is off: start nats-server with -js (the unit \
                     `render` writes does)"
                ),
            ),
            Err(why) => push(
                Level::Error,
                "cluster_nats_unreachable",
                format!(
                    "{url}: {why}. The gateway serves its own models without it, but joins no \
                     registry and refuses cluster jobs with 503 cluster_unavailable."
                ),
            ),
        }
    }
    out
}

/// Connects to a NATS URL and reads its `INFO` greeting: whether JetStream is on.
fn greet(url: &str) -> Result<bool, String> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let address = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    };
    let target = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&target, NATS_TIMEOUT)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream
        .set_read_timeout(Some(NATS_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("no greeting from {address}: {e}"))?;
    jetstream_in_info(&line).ok_or_else(|| format!("{address} is not a NATS server"))
}

/// `Some(jetstream on)` for a NATS `INFO {...}` line.
fn jetstream_in_info(line: &str) -> Option<bool> {
    let json = line.trim().strip_prefix("INFO ")?;
    let info: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(info.get("jetstream").and_then(serde_json::Value::as_bool) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(url: &str) -> ClusterConfig {
        serde_json::from_value(serde_json::json!({
            "natsUrls": [url], "nodeId": "a", "advertiseUrl": "http://10.0.0.1:8080",
            "clusterKeyEnv": "RAY_CLUSTER_KEY"
        }))
        .unwrap()
    }

    fn codes(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn a_real_nats_passes_and_a_closed_port_or_a_missing_key_fails() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = EnvFile::parse("ray.env", "RAY_CLUSTER_KEY=0123456789abcdef0123\n").unwrap();
        let closed = check(
            Some(&cluster(&format!("nats://127.0.0.1:{port}"))),
            Some(&env),
        );
        assert_eq!(codes(&closed), ["cluster_nats_unreachable"]);
        let short = EnvFile::parse("ray.env", "RAY_CLUSTER_KEY=short\n").unwrap();
        let none = EnvFile::parse("ray.env", "OTHER=1\n").unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        assert_eq!(
            codes(&check(Some(&cluster(&url)), Some(&short)))[0],
            "cluster_key_weak"
        );
        assert_eq!(
            codes(&check(Some(&cluster(&url)), Some(&none)))[0],
            "cluster_key_missing"
        );
        assert!(check(None, Some(&env)).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let Ok(mut nats) = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            eprintln!(
                "SKIPPED: the doctor check against a real NATS (nats-server is not installed)"
            );
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let found = check(Some(&cluster(&url)), Some(&env));
        let _ = nats.kill();
        let _ = nats.wait();
        assert_eq!(codes(&found), ["cluster_ok"], "{found:?}");
    }

    #[test]
    fn the_greeting_says_whether_jetstream_is_on() {
        assert_eq!(
            jetstream_in_info(r#"INFO {"server_id":"x","jetstream":true}"#),
            Some(true)
        );
        assert_eq!(jetstream_in_info(r#"INFO {"server_id":"x"}"#), Some(false));
        assert_eq!(jetstream_in_info("HTTP/1.1 400 Bad Request"), None);
    }
}
