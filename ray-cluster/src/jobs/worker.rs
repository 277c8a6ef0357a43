//! The worker side of the shared queue: pulling a model's jobs, running them on this node,
//! and settling each delivery (complete, requeue, drop a refused submission, deliver the
//! callback).

use super::*;

impl ClusterJobs {
    /// Pulls jobs of `model` while slots are free, for as long as the node runs.
    pub(super) async fn work(&self, model: String, slots: Arc<Semaphore>) {
        loop {
            match self.consumer(&model).await {
                Ok(consumer) => {
                    if let Err(error) = self.pull(&model, &consumer, &slots).await {
                        tracing::warn!(model = %model, error = %error, "cluster jobs: pulling failed; retrying");
                    }
                }
                Err(error) => {
                    // NATS may have restarted without its store: open everything again.
                    *self.shared.opened.lock() = None;
                    tracing::warn!(model = %model, error = %error, "cluster jobs: the queue is unreachable; retrying");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consumer(
        &self,
        model: &str,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, ClusterError> {
        let opened = self.opened().await?;
        let stream = opened
            .context
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        let name = format!("ray-jobs-{}", token(model));
        stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: subject(model),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.shared.options.ack_wait,
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))
    }

    async fn pull(
        &self,
        model: &str,
        consumer: &consumer::Consumer<consumer::pull::Config>,
        slots: &Arc<Semaphore>,
    ) -> Result<(), ClusterError> {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return Ok(());
            };
            // A model this node cannot serve now takes no job: a peer that can runs it.
            if self.shared.host.refuses(model) {
                drop(slot);
                tokio::time::sleep(REFUSED_RECHECK).await;
                continue;
            }
            // A pull that gets no answer at all (NATS came back without the consumer) must not
            // hold the worker: it ends, and the consumer is opened again.
            let next = tokio::time::timeout(PULL_TIMEOUT, async {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
                Ok::<_, ClusterError>(batch.next().await)
            })
            .await
            .map_err(|_| {
                ClusterError::Unavailable(format!(
                    "a pull for jobs got no answer in {} s",
                    PULL_TIMEOUT.as_secs()
                ))
            })??;
            let Some(message) = next else {
                continue;
            };
            let message = message.map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            // The fetch may have waited since before the model went down: hand the job back
            // (redelivered shortly, to a peer that serves the model), spending no attempt.
            if self.shared.host.refuses(model) {
                let _ = message.ack_with(AckKind::Nak(Some(REFUSED_RECHECK))).await;
                drop(slot);
                tokio::time::sleep(REFUSED_RECHECK).await;
                continue;
            }
            let jobs = self.clone();
            tokio::spawn(async move {
                jobs.handle(message).await;
                drop(slot);
            });
        }
    }

    /// One delivery of a job: run it (unless its record is final), store the outcome, deliver
    /// the callback, then acknowledge.
    async fn handle(&self, message: jetstream::Message) {
        let Ok(submitted) = serde_json::from_slice::<StoredJob>(&message.payload) else {
            tracing::error!("cluster jobs: an unreadable job message was dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        let id = submitted.record.id.clone();
        match self.attempt(&message, submitted).await {
            Ok(Settle::Ack) => {
                let _ = message.double_ack().await;
            }
            Ok(Settle::Retry(delay)) => {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Ok(Settle::Drop) => {
                let _ = message.ack_with(AckKind::Term).await;
            }
            Err(error) => {
                // The record could not be read or written (NATS away): leave the message
                // unacknowledged; it comes back after the ack wait.
                tracing::warn!(job_id = %id, error = %error, "cluster jobs: an attempt could not be recorded; the job will be delivered again");
            }
        }
    }

    async fn attempt(
        &self,
        message: &jetstream::Message,
        submitted: StoredJob,
    ) -> Result<Settle, RayError> {
        let opened = self.opened().await.map_err(unavailable)?;
        let records = &opened.records;
        let id = submitted.record.id.clone();
        let published = message
            .info()
            .map(|info| info.published.unix_timestamp_nanos())
            .ok();
        let found = match read_entry(records, &id).await? {
            Some(found) => Some(found),
            None => match self.missing_record(records, &id, published).await? {
                Missing::Wait(delay) => return Ok(Settle::Retry(delay)),
                Missing::Refused => return Ok(Settle::Drop),
                Missing::Expired => None,
            },
        };
        let (mut stored, revision, created) = match found {
            Some(found) => found,
            None => {
                // Its record expired while the job waited longer than the records are kept:
                // written again from the message.
                let body = encode(&submitted)?;
                let revision = records
                    .create(&id, body.into())
                    .await
                    .map_err(|e| unavailable(ClusterError::Registry(e.to_string())))?;
                (submitted, revision, i128::MIN)
            }
        };
        // The record as the submission wrote it, created later than the submission could have
        // waited for it (the client sent it again after a reconnect): the caller was refused.
        let untouched =
            stored.record.status == JobStatus::Queued && stored.record.started_at.is_none();
        if untouched
            && let Some(published) = published
            && (created - published) / 1_000_000 > LATE_RECORD.as_millis() as i128
        {
            if write_raw(records, &id, tombstone()?, revision).await? {
                tracing::warn!(job_id = %id, "cluster jobs: a job whose record arrived after its submission was refused; dropped unrun");
                self.shared
                    .stats
                    .refused_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(Settle::Drop);
            }
            return Ok(Settle::Retry(Duration::from_millis(100)));
        }
        match stored.record.status {
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled => {
                // Already final (a redelivery): only a callback may be left to deliver.
                self.finish_callback(records, &id).await?;
                return Ok(Settle::Ack);
            }
            JobStatus::Queued | JobStatus::Running => {}
        }
        if stored.record.attempts >= stored.record.max_attempts {
            // Attempts spent by nodes that died mid-job.
            let error = JobError::new(
                "async_queue_recovery_limit_exceeded",
                "The job's attempts were used up by nodes that stopped while running it",
            );
            self.complete(records, &id, Err(error)).await?;
            self.finish_callback(records, &id).await?;
            return Ok(Settle::Ack);
        }
        let now = now_rfc3339();
        stored.record.status = JobStatus::Running;
        stored.record.attempts += 1;
        stored.record.started_at.get_or_insert_with(|| now.clone());
        stored.record.updated_at = now;
        stored.record.next_attempt_at = None;
        if !write(records, &id, &stored, revision).await? {
            // Changed meanwhile (cancelled, or taken by another delivery): look again later.
            return Ok(Settle::Retry(Duration::from_millis(200)));
        }
        self.shared.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let attempts = stored.record.attempts;
        let request = stored.record.request.clone();
        let outcome = {
            let run = self.shared.host.run(request);
            tokio::pin!(run);
            let mut progress = tokio::time::interval(self.shared.options.ack_wait / 3);
            progress.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut run => break outcome,
                    _ = progress.tick() => {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        match outcome {
            Ok(response) => self.complete(records, &id, Ok(Box::new(response))).await?,
            // Refused before it ran (this node shuts down, or its scheduler had no room): the
            // attempt is given back, as the local queue does.
            Err(error) if error.code().is_refused_before_running() => {
                if self.requeue(records, &id, &error, true).await? {
                    return Ok(Settle::Retry(self.shared.options.retry_base));
                }
            }
            // The errors the local queue retries.
            Err(error) if error.code().is_retryable() && attempts < stored.record.max_attempts => {
                let delay = self.shared.options.retry_base * 2u32.saturating_pow(attempts - 1);
                if self.requeue(records, &id, &error, false).await? {
                    return Ok(Settle::Retry(delay.min(Duration::from_secs(300))));
                }
            }
            Err(error) => {
                self.complete(records, &id, Err(JobError::from_ray(&error)))
                    .await?;
            }
        }
        self.finish_callback(records, &id).await?;
        Ok(Settle::Ack)
    }

    /// What to do with a job that has no record: wait while its submission may still write it;
    /// after that it was refused (a tombstone takes the record's place, so a late write of it
    /// fails); a job older than the records are kept had its record expire.
    async fn missing_record(
        &self,
        records: &kv::Store,
        id: &str,
        published: Option<i128>,
    ) -> Result<Missing, RayError> {
        let age_ms = published.map_or(i128::MAX, |at| {
            i128::from(ray_core::time::unix_millis_now()) - at / 1_000_000
        });
        let grace_ms = RECORD_GRACE.as_millis() as i128;
        if age_ms < grace_ms {
            let wait = (grace_ms - age_ms).clamp(50, 200) as u64;
            return Ok(Missing::Wait(Duration::from_millis(wait)));
        }
        if published.is_some() && age_ms >= self.shared.options.retention.as_millis() as i128 {
            return Ok(Missing::Expired);
        }
        match records.create(id, tombstone()?.into()).await {
            Ok(_) => {
                tracing::warn!(job_id = %id, "cluster jobs: a job whose submission was refused reached the queue; dropped unrun");
                self.shared
                    .stats
                    .refused_dropped
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Missing::Refused)
            }
            // Its record was created meanwhile: look again.
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                Ok(Missing::Wait(Duration::from_millis(50)))
            }
            Err(error) => Err(unavailable(ClusterError::Registry(error.to_string()))),
        }
    }

    /// Writes the final state unless the record is final already (another node completed it,
    /// or it was cancelled): compare-and-set on the revision.
    async fn complete(
        &self,
        records: &kv::Store,
        id: &str,
        outcome: Result<Box<InferResponse>, JobError>,
    ) -> Result<(), RayError> {
        loop {
            let Some((mut stored, revision)) = read(records, id).await? else {
                return Ok(());
            };
            if matches!(
                stored.record.status,
                JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
            ) {
                self.shared
                    .stats
                    .duplicates_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let now = now_rfc3339();
            match &outcome {
                Ok(response) => {
                    stored.record.status = JobStatus::Succeeded;
                    stored.record.result = Some(response.clone());
                    stored.record.error = None;
                }
                Err(error) => {
                    stored.record.status = JobStatus::Failed;
                    stored.record.error = Some(error.clone());
                }
            }
            stored.record.updated_at.clone_from(&now);
            stored.record.completed_at = Some(now);
            if write(records, id, &stored, revision).await? {
                self.shared.stats.completed.fetch_add(1, Ordering::Relaxed);
                if let Some(error) = &stored.record.error
                    && stored.record.status == JobStatus::Failed
                {
                    let mut fields = serde_json::Map::new();
                    fields.insert("jobId".into(), id.into());
                    fields.insert("attempts".into(), stored.record.attempts.into());
                    fields.insert("code".into(), error.code.clone().into());
                    self.shared.host.event("job_failed", fields);
                }
                return Ok(());
            }
        }
    }

    /// Puts a job back to `queued` after a retryable failure (with its error), or, with
    /// `give_back`, after an attempt refused before it ran (not counted); false when it was
    /// cancelled.
    async fn requeue(
        &self,
        records: &kv::Store,
        id: &str,
        error: &RayError,
        give_back: bool,
    ) -> Result<bool, RayError> {
        loop {
            let Some((mut stored, revision)) = read(records, id).await? else {
                return Ok(false);
            };
            if stored.record.status != JobStatus::Running {
                return Ok(false);
            }
            stored.record.status = JobStatus::Queued;
            if give_back {
                // The attempt never ran: it does not count.
                stored.record.attempts = stored.record.attempts.saturating_sub(1);
            } else {
                stored.record.error = Some(JobError::from_ray(error));
            }
            stored.record.updated_at = now_rfc3339();
            if write(records, id, &stored, revision).await? {
                return Ok(true);
            }
        }
    }

    /// Delivers a pending callback (with retries), then records that it was delivered or
    /// given up.
    async fn finish_callback(&self, records: &kv::Store, id: &str) -> Result<(), RayError> {
        let Some((stored, _)) = read(records, id).await? else {
            return Ok(());
        };
        let Some(callback) = stored
            .record
            .callback
            .as_ref()
            .filter(|c| c.status == CallbackStatus::Pending)
        else {
            return Ok(());
        };
        let url = callback.url.clone();
        let mut attempts = callback.attempts;
        let mut delivered = false;
        let mut last_error = None;
        while attempts < self.shared.options.max_callback_attempts.max(1) {
            attempts += 1;
            match self
                .shared
                .host
                .deliver(&url, &stored.record, attempts)
                .await
            {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(job_id = %id, attempt = attempts, error = %error, "cluster jobs: callback delivery failed");
                    last_error = Some(error);
                    let delay = self.shared.options.retry_base * 2u32.saturating_pow(attempts - 1);
                    tokio::time::sleep(delay.min(Duration::from_secs(30))).await;
                }
            }
        }
        let counter = if delivered {
            &self.shared.stats.callbacks_delivered
        } else {
            &self.shared.stats.callbacks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        loop {
            let Some((mut stored, revision)) = read(records, id).await? else {
                return Ok(());
            };
            let now = now_rfc3339();
            if let Some(callback) = &mut stored.record.callback {
                callback.status = if delivered {
                    CallbackStatus::Delivered
                } else {
                    CallbackStatus::Failed
                };
                callback.attempts = attempts;
                callback.last_attempt_at = Some(now.clone());
                callback.delivered_at = delivered.then_some(now);
                callback.last_error.clone_from(&last_error);
            }
            if write(records, id, &stored, revision).await? {
                if !delivered {
                    let mut fields = serde_json::Map::new();
                    fields.insert("jobId".into(), id.into());
                    fields.insert("attempts".into(), attempts.into());
                    fields.insert(
                        "error".into(),
                        last_error.clone().unwrap_or_default().into(),
                    );
                    self.shared.host.event("callback_gave_up", fields);
                }
                return Ok(());
            }
        }
    }
}

/// What a job without a record is.
enum Missing {
    /// Its submission may still write the record: look again after the delay.
    Wait(Duration),
    /// Its submission was refused: dropped, a tombstone written.
    Refused,
    /// Its record expired (the job waited longer than records are kept).
    Expired,
}

/// How a delivery ends.
enum Settle {
    /// Done with it.
    Ack,
    /// Deliver it again after the delay.
    Retry(Duration),
    /// Never deliver it again: its submission was refused.
    Drop,
}
