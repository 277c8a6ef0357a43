//! The async job routes, and waiting for a job to finish.

use std::time::Duration;

use ray_core::wire::{JobAccepted, JobList, JobListQuery, JobRecord, JobSubmission};

use super::RayClient;
use crate::error::Error;

/// How [`RayClient::wait_for_job`] polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// Give up (with an error whose [`Error::is_timeout`] is true) after this long.
    pub timeout: Duration,
    /// The first pause between two looks.
    pub initial_interval: Duration,
    /// The longest pause; pauses grow by half each time up to this.
    pub max_interval: Duration,
}

impl Default for WaitOptions {
    fn default() -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_secs(300),
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(5),
        }
    }
}

impl WaitOptions {
    /// The defaults with another overall deadline.
    pub fn timeout(timeout: Duration) -> WaitOptions {
        WaitOptions {
            timeout,
            ..WaitOptions::default()
        }
    }
}

impl RayClient {
    /// `POST /v1/jobs`: the gateway answers `202` once the job is stored durably.
    pub async fn submit_job(&self, submission: &JobSubmission) -> Result<JobAccepted, Error> {
        self.post("/v1/jobs", submission).await
    }

    /// `GET /v1/jobs/{id}`: the job's record (`job_not_found` once pruned).
    pub async fn job(&self, id: &str) -> Result<JobRecord, Error> {
        self.get_json(&format!("/v1/jobs/{id}")).await
    }

    /// `GET /v1/jobs`: a page of jobs, newest first; pass the page's `next_cursor` back in
    /// `query.cursor` for the next one.
    pub async fn list_jobs(&self, query: &JobListQuery) -> Result<JobList, Error> {
        let query = query.to_query_string();
        if query.is_empty() {
            self.get_json("/v1/jobs").await
        } else {
            self.get_json(&format!("/v1/jobs?{query}")).await
        }
    }

    /// `DELETE /v1/jobs/{id}`: cancels a queued or running job and returns its record;
    /// `job_not_cancellable` once it has finished.
    pub async fn cancel_job(&self, id: &str) -> Result<JobRecord, Error> {
        let (status, body, retry_after) = self
            .send(self.http.delete(self.url(&format!("/v1/jobs/{id}"))))
            .await?;
        if (200..300).contains(&status) {
            super::decode(&body)
        } else {
            Err(Error::api(status, &body, retry_after))
        }
    }

    /// Polls a job until it has finished (succeeded, failed or cancelled) and returns its
    /// record. Pauses start at `options.initial_interval` and grow to `max_interval`; a
    /// refusal with `Retry-After` (rate limit, a busy gateway) or a lost connection is waited
    /// out, anything else (such as `job_not_found`) is returned at once. After
    /// `options.timeout` the error says so and [`Error::is_timeout`] is true.
    pub async fn wait_for_job(&self, id: &str, options: WaitOptions) -> Result<JobRecord, Error> {
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut interval = options.initial_interval.max(Duration::from_millis(1));
        loop {
            let pause = match self.job(id).await {
                Ok(record) if record.status.is_terminal() => return Ok(record),
                Ok(_) => interval,
                Err(error) if error.is_retryable() => error.retry_after().unwrap_or(interval),
                Err(error) => return Err(error),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::deadline(format!(
                    "job {id} did not finish within {} ms",
                    options.timeout.as_millis()
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            interval = (interval + interval / 2).min(options.max_interval.max(interval));
        }
    }
}
