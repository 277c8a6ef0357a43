//! This node's membership: the NATS connection, the heartbeat that writes its record to the
//! registry bucket, the cached list of live peers, and a circuit breaker per peer.
//!
//! Nothing here blocks a request: the connection is made and kept in the background, the peers
//! are read on every heartbeat and cached, and when NATS is unreachable the node keeps serving
//! its own models while [`Cluster::status`] says what is degraded. While the connection is
//! down, reading the registry fails at once, and the cached peers are trusted only for the
//! registry's expiry after they were last read: a peer whose record would have expired is not
//! forwarded to nor counted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::breaker::Breaker;
use crate::placement::{Wanted, rank};
use crate::record::NodeRecord;

/// The registry bucket's default name.
pub const NODES_BUCKET: &str = "ray_nodes";
/// The longest a read of the registry (or of a shared job's record) may take before the
/// caller is answered `cluster_unavailable`.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed forwards in a row that open a peer's circuit breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker skips its peer.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(10);

/// How this node authenticates to NATS.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials (a NATS on loopback or a private network).
    #[default]
    None,
    /// A `.creds` file (JWT and NKey seed), read at connect time.
    File(PathBuf),
    /// The contents of a `.creds` file, or a token, taken from the environment.
    Secret(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::File(path) => f.debug_tuple("File").field(path).finish(),
            Credentials::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

/// What a node needs to join the cluster (from the config's `cluster` section).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// NATS server URLs (`nats://host:4222`, `tls://...`).
    pub nats_urls: Vec<String>,
    /// How to authenticate to NATS.
    pub credentials: Credentials,
    /// This node's id.
    pub node_id: String,
    /// The base URL peers use to reach this node.
    pub advertise_url: String,
    /// This node's region.
    pub region: Option<String>,
    /// This node's labels.
    pub labels: BTreeMap<String, String>,
    /// How often the node writes its record; records expire after three missed heartbeats.
    pub heartbeat: Duration,
    /// Labels a peer must carry to serve a model, by model id.
    pub model_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The registry bucket.
    pub bucket: String,
}

/// What builds this node's record on each heartbeat.
pub type RecordSource = Arc<dyn Fn() -> NodeRecord + Send + Sync>;

/// The cluster connection's state, for `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: String,
    /// `connecting`, `connected` or `disconnected`.
    pub connection: &'static str,
    /// `ok` while heartbeats are written, `unavailable` while they fail.
    pub registry: &'static str,
    /// Live peers seen at the last heartbeat (this node not counted), while that read is more
    /// recent than the registry's expiry; else 0.
    pub peers: usize,
    /// Milliseconds since the last heartbeat was written, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ago_ms: Option<u64>,
    /// Heartbeats written since start.
    pub heartbeats: u64,
    /// Heartbeats that failed since start.
    pub heartbeat_failures: u64,
    /// The last error while the registry is unavailable (what NATS said when it refuses the
    /// connection, such as an authorization violation); else a mismatch of heartbeats, when
    /// there is one (the bucket's expiry is not three of this node's heartbeats, or peers
    /// advertise another `heartbeatMs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ClusterStatus {
    /// Whether NATS is reachable and this node's record is current.
    pub fn is_healthy(&self) -> bool {
        self.connection == "connected" && self.registry == "ok"
    }
}

#[derive(Debug, Default)]
struct State {
    client: Option<async_nats::Client>,
    peers: Vec<NodeRecord>,
    last_heartbeat: Option<Instant>,
    heartbeats: u64,
    failures: u64,
    last_error: Option<String>,
    registry_ok: bool,
    /// The registry bucket's `max_age` (set by the node that created it), once read.
    expiry: Option<Duration>,
    /// What does not match between this node's heartbeat and the cluster's, if anything.
    heartbeat_note: Option<String>,
    /// The last error the NATS connection reported (an authorization violation, say), until
    /// it connects.
    connection_error: Option<String>,
}

