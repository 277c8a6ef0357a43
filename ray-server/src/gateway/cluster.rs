//! The gateway's side of a cluster (`cluster` in the config): joining the registry, the node
//! list route, and forwarding a request to a peer when the local model cannot serve it well.
//!
//! A request is forwarded when its model (by name, else the default model) is not one of this
//! node's, is not ready here (down, loading, in cooldown) or its estimated wait is over
//! `cluster.overflowAfterMs`, and a live peer has it ready. A job for a model only peers serve
//! goes to that model's queue, where they take it. Forwarding is one hop: the forwarded request carries
//! `X-Ray-Hop` and a signature with the cluster key, and a node never forwards a request that
//! has one. With no peer available, or when every peer tried fails, the local answer stands.
//! Every response of a node in a cluster says which node served it (`X-Ray-Node`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use ray_cluster::auth::{AUTH_HEADER, HOP_HEADER, NODE_HEADER};
use ray_cluster::jobs::HostFuture;
use ray_cluster::{
    Cluster, ClusterJobs, ClusterOptions, Credentials, JobHost, JobsOptions, ModelRecord,
    NODES_BUCKET, NodeRecord,
};
use ray_core::config::{ClusterConfig, MIN_CLUSTER_KEY_BYTES};
use ray_core::wire::{
    ClusterHealth, InferRequest, InferResponse, JobAccepted, JobRecord, JobSubmission,
};
use ray_core::{ErrorCode, RayError};
use ray_runtime::Runtime;
use ray_runtime::metrics::{MetricKind, MetricsSnapshot, Sample};

use crate::gateway::http::Body;

/// Peers tried for one request before the local answer stands.
const MAX_PEERS_TRIED: usize = 2;
/// How long a peer has to start answering a forwarded request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/health` names a peer that refused this node's signature, after the refusal.
const KEY_REFUSAL_SHOWN_FOR: Duration = Duration::from_secs(60);

/// Headers a forwarded request takes from the client's (the rest are the hop's own).
const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "x-ray-task",
    "x-ray-priority",
    "x-ray-diagnostics",
    "idempotency-key",
];
/// Headers a peer's answer keeps.
const ANSWER_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    "x-ray-model",
    "x-ray-route",
    "x-ray-node",
    "x-request-id",
];

/// Why the cluster could not be joined at start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSetupError {
    /// The cluster key's variable is unset or too short.
    #[error(
        "cluster.clusterKeyEnv: the environment variable {0} must hold the cluster key (at least {MIN_CLUSTER_KEY_BYTES} bytes, the same on every node)"
    )]
    Key(String),
    /// The credentials' variable is unset.
    #[error("cluster.credentialsEnv: the environment variable {0} is not set")]
    Credentials(String),
}

