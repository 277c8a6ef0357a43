//! The application: routes, guards (auth, rate limit, content rules) and handlers over one
//! `Runtime`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) use super::route::Route;
use crate::gateway::http::RequestBody;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response};
use ray_core::config::RouteKind;
use ray_core::wire::{
    DiagnosticsDetail, GatewayHealth, GatewayHttpHealth, HealthStatus, InferRequest,
};
use ray_core::{ErrorCode, RayError};
use ray_runtime::{MetricKind, MetricsSnapshot, RequestContext, Runtime};

pub(crate) use super::counters::ServerStats;
use crate::gateway::auth::{ApiKeys, AuthSetupError};
use crate::gateway::head;
use crate::gateway::http::{self, Body};
use ray_runtime::shared::Decision;

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
    ("POST", "/v1/admin/reload"),
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
    Cluster(#[from] crate::gateway::cluster::ClusterSetupError),
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
    pub(crate) runtime: Runtime,
    /// The API keys of `auth` (`None`: auth is off); a reload replaces them.
    pub(crate) keys: parking_lot::RwLock<Option<std::sync::Arc<ApiKeys>>>,
    pub(crate) key_source: crate::gateway::reload_source::KeySource,
    pub(crate) reload_source: Option<crate::gateway::reload_source::ReloadSource>,
    pub(crate) limits: HttpLimits,
    pub(crate) stats: ServerStats,
    pub(crate) status: crate::gateway::status::history::StatusHistory,
    pub(crate) cluster: Option<crate::gateway::cluster::ClusterLink>,
}

impl App {
    /// An app over `runtime`, reading API keys (when auth is enabled) from the process
    /// environment variable named by `auth.apiKeyEnv`.
    pub fn new(runtime: Runtime) -> Result<App, AppError> {
        let variable = runtime.config().auth.api_key_env.clone();
        let value = std::env::var(&variable).ok();
        let mut app = App::with_keys(runtime, value.as_deref())?;
        app.key_source = crate::gateway::reload_source::KeySource::Env;
        Ok(app)
    }

