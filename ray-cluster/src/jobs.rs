//! Durable jobs shared by every node: a JetStream work-queue stream carries each job to a node
//! that serves its model, and a key-value bucket holds the job's record, so any node answers
//! `GET /v1/jobs/{id}` the same.
//!
//! - **Submit**: refused at once while the NATS connection is down (nothing is handed to the
//!   client then, so nothing it buffered can reach JetStream after the caller was told no).
//!   The job (request, model, callback) is published to `ray.jobs.<model>` with `Nats-Msg-Id`
//!   set to the job id (JetStream drops a duplicate within two minutes), then its record is
//!   created `queued`; the submission is accepted only once JetStream has acknowledged both,
//!   within [`SUBMIT_TIMEOUT`], so an accepted job is never lost.
//! - **A job's record is its acceptance**: a node that takes a job whose record does not exist
//!   once the submission's time is over, or whose record was created more than
//!   [`SUBMIT_TIMEOUT`] (with a margin) after the job (a write the client sent again after a
//!   reconnect), drops
//!   the job and leaves a tombstone in the record's place (a create, so exactly one of the two
//!   wins): the caller was answered `503`, and the job never runs.
//! - **Run**: each node pulls from one durable consumer per model it serves (shared by the
//!   nodes serving it, so each job goes to one of them), one job per free slot. While a job
//!   runs the node sends in-progress acknowledgements; it acknowledges the message only once the
//!   result is stored and the callback delivered or given up. A node that dies mid-job stops
//!   acknowledging, and JetStream hands the job to another node after the ack wait.
//! - **Exactly once as the record shows it**: every change of a record is a compare-and-set on
//!   its revision, so of two nodes that ran the same job after a redelivery, only one
//!   completes the record; the other's result is dropped.
//! - **Callbacks** are at least once and carry the job id as an idempotency key, so a receiver
//!   drops the duplicate a redelivery can cause.
//! - **Events**: the node whose compare-and-set made a job `failed`, or its callback given up,
//!   hands `job_failed` or `callback_gave_up` to its host ([`JobHost::event`]), once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use futures_util::StreamExt;
use parking_lot::Mutex;
use ray_core::time::now_rfc3339;
use ray_core::wire::{CallbackStatus, InferRequest, InferResponse, JobError, JobRecord, JobStatus};
use ray_core::{ErrorCode, RayError};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::node::{ClusterError, create_bucket_with};

mod worker;

/// The work-queue stream.
pub const JOBS_STREAM: &str = "RAY_JOBS";
/// The job records' bucket.
pub const JOBS_BUCKET: &str = "ray_jobs";

/// A boxed future, for the host's methods.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What runs jobs on this node: the runtime, seen from the shared queue.
pub trait JobHost: Send + Sync + 'static {
    /// Runs a job's request (in the batch class) to its end.
    fn run(&self, request: InferRequest) -> HostFuture<'_, Result<InferResponse, RayError>>;
    /// One delivery attempt of a job's callback (signed like local callbacks, with the job id
    /// as idempotency key); `Err` says why it failed.
    fn deliver<'a>(
        &'a self,
        url: &'a str,
        record: &'a JobRecord,
        attempt: u32,
    ) -> HostFuture<'a, Result<(), String>>;
    /// An event for the operator's hooks (`job_failed` when a job failed for good,
    /// `callback_gave_up` when its callback's attempts ran out), with the fields the local
    /// queue gives it; never waits. Does nothing by default.
    fn event(&self, kind: &'static str, fields: serde_json::Map<String, serde_json::Value>) {
        let _ = (kind, fields);
    }
    /// Whether this node's `model` would refuse a job now (its backend is down, warming or
    /// in cooldown): the node then takes none of its jobs, so a peer that serves it runs them
    /// instead of this node spending their attempts. Never refuses by default.
    fn refuses(&self, model: &str) -> bool {
        let _ = model;
        false
    }
}

/// The longest a submission may take, from before its job is published to its record's
/// acknowledgement; past it the caller is answered `cluster_unavailable` and the job, should it
/// reach JetStream anyway, is dropped by the node that takes it.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a read or a cancellation of a job record may take before the caller is answered
/// `cluster_unavailable` (the same bound as a read of the node registry).
pub const REQUEST_TIMEOUT: Duration = crate::node::REQUEST_TIMEOUT;

/// How long after a job was stored a node that finds no record waits before deciding the
/// submission was refused (the submission's time, with a margin for the clocks of the node and
/// of NATS).
const RECORD_GRACE: Duration = Duration::from_secs(3);