/// This gateway's membership and forwarding state.
pub(crate) struct ClusterLink {
    cluster: Cluster,
    /// The shared job queue, once NATS has been reached (with `asyncQueue.enabled`).
    jobs: Arc<std::sync::OnceLock<ClusterJobs>>,
    jobs_enabled: bool,
    ids: ray_runtime::IdSource,
    key: Vec<u8>,
    /// The fingerprint of `key` this node's record carries.
    key_check: String,
    /// The last forward refused for a signature that does not match (the other node, and when).
    key_refusal: parking_lot::Mutex<Option<(Instant, String)>>,
    client: reqwest::Client,
    overflow_after_ms: u64,
    forwarded_out: AtomicU64,
    forwarded_in: AtomicU64,
    forward_failures: AtomicU64,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl ClusterLink {
    /// Joins the cluster of `config` in the background (inside a Tokio runtime), with this
    /// node's record built from `runtime` on every heartbeat.
    pub(crate) fn start(
        runtime: &Runtime,
        config: &ClusterConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClusterLink, ClusterSetupError> {
        let key = env(&config.cluster_key_env)
            .filter(|k| k.len() >= MIN_CLUSTER_KEY_BYTES)
            .ok_or_else(|| ClusterSetupError::Key(config.cluster_key_env.clone()))?
            .into_bytes();
        let credentials = match (&config.credentials_file, &config.credentials_env) {
            (Some(file), _) => Credentials::File(file.into()),
            (None, Some(variable)) => Credentials::Secret(
                env(variable).ok_or_else(|| ClusterSetupError::Credentials(variable.clone()))?,
            ),
            (None, None) => Credentials::None,
        };
        let options = ClusterOptions {
            nats_urls: config.nats_urls.clone(),
            credentials,
            node_id: config.node_id.clone(),
            advertise_url: config.advertise_url.trim_end_matches('/').to_string(),
            region: config.region.clone(),
            labels: config.labels.clone(),
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            model_labels: config.model_labels.clone(),
            bucket: NODES_BUCKET.into(),
        };
        let key_check = ray_cluster::auth::key_check(&key);
        let source = record_source(runtime.clone(), &options, key_check.clone());
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let cluster = Cluster::start(options, source);
        tokio::spawn(watch_peers(runtime.clone(), cluster.clone()));
        let jobs = Arc::new(std::sync::OnceLock::new());
        if runtime.config().async_queue.enabled {
            tokio::spawn(open_jobs(runtime.clone(), cluster.clone(), jobs.clone()));
        }
        Ok(ClusterLink {
            cluster,
            jobs,
            jobs_enabled: runtime.config().async_queue.enabled,
            ids: ray_runtime::IdSource::default(),
            key,
            key_check,
            key_refusal: parking_lot::Mutex::new(None),
            client,
            overflow_after_ms: config.overflow_after_ms,
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
            forward_failures: AtomicU64::new(0),
        })
    }

    /// The shared job queue, when this node runs jobs through the cluster (`asyncQueue`
    /// enabled); `cluster_unavailable` until NATS has been reached.
    pub(crate) fn jobs(&self) -> Option<Result<&ClusterJobs, RayError>> {
        if self.jobs.get().is_none() && !self.cluster_jobs_enabled() {
            return None;
        }
        Some(self.jobs.get().ok_or_else(|| {
            RayError::new(
                ErrorCode::ClusterUnavailable,
                "The cluster job queue is not reachable yet (NATS has not answered); nothing was accepted",
            )
        }))
    }

    fn cluster_jobs_enabled(&self) -> bool {
        self.jobs_enabled
    }

    /// Accepts a job into the shared queue: checked like a local submission (request, model,
    /// callback URL), then answered once JetStream holds it.
    pub(crate) async fn submit_job(
        &self,
        runtime: &Runtime,
        submission: JobSubmission,
    ) -> Result<JobAccepted, RayError> {
        let jobs = self.jobs().unwrap_or_else(|| Err(disabled()))?;
        let model = match runtime.check_request(&submission.request) {
            Ok(()) => runtime.route_model(&submission.request)?,
            // A model only a peer serves: its job goes to that model's queue, and the peer
            // checks the request when it runs it.
            Err(error) if error.code() == ErrorCode::ModelNotFound => submission
                .request
                .model
                .as_deref()
                .and_then(|name| self.peer_model(name))
                .ok_or(error)?,
            Err(error) => return Err(error),
        };
        let callback = match &submission.callback_url {
            Some(url) => Some(runtime.check_callback_url(url).await?),
            None => None,
        };
        let id = self.ids.next(&format!("job_{}_", self.node_id()));
        let record = jobs.submit(id, model, submission.request, callback).await?;
        Ok(JobAccepted {
            location: format!("/v1/jobs/{}", record.id),
            id: record.id,
            status: record.status,
            created_at: record.created_at,
        })
    }

    /// A job's record from the shared queue.
    pub(crate) async fn job(&self, id: &str) -> Result<JobRecord, RayError> {
        let jobs = self.jobs().unwrap_or_else(|| Err(disabled()))?;
        jobs.get(id).await?.ok_or_else(|| job_not_found(id))
    }

    /// Cancels a job of the shared queue.
    pub(crate) async fn cancel_job(&self, id: &str) -> Result<JobRecord, RayError> {
        let jobs = self.jobs().unwrap_or_else(|| Err(disabled()))?;
        jobs.cancel(id).await?.ok_or_else(|| job_not_found(id))
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.cluster.options().node_id
    }

    /// The `X-Ray-Node` value of this node's answers.
    pub(crate) fn node_header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(self.node_id()).ok()
    }

    /// Removes this node from the registry (at shutdown).
    pub(crate) async fn leave(&self) {
        self.cluster.leave().await;
    }

    /// The `cluster` block of `/health`.
    pub(crate) fn health(&self) -> ClusterHealth {
        let status = self.cluster.status();
        let key_problem = self.key_problem();
        ClusterHealth {
            status: if status.is_healthy() && key_problem.is_none() {
                "ok"
            } else {
                "degraded"
            }
            .into(),
            node_id: status.node_id,
            connection: status.connection.into(),
            registry: status.registry.into(),
            peers: status.peers as u32,
            open_breakers: self.cluster.open_breakers() as u32,
            last_heartbeat_ago_ms: status.last_heartbeat_ago_ms,
            heartbeat_failures: status.heartbeat_failures,
            forwarded_out: self.forwarded_out.load(Ordering::Relaxed),
            forwarded_in: self.forwarded_in.load(Ordering::Relaxed),
            last_error: match (status.last_error, key_problem) {
                (Some(note), Some(key)) if status.registry == "ok" => {
                    Some(format!("{key}; {note}"))
                }
                (registry, key) => registry.or(key),
            },
        }
    }

    /// The nodes whose cluster key differs from this node's: peers whose record carries another
    /// key fingerprint, and a peer that refused this node's signature in the last minute. (A
    /// request refused here is not counted: anyone can send one.)
    fn key_problem(&self) -> Option<String> {
        let mut nodes: Vec<String> = self
            .cluster
            .peers()
            .into_iter()
            .filter(|peer| !self.same_key(peer))
            .map(|peer| peer.id)
            .collect();
        if let Some((at, node)) = self.key_refusal.lock().clone()
            && at.elapsed() < KEY_REFUSAL_SHOWN_FOR
            && !nodes.contains(&node)
        {
            nodes.push(node);
        }
        (!nodes.is_empty()).then(|| {
            format!(
                "the cluster key (cluster.clusterKeyEnv) differs between this node and {}: \
                 requests forwarded between them are refused; set the same key on every node",
                nodes.join(", ")
            )
        })
    }

    /// Whether `peer` signs with this node's cluster key, as far as its record says (a record
    /// without a fingerprint is taken to).
    fn same_key(&self, peer: &NodeRecord) -> bool {
        peer.key_check
            .as_deref()
            .is_none_or(|check| check == self.key_check)
    }

    fn note_key_refusal(&self, node: &str) {
        *self.key_refusal.lock() = Some((Instant::now(), node.to_string()));
    }

    /// The `ray_cluster_*` families.
    pub(crate) fn metrics(&self) -> MetricsSnapshot {
        let status = self.cluster.status();
        let mut m = MetricsSnapshot::default();
        m.gauge(
            "ray_cluster_connected",
            "1 while NATS is reachable and this node's registry record is current.",
            None,
            f64::from(u8::from(status.is_healthy())),
        );
        m.gauge(
            "ray_cluster_peers",
            "Live peers seen at the last heartbeat; 0 once that is older than the registry's \
             expiry (NATS away).",
            None,
            status.peers as f64,
        );
        m.gauge(
            "ray_cluster_open_breakers",
            "Live peers skipped now because their circuit breaker is open.",
            None,
            self.cluster.open_breakers() as f64,
        );
        m.counter(
            "ray_cluster_heartbeats_total",
            "Registry heartbeats written.",
            None,
            status.heartbeats as f64,
        );
        m.counter(
            "ray_cluster_heartbeat_failures_total",
            "Registry heartbeats that failed (NATS unreachable or the bucket unavailable).",
            None,
            status.heartbeat_failures as f64,
        );
        m.labelled(
            "ray_cluster_forwarded_total",
            "Requests forwarded between nodes: out (to a peer), in (from a peer), failed (a peer \
             that did not answer; the next peer or the local answer followed).",
            MetricKind::Counter,
            [
                ("out", &self.forwarded_out),
                ("in", &self.forwarded_in),
                ("failed", &self.forward_failures),
            ]
            .into_iter()
            .map(|(direction, count)| Sample {
                suffix: "",
                labels: vec![("direction", direction.into())],
                value: count.load(Ordering::Relaxed) as f64,
            })
            .collect(),
        );
        m
    }

    /// `GET /v1/cluster/nodes`: every live node's record, read from the registry now.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeRecord>, RayError> {
        self.cluster.nodes().await.map_err(|error| {
            RayError::new(
                ErrorCode::ClusterUnavailable,
                format!("The node registry cannot be read now: {error}"),
            )
            .with_retry_after(1)
        })
    }

