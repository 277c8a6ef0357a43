//! The job routes: `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}` and
//! `DELETE /v1/jobs/{id}`. The queue itself lives in the runtime.

use crate::gateway::http::RequestBody;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use ray_core::wire::{JobListQuery, JobSubmission};

use super::app::{App, RequestLog, Route};
use crate::gateway::http::{self, Body};

impl App {
    /// `POST /v1/jobs`: the same content rules and body limit as `/v1/infer`, then `202` with
    /// `Location` once the job is durable.
    pub(super) async fn submit_job(
        &self,
        request: Request<RequestBody>,
        caller: super::app::Caller,
        log: &mut RequestLog,
    ) -> Response<Body> {
        let context = super::app::request_context(
            &request,
            caller,
            ray_core::config::RouteKind::Infer,
            false,
        );
        let mut submission: JobSubmission = match self.read_json(request).await {
            Ok(submission) => submission,
            Err((error, close)) => return self.reject(Route::Jobs, error, log, close),
        };
        // The job's class (batch unless it asks for another), lowered to the key's ceiling.
        if let Err(error) = self.runtime.prioritise_job(&mut submission, &context) {
            return self.reject(Route::Jobs, error, log, false);
        }
        let accepted = match self.cluster() {
            Some(cluster) => cluster.submit_job(&self.runtime, submission).await,
            None => self.runtime.submit_job(submission).await,
        };
        match accepted {
            Ok(accepted) => {
                log.request_id = Some(accepted.id.clone());
                let mut response = http::json(StatusCode::ACCEPTED, &accepted);
                if let Ok(location) = HeaderValue::from_str(&accepted.location) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
            Err(error) => self.reject(Route::Jobs, error, log, false),
        }
    }

    /// `GET /v1/jobs?status=...&limit=...&cursor=...`.
    pub(super) fn list_jobs(&self, query: Option<&str>, log: &mut RequestLog) -> Response<Body> {
        let listed = JobListQuery::parse(query).and_then(|query| self.runtime.list_jobs(&query));
        match listed {
            Ok(list) => http::json(StatusCode::OK, &list),
            Err(error) => self.reject(Route::JobList, error, log, false),
        }
    }

    /// `GET /v1/jobs/{id}` and `DELETE /v1/jobs/{id}`.
    pub(super) async fn job(
        &self,
        route: Route,
        request: Request<RequestBody>,
        log: &mut RequestLog,
    ) -> Response<Body> {
        // A body on a DELETE is never read: close the connection rather than leave it there.
        let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
            || request
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        let id = request
            .uri()
            .path()
            .strip_prefix("/v1/jobs/")
            .unwrap_or_default();
        log.request_id = Some(id.chars().take(128).collect());
        let result = match (self.cluster(), route == Route::JobCancel) {
            (Some(cluster), true) => cluster.cancel_job(id).await,
            (Some(cluster), false) => cluster.job(id).await,
            (None, true) => self.runtime.cancel_job(id).await,
            (None, false) => self.runtime.job(id).await,
        };
        let response = match result {
            Ok(record) => http::json(StatusCode::OK, &record),
            Err(error) => self.reject(route, error, log, has_body),
        };
        if has_body {
            http::close_connection(response)
        } else {
            response
        }
    }
}
