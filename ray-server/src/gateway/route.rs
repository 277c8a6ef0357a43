//! The gateway's routes: matching a request's method and path, and what each route asks for
//! (auth, rate limit, OpenAI error shape, forwarding). A leaf of the gateway.

use hyper::Method;

/// Routes, by method and exact path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Root,
    Livez,
    Readyz,
    Health,
    Status,
    StatusJson,
    Metrics,
    Config,
    Infer,
    ChatCompletions,
    Completions,
    Models,
    Embeddings,
    Jobs,
    JobList,
    Job,
    JobCancel,
    NotFound,
    /// `GET /v1/models/{id}`.
    Model,
    /// Any other `/v1/*` path outside Ray's native routes: a 404 in OpenAI's shape, so the
    /// OpenAI SDKs raise their `NotFoundError`.
    OpenAiNotFound,
    /// `GET /v1/cluster/nodes`.
    ClusterNodes,
    /// `POST /v1/admin/reload`.
    AdminReload,
    /// `GET /favicon.ico`, which browsers ask for with the status page: `204`, no icon.
    Favicon,
}

impl Route {
    pub(crate) const ALL: [Route; 23] = [
        Route::Root,
        Route::Livez,
        Route::Readyz,
        Route::Health,
        Route::Status,
        Route::StatusJson,
        Route::Metrics,
        Route::Config,
        Route::Infer,
        Route::ChatCompletions,
        Route::Completions,
        Route::Models,
        Route::Embeddings,
        Route::Jobs,
        Route::JobList,
        Route::Job,
        Route::JobCancel,
        Route::NotFound,
        Route::Model,
        Route::OpenAiNotFound,
        Route::ClusterNodes,
        Route::AdminReload,
        Route::Favicon,
    ];

    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        match (method, path) {
            (&Method::GET, "/") => Route::Root,
            (&Method::GET, "/livez") => Route::Livez,
            (&Method::GET, "/readyz") => Route::Readyz,
            (&Method::GET, "/health") => Route::Health,
            (&Method::GET, "/status") => Route::Status,
            (&Method::GET, "/status.json") => Route::StatusJson,
            (&Method::GET, "/favicon.ico") => Route::Favicon,
            (&Method::GET, "/metrics") => Route::Metrics,
            (&Method::GET, "/v1/config") => Route::Config,
            (&Method::POST, "/v1/infer") => Route::Infer,
            (&Method::POST, "/v1/chat/completions") => Route::ChatCompletions,
            (&Method::POST, "/v1/completions") => Route::Completions,
            (&Method::GET, "/v1/models") => Route::Models,
            (&Method::POST, "/v1/embeddings") => Route::Embeddings,
            (&Method::POST, "/v1/jobs") => Route::Jobs,
            (&Method::GET, "/v1/jobs") => Route::JobList,
            (&Method::GET, p) if p.starts_with("/v1/jobs/") => Route::Job,
            (&Method::DELETE, p) if p.starts_with("/v1/jobs/") => Route::JobCancel,
            (&Method::GET, "/v1/cluster/nodes") => Route::ClusterNodes,
            (&Method::POST, "/v1/admin/reload") => Route::AdminReload,
            (&Method::GET, p) if p.starts_with("/v1/models/") && p.len() > "/v1/models/".len() => {
                Route::Model
            }
            (_, p) if p.starts_with("/v1/") && !Route::native_path(p) => Route::OpenAiNotFound,
            _ => Route::NotFound,
        }
    }

    /// The label used in metrics and logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Livez => "/livez",
            Route::Readyz => "/readyz",
            Route::Health => "/health",
            Route::Status => "/status",
            Route::StatusJson => "/status.json",
            Route::Metrics => "/metrics",
            Route::Config => "/v1/config",
            Route::Infer => "/v1/infer",
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Models => "/v1/models",
            Route::Embeddings => "/v1/embeddings",
            Route::Jobs => "/v1/jobs",
            Route::JobList => "/v1/jobs (list)",
            Route::Job => "/v1/jobs/{id}",
            Route::JobCancel => "/v1/jobs/{id} (cancel)",
            Route::NotFound => "not_found",
            Route::Model => "/v1/models/{id}",
            Route::OpenAiNotFound => "not_found (openai)",
            Route::ClusterNodes => "/v1/cluster/nodes",
            Route::AdminReload => "/v1/admin/reload",
            Route::Favicon => "/favicon.ico",
        }
    }

    /// Ray's own `/v1` routes, whose unknown methods keep Ray's error shape.
    pub(crate) fn native_path(path: &str) -> bool {
        matches!(
            path,
            "/v1/infer" | "/v1/config" | "/v1/jobs" | "/v1/cluster/nodes" | "/v1/admin/reload"
        ) || path.starts_with("/v1/jobs/")
    }

    pub(crate) fn protected(self) -> bool {
        matches!(
            self,
            Route::Health
                | Route::ClusterNodes
                | Route::AdminReload
                | Route::Status
                | Route::StatusJson
                | Route::Metrics
                | Route::Config
                | Route::Infer
                | Route::ChatCompletions
                | Route::Completions
                | Route::Models
                | Route::Model
                | Route::Embeddings
                | Route::Jobs
                | Route::JobList
                | Route::Job
                | Route::JobCancel
        )
    }

    pub(crate) fn rate_limited(self) -> bool {
        matches!(
            self,
            Route::Infer
                | Route::ChatCompletions
                | Route::Completions
                | Route::Embeddings
                | Route::Jobs
                | Route::JobList
                | Route::Job
                | Route::JobCancel
        )
    }

    /// Routes that answer errors in OpenAI's shape.
    pub(crate) fn openai(self) -> bool {
        matches!(
            self,
            Route::ChatCompletions
                | Route::Completions
                | Route::Models
                | Route::Model
                | Route::OpenAiNotFound
                | Route::Embeddings
        )
    }

    /// Routes a node may forward to a peer that has the model ready.
    pub(crate) fn forwardable(self) -> bool {
        matches!(
            self,
            Route::Infer | Route::ChatCompletions | Route::Completions | Route::Embeddings
        )
    }

    /// Job routes without a body (look-ups, listing, cancellation): the async-queue check
    /// comes before the rate limit.
    pub(crate) fn is_job_lookup(self) -> bool {
        matches!(self, Route::JobList | Route::Job | Route::JobCancel)
    }
}