    /// Checks a request that says it was forwarded by a peer (`X-Ray-Hop`): its signature
    /// over the method, path and body. Answers the forwarding node's id.
    pub(crate) fn verify(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, RayError> {
        let header = headers
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let node = ray_cluster::auth::verify(
            &self.key,
            header,
            unix_millis(),
            method.as_str(),
            path,
            body,
        )
        .map_err(|error| {
            RayError::new(
                ErrorCode::Unauthorized,
                format!("A forwarded request was refused: {error}"),
            )
        })?;
        if node == self.node_id() {
            return Err(RayError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "A forwarding loop: this request was forwarded by this node ({node}) itself; \
                     is cluster.nodeId the same on two nodes?"
                ),
            ));
        }
        self.forwarded_in.fetch_add(1, Ordering::Relaxed);
        Ok(node)
    }

    /// The id of the model a live peer serves as `name` (its id or an alias), if one does.
    fn peer_model(&self, name: &str) -> Option<String> {
        self.cluster
            .peers()
            .iter()
            .find_map(|peer| peer.model(name).map(|model| model.id.clone()))
    }

    /// Whether a request for `model` should go to a peer: the model is not one of this node's
    /// (a peer that serves it answers; with none, the local `404` stands), the local model is
    /// not ready, or its estimated wait is over `overflowAfterMs` (when that is set).
    pub(crate) fn wants_peer(&self, runtime: &Runtime, model: Option<&str>) -> Option<String> {
        if let Some(name) = model
            && runtime.resolve_model(name).is_none()
        {
            return Some(name.to_string());
        }
        let condition = runtime.model_condition(model);
        let overflow =
            self.overflow_after_ms > 0 && condition.estimated_wait_ms > self.overflow_after_ms;
        (!condition.ready || overflow).then_some(condition.id)
    }

    /// Sends the request to the best peers that have `model` ready, one after the other; the
    /// first peer's answer that is not a failure of the peer itself is returned. `None`: no
    /// peer took it, the local answer stands.
    pub(crate) async fn forward(
        &self,
        model: &str,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Response<Body>> {
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        // A peer with another cluster key would refuse the request: it is not tried.
        for peer in self
            .cluster
            .candidates(model)
            .into_iter()
            .filter(|peer| self.same_key(peer))
            .take(MAX_PEERS_TRIED)
        {
            if !self.cluster.acquire(&peer.id) {
                continue;
            }
            match self
                .send(&peer, method, path, path_and_query, headers, body)
                .await
            {
                Ok(response) => {
                    self.cluster.record(&peer.id, true);
                    self.forwarded_out.fetch_add(1, Ordering::Relaxed);
                    return Some(response);
                }
                Err(error) => {
                    self.cluster.record(&peer.id, false);
                    self.forward_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %peer.id, model, error = %error, "cluster: forwarding to a peer failed");
                }
            }
        }
        None
    }

    async fn send(
        &self,
        peer: &NodeRecord,
        method: &Method,
        path: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response<Body>, String> {
        let url = format!("{}{}", peer.base_url.trim_end_matches('/'), path_and_query);
        let method =
            reqwest::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.client.request(method.clone(), url);
        for name in FORWARDED_HEADERS {
            if let Some(value) = headers.get(*name) {
                request = request.header(*name, value.as_bytes());
            }
        }
        let signature = ray_cluster::auth::sign(
            &self.key,
            self.node_id(),
            unix_millis(),
            method.as_str(),
            path,
            body,
        );
        let answer = request
            .header(HOP_HEADER, self.node_id())
            .header(AUTH_HEADER, signature)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        // The peer refusing this node's signature (another cluster key, or clocks more than
        // 60 s apart) is not the client's answer: the request goes on to the next peer, or the
        // local answer stands.
        if status == 401 && answer.headers().get(NODE_HEADER).is_some() {
            let reason = answer.text().await.unwrap_or_default();
            if reason.contains("does not match this node's cluster key") {
                self.note_key_refusal(&peer.id);
                return Err(
                    "the peer refused this node's signature: is cluster.clusterKeyEnv \
                            the same key on both nodes?"
                        .into(),
                );
            }
            return Err(format!(
                "the peer refused the forwarded request (401): {reason}"
            ));
        }
        // The peer itself failing (its gateway or its backend down) sends the request on; any
        // other answer, a refusal included, is the answer.
        if matches!(status, 502 | 504) || answer.headers().get(NODE_HEADER).is_none() {
            return Err(format!("the peer answered {status}"));
        }
        let mut response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
        for name in ANSWER_HEADERS {
            for value in answer.headers().get_all(*name) {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    response = response.header(name, value);
                }
            }
        }
        // The answer is passed on as it arrives (streams included); a peer that breaks off
        // ends the body there.
        let frames = answer
            .bytes_stream()
            .take_while(|chunk| std::future::ready(chunk.is_ok()))
            .filter_map(|chunk| std::future::ready(chunk.ok().map(|b| Ok(Frame::data(b)))));
        response
            .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
            .map_err(|e| e.to_string())
    }
}

