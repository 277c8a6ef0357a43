//! The job API of [`Runtime`]: submit, look up, list and cancel.

use std::sync::Arc;

use ray_core::wire::{
    InferRequest, InferResponse, JobAccepted, JobList, JobListQuery, JobRecord, JobSubmission,
};
use ray_core::{ErrorCode, RayError};

use super::JobQueue;
use super::worker::JobRunner;
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
        let this = self.pinned();
        let route = this.route(request, &crate::context::RequestContext::default())?;
        let live = this.live();
        let model = live.registry.at(route.choice.model);
        let decision = crate::degrade::decide(&live.config, PressureSnapshot::default(), false);
        plan(
            &live.config,
            &model.config,
            request.clone(),
            &decision,
            &model.tuner,
            PlanOptions::default(),
        )
        .map(|_| ())
    }

    /// The id of the model `request` would be served by (by name, rules and default).
    pub fn route_model(&self, request: &InferRequest) -> Result<String, RayError> {
        let this = self.pinned();
        let route = this.route(request, &crate::context::RequestContext::default())?;
        Ok(this.live().registry.at(route.choice.model).id.clone())
    }

    /// Checks a callback URL by `asyncQueue`'s rules (scheme, allowed hosts, public
    /// addresses) and answers it normalised.
    pub async fn check_callback_url(&self, url: &str) -> Result<String, RayError> {
        self.host_policy_allows(url)?;
        Ok(self.queue()?.callbacks.policy.check(url).await?.to_string())
    }

    /// The host policy's `allowedHosts` (`policyFile` or `RAY_POLICY_FILE`), when it has some.
    fn host_policy_allows(&self, url: &str) -> Result<(), RayError> {
        let Some(policy) = &self.live().config.policy else {
            return Ok(());
        };
        let host = ray_core::config::ParsedUrl::parse(url)
            .map(|u| u.host)
            .unwrap_or_default();
        if policy.allows_host(&host) {
            Ok(())
        } else {
            Err(RayError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "callbackUrl: the host {host:?} is not among the host policy's allowedHosts"
                ),
            )
            .with_details(serde_json::json!({ "param": "callbackUrl" })))
        }
    }

    /// One delivery attempt of `record` to its callback `url`: signed like every callback, with
    /// the job id as its idempotency key. `Err` says why it failed.
    pub async fn send_callback(
        &self,
        url: &str,
        record: &JobRecord,
        attempt: u32,
    ) -> Result<(), String> {
        let queue = self.queue().map_err(|e| e.to_string())?;
        let body =
            serde_json::to_vec(&serde_json::json!({ "job": record })).map_err(|e| e.to_string())?;
        queue.callbacks.send(url, &record.id, attempt, body).await
    }

    /// Accepts a job: the request is checked like `/v1/infer` checks it, then the queue's
    /// limits (`maxJobs`, free space, the callback URL rules, the record size cap) apply, and
    /// the job is written durably before this returns. It runs later through
    /// [`Runtime::infer`], once [`Runtime::start`] has been called.
    pub async fn submit_job(&self, submission: JobSubmission) -> Result<JobAccepted, RayError> {
        self.submit_job_in(submission, &crate::context::RequestContext::default())
            .await
    }

    /// [`Runtime::submit_job`] for a submission that arrived on `context` (its API key), with
    /// its priority decided by [`Runtime::prioritise_job`].
    pub async fn submit_job_in(
        &self,
        mut submission: JobSubmission,
        context: &crate::context::RequestContext,
    ) -> Result<JobAccepted, RayError> {
        self.prioritise_job(&mut submission, context)?;
        if let Some(url) = &submission.callback_url {
            self.host_policy_allows(url)?;
        }
        self.queue()?
            .submit(submission, |request| self.check_request(request))
            .await
    }

    /// Sets a job's priority as it will run: `batch` unless it asks for another class, lowered
    /// to what the submitting key (`context`) may use. Refuses a `priority` that is not one.
    pub fn prioritise_job(
        &self,
        submission: &mut JobSubmission,
        context: &crate::context::RequestContext,
    ) -> Result<(), RayError> {
        let admission = crate::priority::decide(
            &self.live().config.priority,
            &submission.request,
            context,
            ray_core::wire::PriorityClass::Batch,
        )?;
        submission.request.priority = Some(admission.priority.to_string());
        Ok(())
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

impl JobRunner for Runtime {
    fn infer(
        &self,
        request: InferRequest,
    ) -> impl Future<Output = Result<InferResponse, RayError>> + Send {
        Runtime::infer(self, request)
    }

    fn backend_refuses(&self, model: Option<&str>) -> bool {
        let now = tokio::time::Instant::now();
        let live = self.live();
        let registry = &live.registry;
        let first = match model.and_then(|name| registry.index_of(name)) {
            Some(index) => index,
            // Routing rules may send it to any model: it runs, and if the model they choose
            // refuses before any backend is sent it, the attempt is given back.
            None if !live.config.routing.rules.is_empty() => return false,
            None => registry.default_index(),
        };
        // A model that refuses but has a fallback that would answer is no refusal: the
        // request moves to the fallback.
        registry
            .fallback_chain(first)
            .into_iter()
            .all(|index| registry.at(index).refusal(now).is_some())
    }
}