struct Shared {
    options: ClusterOptions,
    source: RecordSource,
    state: Mutex<State>,
    breakers: Mutex<HashMap<String, Breaker>>,
    stop: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

/// This node's membership in the cluster. Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.shared.options.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins the cluster in the background: connects to NATS (retrying while it is down),
    /// makes sure the registry bucket exists, and writes this node's record from `source`
    /// every heartbeat until [`Cluster::leave`]. Must be called inside a Tokio runtime.
    pub fn start(options: ClusterOptions, source: RecordSource) -> Cluster {
        let cluster = Cluster {
            shared: Arc::new(Shared {
                options,
                source,
                state: Mutex::new(State::default()),
                breakers: Mutex::new(HashMap::new()),
                stop: Notify::new(),
                stopped: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        // The background holds the node weakly: dropping the last handle stops the heartbeat
        // (without removing the record, as a crash would), `leave` stops it and removes it.
        let weak = Arc::downgrade(&cluster.shared);
        tokio::spawn(run(weak));
        cluster
    }

    /// The options it was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.shared.options
    }

    /// The NATS client, once the first connection attempt was made.
    pub fn client(&self) -> Option<async_nats::Client> {
        self.shared.state.lock().client.clone()
    }

    /// The connection and registry state now.
    pub fn status(&self) -> ClusterStatus {
        let state = self.shared.state.lock();
        let connection = match state.client.as_ref().map(|c| c.connection_state()) {
            None | Some(async_nats::connection::State::Pending) => "connecting",
            Some(async_nats::connection::State::Connected) => "connected",
            Some(async_nats::connection::State::Disconnected) => "disconnected",
        };
        ClusterStatus {
            node_id: self.shared.options.node_id.clone(),
            connection,
            registry: if state.registry_ok {
                "ok"
            } else {
                "unavailable"
            },
            peers: fresh_peers(&state, self.shared.options.heartbeat).len(),
            last_heartbeat_ago_ms: state
                .last_heartbeat
                .map(|at| at.elapsed().as_millis() as u64),
            heartbeats: state.heartbeats,
            heartbeat_failures: state.failures,
            last_error: if state.registry_ok {
                state.heartbeat_note.clone()
            } else if connection == "connected" {
                state.last_error.clone()
            } else {
                // Why NATS refuses this node (wrong credentials, say) says more than the
                // heartbeat that timed out meanwhile.
                state
                    .connection_error
                    .clone()
                    .or_else(|| state.last_error.clone())
            },
        }
    }

    /// The live peers as seen at the last heartbeat (this node not included); none once that
    /// heartbeat is older than the registry's expiry (NATS unreachable): their records would
    /// have expired since, so they are no longer known to be alive.
    pub fn peers(&self) -> Vec<NodeRecord> {
        fresh_peers(&self.shared.state.lock(), self.shared.options.heartbeat).to_vec()
    }

    /// Whether the NATS connection is up now (as the client reports it).
    pub fn is_connected(&self) -> bool {
        self.client().is_some_and(|client| {
            client.connection_state() == async_nats::connection::State::Connected
        })
    }

    /// Every live node's record, read from the registry now (this node included): an error at
    /// once while the NATS connection is down, or after
    /// [`REQUEST_TIMEOUT`](crate::jobs::REQUEST_TIMEOUT).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        if !self.is_connected() {
            return Err(ClusterError::Unavailable(
                "the connection to NATS is down".into(),
            ));
        }
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let store = self.store().await?;
            read_all(&store).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(ClusterError::Registry(format!(
                "no answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )))
        })
    }

    /// The peers that can serve `model`, best first (see [`crate::placement`]), skipping
    /// those whose breaker is open.
    pub fn candidates(&self, model: &str) -> Vec<NodeRecord> {
        let options = &self.shared.options;
        let peers = self.peers();
        let now = Instant::now();
        let breakers = self.shared.breakers.lock();
        let wanted = Wanted {
            local_id: &options.node_id,
            region: options.region.as_deref(),
            labels: &options.labels,
            model,
            pinned: options.model_labels.get(model),
        };
        rank(&peers, &wanted, |id| {
            breakers.get(id).is_none_or(|b| b.allows(now))
        })
        .into_iter()
        .cloned()
        .collect()
    }

    /// Takes the right to send one request to `peer` (false while its breaker is open).
    pub fn acquire(&self, peer: &str) -> bool {
        self.shared
            .breakers
            .lock()
            .entry(peer.to_string())
            .or_insert_with(|| Breaker::new(BREAKER_THRESHOLD, BREAKER_OPEN_FOR))
            .try_acquire(Instant::now())
    }

    /// The outcome of a request sent to `peer` after [`Cluster::acquire`].
    pub fn record(&self, peer: &str, ok: bool) {
        if let Some(breaker) = self.shared.breakers.lock().get_mut(peer) {
            breaker.record(ok, Instant::now());
        }
    }

    /// Live peers whose breaker is open now (a peer that left the registry is not counted:
    /// its breaker is dropped at the next heartbeat).
    pub fn open_breakers(&self) -> usize {
        let now = Instant::now();
        let peers = self.peers();
        self.shared
            .breakers
            .lock()
            .iter()
            .filter(|(id, b)| !b.allows(now) && peers.iter().any(|p| &p.id == *id))
            .count()
    }

    /// Stops the heartbeat and removes this node's record (best effort, within one second),
    /// so peers stop sending it requests at once instead of after the record expires.
    pub async fn leave(&self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.stop.notify_waiters();
        if let Ok(Ok(store)) = tokio::time::timeout(Duration::from_secs(1), self.store()).await {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                store.delete(&self.shared.options.node_id),
            )
            .await;
        }
    }