/// Emits `cluster_node_joined` and `cluster_node_left` for the hooks as peers come and go (seen
/// at each heartbeat); stops when the node leaves.
async fn watch_peers(runtime: Runtime, cluster: Cluster) {
    let mut known: Option<std::collections::BTreeSet<String>> = None;
    let mut tick = tokio::time::interval(cluster.options().heartbeat);
    loop {
        tick.tick().await;
        let status = cluster.status();
        if status.registry != "ok" {
            continue;
        }
        let now: std::collections::BTreeSet<String> =
            cluster.peers().into_iter().map(|p| p.id).collect();
        if let Some(before) = &known {
            for (kind, nodes) in [
                ("cluster_node_joined", now.difference(before)),
                ("cluster_node_left", before.difference(&now)),
            ] {
                for node in nodes {
                    let mut fields = serde_json::Map::new();
                    fields.insert("node".into(), node.clone().into());
                    runtime.emit_event(kind, fields);
                }
            }
        }
        known = Some(now);
    }
}

/// Waits for the NATS client, then starts the shared job queue's workers for the local models.
async fn open_jobs(
    runtime: Runtime,
    cluster: Cluster,
    slot: Arc<std::sync::OnceLock<ClusterJobs>>,
) {
    let client = loop {
        if let Some(client) = cluster.client() {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let queue = &runtime.config().async_queue;
    let heartbeat = cluster.options().heartbeat;
    let options = JobsOptions {
        models: runtime.model_ids(),
        concurrency: queue.dispatch_concurrency,
        max_attempts: queue.max_attempts,
        max_callback_attempts: queue.max_callback_attempts,
        retry_base: Duration::from_millis(queue.poll_interval_ms.max(1)),
        // A job whose node stopped acknowledging goes to another node after four heartbeats.
        ack_wait: heartbeat * 4,
        retention: Duration::from_millis(queue.completed_ttl_ms.max(60_000)),
        max_record_bytes: queue.max_record_bytes,
    };
    let jobs = ClusterJobs::new(client, options, Arc::new(RuntimeHost(runtime)));
    jobs.start();
    let _ = slot.set(jobs);
}

/// The runtime, as the shared job queue runs jobs on it.
struct RuntimeHost(Runtime);

impl JobHost for RuntimeHost {
    fn run(&self, request: InferRequest) -> HostFuture<'_, Result<InferResponse, RayError>> {
        Box::pin(self.0.infer(request))
    }

    fn deliver<'a>(
        &'a self,
        url: &'a str,
        record: &'a JobRecord,
        attempt: u32,
    ) -> HostFuture<'a, Result<(), String>> {
        Box::pin(self.0.send_callback(url, record, attempt))
    }

    fn event(&self, kind: &'static str, fields: serde_json::Map<String, serde_json::Value>) {
        self.0.emit_event(kind, fields);
    }

    fn refuses(&self, model: &str) -> bool {
        !self.0.takes_requests(model)
    }
}

