//! Routing: [`App::handle`] takes a request through the head limits, the API key and the rate
//! limit to its route, native or OpenAI; the native routes that need nothing else (root,
//! readiness, health, metrics, infer, cluster nodes) are answered here.

use super::app::*;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use crate::gateway::http::RequestBody;
use hyper::{Method, Request, Response, StatusCode};
use ray_core::config::RouteKind;
use ray_core::wire::{DiagnosticsDetail, HealthStatus, InferRequest, InferResponse};
use ray_core::{ErrorCode, RayError};

use crate::gateway::client::client_ip;
use crate::gateway::http::{self, Body};

impl App {
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
        let mut caller = Caller::default();
        if let Some(cluster) = &self.cluster
            && crate::gateway::cluster::is_forwarded(&request)
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
                    caller.api_key_id = Some(format!("node:{node}"));
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
            && let Some(keys) = self.keys.read().clone()
        {
            match keys.check(request.headers()) {
                Ok(token) => Some(token.to_string()),
                Err(error) => {
                    self.stats.auth_rejected.fetch_add(1, Ordering::Relaxed);
                    if route == Route::Status {
                        // A browser cannot send the key with a page load: the page asks for it.
                        log.error = Some(error);
                        return (route, crate::gateway::status::locked_response());
                    }
                    let close = request.method() == Method::POST;
                    return (route, self.reject(route, error, log, close));
                }
            }
        } else {
            None
        };
        if let Some(key) = &verified_key {
            caller.api_key_id = Some(api_key_id(key));
        }
        // Without a key, fair share tells clients apart by address.
        let client = client_ip(
            peer.ip(),
            request.headers(),
            self.runtime
                .with_config(|config| config.rate_limit.trust_proxy_headers),
        );
        let client = ip_text(client);
        if route.is_job_lookup() && self.runtime.jobs().is_none() {
            // Probing jobs while the queue is unavailable costs no rate-limit budget.
            return (
                route,
                self.reject(route, async_queue_disabled(), log, false),
            );
        }
        let decision = match (
            self.runtime.rate_limiter(),
            route.rate_limited() && !forwarded,
        ) {
            (Some(limiter), true) => {
                let decision = limiter.check(&limiter.key(&client, verified_key.as_deref()));
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
        caller.client = Some(client);
        // A request whose model is not ready here (or would wait too long) goes to a peer that
        // has it ready, when there is one; otherwise it is served here.
        if let Some(cluster) = &self.cluster
            && !forwarded
            && route.forwardable()
        {
            // Boxed, as the routes below are (see there).
            let (buffered, body) = match Box::pin(self.buffer(request)).await {
                Ok(read) => read,
                Err((error, close)) => return (route, self.reject(route, error, log, close)),
            };
            request = buffered;
            let named = crate::gateway::cluster::requested_model(&body);
            if let Some(model) = cluster.wants_peer(&self.runtime, named.as_deref()) {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_string();
                if let Some(response) = Box::pin(cluster.forward(
                    &model,
                    request.method(),
                    &path,
                    request.headers(),
                    &body,
                ))
                .await
                {
                    return (route, response);
                }
            }
        }
        // Every route but `/v1/infer` (the hot path, kept small itself) runs as a boxed future,
        // so this future, which every request moves through the connection's layers, stays
        // the size of the infer route's rather than of the largest route's.
        let response = match route {
            Route::Root => self.root(),
            Route::ClusterNodes => Box::pin(self.cluster_nodes(route, log)).await,
            Route::AdminReload => {
                Box::pin(self.reload_route(route, peer, request.headers(), log)).await
            }
            Route::Livez => http::json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ok", "service": self.service_name() }),
            ),
            Route::Readyz => Box::pin(self.readyz(request.uri().query())).await,
            Route::Favicon => http::no_icon(),
            Route::Health => Box::pin(self.health()).await,
            Route::Status => Box::pin(crate::gateway::status::page_response(self)).await,
            Route::StatusJson => Box::pin(crate::gateway::status::json_response(self)).await,
            Route::Metrics => self.metrics(request.uri().query()),
            Route::Config => http::json(StatusCode::OK, &self.runtime.config_view()),
            Route::Infer => self.infer(request, caller, log).await,
            Route::ChatCompletions => {
                Box::pin(crate::gateway::openai::chat_completions(
                    self, request, caller, log,
                ))
                .await
            }
            Route::Completions => {
                Box::pin(crate::gateway::openai::completions(
                    self, request, caller, log,
                ))
                .await
            }
            Route::Models => Box::pin(crate::gateway::openai::models(self)).await,
            Route::Model => {
                Box::pin(crate::gateway::openai::model(
                    self,
                    request.uri().path(),
                    log,
                ))
                .await
            }
            Route::OpenAiNotFound => crate::gateway::openai::not_found(self, &request, log),
            Route::Embeddings => {
                Box::pin(crate::gateway::embeddings::embeddings(
                    self, request, caller, log,
                ))
                .await
            }
            // The body of a refused submission is never read: close the connection.
            Route::Jobs if self.runtime.jobs().is_none() => {
                self.reject(route, async_queue_disabled(), log, true)
            }
            Route::Jobs => Box::pin(self.submit_job(request, caller, log)).await,
            Route::JobList => self.list_jobs(request.uri().query(), log),
            Route::Job | Route::JobCancel => Box::pin(self.job(route, request, log)).await,
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

    async fn health(&self) -> Response<Body> {
        let health = self.full_health().await;
        let status = if health.status == HealthStatus::Unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        http::json(status, &health)
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

    async fn infer(
        &self,
        request: Request<RequestBody>,
        caller: Caller,
        log: &mut RequestLog,
    ) -> Response<Body> {
        let context = request_context(&request, caller, RouteKind::Infer, false);
        let asked = match diagnostics_header(request.headers()) {
            Ok(asked) => asked,
            Err(error) => return self.reject(Route::Infer, error, log, true),
        };
        let mut parsed: InferRequest = match self.read_json(request).await {
            Ok(parsed) => parsed,
            Err((error, close)) => return self.reject(Route::Infer, error, log, close),
        };
        // The body's `diagnostics` wins over the header; neither: the config's default.
        if parsed.diagnostics.is_none() {
            parsed.diagnostics = asked.map(|detail| detail == DiagnosticsDetail::Full);
        }
        if parsed.stream == Some(true) {
            return Box::pin(self.stream(
                Route::Infer,
                parsed,
                &context,
                |_| crate::gateway::sse::RayEvents,
                log,
            ))
            .await;
        }
        match self.boxed_infer(parsed, &context).await {
            Ok(response) => {
                let answer = http::infer_json(&response);
                log_response(log, &response);
                answer
            }
            Err(error) => self.reject(Route::Infer, error, log, false),
        }
    }
}

impl App {
    /// The runtime's future for one request, boxed by a plain function: built inside the
    /// route's `async fn`, the unboxed future (several KB) would stay in the route's own
    /// future, which every request moves through the connection's layers.
    fn boxed_infer<'a>(
        &'a self,
        parsed: InferRequest,
        context: &'a ray_runtime::RequestContext,
    ) -> Pin<Box<impl Future<Output = Result<InferResponse, RayError>> + 'a>> {
        Box::pin(self.runtime.infer_in(parsed, context))
    }
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