    /// An app over `runtime` with the API keys given explicitly (as the variable's text).
    pub fn with_keys(runtime: Runtime, keys: Option<&str>) -> Result<App, AppError> {
        let config = runtime.config();
        let key_source = crate::gateway::reload_source::KeySource::Given(keys.map(String::from));
        let keys = if config.auth.enabled {
            Some(std::sync::Arc::new(ApiKeys::parse(
                &config.auth.api_key_env,
                keys,
            )?))
        } else {
            None
        };
        // With a `cluster` section the node joins the registry in the background (this needs
        // a Tokio runtime); without it no connection is opened.
        let cluster = match &config.cluster {
            Some(cluster) => Some(crate::gateway::cluster::ClusterLink::start(
                &runtime,
                cluster,
                |name| std::env::var(name).ok(),
            )?),
            None => None,
        };
        Ok(App {
            runtime,
            keys: parking_lot::RwLock::new(keys),
            key_source,
            reload_source: None,
            limits: HttpLimits::default(),
            stats: ServerStats::default(),
            status: crate::gateway::status::history::StatusHistory::default(),
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

    /// The head checks: header count and bytes, target length, target form and `Host`.
    pub(crate) fn check_head(&self, request: &Request<RequestBody>) -> Result<(), RayError> {
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

    pub(crate) fn service_name(&self) -> &str {
        self.runtime.service_name()
    }

    pub(crate) fn reject(
        &self,
        route: Route,
        error: RayError,
        log: &mut RequestLog,
        close: bool,
    ) -> Response<Body> {
        let response = if route.openai() {
            http::openai_error_response(&error)
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

    pub(crate) fn rate_limit_pressure(&self) -> bool {
        self.runtime
            .rate_limiter()
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

    /// The runtime's health with the HTTP front's (connections, rate limiter) folded in.
    pub(crate) async fn full_health(&self) -> ray_core::wire::Health {
        let mut health = self.runtime.health().await;
        let http_health = self.http_health();
        let rate_limit = self.runtime.rate_limiter().map(|limiter| limiter.health());
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
        if let Some(limiter) = self.runtime.rate_limiter() {
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
    pub(crate) async fn read_body<B>(
        &self,
        request: Request<B>,
    ) -> Result<bytes::Bytes, (RayError, bool)>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let limit = self
            .runtime
            .with_config(|config| config.server.request_body_limit_bytes);
        if request.method() == Method::POST {
            http::check_post_headers(request.headers(), limit).map_err(|e| (e, true))?;
        }
        match ray_runtime::deadline::timeout(
            self.limits.body_timeout,
            http::read_body(request, limit),
        )
        .await
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
    pub(crate) async fn buffer(
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

    /// The cluster link, when this node is in a cluster.
    pub(crate) fn cluster(&self) -> Option<&crate::gateway::cluster::ClusterLink> {
        self.cluster.as_ref()
    }

    /// Leaves the cluster (removes this node's registry record), when in one.
    pub async fn leave_cluster(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
    }

    /// Answers with a stream of events, or with an error if it fails before its first event.
    /// The encoder is made once the serving model is known (`encoder(model id)`); the
    /// response says which model serves it (`X-Ray-Model`) and what chose it (`X-Ray-Route`).
    pub(crate) async fn stream<E: crate::gateway::sse::Encoder>(
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
        match crate::gateway::sse::respond(stream, encoder).await {
            crate::gateway::sse::Started::Streaming(response) => {
                with_routing_headers(response, &routing)
            }
            crate::gateway::sse::Started::Failed(error) => self.reject(route, error, log, false),
        }
    }

    pub(crate) fn count_request(&self, route: Route, status: u16) {
        self.stats.requests.add(route, status);
    }
}

/// Who sent a request, as [`App::handle`](crate::gateway::app::App) found out before its
/// route: handed to the route by value, so the route's [`RequestContext`] takes the strings
/// without copying them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    /// The first 8 hex digits of the SHA-256 of the API key the request authenticated with
    /// (what `routing.rules[].apiKeys` match), or `node:{id}` for a peer's forward.
    pub(crate) api_key_id: Option<String>,
    /// The client's address (after `trustProxyHeaders`), for fair share between clients.
    pub(crate) client: Option<String>,
}

/// The id [`Caller::api_key_id`] holds for `key`.
pub(crate) fn api_key_id(key: &str) -> String {
    let digest = crate::gateway::auth::digest(key);
    let mut id = String::with_capacity(8);
    for byte in &digest[..4] {
        for nibble in [byte >> 4, byte & 0x0f] {
            id.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    id
}

/// What the runtime's routing rules see of a request: its route, its `X-Ray-Task` header,
/// the API key it authenticated with, and its client address.
pub(crate) fn request_context<B>(
    request: &Request<B>,
    caller: Caller,
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
        api_key_id: caller.api_key_id,
        tools,
        priority: None,
        client: caller.client,
    }
}

/// The `X-Ray-Diagnostics` header: `full` or `summary` (how much of `diagnostics` the
/// response carries), or none.
pub(crate) fn diagnostics_header(
    headers: &HeaderMap,
) -> Result<Option<DiagnosticsDetail>, RayError> {
    let Some(value) = headers.get("x-ray-diagnostics") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(DiagnosticsDetail::parse)
        .map(Some)
        .ok_or_else(|| {
            RayError::invalid_request("X-Ray-Diagnostics must be full or summary")
                .with_details(serde_json::json!({ "header": "X-Ray-Diagnostics", "allowed": ["full", "summary"] }))
        })
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
        None => routing.chosen_by.to_string(),
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

pub(crate) fn async_queue_disabled() -> RayError {
    RayError::new(
        ErrorCode::AsyncQueueDisabled,
        "The async job queue is disabled (asyncQueue.enabled is false)",
    )
}

/// An address as text, as `Display` writes it; an IPv4 address digit by digit (once per
/// request: the formatter costs about ten times as much).
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

pub(crate) fn with_rate_limit_headers(
    mut response: Response<Body>,
    decision: &Decision,
) -> Response<Body> {
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
mod tests;