/// A job whose record was created longer than this after the job was stored (both by NATS's
/// clock) was refused: its submission had given up ([`SUBMIT_TIMEOUT`], with a margin).
const LATE_RECORD: Duration = Duration::from_millis(2_500);

/// The longest one pull for jobs may take (it asks for 1 s of waiting).
const PULL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a node whose model refuses jobs looks again.
const REFUSED_RECHECK: Duration = Duration::from_millis(500);

/// Publishes a job and waits for JetStream's acknowledgement.
async fn publish_acked(
    opened: &Opened,
    model: &str,
    publish: jetstream::message::PublishMessage,
) -> Result<(), ClusterError> {
    opened
        .context
        .send_publish(subject(model), publish)
        .await
        .map_err(|e| ClusterError::Unavailable(e.to_string()))?
        .await
        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
    Ok(())
}

/// How the shared queue runs on this node.
#[derive(Debug, Clone)]
pub struct JobsOptions {
    /// The models this node serves (its consumers).
    pub models: Vec<String>,
    /// Jobs running at once on this node.
    pub concurrency: u32,
    /// Attempts per job.
    pub max_attempts: u32,
    /// Delivery attempts per callback.
    pub max_callback_attempts: u32,
    /// Base delay of retries.
    pub retry_base: Duration,
    /// How long a job may go without an acknowledgement before JetStream gives it to another
    /// node (in-progress acknowledgements are sent every third of it).
    pub ack_wait: Duration,
    /// How long records are kept.
    pub retention: Duration,
    /// The largest record accepted, in bytes (`asyncQueue.maxRecordBytes`).
    pub max_record_bytes: u64,
}

/// A job as stored: its public record and the model whose consumer carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredJob {
    record: JobRecord,
    model: String,
}

/// Counters of the shared queue on this node.
#[derive(Debug, Default)]
pub struct JobsStats {
    /// Jobs this node accepted.
    pub submitted: AtomicU64,
    /// Attempts this node started.
    pub attempts: AtomicU64,
    /// Jobs this node completed (the record's final state written by this node).
    pub completed: AtomicU64,
    /// Results dropped because another node had completed the record first.
    pub duplicates_dropped: AtomicU64,
    /// Callbacks delivered.
    pub callbacks_delivered: AtomicU64,
    /// Callbacks given up.
    pub callbacks_failed: AtomicU64,
    /// Jobs dropped unrun because their submission had been refused (they reached JetStream
    /// without a record, or with one written too late).
    pub refused_dropped: AtomicU64,
}

/// What stands in a refused job's record: `GET /v1/jobs/{id}` finds no job, and a late create
/// of the record fails.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tombstone {
    refused: String,
}

fn tombstone() -> Result<Vec<u8>, RayError> {
    serde_json::to_vec(&Tombstone {
        refused: now_rfc3339(),
    })
    .map_err(|e| RayError::new(ErrorCode::GatewayError, format!("cannot encode a job: {e}")))
}

