//! The job API of [`Runtime`]: submit, look up, list and cancel.

use std::sync::Arc;

use ray_core::wire::{InferRequest, JobAccepted, JobList, JobListQuery, JobRecord, JobSubmission};
use ray_core::{ErrorCode, RayError};

use super::JobQueue;
use crate::plan::{PlanOptions, plan};
use crate::pressure::PressureSnapshot;
use crate::runtime::Runtime;

impl Runtime {
    /// The durable job queue, when `asyncQueue.enabled` is true.
    pub fn jobs(&self) -> Option<&Arc<JobQueue>> {
        self.inner.jobs.as_ref()
    }

    fn queue(&self) -> Result<&Arc<JobQueue>, RayError> {
        self.jobs().ok_or_else(|| {
            RayError::new(
                ErrorCode::AsyncQueueDisabled,
                "The async job queue is disabled (asyncQueue.enabled is false)",
            )
        })
    }

    /// Checks a request the way [`Runtime::infer`] would before running it (field limits,
    /// templates and their variables, lanes), without running it.
    /// The model is resolved by name, rules and default, so a job naming an unknown model is
    /// refused when it is submitted.
    pub fn check_request(&self, request: &InferRequest) -> Result<(), RayError> {
        let route = self.route(request, &crate::front::RequestContext::default())?;
        let model = self.inner.registry.at(route.choice.model);
        let decision =
            crate::degrade::decide(&self.inner.config, PressureSnapshot::default(), false);
        plan(
            &self.inner.config,
            &model.config,
            request.clone(),
            &decision,
            &model.tuner,
            PlanOptions::default(),
        )
        .map(|_| ())
    }

    /// Accepts a job: the request is checked like `/v1/infer` checks it, then the queue's
    /// limits (`maxJobs`, free space, the callback URL rules, the record size cap) apply, and
    /// the job is written durably before this returns. It runs later through
    /// [`Runtime::infer`], once [`Runtime::start`] has been called.
    pub async fn submit_job(&self, submission: JobSubmission) -> Result<JobAccepted, RayError> {
        self.submit_job_in(submission, &crate::front::RequestContext::default())
            .await
    }

    /// [`Runtime::submit_job`] for a submission that arrived on `context` (its API key): the
    /// job's priority (`batch` unless it asks for another class) is lowered to what the key
    /// may use and stored with the job.
    pub async fn submit_job_in(
        &self,
        mut submission: JobSubmission,
        context: &crate::front::RequestContext,
    ) -> Result<JobAccepted, RayError> {
        let admission = crate::priority::decide(
            &self.inner.config.priority,
            &submission.request,
            context,
            ray_core::wire::PriorityClass::Batch,
        )?;
        submission.request.priority = Some(admission.priority.to_string());
        self.queue()?
            .submit(submission, |request| self.check_request(request))
            .await
    }

    /// The record of a job: `job_not_found` when unknown or pruned.
    pub async fn job(&self, id: &str) -> Result<JobRecord, RayError> {
        self.queue()?.get(id).await
    }

    /// A page of jobs, newest first, optionally only in some states.
    pub fn list_jobs(&self, query: &JobListQuery) -> Result<JobList, RayError> {
        self.queue()?.list(query)
    }

    /// Cancels a queued or running job; a running attempt's backend call is dropped. A
    /// finished job is `job_not_cancellable`; a cancelled one is answered again.
    pub async fn cancel_job(&self, id: &str) -> Result<JobRecord, RayError> {
        self.queue()?.cancel(id).await
    }
}
