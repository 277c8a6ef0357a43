//! The application: routes, guards (auth, rate limit, content rules) and handlers over one
//! `Runtime`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::http::RequestBody;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ray_core::config::RouteKind;
use ray_core::wire::{GatewayHealth, GatewayHttpHealth, HealthStatus, InferRequest};
use ray_core::{ErrorCode, RayError};
use ray_runtime::{MetricKind, MetricsSnapshot, RequestContext, Runtime, Sample};

use crate::auth::{ApiKeys, AuthSetupError};
use crate::head;
use crate::http::{self, Body};
use crate::rate_limit::{Decision, RateLimiter, client_ip};

mod jobs;

/// Fixed HTTP limits (the reference's constants).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: u32,
    /// Bytes of the request line and headers at most; more is refused with a JSON 431.
    pub max_header_bytes: u32,
    /// Header fields at most; more are refused with a JSON 431.
    pub max_headers: u32,
    /// Time allowed to send the request line and headers, counted from the end of the previous
    /// response on a kept-alive connection.
    pub headers_timeout: Duration,
    /// How long a kept-alive connection may sit idle (no request in progress, no bytes of the
    /// next one received) before the server closes it.
    pub keep_alive_timeout: Duration,
    /// Time allowed to send the body.
    pub body_timeout: Duration,
    /// Requests per connection before it is closed.
    pub max_requests_per_connection: u32,
    /// How long shutdown waits for requests in progress.
    pub shutdown_grace: Duration,
    /// Longest request target (path and query).
    pub max_target_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 256,
            max_header_bytes: 12_288,
            max_headers: 64,
            headers_timeout: Duration::from_secs(15),
            keep_alive_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_requests_per_connection: 1_000,
            shutdown_grace: Duration::from_secs(30),
            max_target_bytes: 8_192,
        }
    }
}

/// Share of the connection cap reported as pressure.
pub const HTTP_PRESSURE_THRESHOLD: f64 = 0.9;

/// Every route that needs `Authorization: Bearer <key>` while `auth.enabled` is true, as
/// (method, path); `{id}` stands for a job id. `/`, `/livez` and `/readyz` stay public.
pub const PROTECTED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/status"),
    ("GET", "/status.json"),
    ("GET", "/metrics"),
    ("GET", "/v1/config"),
    ("POST", "/v1/infer"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/cluster/nodes"),
];

/// Why the app could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Auth is enabled but the keys are missing or invalid.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The `cluster` section cannot be used (its key or credentials are missing).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterSetupError),
}

/// Counters kept by the HTTP front.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) active_requests: AtomicU64,
    pub(crate) auth_rejected: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) requests: RequestCounters,
}

/// Statuses counted per route; anything else is counted as `other`.
const COUNTED_STATUSES: [u16; 17] = [
    200, 202, 400, 401, 404, 409, 411, 413, 414, 415, 417, 429, 431, 500, 502, 503, 504,
];

/// Requests by route and status, counted without a lock.
#[derive(Debug)]
pub(crate) struct RequestCounters {
    counts: Vec<AtomicU64>,
}