/// Bounds a read or cancellation by [`REQUEST_TIMEOUT`].
async fn bounded<T>(operation: impl Future<Output = Result<T, RayError>>) -> Result<T, RayError> {
    tokio::time::timeout(REQUEST_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(ClusterError::Unavailable(format!(
                "JetStream did not answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            ))))
        })
}

struct Opened {
    context: jetstream::Context,
    records: kv::Store,
}

/// The shared job queue of this node. Cheap to clone.
#[derive(Clone)]
pub struct ClusterJobs {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    options: JobsOptions,
    host: Arc<dyn JobHost>,
    opened: Mutex<Option<Arc<Opened>>>,
    stats: JobsStats,
}

impl std::fmt::Debug for ClusterJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterJobs")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl ClusterJobs {
    /// The shared queue over `client`; nothing is created until it is used or started.
    pub fn new(client: async_nats::Client, options: JobsOptions, host: Arc<dyn JobHost>) -> Self {
        ClusterJobs {
            shared: Arc::new(Shared {
                client,
                options,
                host,
                opened: Mutex::new(None),
                stats: JobsStats::default(),
            }),
        }
    }

    /// This node's counters.
    pub fn stats(&self) -> &JobsStats {
        &self.shared.stats
    }

    /// Starts this node's workers: one loop per served model, at most `concurrency` jobs at
    /// once across them. They retry by themselves while NATS is unreachable.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let slots = Arc::new(Semaphore::new(
            self.shared.options.concurrency.max(1) as usize
        ));
        self.shared
            .options
            .models
            .iter()
            .map(|model| {
                let jobs = self.clone();
                let model = model.clone();
                let slots = slots.clone();
                tokio::spawn(async move { jobs.work(model, slots).await })
            })
            .collect()
    }

    /// Accepts a job for `model`: answers once JetStream holds the job and its record, within
    /// [`SUBMIT_TIMEOUT`] (`cluster_unavailable` at once while the NATS connection is down, or
    /// when JetStream does not answer in time: nothing is accepted then, and a job that reaches
    /// JetStream anyway is dropped unrun).
    pub async fn submit(
        &self,
        id: String,
        model: String,
        request: InferRequest,
        callback_url: Option<String>,
    ) -> Result<JobRecord, RayError> {
        let record = JobRecord::queued(
            id.clone(),
            request,
            self.shared.options.max_attempts,
            callback_url,
            now_rfc3339(),
        );
        let stored = StoredJob {
            record: record.clone(),
            model: model.clone(),
        };
        let payload = encode(&stored)?;
        let limit = self.shared.options.max_record_bytes;
        if payload.len() as u64 > limit {
            return Err(RayError::new(
                ErrorCode::AsyncJobRecordTooLarge,
                format!(
                    "The job record would be {} bytes, more than asyncQueue.maxRecordBytes ({limit})",
                    payload.len()
                ),
            ));
        }
        self.connected().map_err(unavailable)?;
        tokio::time::timeout(
            SUBMIT_TIMEOUT,
            self.publish_and_record(&id, &model, payload),
        )
        .await
        .map_err(|_| {
            unavailable(ClusterError::Unavailable(format!(
                "JetStream did not acknowledge the job within {} s",
                SUBMIT_TIMEOUT.as_secs()
            )))
        })??;
        self.shared.stats.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(record)
    }

    /// Publishes a job, then creates its record; each step only while the connection is up.
    async fn publish_and_record(
        &self,
        id: &str,
        model: &str,
        payload: Vec<u8>,
    ) -> Result<(), RayError> {
        let opened = self.opened().await.map_err(unavailable)?;
        let publish = || {
            jetstream::message::PublishMessage::build()
                .message_id(id)
                .payload(payload.clone().into())
        };
        let opened = match publish_acked(&opened, model, publish()).await {
            Ok(()) => opened,
            Err(error) => {
                // NATS may have come back without its store: open the stream again and try
                // once more (the message id keeps a repeat from running twice).
                *self.shared.opened.lock() = None;
                tracing::warn!(job_id = %id, error = %error, "cluster jobs: publishing failed; opening the queue again");
                self.connected().map_err(unavailable)?;
                let opened = self.opened().await.map_err(unavailable)?;
                publish_acked(&opened, model, publish())
                    .await
                    .map_err(unavailable)?;
                opened
            }
        };
        // The record is the acceptance: without it the node that takes the job drops it.
        self.connected().map_err(unavailable)?;
        opened
            .records
            .create(id, payload.into())
            .await
            .map_err(|e| unavailable(ClusterError::Registry(e.to_string())))?;
        Ok(())
    }

    /// A job's record, from any node (`cluster_unavailable` at once while the NATS connection
    /// is down, or after [`REQUEST_TIMEOUT`]).
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, RayError> {
        self.connected().map_err(unavailable)?;
        bounded(async {
            let opened = self.opened().await.map_err(unavailable)?;
            let entry = opened
                .records
                .get(id)
                .await
                .map_err(|e| unavailable(ClusterError::Registry(e.to_string())))?;
            // (A tombstone is no job: the submission was refused.)
            Ok(entry
                .and_then(|bytes| serde_json::from_slice::<StoredJob>(&bytes).ok())
                .map(|stored| stored.record))
        })
        .await
    }

    /// Cancels a queued or running job (a running attempt's result is dropped when it ends);
    /// `Ok(None)` when unknown; `job_not_cancellable` when finished; `cluster_unavailable` at
    /// once while the NATS connection is down, or after [`REQUEST_TIMEOUT`].
    pub async fn cancel(&self, id: &str) -> Result<Option<JobRecord>, RayError> {
        self.connected().map_err(unavailable)?;
        bounded(self.cancel_now(id)).await
    }

    async fn cancel_now(&self, id: &str) -> Result<Option<JobRecord>, RayError> {
        let opened = self.opened().await.map_err(unavailable)?;
        loop {
            let Some((mut stored, revision)) = read(&opened.records, id).await? else {
                return Ok(None);
            };
            match stored.record.status {
                JobStatus::Cancelled => return Ok(Some(stored.record)),
                JobStatus::Succeeded | JobStatus::Failed => {
                    return Err(RayError::new(
                        ErrorCode::JobNotCancellable,
                        format!(
                            "The job {id} is {} and can no longer be cancelled",
                            stored.record.status.as_str()
                        ),
                    ));
                }
                JobStatus::Queued | JobStatus::Running => {}
            }
            let now = now_rfc3339();
            stored.record.status = JobStatus::Cancelled;
            stored.record.updated_at.clone_from(&now);
            stored.record.completed_at = Some(now);
            if write(&opened.records, id, &stored, revision).await? {
                return Ok(Some(stored.record));
            }
        }
    }

    /// `Err` while the NATS connection is not up: whatever is handed to the client then waits
    /// in its buffer and may reach JetStream long after the caller was answered.
    fn connected(&self) -> Result<(), ClusterError> {
        match self.shared.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(ClusterError::Unavailable(
                "the connection to NATS is down".into(),
            )),
        }
    }

    async fn opened(&self) -> Result<Arc<Opened>, ClusterError> {
        // (A cached stream and bucket; dropped when NATS turns out to have lost them.)
        if let Some(opened) = self.shared.opened.lock().clone() {
            return Ok(opened);
        }
        let context = jetstream::new(self.shared.client.clone());
        let config = stream::Config {
            name: JOBS_STREAM.into(),
            description: Some("Ray jobs waiting for a node".into()),
            subjects: vec!["ray.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            num_replicas: 1,
            ..Default::default()
        };
        context
            .get_or_create_stream(config)
            .await
            .map_err(|e| ClusterError::Unavailable(format!("cannot open the jobs stream: {e}")))?;
        let records = create_bucket_with(
            &context,
            JOBS_BUCKET,
            "Ray job records",
            self.shared.options.retention,
        )
        .await?;
        let opened = Arc::new(Opened { context, records });
        *self.shared.opened.lock() = Some(opened.clone());
        Ok(opened)
    }
}