/// The model a forwardable request names, read from its JSON body (`model`); `None` when it
/// names none or `auto` (the default model is checked then).
pub(crate) fn requested_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<serde_json::Value>,
    }
    let named: Named = serde_json::from_slice(body).ok()?;
    match named.model? {
        serde_json::Value::String(name) if name != "auto" && !name.is_empty() => Some(name),
        _ => None,
    }
}

/// Whether a request says a peer forwarded it.
pub(crate) fn is_forwarded<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(HOP_HEADER)
}

fn record_source(
    runtime: Runtime,
    options: &ClusterOptions,
    key_check: String,
) -> ray_cluster::RecordSource {
    let base_url = options.advertise_url.clone();
    let region = options.region.clone();
    let labels: BTreeMap<String, String> = options.labels.clone();
    Arc::new(move || {
        let models: Vec<ModelRecord> = runtime
            .model_conditions()
            .into_iter()
            .map(|c| ModelRecord {
                id: c.id,
                aliases: c.aliases,
                state: c.state.into(),
                ready: c.ready,
                queue_depth: c.queue_depth,
                estimated_wait_ms: c.estimated_wait_ms,
            })
            .collect();
        NodeRecord {
            id: String::new(),
            base_url: base_url.clone(),
            region: region.clone(),
            labels: labels.clone(),
            queue_depth: models.iter().map(|m| m.queue_depth).sum(),
            estimated_wait_ms: models
                .iter()
                .map(|m| m.estimated_wait_ms)
                .max()
                .unwrap_or(0),
            models,
            free_memory_mib: None,
            version: env!("CARGO_PKG_VERSION").into(),
            heartbeat_at_ms: 0,
            heartbeat_ms: None,
            key_check: Some(key_check.clone()),
        }
    })
}

fn job_not_found(id: &str) -> RayError {
    RayError::new(
        ErrorCode::JobNotFound,
        format!("No job {id:?} in the cluster"),
    )
}

fn disabled() -> RayError {
    RayError::new(
        ErrorCode::AsyncQueueDisabled,
        "The async job queue is disabled (asyncQueue.enabled is false)",
    )
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requested_model_is_read_from_the_body() {
        assert_eq!(
            requested_model(br#"{"model":"m","input":"x"}"#),
            Some("m".into())
        );
        assert_eq!(requested_model(br#"{"model":"auto"}"#), None);
        assert_eq!(requested_model(br#"{"input":"x"}"#), None);
        assert_eq!(requested_model(b"not json"), None);
        assert_eq!(requested_model(br#"{"model":3}"#), None);
    }
}
