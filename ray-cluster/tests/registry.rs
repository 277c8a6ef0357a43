//! The node registry against a real `nats-server -js` started on a free port with its own
//! store directory: nodes appear within two heartbeats, a node that stops writing drops out
//! within three, the registry recovers after NATS restarts, and every read lists each node
//! once while records keep changing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::Nats;

use ray_cluster::{Cluster, ClusterOptions, Credentials, ModelRecord, NODES_BUCKET, NodeRecord};

const HEARTBEAT: Duration = Duration::from_millis(300);

fn options(url: &str, id: &str, region: &str) -> ClusterOptions {
    ClusterOptions {
        nats_urls: vec![url.to_string()],
        credentials: Credentials::None,
        node_id: id.into(),
        advertise_url: format!("http://{id}.invalid:8080"),
        region: Some(region.into()),
        labels: BTreeMap::new(),
        heartbeat: HEARTBEAT,
        model_labels: BTreeMap::new(),
        bucket: NODES_BUCKET.into(),
    }
}

fn source(id: &str, ready: bool) -> ray_cluster::RecordSource {
    let id = id.to_string();
    Arc::new(move || NodeRecord {
        id: id.clone(),
        base_url: format!("http://{id}.invalid:8080"),
        region: None,
        labels: BTreeMap::new(),
        models: vec![ModelRecord {
            id: "m".into(),
            aliases: vec![],
            state: if ready { "ready" } else { "unavailable" }.into(),
            ready,
            queue_depth: 0,
            estimated_wait_ms: 0,
        }],
        free_memory_mib: None,
        queue_depth: 0,
        estimated_wait_ms: 0,
        version: "test".into(),
        heartbeat_at_ms: 0,
        heartbeat_ms: None,
        key_check: None,
    })
}

async fn ids(cluster: &Cluster) -> Vec<String> {
    match cluster.nodes().await {
        Ok(nodes) => nodes.into_iter().map(|n| n.id).collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `check` every 50 ms for at most `limit`; the time it took when it held.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_expire_and_survive_a_nats_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = Nats::start(dir.path(), 0) else {
        return;
    };
    let url = nats.url();
    let a = Cluster::start(options(&url, "a", "fsn"), source("a", true));
    let b = Cluster::start(options(&url, "b", "fsn"), source("b", true));
    let c = Cluster::start(options(&url, "c", "hel"), source("c", false));

    // All three within two heartbeats of the first one written (the first connection is
    // part of the wait, so the bound here is generous; the figure is printed).
    let took = within(HEARTBEAT * 10, async || ids(&a).await == ["a", "b", "c"]).await;
    let took = took.unwrap_or_else(|| {
        panic!(
            "all three nodes registered: {:?} {:?}",
            a.status(),
            futures_util::FutureExt::now_or_never(a.nodes())
        )
    });
    eprintln!("registry: three nodes visible after {took:?}");
    let seen = within(HEARTBEAT * 4, async || a.peers().len() == 2).await;
    assert!(seen.is_some(), "a sees its two peers");
    assert!(a.status().is_healthy(), "{:?}", a.status());

    // Placement: c's model is not ready, so only b is a candidate for a.
    let candidates: Vec<String> = a.candidates("m").into_iter().map(|n| n.id).collect();
    assert_eq!(candidates, ["b"]);

    // A breaker opened by failures takes the peer out until its time is over.
    for _ in 0..ray_cluster::BREAKER_THRESHOLD {
        assert!(a.acquire("b"));
        a.record("b", false);
    }
    assert!(!a.acquire("b"));
    assert!(a.candidates("m").is_empty());
    assert_eq!(a.open_breakers(), 1);

    // A node that stops writing (dropped without leaving, as a killed node would) drops out
    // after three heartbeats.
    drop(c);
    let c_gone = within(HEARTBEAT * 10, async || {
        !ids(&a).await.contains(&"c".to_string())
    })
    .await
    .expect("c expired");
    eprintln!("registry: a silent node dropped after {c_gone:?} (heartbeat {HEARTBEAT:?})");

    // A node that leaves is gone at once.
    b.leave().await;
    let b_gone = within(HEARTBEAT * 2, async || {
        !ids(&a).await.contains(&"b".to_string())
    })
    .await;
    assert!(b_gone.is_some(), "b's record removed when it left");

    // NATS restarts on the same port and store: the registry says unavailable meanwhile,
    // then recovers by itself.
    let port = nats.port;
    nats.stop();
    let down = within(HEARTBEAT * 20, async || !a.status().is_healthy()).await;
    assert!(down.is_some(), "the outage is visible: {:?}", a.status());
    let _nats = Nats::start(dir.path(), port).expect("nats restarts");
    let back = within(Duration::from_secs(20), async || {
        a.status().is_healthy() && ids(&a).await.contains(&"a".to_string())
    })
    .await
    .expect("the registry recovers after NATS returns");
    eprintln!("registry: recovered {back:?} after NATS restarted");
}

/// Every read lists each node exactly once while the nodes keep rewriting their records (a
/// read that walked the bucket with a consumer could skip a key or list it twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_lists_each_node_once_while_records_change() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path(), 0) else {
        return;
    };
    let url = nats.url();
    let a = Cluster::start(options(&url, "a", "fsn"), source("a", true));
    let _b = Cluster::start(options(&url, "b", "fsn"), source("b", true));
    let _c = Cluster::start(options(&url, "c", "fsn"), source("c", true));
    let all = within(HEARTBEAT * 10, async || ids(&a).await == ["a", "b", "c"]).await;
    assert!(all.is_some(), "{:?}", a.status());
    let mut wrong = Vec::new();
    for _ in 0..600 {
        let seen = ids(&a).await;
        if seen != ["a", "b", "c"] {
            wrong.push(seen);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 600 reads: {:?}",
        wrong.len(),
        wrong
    );
}