    /// Writes this node's record and reads the live peers; fails at once while the NATS
    /// connection is down (the first connection still being made is waited for, within the
    /// heartbeat's bound).
    async fn heartbeat(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let options = &self.shared.options;
        let down = self.client().is_some_and(|client| {
            client.connection_state() == async_nats::connection::State::Disconnected
        });
        if down {
            return Err(ClusterError::Unavailable(
                "the connection to NATS is down".into(),
            ));
        }
        let mut record = (self.shared.source)();
        record.id.clone_from(&options.node_id);
        record.heartbeat_at_ms = unix_millis();
        record.heartbeat_ms = Some(options.heartbeat.as_millis() as u64);
        let body =
            serde_json::to_vec(&record).map_err(|e| ClusterError::Registry(e.to_string()))?;
        let store = self.store().await?;
        let max_age = store.stream.cached_info().config.max_age;
        self.shared.state.lock().expiry = (!max_age.is_zero()).then_some(max_age);
        let put = tokio::time::timeout(options.heartbeat.max(Duration::from_secs(1)), async {
            store.put(&options.node_id, body.into()).await
        })
        .await;
        match put {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(ClusterError::Registry(error.to_string())),
            Err(_) => return Err(ClusterError::Registry("the heartbeat timed out".into())),
        }
        let mut nodes = read_all(&store).await?;
        nodes.retain(|n| n.id != options.node_id);
        Ok(nodes)
    }

    /// The registry bucket, created when it does not exist (its records expire after three
    /// heartbeats: the bucket's `max_age`).
    async fn store(&self) -> Result<kv::Store, ClusterError> {
        let client = self
            .client()
            .ok_or_else(|| ClusterError::Unavailable("not connected to NATS yet".into()))?;
        let options = &self.shared.options;
        let context = jetstream::new(client);
        if let Ok(store) = context.get_key_value(&options.bucket).await {
            return Ok(store);
        }
        create_bucket_with(
            &context,
            &options.bucket,
            "Ray node registry: one record per live node",
            options.heartbeat * 3,
        )
        .await
    }
}

/// Connects, then writes a heartbeat every `heartbeat` until the node leaves or is dropped.
async fn run(weak: std::sync::Weak<Shared>) {
    let Some(shared) = weak.upgrade() else {
        return;
    };
    let client = match connect(&shared.options, weak.clone()).await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = %error, "cluster: cannot connect to NATS; this node serves alone");
            shared.state.lock().last_error = Some(error.to_string());
            return;
        }
    };
    shared.state.lock().client = Some(client);
    drop(shared);
    let mut was_ok = true;
    let mut warned: Option<String> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let cluster = Cluster { shared };
        let started = tokio::time::Instant::now();
        // One heartbeat takes three heartbeats (the registry's expiry) or 1 s at most: the loop
        // goes on, and `status` says how long ago the last one was written.
        let bound = heartbeat_bound(cluster.shared.options.heartbeat);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(bound, cluster.heartbeat()) => outcome.unwrap_or_else(|_| {
                Err(ClusterError::Registry(format!("the heartbeat got no answer within {} ms", bound.as_millis())))
            }),
            () = cluster.shared.stop.notified() => return,
        };
        if cluster
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let node = &cluster.shared.options.node_id;
        let mut state = cluster.shared.state.lock();
        // Often enough for the bucket's expiry (read by this heartbeat), also when the bucket
        // was created by a node with a faster heartbeat than this one's.
        next = started + write_every(cluster.shared.options.heartbeat, state.expiry);
        match outcome {
            Ok(peers) => {
                if !was_ok {
                    tracing::info!(node = %node, "cluster: registry reachable again");
                }
                was_ok = true;
                // A peer that left takes its breaker along: it is not counted as open, and
                // starts closed if it comes back.
                cluster
                    .shared
                    .breakers
                    .lock()
                    .retain(|id, _| peers.iter().any(|p| &p.id == id));
                let options = &cluster.shared.options;
                state.heartbeat_note =
                    heartbeat_note(options.heartbeat, state.expiry, &options.bucket, &peers);
                if state.heartbeat_note != warned {
                    if let Some(note) = &state.heartbeat_note {
                        tracing::warn!(node = %node, "cluster: {note}");
                    }
                    warned.clone_from(&state.heartbeat_note);
                }
                state.peers = peers;
                state.last_heartbeat = Some(Instant::now());
                state.heartbeats += 1;
                state.registry_ok = true;
                state.last_error = None;
            }
            Err(error) => {
                if was_ok {
                    tracing::warn!(node = %node, error = %error, "cluster: heartbeat failed; serving local models only until the registry answers");
                }
                was_ok = false;
                state.failures += 1;
                state.registry_ok = false;
                state.last_error = Some(error.to_string());
            }
        }
    }
}

