//! Several nodes on loopback sharing one real `nats-server -js` (started by the test on a free
//! port with its own store): the registry lists every node and drops a killed one, a request
//! for a model that is down locally is served by a peer (and says which node served it),
//! forwarding is one hop and signed, the node keeps serving while NATS is down, a peer
//! leaving and joining again reaches a command hook as `cluster_node_left` and
//! `cluster_node_joined`, a shared job that fails for good and its refused callback reach
//! one as `job_failed` and `callback_gave_up`, a departed peer's breaker stops counting, every
//! read of the node list has each node once, and a node with another cluster key or a slower
//! heartbeat is named in `/health` (the slower one staying listed), and a node busy from its
//! start overflows to a peer before its first request has finished, refused NATS
//! credentials are named in `/health`, and while NATS is stopped the requests that need it are
//! refused at once, a job refused then never runs, and peers are neither counted nor forwarded
//! to past the registry's expiry, and a request or a job for a model only a peer serves goes to
//! that peer.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod jobs_support;

const KEY: &str = "a-cluster-key-of-enough-bytes";
const HEARTBEAT_MS: u64 = 300;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// An HTTP client whose requests give up after `secs`.
fn client(secs: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(secs))
        .build()
        .unwrap()
}

struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(dir: &Path, port: u16) -> Option<Nats> {
        Nats::start_args(dir, port, &[])
    }

    /// A server on a free port with its store under `dir/nats`, and that port; `None` (the
    /// test says SKIPPED) when nats-server cannot be started.
    fn in_dir(dir: &Path) -> Option<(Nats, u16)> {
        let port = free_port();
        Nats::start(&dir.join("nats"), port).map(|nats| (nats, port))
    }

    /// The same, with further arguments (`--auth <token>`).
    fn start_args(dir: &Path, port: u16, args: &[&str]) -> Option<Nats> {
        let child = match Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                eprintln!(
                    "SKIPPED: nats-server cannot be started ({error}); install the Debian package nats-server"
                );
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nats { child, port })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What differs between the nodes of a test.
struct Setup {
    key: &'static str,
    heartbeat_ms: u64,
    /// The mock backend's latency (for a node whose model is up).
    latency_ms: u64,
    /// Further fields of the `cluster` section (`,"overflowAfterMs":1000`).
    cluster_extra: &'static str,
    /// The value of `RAY_TEST_NATS_TOKEN` (for `"credentialsEnv":"RAY_TEST_NATS_TOKEN"`).
    nats_token: &'static str,
    /// The id of the node's one model (its alias is the id with `-alias`).
    model: &'static str,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            key: KEY,
            heartbeat_ms: HEARTBEAT_MS,
            latency_ms: 5,
            cluster_extra: "",
            nats_token: "",
            model: "m",
        }
    }
}

struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    /// A gateway whose one model `m` is the mock (`up`) or a backend on a refused port.
    fn start(dir: &Path, nats: u16, id: &str, up: bool) -> Node {
        Node::start_with(dir, nats, id, up, free_port(), "")
    }

    /// The same, on `port`, with `extra` top-level config fields (`,"asyncQueue":{...}`).
    fn start_with(dir: &Path, nats: u16, id: &str, up: bool, port: u16, extra: &str) -> Node {
        Node::start_custom(dir, nats, id, up, port, extra, &Setup::default())
    }

    /// The same, with the cluster key, `heartbeatMs`, mock latency and further `cluster`
    /// fields of `setup`.
    fn start_custom(
        dir: &Path,
        nats: u16,
        id: &str,
        up: bool,
        port: u16,
        extra: &str,
        setup: &Setup,
    ) -> Node {
        let Setup {
            key,
            heartbeat_ms,
            latency_ms,
            cluster_extra,
            nats_token,
            model,
        } = setup;
        let adapter = if up {
            format!(r#"{{"kind":"mock","latencyMs":{latency_ms}}}"#)
        } else {
            format!(
                r#"{{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:{}","timeoutMs":1000}}"#,
                free_port()
            )
        };
        let config = format!(
            r#"{{"profile":"tiny","server":{{"port":{port}}},
                "models":[{{"id":"{model}","aliases":["{model}-alias"],"warmOnBoot":false,"adapter":{adapter}}}],
                "cluster":{{"natsUrls":["nats://127.0.0.1:{nats}"],"nodeId":"{id}",
                  "advertiseUrl":"http://127.0.0.1:{port}","region":"test",
                  "heartbeatMs":{heartbeat_ms},"clusterKeyEnv":"RAY_TEST_CLUSTER_KEY"{cluster_extra}}}{extra}}}"#
        );
        let path = dir.join(format!("{id}.json"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{id}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ray-server"))
            .arg("--config")
            .arg(&path)
            .env("RAY_TEST_CLUSTER_KEY", *key)
            .env("RAY_TEST_NATS_TOKEN", *nats_token)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Node {
            id: id.into(),
            port,
            child: Some(child),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn node_ids(http: &reqwest::Client, node: &Node) -> Vec<String> {
    let Ok(response) = http.get(node.url("/v1/cluster/nodes")).send().await else {
        return Vec::new();
    };
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return Vec::new();
    };
    body["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_a_registry_and_forward_to_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = reqwest::Client::new();
    let a = Node::start(dir.path(), nats_port, "a", false);
    let b = Node::start(dir.path(), nats_port, "b", true);
    let mut c = Node::start(dir.path(), nats_port, "c", true);

    // Every node sees all three.
    let all = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a", "b", "c"]
    })
    .await;
    assert!(
        all.is_some(),
        "registry: {:?}\n{}",
        node_ids(&http, &a).await,
        a.log()
    );

    // a's own backend is refused: once its probe has seen that, requests for `m` go to a
    // peer, by id and by alias, on the native and the OpenAI routes, and say who served them.
    let down = within(Duration::from_secs(10), async || {
        let health: serde_json::Value = http
            .get(a.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["models"][0]["state"] != "ready"
    })
    .await;
    assert!(down.is_some(), "a's model is seen down");
    // The peers' records must show `m` ready before a forwards to them.
    let peers_ready = within(Duration::from_secs(10), async || {
        let answer = http
            .post(a.url("/v1/infer"))
            .json(&serde_json::json!({"input": "hello", "model": "m"}))
            .send()
            .await
            .unwrap();
        answer.status() == 200
    })
    .await;
    assert!(peers_ready.is_some(), "{}", a.log());
    for body in [
        serde_json::json!({"input": "hello again", "model": "m"}),
        serde_json::json!({"input": "by alias", "model": "m-alias"}),
        serde_json::json!({"input": "by default"}),
    ] {
        let answer = http
            .post(a.url("/v1/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let node = answer.headers()["x-ray-node"].to_str().unwrap().to_string();
        assert!(node == "b" || node == "c", "served by {node}");
    }
    let chat = http
        .post(a.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "m", "stream": true,
            "messages": [{"role": "user", "content": "stream it"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_ne!(chat.headers()["x-ray-node"], "a");
    let text = chat.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");

    // A forwarded request is never forwarded again: signed as from b, a serves it itself
    // (and its model is down, so it refuses) instead of sending it on.
    let body = br#"{"input":"loop","model":"m"}"#;
    let signature = ray_cluster::auth::sign(
        KEY.as_bytes(),
        "b",
        unix_millis(),
        "POST",
        "/v1/infer",
        body,
    );
    let answer = http
        .post(a.url("/v1/infer"))
        .header("content-type", "application/json")
        .header("x-ray-hop", "b")
        .header("x-ray-cluster-auth", signature)
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-ray-node"], "a");
    assert_eq!(answer.status(), 503);
    // A hop with a wrong signature is refused.
    let forged = ray_cluster::auth::sign(
        b"another-key-entirely!",
        "b",
        unix_millis(),
        "POST",
        "/v1/infer",
        body,
    );
    let answer = http
        .post(a.url("/v1/infer"))
        .header("content-type", "application/json")
        .header("x-ray-hop", "b")
        .header("x-ray-cluster-auth", forged)
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);

    // Metrics and health say what happened.
    let metrics = http
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ray_cluster_connected 1"), "{metrics}");
    assert!(metrics.contains(r#"ray_cluster_forwarded_total{direction="out"}"#));

    // A killed node drops out of the registry after three heartbeats.
    c.kill();
    let gone = within(Duration::from_secs(10), async || {
        node_ids(&http, &a).await == ["a", "b"]
    })
    .await;
    assert!(gone.is_some(), "c dropped: {:?}", node_ids(&http, &a).await);
    eprintln!(
        "cluster: a killed node dropped from the registry after {gone:?} (heartbeat {HEARTBEAT_MS} ms)"
    );
    let answer = http
        .post(a.url("/v1/infer"))
        .json(&serde_json::json!({"input": "after c died", "model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-ray-node"], "b");

    // NATS goes away: nodes keep serving, /health says the cluster is degraded; when NATS
    // is back the registry recovers by itself.
    nats.stop();
    let degraded = within(Duration::from_secs(15), async || {
        let health: serde_json::Value = http
            .get(b.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["cluster"]["status"] == "degraded"
    })
    .await;
    assert!(degraded.is_some(), "b reports the outage");
    let local = http
        .post(b.url("/v1/infer"))
        .json(&serde_json::json!({"input": "nats is down", "model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    let listing = http.get(b.url("/v1/cluster/nodes")).send().await.unwrap();
    assert_eq!(listing.status(), 503);
    let _nats = Nats::start(&dir.path().join("nats"), nats.port).unwrap();
    let back = within(Duration::from_secs(30), async || {
        node_ids(&http, &b).await == ["a", "b"]
    })
    .await;
    assert!(
        back.is_some(),
        "registry back: {:?}",
        node_ids(&http, &b).await
    );
    assert_eq!(b.id, "b");
}

/// Receives callbacks on loopback and counts deliveries per idempotency key.
async fn callback_receiver() -> (
    u16,
    std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use http_body_util::BodyExt;
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(std::collections::HashMap::new()));
    let counts = seen.clone();
    let addr = jobs_support::serve(move |request: hyper::Request<hyper::body::Incoming>| {
        let counts = counts.clone();
        async move {
            let key = request
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let job: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            assert_eq!(
                job["job"]["id"],
                key.as_str(),
                "the idempotency key is the job id"
            );
            *counts.lock().entry(key).or_insert(0) += 1;
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
        }
    })
    .await;
    (addr.port(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_jobs_survive_a_killed_node_and_a_nats_restart() {
    const JOBS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let (callback_port, callbacks) = callback_receiver().await;
    let http = client(10);
    let queue = |id: &str| {
        format!(
            r#","asyncQueue":{{"enabled":true,"storageDir":"{}","dispatchConcurrency":2,
               "maxAttempts":5,"pollIntervalMs":50,"callbackAllowPrivateNetwork":true}}"#,
            dir.path().join(format!("jobs-{id}")).display()
        )
    };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ids = ["a", "b", "c"];
    let mut nodes: Vec<Node> = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| Node::start_with(dir.path(), nats_port, id, true, *port, &queue(id)))
        .collect();
    let all = within(Duration::from_secs(20), async || {
        node_ids(&http, &nodes[0]).await == ["a", "b", "c"]
    })
    .await;
    assert!(all.is_some(), "{}", nodes[0].log());

    let mut accepted: Vec<String> = Vec::new();
    let mut refused = 0u32;
    let mut next = 0usize;
    let mut restarted_nats = false;
    while accepted.len() < JOBS {
        let n = accepted.len();
        if n == 100 && nodes[2].child.is_some() {
            nodes[2].kill(); // kill -9 in the middle of the run
        }
        if n == 200 && nodes[2].child.is_none() {
            nodes[2] = Node::start_with(dir.path(), nats_port, "c", true, ports[2], &queue("c"));
        }
        if n == 250 && !restarted_nats {
            restarted_nats = true;
            nats.stop();
            tokio::time::sleep(Duration::from_millis(500)).await;
            nats = Nats::start(&dir.path().join("nats"), nats_port).unwrap();
        }
        let node = &nodes[next % 3];
        next += 1;
        let body = serde_json::json!({
            "input": format!("job number {n}"),
            "model": "m",
            "callbackUrl": format!("http://127.0.0.1:{callback_port}/hook"),
        });
        match http.post(node.url("/v1/jobs")).json(&body).send().await {
            Ok(answer) if answer.status() == 202 => {
                let accepted_job: serde_json::Value = answer.json().await.unwrap();
                accepted.push(accepted_job["id"].as_str().unwrap().to_string());
            }
            Ok(answer) => {
                // Refused (NATS away: 503 cluster_unavailable): not accepted, so not counted.
                assert_eq!(
                    answer.status(),
                    503,
                    "{}",
                    answer.text().await.unwrap_or_default()
                );
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                // The killed node: nothing was accepted.
                refused += 1;
            }
        }
    }
    eprintln!(
        "cluster jobs: {JOBS} accepted, {refused} submissions refused while a node or NATS was down"
    );

    // Every accepted job completes, seen the same from every live node, exactly once.
    let started = Instant::now();
    let mut pending: Vec<String> = accepted.clone();
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(120) {
        let mut still = Vec::new();
        for (i, id) in pending.iter().enumerate() {
            let node = &nodes[i % 3];
            let record: serde_json::Value =
                match http.get(node.url(&format!("/v1/jobs/{id}"))).send().await {
                    Ok(answer) if answer.status() == 200 => answer.json().await.unwrap(),
                    _ => {
                        still.push(id.clone());
                        continue;
                    }
                };
            match record["status"].as_str() {
                Some("succeeded") => {
                    assert!(record["attempts"].as_u64().unwrap() >= 1);
                    assert!(record["attempts"].as_u64().unwrap() <= 5, "{record}");
                    assert!(record["result"]["output"].is_string());
                }
                Some("queued" | "running") => still.push(id.clone()),
                other => panic!("job {id} ended {other:?}: {record}"),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "{} jobs never completed: {:?}\n{}",
        pending.len(),
        &pending[..pending.len().min(5)],
        nodes[0].log()
    );
    eprintln!(
        "cluster jobs: all {JOBS} completed {:?} after the last submission",
        started.elapsed()
    );

    // Every callback arrived (a redelivery may repeat one, under the same key).
    let delivered = within(Duration::from_secs(60), async || {
        let seen = callbacks.lock();
        accepted.iter().all(|id| seen.contains_key(id))
    })
    .await;
    let seen = callbacks.lock().clone();
    assert!(
        delivered.is_some(),
        "{} of {} callbacks arrived",
        accepted.iter().filter(|id| seen.contains_key(*id)).count(),
        accepted.len()
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "cluster jobs: every callback arrived; {duplicates} duplicate deliveries, each under its job's idempotency key"
    );
    for id in &accepted {
        let record: serde_json::Value = http
            .get(nodes[1].url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(record["callback"]["status"], "delivered", "{record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_leaving_and_joining_again_reaches_a_command_hook() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(5);
    let events_file = dir.path().join("a-events.jsonl");
    let hooks = format!(
        r#","hooks":[{{"events":["cluster_node_joined","cluster_node_left"],
             "command":["/bin/sh","-c","cat >> {}"]}}]"#,
        events_file.display()
    );
    let a = Node::start_with(dir.path(), nats_port, "a", true, free_port(), &hooks);
    let b_port = free_port();
    let mut b = Node::start_with(dir.path(), nats_port, "b", true, b_port, "");
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a", "b"]
    })
    .await;
    assert!(both.is_some(), "{}", a.log());
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let position = |kind: &str, after: usize| {
        events()
            .iter()
            .enumerate()
            .skip(after)
            .find(|(_, e)| e["type"] == kind)
            .map(|(i, _)| i)
    };

    // b is killed: a's hook hears that it left once the registry drops it.
    b.kill();
    let left = within(Duration::from_secs(20), async || {
        position("cluster_node_left", 0).is_some()
    })
    .await;
    assert!(left.is_some(), "{:?}\n{}", events(), a.log());
    let left = position("cluster_node_left", 0).unwrap();

    // b starts again under the same id: a's hook hears that it joined, after it left.
    b = Node::start_with(dir.path(), nats_port, "b", true, b_port, "");
    let joined = within(Duration::from_secs(20), async || {
        position("cluster_node_joined", left + 1).is_some()
    })
    .await;
    assert!(joined.is_some(), "{:?}\n{}", events(), b.log());

    // Each event has the documented shape: `node`, the peer; a never hears of itself.
    let seen = events();
    for event in &seen {
        assert_eq!(event["node"], "b", "{event}");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
        assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
    }
    // b's first arrival may predate a's first look at the registry, so it is not required.
    let kinds: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            ["cluster_node_left", "cluster_node_joined"]
                | [
                    "cluster_node_joined",
                    "cluster_node_left",
                    "cluster_node_joined"
                ]
        ),
        "{kinds:?}"
    );
}

/// Answers every callback `500` and counts the deliveries.
async fn refusing_receiver() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = count.clone();
    let addr = jobs_support::serve(move |_request: hyper::Request<hyper::body::Incoming>| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    })
    .await;
    (addr.port(), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_job_that_fails_for_good_and_its_refused_callback_reach_a_command_hook() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let (callback_port, deliveries) = refusing_receiver().await;
    let http = client(5);
    let events_file = dir.path().join("a-events.jsonl");
    // `m`'s backend refuses connections, so its job fails; one attempt, two for the callback.
    let extra = format!(
        r#","asyncQueue":{{"enabled":true,"storageDir":"{}","maxAttempts":1,
             "maxCallbackAttempts":2,"pollIntervalMs":20,"callbackAllowPrivateNetwork":true}},
           "hooks":[{{"events":["job_failed","callback_gave_up"],
             "command":["/bin/sh","-c","cat >> {}"]}}]"#,
        dir.path().join("jobs-a").display(),
        events_file.display()
    );
    let a = Node::start_with(dir.path(), nats_port, "a", false, free_port(), &extra);
    let joined = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a"]
    })
    .await;
    assert!(joined.is_some(), "{}", a.log());
    let body = serde_json::json!({
        "input": "this one fails",
        "model": "m",
        "callbackUrl": format!("http://127.0.0.1:{callback_port}/hook"),
    });
    let mut job_id = String::new();
    let accepted = within(Duration::from_secs(20), async || {
        match http.post(a.url("/v1/jobs")).json(&body).send().await {
            Ok(answer) if answer.status() == 202 => {
                let accepted: serde_json::Value = answer.json().await.unwrap();
                job_id = accepted["id"].as_str().unwrap().to_string();
                true
            }
            // The shared queue opens once the node is connected.
            _ => false,
        }
    })
    .await;
    assert!(accepted.is_some(), "{}", a.log());
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let both = within(Duration::from_secs(30), async || {
        let seen = events();
        seen.iter().any(|e| e["type"] == "job_failed")
            && seen.iter().any(|e| e["type"] == "callback_gave_up")
    })
    .await;
    assert!(both.is_some(), "{:?}\n{}", events(), a.log());
    let seen = events();
    let failed = seen.iter().find(|e| e["type"] == "job_failed").unwrap();
    assert_eq!(failed["jobId"], job_id.as_str(), "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert!(!failed["code"].as_str().unwrap().is_empty(), "{failed}");
    let gave_up = seen
        .iter()
        .find(|e| e["type"] == "callback_gave_up")
        .unwrap();
    assert_eq!(gave_up["jobId"], job_id.as_str(), "{gave_up}");
    assert_eq!(gave_up["attempts"], 2, "{gave_up}");
    assert_eq!(
        gave_up["error"], "the receiver answered 500 Internal Server Error",
        "{gave_up}"
    );
    assert_eq!(
        deliveries.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "two deliveries, no more"
    );
    // Each is sent once, with the common shape.
    assert_eq!(seen.len(), 2, "{seen:?}");
    for event in &seen {
        assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
        assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
    }
    let record: serde_json::Value = http
        .get(a.url(&format!("/v1/jobs/{job_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["error"]["code"], failed["code"], "{record}");
}

/// A node whose model is down takes none of the shared jobs (a peer that serves the model
/// runs them, each on its first attempt), and after NATS comes back without its store the
/// queue is opened again: submissions are accepted and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_model_is_down_leaves_shared_jobs_to_a_peer_and_a_lost_store_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(10);
    let queue = |id: &str| {
        format!(
            r#","asyncQueue":{{"enabled":true,"storageDir":"{}","dispatchConcurrency":2,
               "maxAttempts":3,"pollIntervalMs":50}}"#,
            dir.path().join(format!("jobs-{id}")).display()
        )
    };
    let down = Node::start_with(dir.path(), nats_port, "a", false, free_port(), &queue("a"));
    let up = Node::start_with(dir.path(), nats_port, "b", true, free_port(), &queue("b"));
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &down).await == ["a", "b"]
    })
    .await;
    assert!(both.is_some(), "{}", down.log());
    // a knows its backend is down before the jobs arrive.
    let known = within(Duration::from_secs(20), async || {
        http.get(down.url("/readyz?model=m"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(known.is_some(), "{}", down.log());

    let submit = async |node: &Node, n: usize| -> Option<String> {
        let body = serde_json::json!({ "input": format!("shared job {n}"), "model": "m" });
        let answer = http
            .post(node.url("/v1/jobs"))
            .json(&body)
            .send()
            .await
            .ok()?;
        if answer.status() != 202 {
            return None;
        }
        let accepted: serde_json::Value = answer.json().await.ok()?;
        accepted["id"].as_str().map(String::from)
    };
    let finished = async |node: &Node, id: &str| -> serde_json::Value {
        let mut record = serde_json::Value::Null;
        let done = within(Duration::from_secs(30), async || {
            if let Ok(answer) = http.get(node.url(&format!("/v1/jobs/{id}"))).send().await
                && let Ok(body) = answer.json::<serde_json::Value>().await
            {
                record = body;
            }
            matches!(
                record["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await;
        assert!(done.is_some(), "{record}\n{}", node.log());
        record
    };
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(submit(&down, n).await.expect("a accepts shared jobs"));
    }
    for id in &ids {
        let record = finished(&down, id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        assert_eq!(
            record["attempts"], 1,
            "no attempt spent on the node that is down: {record}"
        );
    }

    // NATS comes back with an empty store: the jobs stream is created again.
    nats.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats = Nats::start(&dir.path().join("nats-new"), nats_port).unwrap();
    let mut id = None;
    let accepted = within(Duration::from_secs(30), async || {
        id = submit(&up, 100).await;
        id.is_some()
    })
    .await;
    assert!(accepted.is_some(), "{}", up.log());
    let record = finished(&up, id.as_deref().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    drop(nats);
}

async fn health(http: &reqwest::Client, node: &Node) -> serde_json::Value {
    match http.get(node.url("/health")).send().await {
        Ok(answer) => answer.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

async fn metrics(http: &reqwest::Client, node: &Node) -> String {
    match http.get(node.url("/metrics")).send().await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until `node`'s own model `m` is seen down (its backend refuses connections).
async fn model_seen_down(http: &reqwest::Client, node: &Node) {
    let down = within(Duration::from_secs(15), async || {
        let health = health(http, node).await;
        health["models"][0]["state"].is_string() && health["models"][0]["state"] != "ready"
    })
    .await;
    assert!(
        down.is_some(),
        "{}'s model is seen down\n{}",
        node.id,
        node.log()
    );
}

/// A registry member that is not a gateway: its record says it serves `m`, but nothing
/// listens at its `advertiseUrl`, so every request forwarded to it fails.
fn unreachable_peer(nats: u16, id: &str) -> ray_cluster::Cluster {
    use std::collections::BTreeMap;
    let url = format!("http://127.0.0.1:{}", free_port());
    let options = ray_cluster::ClusterOptions {
        nats_urls: vec![format!("nats://127.0.0.1:{nats}")],
        credentials: ray_cluster::Credentials::None,
        node_id: id.into(),
        advertise_url: url.clone(),
        region: Some("test".into()),
        labels: BTreeMap::new(),
        heartbeat: Duration::from_millis(HEARTBEAT_MS),
        model_labels: BTreeMap::new(),
        bucket: ray_cluster::NODES_BUCKET.into(),
    };
    let record = serde_json::json!({
        "id": id, "baseUrl": url, "region": "test", "version": "test",
        "models": [{"id": "m", "state": "ready", "ready": true}],
    });
    let record: ray_cluster::NodeRecord = serde_json::from_value(record).unwrap();
    ray_cluster::Cluster::start(options, std::sync::Arc::new(move || record.clone()))
}

/// A peer whose forwards fail opens its breaker; once it has left the registry its breaker is
/// counted neither in `/health` (`openBreakers`) nor in `ray_cluster_open_breakers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_of_a_peer_that_left_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(10);
    let a = Node::start(dir.path(), nats_port, "a", false);
    let ghost = unreachable_peer(nats_port, "ghost");
    let both = within(Duration::from_secs(20), async || {
        health(&http, &a).await["cluster"]["peers"] == 1
    })
    .await;
    assert!(both.is_some(), "{}", a.log());
    model_seen_down(&http, &a).await;

    // Each request for `m` tries the peer first (a's own model is down) and fails there.
    let opened = within(Duration::from_secs(10), async || {
        let _ = http
            .post(a.url("/v1/infer"))
            .json(&serde_json::json!({"input": "x", "model": "m"}))
            .send()
            .await;
        health(&http, &a).await["cluster"]["openBreakers"] == 1
    })
    .await;
    assert!(opened.is_some(), "{}", health(&http, &a).await);
    assert!(
        metrics(&http, &a)
            .await
            .contains("\nray_cluster_open_breakers 1\n")
    );

    // The peer leaves: within a few heartbeats (well before the breaker's 10 s are over) it
    // no longer counts.
    ghost.leave().await;
    let dropped = within(Duration::from_secs(3), async || {
        let cluster = health(&http, &a).await["cluster"].clone();
        cluster["peers"] == 0 && cluster["openBreakers"] == 0
    })
    .await;
    assert!(dropped.is_some(), "{}", health(&http, &a).await);
    assert!(
        metrics(&http, &a)
            .await
            .contains("\nray_cluster_open_breakers 0\n")
    );
}

/// Every read of `GET /v1/cluster/nodes` lists each live node exactly once, also while the
/// nodes keep writing their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_of_the_node_list_has_each_node_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(10);
    let nodes: Vec<Node> = ["a", "b", "c"]
        .into_iter()
        .map(|id| Node::start(dir.path(), nats_port, id, true))
        .collect();
    let all = within(Duration::from_secs(20), async || {
        node_ids(&http, &nodes[0]).await == ["a", "b", "c"]
    })
    .await;
    assert!(all.is_some(), "{}", nodes[0].log());

    const READS: usize = 300;
    let mut wrong = Vec::new();
    for n in 0..READS {
        let (first, second) = tokio::join!(
            node_ids(&http, &nodes[n % 3]),
            node_ids(&http, &nodes[(n + 1) % 3])
        );
        for ids in [first, second] {
            if ids != ["a", "b", "c"] {
                wrong.push(ids);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} reads were wrong, e.g. {:?}",
        wrong.len(),
        READS * 2,
        &wrong[..wrong.len().min(5)]
    );
}

/// A node started with another cluster key is named in `/health` (`cluster.lastError`) on
/// both sides, and a request it would forward to such a peer is not answered with the peer's
/// refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cluster_key_is_named_in_health() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(10);
    let wrong = Node::start_custom(
        dir.path(),
        nats_port,
        "a",
        false,
        free_port(),
        "",
        &Setup {
            key: "not-the-cluster-key-at-all",
            ..Setup::default()
        },
    );
    let right = Node::start(dir.path(), nats_port, "b", true);
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &wrong).await == ["a", "b"]
    })
    .await;
    assert!(both.is_some(), "{}", wrong.log());
    model_seen_down(&http, &wrong).await;

    for (node, other) in [(&wrong, "b"), (&right, "a")] {
        let named = within(Duration::from_secs(10), async || {
            let cluster = health(&http, node).await["cluster"].clone();
            let error = cluster["lastError"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            error.contains("cluster key") && error.contains(other) && cluster["status"] != "ok"
        })
        .await;
        assert!(
            named.is_some(),
            "{}: {}",
            node.id,
            health(&http, node).await["cluster"]
        );
    }
    // a's model is down and its only peer refuses its signature: the local answer stands
    // (503), not the peer's 401.
    let answer = http
        .post(wrong.url("/v1/infer"))
        .json(&serde_json::json!({"input": "x", "model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-ray-node"], "a");
    assert_eq!(answer.status(), 503);
}

/// A node whose `heartbeatMs` is slower than the one the registry bucket was created with
/// stays listed (it writes often enough for the bucket's expiry), and the mismatch is named
/// in `/health`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_slower_heartbeat_stays_listed_and_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(10);
    // a creates the bucket: records expire after 3 × 300 ms.
    let a = Node::start(dir.path(), nats_port, "a", true);
    let alone = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a"]
    })
    .await;
    assert!(alone.is_some(), "{}", a.log());
    let slow = Node::start_custom(
        dir.path(),
        nats_port,
        "s",
        true,
        free_port(),
        "",
        &Setup {
            heartbeat_ms: 1_000,
            ..Setup::default()
        },
    );
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a", "s"]
    })
    .await;
    assert!(both.is_some(), "{}", slow.log());

    let mut missing = 0;
    for _ in 0..100 {
        if node_ids(&http, &a).await != ["a", "s"] {
            missing += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(missing, 0, "s was missing from {missing} of 100 reads");

    for (node, says) in [(&slow, "heartbeatMs"), (&a, "heartbeatMs")] {
        let error = health(&http, node).await["cluster"]["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(says), "{}: {error:?}", node.id);
    }
}

/// A node that has just started and is busy overflows to a peer before its first request has
/// finished: the time its oldest waiting request has waited stands in for the service time it
/// has not measured yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_busy_node_overflows_before_its_first_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(20);
    // a's backend takes 3 s per request (one at a time); it overflows past 1 s of wait.
    let busy = Node::start_custom(
        dir.path(),
        nats_port,
        "a",
        true,
        free_port(),
        "",
        &Setup {
            latency_ms: 3_000,
            cluster_extra: r#","overflowAfterMs":1000"#,
            ..Setup::default()
        },
    );
    let idle = Node::start(dir.path(), nats_port, "b", true);
    let peer_seen = within(Duration::from_secs(20), async || {
        health(&http, &busy).await["cluster"]["peers"] == 1
    })
    .await;
    assert!(peer_seen.is_some(), "{}", busy.log());

    // Two requests: one runs, one waits; neither has finished when the third comes.
    let mut running = Vec::new();
    for n in 0..2 {
        let http = http.clone();
        let url = busy.url("/v1/infer");
        running.push(tokio::spawn(async move {
            let answer = http
                .post(url)
                .json(&serde_json::json!({"input": format!("slow {n}"), "model": "m"}))
                .send()
                .await
                .unwrap();
            answer.headers()["x-ray-node"].to_str().unwrap().to_string()
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let third = http
        .post(busy.url("/v1/infer"))
        .json(&serde_json::json!({"input": "third", "model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(
        third.headers()["x-ray-node"],
        "b",
        "{}",
        health(&http, &busy).await["models"]
    );
    for task in running {
        assert_eq!(task.await.unwrap(), "a");
    }
    assert_eq!(idle.id, "b");
}

/// A node whose NATS credentials are refused says so in `/health` (`cluster.lastError`), not
/// only in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_nats_credentials_are_named_in_health() {
    let dir = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let Some(_nats) = Nats::start_args(
        &dir.path().join("nats"),
        nats_port,
        &["--auth", "the-right-token"],
    ) else {
        return;
    };
    let http = client(10);
    let refused = Node::start_custom(
        dir.path(),
        nats_port,
        "a",
        true,
        free_port(),
        "",
        &Setup {
            cluster_extra: r#","credentialsEnv":"RAY_TEST_NATS_TOKEN""#,
            nats_token: "a-wrong-token",
            ..Setup::default()
        },
    );
    let named = within(Duration::from_secs(10), async || {
        let cluster = health(&http, &refused).await["cluster"].clone();
        cluster["status"] == "degraded"
            && cluster["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("authorization violation"))
    })
    .await;
    assert!(
        named.is_some(),
        "{}\n{}",
        health(&http, &refused).await["cluster"],
        refused.log()
    );
    // The right token connects, and the error is gone.
    let accepted = Node::start_custom(
        dir.path(),
        nats_port,
        "b",
        true,
        free_port(),
        "",
        &Setup {
            cluster_extra: r#","credentialsEnv":"RAY_TEST_NATS_TOKEN""#,
            nats_token: "the-right-token",
            ..Setup::default()
        },
    );
    let ok = within(Duration::from_secs(20), async || {
        let cluster = health(&http, &accepted).await["cluster"].clone();
        cluster["status"] == "ok" && cluster["lastError"].is_null()
    })
    .await;
    assert!(
        ok.is_some(),
        "{}",
        health(&http, &accepted).await["cluster"]
    );
}

/// Two nodes sharing jobs through one NATS (`a`'s model down, `b`'s up), seen by each other,
/// with callbacks allowed to loopback.
fn outage_pair(dir: &Path, nats: u16) -> (Node, Node) {
    let queue = |id: &str| {
        format!(
            r#","asyncQueue":{{"enabled":true,"storageDir":"{}","dispatchConcurrency":2,
               "maxAttempts":3,"pollIntervalMs":50,"callbackAllowPrivateNetwork":true}}"#,
            dir.join(format!("jobs-{id}")).display()
        )
    };
    let a = Node::start_with(dir, nats, "a", false, free_port(), &queue("a"));
    let b = Node::start_with(dir, nats, "b", true, free_port(), &queue("b"));
    (a, b)
}

/// Waits until `node` says its NATS connection is `state`.
async fn connection_is(http: &reqwest::Client, node: &Node, state: &str) {
    let seen = within(Duration::from_secs(20), async || {
        health(http, node).await["cluster"]["connection"] == state
    })
    .await;
    assert!(
        seen.is_some(),
        "{}'s connection is {state}: {}\n{}",
        node.id,
        health(http, node).await["cluster"],
        node.log()
    );
}

/// While NATS is stopped and the node knows its connection is down, the requests that need
/// NATS are refused at once with `503 cluster_unavailable` and `Retry-After`, not after the
/// client's request timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_nats_outage_cluster_requests_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(60);
    let (a, b) = outage_pair(dir.path(), nats_port);
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a", "b"]
    })
    .await;
    assert!(both.is_some(), "{}", a.log());

    nats.stop();
    connection_is(&http, &a, "disconnected").await;
    connection_is(&http, &b, "disconnected").await;
    let requests = [
        (reqwest::Method::GET, "/v1/cluster/nodes", None),
        (
            reqwest::Method::POST,
            "/v1/jobs",
            Some(serde_json::json!({"input": "during the outage", "model": "m"})),
        ),
        (reqwest::Method::GET, "/v1/jobs/job_a_unknown", None),
        (reqwest::Method::DELETE, "/v1/jobs/job_a_unknown", None),
    ];
    for node in [&a, &b] {
        for (method, path, body) in &requests {
            let started = Instant::now();
            let mut request = http.request(method.clone(), node.url(path));
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = request.send().await.unwrap();
            let took = started.elapsed();
            let status = answer.status();
            let retry_after = answer.headers().get("retry-after").cloned();
            let text = answer.text().await.unwrap_or_default();
            assert_eq!(status, 503, "{method} {path} on {}: {text}", node.id);
            assert!(text.contains("cluster_unavailable"), "{text}");
            assert!(retry_after.is_some(), "{method} {path}: no Retry-After");
            assert!(
                took < Duration::from_millis(1500),
                "{method} {path} on {} took {took:?} to be refused",
                node.id
            );
        }
    }
}

/// A job submitted while NATS is stopped is refused and never runs: not when NATS comes back
/// (the client buffers nothing for it), while a job submitted after the outage runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_refused_during_a_nats_outage_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let (callback_port, callbacks) = callback_receiver().await;
    let http = client(60);
    let (a, b) = outage_pair(dir.path(), nats_port);
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a", "b"]
    })
    .await;
    assert!(both.is_some(), "{}", a.log());
    let job = |input: &str| {
        serde_json::json!({
            "input": input,
            "model": "m",
            "callbackUrl": format!("http://127.0.0.1:{callback_port}/hook"),
        })
    };

    nats.stop();
    connection_is(&http, &a, "disconnected").await;
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let answer = http
            .post(node.url("/v1/jobs"))
            .json(&job(&format!("refused {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503, "{}", answer.text().await.unwrap());
    }

    let Some(_nats) = Nats::start(&dir.path().join("nats"), nats_port) else {
        return;
    };
    connection_is(&http, &a, "connected").await;
    connection_is(&http, &b, "connected").await;
    // A job accepted now runs and calls back: the queue works again.
    let mut accepted = None;
    let took = within(Duration::from_secs(30), async || {
        let Ok(answer) = http
            .post(a.url("/v1/jobs"))
            .json(&job("after"))
            .send()
            .await
        else {
            return false;
        };
        if answer.status() != 202 {
            return false;
        }
        let body: serde_json::Value = answer.json().await.unwrap();
        accepted = body["id"].as_str().map(String::from);
        true
    })
    .await;
    assert!(took.is_some(), "{}", a.log());
    let accepted = accepted.unwrap();
    let called = within(Duration::from_secs(30), async || {
        callbacks.lock().contains_key(&accepted)
    })
    .await;
    assert!(called.is_some(), "{}\n{}", a.log(), b.log());
    // Longer than a refused job's record grace: none of the refused jobs ran.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = callbacks.lock().clone();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&accepted],
        "jobs refused during the outage ran:\n{}\n{}",
        a.log(),
        b.log()
    );
}

/// While NATS is stopped, the peers seen before are trusted only for the registry's expiry:
/// after it `/health` counts none and a request for a model that is down here is answered
/// here, not forwarded to a peer whose record would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_not_trusted_past_the_registry_expiry_during_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(60);
    let a = Node::start(dir.path(), nats_port, "a", false);
    let b = Node::start(dir.path(), nats_port, "b", true);
    model_seen_down(&http, &a).await;
    let forwarded = within(Duration::from_secs(20), async || {
        let Ok(answer) = http
            .post(a.url("/v1/infer"))
            .json(&serde_json::json!({"input": "hello", "model": "m"}))
            .send()
            .await
        else {
            return false;
        };
        answer.status() == 200 && answer.headers()["x-ray-node"] == "b"
    })
    .await;
    assert!(forwarded.is_some(), "{}", a.log());
    assert_eq!(health(&http, &a).await["cluster"]["peers"], 1);

    nats.stop();
    connection_is(&http, &a, "disconnected").await;
    // Three heartbeats (the registry's expiry) after the last one read, with a margin.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 3 + 300)).await;
    let cluster = health(&http, &a).await["cluster"].clone();
    assert_eq!(cluster["peers"], 0, "{cluster}");
    assert_eq!(cluster["status"], "degraded", "{cluster}");
    let answer = http
        .post(a.url("/v1/infer"))
        .json(&serde_json::json!({"input": "hello", "model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["x-ray-node"],
        "a",
        "forwarded to a peer not seen for longer than the registry's expiry"
    );
    assert_ne!(answer.status(), 200);
    drop(b);
}

/// A request for a model this node does not have, by id or alias, is served by the peer whose
/// record lists it (a name no node has stays `404` here), and a job for it is run by that peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_only_a_peer_serves_is_served_by_that_peer() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_nats, nats_port)) = Nats::in_dir(dir.path()) else {
        return;
    };
    let http = client(20);
    let queue = |id: &str| {
        format!(
            r#","asyncQueue":{{"enabled":true,"storageDir":"{}","pollIntervalMs":50}}"#,
            dir.path().join(format!("jobs-{id}")).display()
        )
    };
    let a = Node::start_with(dir.path(), nats_port, "a", true, free_port(), &queue("a"));
    let p = Node::start_custom(
        dir.path(),
        nats_port,
        "p",
        true,
        free_port(),
        &queue("p"),
        &Setup {
            model: "only-p",
            ..Setup::default()
        },
    );
    let both = within(Duration::from_secs(20), async || {
        node_ids(&http, &a).await == ["a", "p"]
    })
    .await;
    assert!(both.is_some(), "{}", a.log());

    let served = within(Duration::from_secs(20), async || {
        let Ok(answer) = http
            .post(a.url("/v1/infer"))
            .json(&serde_json::json!({"input": "hello", "model": "only-p"}))
            .send()
            .await
        else {
            return false;
        };
        answer.status() == 200 && answer.headers()["x-ray-node"] == "p"
    })
    .await;
    assert!(served.is_some(), "{}", a.log());
    let answer = http
        .post(a.url("/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "only-p-alias",
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-ray-node"], "p");
    let answer = http
        .post(a.url("/v1/infer"))
        .json(&serde_json::json!({"input": "hello", "model": "nowhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert_eq!(answer.headers()["x-ray-node"], "a");

    let answer = http
        .post(a.url("/v1/jobs"))
        .json(&serde_json::json!({"input": "a job for p", "model": "only-p-alias"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());
    let id = answer.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut record = serde_json::Value::Null;
    let done = within(Duration::from_secs(30), async || {
        let Ok(answer) = http.get(a.url(&format!("/v1/jobs/{id}"))).send().await else {
            return false;
        };
        record = answer.json().await.unwrap_or_default();
        record["status"] == "succeeded"
    })
    .await;
    assert!(done.is_some(), "{record}\n{}", p.log());
    let answer = http
        .post(a.url("/v1/jobs"))
        .json(&serde_json::json!({"input": "a job for nobody", "model": "nowhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}