impl Default for RequestCounters {
    fn default() -> RequestCounters {
        let cells = Route::ALL.len() * (COUNTED_STATUSES.len() + 1);
        RequestCounters {
            counts: (0..cells).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RequestCounters {
    /// Where a route's row starts.
    fn row(route: Route) -> usize {
        let route = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        route * (COUNTED_STATUSES.len() + 1)
    }

    fn index(route: Route, status: u16) -> usize {
        let column = COUNTED_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(COUNTED_STATUSES.len());
        RequestCounters::row(route) + column
    }

    pub(crate) fn add(&self, route: Route, status: u16) {
        self.counts[RequestCounters::index(route, status)].fetch_add(1, Ordering::Relaxed);
    }

    fn samples(&self) -> Vec<Sample> {
        let mut samples = Vec::new();
        for route in Route::ALL {
            for (column, status) in COUNTED_STATUSES
                .iter()
                .map(|s| s.to_string())
                .chain(std::iter::once("other".to_string()))
                .enumerate()
            {
                let value =
                    self.counts[RequestCounters::row(route) + column].load(Ordering::Relaxed);
                if value > 0 {
                    samples.push(Sample {
                        suffix: "",
                        labels: vec![("route", route.label().to_string()), ("status", status)],
                        value: value as f64,
                    });
                }
            }
        }
        samples
    }
}

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
}

impl Route {
    const ALL: [Route; 21] = [
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
    ];

    fn parse(method: &Method, path: &str) -> Route {
        match (method, path) {
            (&Method::GET, "/") => Route::Root,
            (&Method::GET, "/livez") => Route::Livez,
            (&Method::GET, "/readyz") => Route::Readyz,
            (&Method::GET, "/health") => Route::Health,
            (&Method::GET, "/status") => Route::Status,
            (&Method::GET, "/status.json") => Route::StatusJson,
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
        }
    }

    /// Ray's own `/v1` routes, whose unknown methods keep Ray's error shape.
    fn native_path(path: &str) -> bool {
        matches!(
            path,
            "/v1/infer" | "/v1/config" | "/v1/jobs" | "/v1/cluster/nodes"
        ) || path.starts_with("/v1/jobs/")
    }

    fn protected(self) -> bool {
        matches!(
            self,
            Route::Health
                | Route::ClusterNodes
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

    fn rate_limited(self) -> bool {
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
    fn forwardable(self) -> bool {
        matches!(
            self,
            Route::Infer | Route::ChatCompletions | Route::Completions | Route::Embeddings
        )
    }

    /// Job routes without a body (look-ups, listing, cancellation): the async-queue check
    /// comes before the rate limit.
    fn is_job_lookup(self) -> bool {
        matches!(self, Route::JobList | Route::Job | Route::JobCancel)
    }
}

/// What one request did, for its log line.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    pub(crate) request_id: Option<String>,
    pub(crate) error: Option<RayError>,
    pub(crate) cached: Option<bool>,
    pub(crate) deduplicated: Option<bool>,
    pub(crate) degraded: Option<bool>,
    pub(crate) queue_time_ms: Option<u64>,
}

/// The gateway application: one runtime behind the HTTP routes.
#[derive(Debug)]
pub struct App {
    runtime: Runtime,
    keys: Option<ApiKeys>,
    limiter: Option<RateLimiter>,
    limits: HttpLimits,
    pub(crate) stats: ServerStats,
    pub(crate) status: crate::status::StatusHistory,
    cluster: Option<crate::cluster::ClusterLink>,
}

impl App {
    /// An app over `runtime`, reading API keys (when auth is enabled) from the process
    /// environment variable named by `auth.apiKeyEnv`.
    pub fn new(runtime: Runtime) -> Result<App, AppError> {
        let variable = runtime.config().auth.api_key_env.clone();
        let value = std::env::var(&variable).ok();
        App::with_keys(runtime, value.as_deref())
    }

    /// An app over `runtime` with the API keys given explicitly (as the variable's text).
    pub fn with_keys(runtime: Runtime, keys: Option<&str>) -> Result<App, AppError> {
        let config = runtime.config();
        let keys = if config.auth.enabled {
            Some(ApiKeys::parse(&config.auth.api_key_env, keys)?)
        } else {
            None
        };
        let limiter = config
            .rate_limit
            .enabled
            .then(|| RateLimiter::new(config.rate_limit.clone()));
        // With a `cluster` section the node joins the registry in the background (this needs
        // a Tokio runtime); without it no connection is opened.
        let cluster = match &config.cluster {
            Some(cluster) => Some(crate::cluster::ClusterLink::start(
                &runtime,
                cluster,
                |name| std::env::var(name).ok(),
            )?),
            None => None,
        };
        Ok(App {
            runtime,
            keys,
            limiter,
            limits: HttpLimits::default(),
            stats: ServerStats::default(),
            status: crate::status::StatusHistory::default(),
            cluster,
        })
    }

    /// Replaces the HTTP limits.
    pub fn with_limits(mut self, limits: HttpLimits) -> App {
        self.limits = limits;
        self
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The HTTP limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Handles one request.
    ///
    /// The order of checks: the head (header limits, target length, target form and `Host`),
    /// auth on protected routes, then for job look-ups (`GET /v1/jobs/{id}`, `GET /v1/jobs`,
    /// `DELETE /v1/jobs/{id}`) the async-queue check, then the rate limit, then for
    /// `POST /v1/jobs` the async-queue check, then the route. Unauthorised, unavailable and
    /// rate-limited requests are refused before any body is read.
    pub(crate) async fn handle(
        &self,
        mut request: Request<RequestBody>,
        peer: SocketAddr,
        log: &mut RequestLog,
    ) -> (Route, Response<Body>) {
        let route = Route::parse(request.method(), request.uri().path());
        if let Err(error) = self.check_head(&request) {
            // The connection may hold a body nobody will read, or a client that sends
            // malformed requests: close it.
            return (route, self.reject(route, error, log, true));
        }
        // A request a peer forwarded carries the cluster's signature instead of a client key;
        // it was admitted by the rate limit of the node that took it, and is never forwarded
        // again.
        let mut forwarded = false;
        if let Some(cluster) = &self.cluster
            && crate::cluster::is_forwarded(&request)
        {
            let (buffered, body) = match self.buffer(request).await {
                Ok(read) => read,
                Err((error, close)) => return (route, self.reject(route, error, log, close)),
            };
            request = buffered;
            match cluster.verify(
                request.method(),
                request.uri().path(),
                request.headers(),
                &body,
            ) {
                Ok(node) => {
                    request
                        .extensions_mut()
                        .insert(ApiKeyId(format!("node:{node}")));
                    forwarded = true;
                }
                Err(error) => {
                    self.stats.auth_rejected.fetch_add(1, Ordering::Relaxed);
                    return (route, self.reject(route, error, log, false));
                }
            }
        }
        // Only a verified key identifies a client: with auth disabled a Bearer token is
        // anything the client likes, so it plays no part in rate limiting.
        let verified_key = if forwarded {
            None
        } else if route.protected()
            && let Some(keys) = &self.keys
        {
            match keys.check(request.headers()) {
                Ok(token) => Some(token.to_string()),
                Err(error) => {
                    self.stats.auth_rejected.fetch_add(1, Ordering::Relaxed);
                    if route == Route::Status {
                        // A browser cannot send the key with a page load: the page asks for it.
                        log.error = Some(error);
                        return (route, crate::status::locked_response());
                    }
                    let close = request.method() == Method::POST;
                    return (route, self.reject(route, error, log, close));
                }
            }
        } else {
            None
        };
        if let Some(key) = &verified_key {
            request.extensions_mut().insert(ApiKeyId::of(key));
        }
        if route.is_job_lookup() && self.runtime.jobs().is_none() {
            // Probing jobs while the queue is unavailable costs no rate-limit budget.
            return (
                route,
                self.reject(route, async_queue_disabled(), log, false),
            );
        }
        let decision = match (&self.limiter, route.rate_limited() && !forwarded) {
            (Some(limiter), true) => {
                let ip = client_ip(
                    peer.ip(),
                    request.headers(),
                    self.runtime.config().rate_limit.trust_proxy_headers,
                );
                let decision = limiter.check(&limiter.key(&ip_text(ip), verified_key.as_deref()));
                if !decision.allowed {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let error = RayError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "Too many requests: at most {} per {} ms",
                            decision.limit,
                            self.runtime.config().rate_limit.window_ms
                        ),
                    )
                    .with_retry_after(decision.retry_after_secs);
                    let close = request.method() == Method::POST;
                    let response = self.reject(route, error, log, close);
                    return (route, with_rate_limit_headers(response, &decision));
                }
                Some(decision)
            }
            _ => None,
        };
        // A request whose model is not ready here (or would wait too long) goes to a peer that
        // has it ready, when there is one; otherwise it is served here.
        if let Some(cluster) = &self.cluster
            && !forwarded
            && route.forwardable()
        {
            let (buffered, body) = match self.buffer(request).await {
                Ok(read) => read,
                Err((error, close)) => return (route, self.reject(route, error, log, close)),
            };
            request = buffered;
            let named = crate::cluster::requested_model(&body);
            if let Some(model) = cluster.wants_peer(&self.runtime, named.as_deref()) {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_string();
                if let Some(response) = cluster
                    .forward(&model, request.method(), &path, request.headers(), &body)
                    .await
                {
                    return (route, response);
                }
            }
        }
        let response = match route {
            Route::Root => self.root(),
            Route::ClusterNodes => self.cluster_nodes(route, log).await,
            Route::Livez => http::json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ok", "service": self.service_name() }),
            ),
            Route::Readyz => self.readyz(request.uri().query()).await,
            Route::Health => self.health().await,
            Route::Status => crate::status::page_response(self).await,
            Route::StatusJson => crate::status::json_response(self).await,
            Route::Metrics => self.metrics(request.uri().query()),
            Route::Config => http::json(StatusCode::OK, &self.runtime.config_view()),
            Route::Infer => self.infer(request, log).await,
            Route::ChatCompletions => crate::openai::chat_completions(self, request, log).await,
            Route::Completions => crate::openai::completions(self, request, log).await,
            Route::Models => crate::openai::models(self).await,
            Route::Model => crate::openai::model(self, request.uri().path(), log).await,
            Route::OpenAiNotFound => crate::openai::not_found(self, &request, log),
            Route::Embeddings => crate::embeddings::embeddings(self, request, log).await,
            // The body of a refused submission is never read: close the connection.
            Route::Jobs if self.runtime.jobs().is_none() => {
                self.reject(route, async_queue_disabled(), log, true)
            }
            Route::Jobs => self.submit_job(request, log).await,
            Route::JobList => self.list_jobs(request.uri().query(), log),
            Route::Job | Route::JobCancel => self.job(route, request, log).await,
            Route::NotFound => self.reject(
                route,
                RayError::new(ErrorCode::NotFound, "Route not found"),
                log,
                false,
            ),
        };
        let mut response = match decision {
            Some(decision) => with_rate_limit_headers(response, &decision),
            None => response,
        };
        if let Some(node) = self.cluster.as_ref().and_then(|c| c.node_header()) {
            response
                .headers_mut()
                .insert(ray_cluster::auth::NODE_HEADER, node);
        }
        (route, response)
    }

    /// The head checks: header count and bytes, target length, target form and `Host`.
    fn check_head(&self, request: &Request<RequestBody>) -> Result<(), RayError> {
        let limits = &self.limits;
        head::check_size(
            request.method(),
            request.uri(),
            request.headers(),
            limits.max_headers,
            limits.max_header_bytes,
        )?;
        if request
            .uri()
            .path_and_query()
            .is_some_and(|pq| pq.as_str().len() > limits.max_target_bytes)
        {
            return Err(RayError::new(
                ErrorCode::RequestTargetTooLarge,
                format!(
                    "The request target is longer than {} bytes",
                    limits.max_target_bytes
                ),
            ));
        }
        head::check_target_and_host(request.uri(), request.headers())
    }

    fn service_name(&self) -> &str {
        &self.runtime.config().telemetry.service_name
    }

    pub(crate) fn reject(
        &self,
        route: Route,
        error: RayError,
        log: &mut RequestLog,
        close: bool,
    ) -> Response<Body> {
        let response = if route.openai() {
            crate::openai::error_response(&error)
        } else {
            http::error_response(&error)
        };
        log.error = Some(error);
        if close {
            http::close_connection(response)
        } else {
            response
        }
    }

    fn root(&self) -> Response<Body> {
        let config = self.runtime.config();
        http::json(
            StatusCode::OK,
            &serde_json::json!({
                "name": "ray",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "A small-model inference gateway for one cheap VPS: bounded queues, \
                                token-aware admission, caching, dedupe and honest health in front \
                                of llama.cpp.",
                "thesis": "On a small machine, refusing, delaying, deduplicating or degrading work \
                           is correct behaviour, as long as it is explicit.",
                "profile": config.profile.as_str(),
                "model": self.runtime.default_model_id(),
                "models": self.runtime.model_ids(),
                "docs": root_docs(),
                "routes": ["/livez", "/readyz", "/health", "/status", "/status.json",
                           "/metrics", "/v1/config",
                           "/v1/infer", "/v1/chat/completions", "/v1/completions",
                           "/v1/models", "/v1/embeddings", "/v1/jobs"],
            }),
        )
    }

    /// `/readyz` (the default model) or `/readyz?model=ID` (one model, by id or alias).
    async fn readyz(&self, query: Option<&str>) -> Response<Body> {
        let model = query.and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| *name == "model")
                .map(|(_, value)| value.to_string())
        });
        let readiness = match &model {
            None => Some(self.runtime.readiness().await),
            Some(name) => self.runtime.readiness_of(name).await,
        };
        let Some(mut readiness) = readiness else {
            let name = model.unwrap_or_default();
            let known = self.runtime.model_ids().join(", ");
            return http::error_response(
                &RayError::new(
                    ErrorCode::ModelNotFound,
                    format!("The model {name:?} does not exist here; the models are {known}"),
                )
                .with_details(serde_json::json!({ "param": "model" })),
            );
        };
        readiness.pressure.rate_limit = self.rate_limit_pressure();
        readiness.pressure.gateway_http = self.http_health().degraded;
        readiness.refresh();
        let status = if readiness.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        http::json(status, &readiness)
    }

    fn rate_limit_pressure(&self) -> bool {
        self.limiter
            .as_ref()
            .is_some_and(|limiter| limiter.health().degraded)
    }

    pub(crate) fn http_health(&self) -> GatewayHttpHealth {
        let limits = &self.limits;
        let sockets = self.stats.connections.load(Ordering::Relaxed) as u32;
        let active = self.stats.active_requests.load(Ordering::Relaxed) as u32;
        let ratio = f64::from(sockets) / f64::from(limits.max_connections.max(1));
        GatewayHttpHealth {
            degraded: ratio >= HTTP_PRESSURE_THRESHOLD,
            sockets,
            active_sockets: active.min(sockets),
            idle_sockets: sockets.saturating_sub(active),
            active_requests: active,
            max_connections: limits.max_connections,
            connection_ratio: ratio,
            pressure_threshold: HTTP_PRESSURE_THRESHOLD,
            request_body_limit_bytes: self.runtime.config().server.request_body_limit_bytes,
            max_header_bytes: limits.max_header_bytes,
            max_headers_count: limits.max_headers,
            max_requests_per_socket: limits.max_requests_per_connection,
            headers_timeout_ms: limits.headers_timeout.as_millis() as u64,
            request_timeout_ms: limits.body_timeout.as_millis() as u64,
            keep_alive_timeout_ms: limits.keep_alive_timeout.as_millis() as u64,
        }
    }

    async fn health(&self) -> Response<Body> {
        let health = self.full_health().await;
        let status = if health.status == HealthStatus::Unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        http::json(status, &health)
    }

    /// The runtime's health with the HTTP front's (connections, rate limiter) folded in.
    pub(crate) async fn full_health(&self) -> ray_core::wire::Health {
        let mut health = self.runtime.health().await;
        let http_health = self.http_health();
        let rate_limit = self.limiter.as_ref().map(RateLimiter::health);
        let extra_pressure =
            http_health.degraded || rate_limit.as_ref().is_some_and(|r| r.degraded);
        if extra_pressure && health.status == HealthStatus::Ok {
            health.status = HealthStatus::Degraded;
        }
        health.rate_limit = rate_limit;
        health.gateway = Some(GatewayHealth { http: http_health });
        if let Some(cluster) = &self.cluster {
            let cluster = cluster.health();
            if cluster.status != "ok" && health.status == HealthStatus::Ok {
                health.status = HealthStatus::Degraded;
            }
            health.cluster = Some(cluster);
        }
        health
    }

    fn metrics(&self, query: Option<&str>) -> Response<Body> {
        let mut snapshot = self.runtime.metrics();
        snapshot.extend(self.server_metrics());
        if let Some(cluster) = &self.cluster {
            snapshot.extend(cluster.metrics());
        }
        let wants_json = query.is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.eq_ignore_ascii_case("format=json"))
        });
        if wants_json {
            http::json(StatusCode::OK, &snapshot.to_json())
        } else {
            http::text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                snapshot.to_prometheus_text(),
            )
        }
    }

    /// The HTTP front's own metrics.
    pub fn server_metrics(&self) -> MetricsSnapshot {
        let stats = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let http = self.http_health();
        let mut m = MetricsSnapshot::default();
        m.gauge(
            "ray_http_connections",
            "Open client connections.",
            Some("gateway.http.sockets"),
            load(&stats.connections),
        );
        m.gauge(
            "ray_http_max_connections",
            "Connection cap.",
            Some("gateway.http.max_connections"),
            f64::from(http.max_connections),
        );
        m.gauge(
            "ray_http_connection_ratio",
            "Open connections / cap.",
            Some("gateway.http.connection_ratio"),
            http.connection_ratio,
        );
        m.counter(
            "ray_http_connections_total",
            "Client connections accepted.",
            None,
            load(&stats.connections_total),
        );
        m.gauge(
            "ray_http_active_requests",
            "Requests being handled.",
            Some("gateway.http.active_requests"),
            load(&stats.active_requests),
        );
        m.gauge(
            "ray_http_request_body_limit_bytes",
            "server.requestBodyLimitBytes.",
            Some("gateway.http.request_body_limit_bytes"),
            http.request_body_limit_bytes as f64,
        );
        let samples = stats.requests.samples();
        m.labelled(
            "ray_http_requests_total",
            "HTTP requests by route and status.",
            MetricKind::Counter,
            samples,
        );
        m.counter(
            "ray_auth_rejected_total",
            "Requests refused for a missing or wrong API key.",
            Some("requests.auth_rejected"),
            load(&stats.auth_rejected),
        );
        m.counter(
            "ray_rate_limited_total",
            "Requests refused by the rate limiter.",
            Some("requests.rate_limited"),
            load(&stats.rate_limited),
        );
        if let Some(limiter) = &self.limiter {
            let health = limiter.health();
            m.gauge(
                "ray_rate_limit_active_keys",
                "Clients with a live rate-limit window.",
                Some("rate_limit.active_keys"),
                f64::from(health.active_keys),
            );
            m.gauge(
                "ray_rate_limit_max_keys",
                "rateLimit.maxKeys.",
                Some("rate_limit.max_keys"),
                f64::from(health.max_keys),
            );
            m.gauge(
                "ray_rate_limit_active_keys_ratio",
                "Active keys / rateLimit.maxKeys.",
                Some("rate_limit.active_keys_ratio"),
                health.active_keys_ratio,
            );
            m.counter(
                "ray_rate_limit_overflow_total",
                "Requests counted against the shared overflow window because the key table was full.",
                None,
                limiter.overflowed() as f64,
            );
        }
        m
    }

    /// Reads and parses a POST's JSON body within the content rules, the size limit and the
    /// body timeout.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        request: Request<RequestBody>,
    ) -> Result<T, (RayError, bool)> {
        let body = self.read_body(request).await?;
        http::parse_json(&body).map_err(|e| (e, false))
    }

    /// A POST's body, within the body limit (declared and read) and the body timeout.
    async fn read_body<B>(&self, request: Request<B>) -> Result<bytes::Bytes, (RayError, bool)>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let limit = self.runtime.config().server.request_body_limit_bytes;
        if request.method() == Method::POST {
            http::check_post_headers(request.headers(), limit).map_err(|e| (e, true))?;
        }
        match tokio::time::timeout(self.limits.body_timeout, http::read_body(request, limit)).await
        {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(error)) => Err((error, true)),
            Err(_elapsed) => {
                let error = RayError::new(
                    ErrorCode::InvalidHttpRequest,
                    format!(
                        "The request body was not received within {} s",
                        self.limits.body_timeout.as_secs()
                    ),
                );
                Err((error, true))
            }
        }
    }

    /// Reads a request's body (within the body limit and timeout) and gives the request back
    /// with the body in memory, so it can be checked, then forwarded or served here.
    async fn buffer(
        &self,
        request: Request<RequestBody>,
    ) -> Result<(Request<RequestBody>, bytes::Bytes), (RayError, bool)> {
        let (parts, body) = request.into_parts();
        let mut head = Request::new(body);
        *head.method_mut() = parts.method.clone();
        *head.headers_mut() = parts.headers.clone();
        let bytes = self.read_body(head).await?;
        let body = http_body_util::Either::Right(http_body_util::Full::new(bytes.clone()));
        Ok((Request::from_parts(parts, body), bytes))
    }

    /// `GET /v1/cluster/nodes`: the live nodes from the registry.
    async fn cluster_nodes(&self, route: Route, log: &mut RequestLog) -> Response<Body> {
        let Some(cluster) = &self.cluster else {
            return self.reject(
                route,
                RayError::new(
                    ErrorCode::NotFound,
                    "This node is not in a cluster (the config has no cluster section)",
                ),
                log,
                false,
            );
        };
        match cluster.nodes().await {
            Ok(nodes) => http::json(
                StatusCode::OK,
                &serde_json::json!({ "node": cluster.node_id(), "nodes": nodes }),
            ),
            Err(error) => self.reject(route, error, log, false),
        }
    }

    /// The cluster link, when this node is in a cluster.
    pub(crate) fn cluster(&self) -> Option<&crate::cluster::ClusterLink> {
        self.cluster.as_ref()
    }

    /// Leaves the cluster (removes this node's registry record), when in one.
    pub async fn leave_cluster(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
    }

    async fn infer(&self, request: Request<RequestBody>, log: &mut RequestLog) -> Response<Body> {
        let context = request_context(&request, RouteKind::Infer, false);
        let parsed: InferRequest = match self.read_json(request).await {
            Ok(parsed) => parsed,
            Err((error, close)) => return self.reject(Route::Infer, error, log, close),
        };
        if parsed.stream == Some(true) {
            return self
                .stream(
                    Route::Infer,
                    parsed,
                    &context,
                    |_| crate::sse::RayEvents,
                    log,
                )
                .await;
        }
        match self.runtime.infer_in(parsed, &context).await {
            Ok(response) => {
                log_response(log, &response);
                http::json(StatusCode::OK, &response)
            }
            Err(error) => self.reject(Route::Infer, error, log, false),
        }
    }

    /// Answers with a stream of events, or with an error if it fails before its first event.
    /// The encoder is made once the serving model is known (`encoder(model id)`); the
    /// response says which model serves it (`X-Ray-Model`) and what chose it (`X-Ray-Route`).
    pub(crate) async fn stream<E: crate::sse::Encoder>(
        &self,
        route: Route,
        request: InferRequest,
        context: &RequestContext,
        encoder: impl FnOnce(&str) -> E,
        log: &mut RequestLog,
    ) -> Response<Body> {
        let stream = match self.runtime.infer_stream_in(request, context).await {
            Ok(stream) => stream,
            Err(error) => return self.reject(route, error, log, false),
        };
        log.request_id = Some(stream.request_id().to_string());
        let encoder = encoder(stream.model());
        let routing = stream.routing().clone();
        match crate::sse::respond(stream, encoder).await {
            crate::sse::Started::Streaming(response) => with_routing_headers(response, &routing),
            crate::sse::Started::Failed(error) => self.reject(route, error, log, false),
        }
    }

    pub(crate) fn count_request(&self, route: Route, status: u16) {
        self.stats.requests.add(route, status);
    }
}