/// The longest one heartbeat (write and read) may take.
fn heartbeat_bound(heartbeat: Duration) -> Duration {
    (heartbeat * 3).max(Duration::from_secs(1))
}

/// The peers read at the last heartbeat, while that is more recent than the registry's expiry
/// (the bucket's, else three heartbeats); none after.
fn fresh_peers(state: &State, heartbeat: Duration) -> &[NodeRecord] {
    let expiry = state.expiry.unwrap_or(heartbeat * 3);
    match state.last_heartbeat {
        Some(at) if at.elapsed() < expiry => &state.peers,
        _ => &[],
    }
}

/// The shortest time between two writes of a node's record.
const MIN_WRITE_EVERY: Duration = Duration::from_millis(50);

/// How often a node with `heartbeat` writes its record into a bucket whose records expire after
/// `expiry`: every heartbeat, or three times per expiry when that is shorter, so the record does
/// not lapse between two writes.
fn write_every(heartbeat: Duration, expiry: Option<Duration>) -> Duration {
    match expiry {
        Some(expiry) if expiry / 3 < heartbeat => (expiry / 3).max(MIN_WRITE_EVERY),
        _ => heartbeat,
    }
}

/// What does not match between a node's `heartbeat` and the cluster's: the bucket's `expiry`
/// (three heartbeats of the node that created it) and the `heartbeatMs` its peers advertise.
fn heartbeat_note(
    heartbeat: Duration,
    expiry: Option<Duration>,
    bucket: &str,
    peers: &[NodeRecord],
) -> Option<String> {
    let own = heartbeat.as_millis();
    let mut parts = Vec::new();
    if let Some(expiry) = expiry.filter(|e| *e != heartbeat * 3) {
        let expiry_ms = expiry.as_millis();
        parts.push(if expiry < heartbeat * 3 {
            format!(
                "the registry bucket {bucket} expires records after {expiry_ms} ms, less than \
                 three of this node's heartbeats (cluster.heartbeatMs {own}), so this node \
                 writes its record every {} ms",
                write_every(heartbeat, Some(expiry)).as_millis()
            )
        } else {
            format!(
                "the registry bucket {bucket} expires records after {expiry_ms} ms, more than \
                 three of this node's heartbeats (cluster.heartbeatMs {own}), so a node that \
                 stops is dropped only after {expiry_ms} ms"
            )
        });
    }
    let others: Vec<String> = peers
        .iter()
        .filter_map(|peer| {
            let theirs = peer.heartbeat_ms.filter(|ms| u128::from(*ms) != own)?;
            Some(format!("{} ({theirs})", peer.id))
        })
        .collect();
    if !others.is_empty() {
        parts.push(format!(
            "peers with another cluster.heartbeatMs than this node's {own}: {}",
            others.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "{}; set the same heartbeatMs on every node",
            parts.join("; ")
        )
    })
}

/// Creates a key-value bucket (one value per key) whose entries expire after `max_age`, or
/// opens it when it exists.
///
/// The stream is created directly, with the settings a key-value bucket has, because the
/// client's own `create_key_value` first reads account fields that NATS 2.9 (Debian 12's) does
/// not send.
pub(crate) async fn create_bucket_with(
    context: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, ClusterError> {
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    context
        .get_or_create_stream(config)
        .await
        .map_err(|e| ClusterError::Registry(format!("cannot create the bucket {bucket}: {e}")))?;
    context
        .get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::Registry(format!("cannot open the bucket {bucket}: {e}")))
}

