//! Several Ray nodes sharing state through NATS JetStream, without a consensus layer of Ray's
//! own.
//!
//! - [`Cluster`] is one node's membership: it keeps a NATS connection in the background and
//!   writes the node's [`NodeRecord`] (models and their state, queue depth, estimated wait,
//!   region, labels) to a JetStream key-value bucket on every heartbeat. The bucket's `max_age`
//!   is three heartbeats, so a node that stops writing drops out by itself (NATS 2.9 has no
//!   per-message TTL; this needs none).
//! - [`placement::rank`] orders the live peers that can serve a model: same region or labels
//!   first, then the shortest estimated wait. It is pure and property-tested.
//! - [`Breaker`] skips a peer after repeated failed forwards, then lets one trial through.
//! - [`auth`] signs requests between nodes with the shared cluster key and marks them as
//!   forwarded, so forwarding is one hop at most.
//!
//! Single-node Ray needs none of this: without a `cluster` section the gateway never links a
//! connection to NATS.
//!
//! # Example
//!
//! Ranking peers needs no NATS:
//!
//! ```
//! use std::collections::BTreeMap;
//! use ray_cluster::placement::{Wanted, rank};
//! use ray_cluster::{ModelRecord, NodeRecord};
//!
//! let peer = |id: &str, region: &str, wait: u64| NodeRecord {
//!     id: id.into(),
//!     base_url: format!("http://{id}:8080"),
//!     region: Some(region.into()),
//!     labels: BTreeMap::new(),
//!     models: vec![ModelRecord {
//!         id: "qwen-0.5b".into(),
//!         aliases: vec![],
//!         state: "ready".into(),
//!         ready: true,
//!         queue_depth: 0,
//!         estimated_wait_ms: wait,
//!     }],
//!     free_memory_mib: None,
//!     queue_depth: 0,
//!     estimated_wait_ms: wait,
//!     version: "0.1.0".into(),
//!     heartbeat_at_ms: 0,
//!     heartbeat_ms: None,
//!     key_check: None,
//! };
//! let peers = [peer("far", "hel", 10), peer("near", "fsn", 400)];
//! let labels = BTreeMap::new();
//! let wanted = Wanted {
//!     local_id: "me",
//!     region: Some("fsn"),
//!     labels: &labels,
//!     model: "qwen-0.5b",
//!     pinned: None,
//! };
//! let ranked = rank(&peers, &wanted, |_peer| true);
//! assert_eq!(ranked[0].id, "near");
//! ```

pub mod auth;
mod breaker;
pub mod jobs;
mod node;
pub mod placement;
mod record;

pub use breaker::{Breaker, BreakerState};
pub use jobs::{ClusterJobs, JobHost, JobsOptions};
pub use node::{
    BREAKER_OPEN_FOR, BREAKER_THRESHOLD, Cluster, ClusterError, ClusterOptions, ClusterStatus,
    Credentials, NODES_BUCKET, RecordSource,
};
pub use record::{ModelRecord, NodeRecord};