/// The first 8 hex digits of the SHA-256 of the API key a request authenticated with: what
/// `routing.rules[].apiKeys` match.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeyId(pub(crate) String);

impl ApiKeyId {
    fn of(key: &str) -> ApiKeyId {
        let digest = crate::auth::digest(key);
        ApiKeyId(digest[..4].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What the runtime's routing rules see of a request: its route, its `X-Ray-Task` header,
/// the API key it authenticated with.
pub(crate) fn request_context<B>(
    request: &Request<B>,
    route: RouteKind,
    tools: bool,
) -> RequestContext {
    RequestContext {
        route: Some(route),
        task: request
            .headers()
            .get("x-ray-task")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v.len() <= 64),
        api_key_id: request.extensions().get::<ApiKeyId>().map(|k| k.0.clone()),
        tools,
    }
}

/// `X-Ray-Model` (the model that served) and `X-Ray-Route` (what chose it, and the model it
/// fell back from).
pub(crate) fn with_routing_headers(
    mut response: Response<Body>,
    routing: &ray_core::wire::RoutingDiagnostics,
) -> Response<Body> {
    let headers = response.headers_mut();
    if let Ok(model) = HeaderValue::from_str(&routing.model) {
        headers.insert("x-ray-model", model);
    }
    let route = match &routing.fallback_from {
        Some(from) => format!("{}; fallback-from={from}", routing.chosen_by),
        None => routing.chosen_by.clone(),
    };
    if let Ok(route) = HeaderValue::from_str(&route) {
        headers.insert("x-ray-route", route);
    }
    response
}

/// Fills the log line's fields from a response.
pub(crate) fn log_response(log: &mut RequestLog, response: &ray_core::wire::InferResponse) {
    log.request_id = Some(response.id.clone());
    log.cached = Some(response.cached);
    log.deduplicated = Some(response.deduplicated);
    log.degraded = Some(response.degraded);
    log.queue_time_ms = Some(response.queue_time_ms);
}

/// The `docs` object of `GET /`: the existing Ray's three keys, plus the operator guides.
/// The gateway serves no documents, so these are links to the repository's.
fn root_docs() -> serde_json::Value {
    let doc = |path: &str| format!("{}/blob/main/{path}", env!("CARGO_PKG_REPOSITORY"));
    serde_json::json!({
        "architecture": doc("docs/architecture.md"),
        "roadmap": doc("README.md#status"),
        "principles": doc("docs/architecture.md#decisions"),
        "api": doc("docs/api.md"),
        "configuration": doc("docs/configuration.md"),
        "operations": doc("docs/operations.md"),
        "metrics": doc("docs/metrics.md"),
    })
}

fn async_queue_disabled() -> RayError {
    RayError::new(
        ErrorCode::AsyncQueueDisabled,
        "The async job queue is disabled (asyncQueue.enabled is false)",
    )
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

fn with_rate_limit_headers(mut response: Response<Body>, decision: &Decision) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(decision.reset_epoch_secs),
    );
    if !decision.allowed {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(decision.retry_after_secs),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protected_route_list_matches_the_router() {
        for route in Route::ALL {
            let listed = PROTECTED_ROUTES.iter().any(|(method, path)| {
                let path = path.replace("{id}", "job_0123456789abcdef");
                Route::parse(&method.parse().unwrap_or(Method::GET), &path) == route
            });
            assert_eq!(listed, route.protected(), "{}", route.label());
        }
        for (method, path) in PROTECTED_ROUTES {
            let path = path.replace("{id}", "job_0123456789abcdef");
            let method: Method = method.parse().unwrap_or(Method::GET);
            assert!(Route::parse(&method, &path).protected(), "{method} {path}");
        }
    }
}