/// Every node's record: the keys are the subjects the bucket's stream holds now (one answer of
/// the server, not a consumer walking the bucket while records change under it, which on
/// NATS 2.9 can skip a key or deliver one twice), then each key's newest entry. A key whose
/// record is gone by then (deleted, expired) is left out; one record per node id, the newest.
async fn read_all(store: &kv::Store) -> Result<Vec<NodeRecord>, ClusterError> {
    let registry = |e: &dyn std::fmt::Display| ClusterError::Registry(e.to_string());
    let mut subjects = store
        .stream
        .info_with_subjects(format!("{}>", store.prefix))
        .await
        .map_err(|e| registry(&e))?;
    let mut keys = std::collections::BTreeSet::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject.map_err(|e| registry(&e))?;
        if let Some(key) = subject.strip_prefix(store.prefix.as_str()) {
            keys.insert(key.to_string());
        }
    }
    let mut nodes: BTreeMap<String, (u64, NodeRecord)> = BTreeMap::new();
    for key in keys {
        let Some(entry) = store.entry(key.as_str()).await.map_err(|e| registry(&e))? else {
            continue;
        };
        if !matches!(entry.operation, kv::Operation::Put) {
            continue;
        }
        match serde_json::from_slice::<NodeRecord>(&entry.value) {
            Ok(record) => {
                if nodes
                    .get(&record.id)
                    .is_none_or(|(revision, _)| *revision < entry.revision)
                {
                    nodes.insert(record.id.clone(), (entry.revision, record));
                }
            }
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "cluster: an unreadable node record was skipped");
            }
        }
    }
    Ok(nodes.into_values().map(|(_, record)| record).collect())
}

async fn connect(
    options: &ClusterOptions,
    weak: std::sync::Weak<Shared>,
) -> Result<async_nats::Client, ClusterError> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(format!("ray-{}", options.node_id))
        .event_callback(move |event| {
            let weak = weak.clone();
            async move {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let mut state = shared.state.lock();
                match event {
                    async_nats::Event::Connected => state.connection_error = None,
                    async_nats::Event::ServerError(error) => {
                        state.connection_error = Some(format!("NATS refused this node: {error}"));
                    }
                    async_nats::Event::ClientError(error) => {
                        state.connection_error = Some(format!("NATS: {error}"));
                    }
                    _ => {}
                }
            }
        })
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None::<usize>);
    connect = match &options.credentials {
        Credentials::None => connect,
        Credentials::File(path) => connect
            .credentials_file(path)
            .await
            .map_err(|e| ClusterError::Credentials(format!("{}: {e}", path.display())))?,
        Credentials::Secret(secret) if secret.contains("BEGIN NATS USER JWT") => connect
            .credentials(secret)
            .map_err(|e| ClusterError::Credentials(e.to_string()))?,
        Credentials::Secret(token) => connect.token(token.clone()),
    };
    connect
        .connect(options.nats_urls.as_slice())
        .await
        .map_err(|e| ClusterError::Unavailable(e.to_string()))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// NATS cannot be reached.
    #[error("NATS is unreachable: {0}")]
    Unavailable(String),
    /// The credentials cannot be used.
    #[error("the NATS credentials cannot be used: {0}")]
    Credentials(String),
    /// The registry bucket cannot be read or written.
    #[error("the node registry is unavailable: {0}")]
    Registry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, heartbeat_ms: Option<u64>) -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "baseUrl": "http://x", "heartbeatMs": heartbeat_ms,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_record_is_written_often_enough_for_the_buckets_expiry() {
        let ms = Duration::from_millis;
        assert_eq!(write_every(ms(1000), None), ms(1000));
        assert_eq!(write_every(ms(1000), Some(ms(3000))), ms(1000));
        assert_eq!(write_every(ms(1000), Some(ms(900))), ms(300));
        assert_eq!(write_every(ms(300), Some(ms(6000))), ms(300));
        assert_eq!(write_every(ms(1000), Some(ms(30))), MIN_WRITE_EVERY);
    }

    #[test]
    fn a_heartbeat_mismatch_is_named() {
        let ms = Duration::from_millis;
        let same = [peer("b", Some(300)), peer("old", None)];
        assert_eq!(heartbeat_note(ms(300), Some(ms(900)), "r", &same), None);
        let slow = heartbeat_note(ms(1000), Some(ms(900)), "r", &same).unwrap_or_default();
        assert!(slow.contains("every 300 ms"), "{slow}");
        assert!(slow.contains("b (300)"), "{slow}");
        assert!(!slow.contains("old"), "{slow}");
        let fast = heartbeat_note(ms(300), Some(ms(6000)), "r", &[]).unwrap_or_default();
        assert!(fast.contains("only after 6000 ms"), "{fast}");
    }
}