fn subject(model: &str) -> String {
    format!("ray.jobs.{}", token(model))
}

/// A model id as one subject token (`.`, `*`, `>` and spaces replaced).
fn token(model: &str) -> String {
    model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn encode(stored: &StoredJob) -> Result<Vec<u8>, RayError> {
    serde_json::to_vec(stored)
        .map_err(|e| RayError::new(ErrorCode::GatewayError, format!("cannot encode a job: {e}")))
}

async fn read(records: &kv::Store, id: &str) -> Result<Option<(StoredJob, u64)>, RayError> {
    Ok(read_entry(records, id)
        .await?
        .map(|(stored, revision, _)| (stored, revision)))
}

/// A job's record with its revision and when that revision was written (Unix nanoseconds by
/// NATS's clock); `None` when there is none, or a tombstone.
async fn read_entry(
    records: &kv::Store,
    id: &str,
) -> Result<Option<(StoredJob, u64, i128)>, RayError> {
    let entry = records
        .entry(id)
        .await
        .map_err(|e| unavailable(ClusterError::Registry(e.to_string())))?;
    let Some(entry) = entry else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    match serde_json::from_slice::<StoredJob>(&entry.value) {
        Ok(stored) => Ok(Some((
            stored,
            entry.revision,
            entry.created.unix_timestamp_nanos(),
        ))),
        Err(_) if serde_json::from_slice::<Tombstone>(&entry.value).is_ok() => Ok(None),
        Err(e) => Err(RayError::new(
            ErrorCode::JobRecordDamaged,
            format!("The record of job {id} cannot be read: {e}"),
        )),
    }
}

/// Compare-and-set; `false` when the record changed since `revision`.
async fn write(
    records: &kv::Store,
    id: &str,
    stored: &StoredJob,
    revision: u64,
) -> Result<bool, RayError> {
    write_raw(records, id, encode(stored)?, revision).await
}

/// Compare-and-set of raw bytes; `false` when the record changed since `revision`.
async fn write_raw(
    records: &kv::Store,
    id: &str,
    body: Vec<u8>,
    revision: u64,
) -> Result<bool, RayError> {
    match records.update(id, body.into(), revision).await {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(error) => Err(unavailable(ClusterError::Registry(error.to_string()))),
    }
}

fn unavailable(error: ClusterError) -> RayError {
    RayError::new(
        ErrorCode::ClusterUnavailable,
        format!("The cluster job queue is unreachable: {error}"),
    )
}
