//! The listener: a connection cap, hyper's HTTP/1 parser limits and header-read timeout, the
//! keep-alive idle timeout, one log line per request, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Request, Response, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::gateway::app::{App, RequestLog};
use crate::gateway::http::Body;
use crate::gateway::idle::{Activity, Watched};

/// Header fields hyper's parser accepts. The gateway's own limit (`HttpLimits::max_headers`,
/// 64) is lower and enforced after parsing, so the client gets Ray's JSON 431; requests past
/// this ceiling get hyper's bare 431.
const PARSER_MAX_HEADERS: usize = 100;

/// Bytes of request line and headers hyper's parser accepts; like [`PARSER_MAX_HEADERS`], a
/// ceiling above the gateway's own limit (`HttpLimits::max_header_bytes`, 12,288).
const PARSER_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on an already-bound `listener` until `shutdown` completes, then stops accepting,
/// lets requests in progress finish for up to the shutdown grace period (30 s), and closes
/// whatever is left.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = app.limits().clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers_timeout)
        .max_headers(PARSER_MAX_HEADERS.max(limits.max_headers as usize + 1))
        .max_header_size(PARSER_MAX_HEAD_BYTES.max(limits.max_header_bytes as usize + 1))
        .keep_alive(true);
    let builder = Arc::new(builder);
    // The status page's history: one sample of the counters a second, stopped with the server.
    let sampler = tokio::spawn(crate::gateway::status::sample(app.clone()));
    tokio::pin!(shutdown);

    loop {
        // Take a connection slot before accepting, so a full gateway leaves new connections in
        // the kernel's backlog instead of accepting more than it can serve.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let mut drain = drain_rx.clone();
        let keep_alive_timeout = limits.keep_alive_timeout;
        connections.spawn(async move {
            let _slot = slot;
            app.stats.connections.fetch_add(1, Ordering::Relaxed);
            app.stats.connections_total.fetch_add(1, Ordering::Relaxed);
            let activity = Arc::new(Activity::new());
            let served = Arc::new(AtomicU32::new(0));
            let service = {
                let app = app.clone();
                let activity = activity.clone();
                service_fn(move |request| {
                    let app = app.clone();
                    let served = served.clone();
                    let activity = activity.clone();
                    async move {
                        let _request = activity.request_started();
                        Ok::<_, Infallible>(serve_one(&app, request, peer, &served).await)
                    }
                })
            };
            let stream = TokioIo::new(Watched::new(stream, activity.clone()));
            let connection = builder.serve_connection(stream, service);
            tokio::pin!(connection);
            let mut draining = *drain.borrow();
            if draining {
                connection.as_mut().graceful_shutdown();
            }
            // Checked every `keep_alive_timeout` at most; an idle connection is closed (a
            // graceful shutdown closes at once when no request is in progress).
            let idle_check = tokio::time::sleep(keep_alive_timeout);
            tokio::pin!(idle_check);
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    changed = drain.changed(), if !draining => {
                        draining = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                    () = &mut idle_check, if !draining => {
                        match activity.idle_deadline(keep_alive_timeout) {
                            Some(deadline) => idle_check.as_mut().reset(deadline),
                            None => {
                                draining = true;
                                connection.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }
            }
            app.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    sampler.abort();
    tracing::info!(
        open_connections = connections.len(),
        "gateway shutting down"
    );
    // Requests still waiting for a permit or a model are answered now (503 shutting_down),
    // not cut when the drain ends; requests in progress finish.
    app.runtime().close_for_shutdown();
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open_connections = connections.len(),
            "gateway shutdown timeout reached; closing active connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Handles one request and writes its log line.
async fn serve_one(
    app: &App,
    request: Request<Incoming>,
    peer: SocketAddr,
    served: &AtomicU32,
) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    app.stats.active_requests.fetch_add(1, Ordering::Relaxed);
    let mut log = RequestLog::default();
    // Decrement even if the client leaves and this future is dropped mid-request.
    let _active = ActiveGuard(app);
    let request = request.map(http_body_util::Either::Left);
    let (route, mut response) =
        ray_runtime::access_scope(app.handle(request, peer, &mut log)).await;
    let count = served.fetch_add(1, Ordering::Relaxed) + 1;
    if count >= app.limits().max_requests_per_connection {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    app.count_request(route, status);
    let latency_ms = started.elapsed().as_millis() as u64;
    // `telemetry.accessLog` decides which successes write a line; refusals and repeated
    // failures are folded into at most one line a second per code, with the count.
    let policy = app.runtime().log_policy();
    match &log.error {
        None if policy.log_success() => tracing::info!(
            method = method.as_str(),
            route = route.label(),
            status,
            latency_ms,
            request_id = log.request_id.as_deref(),
            queue_time_ms = log.queue_time_ms,
            cached = log.cached,
            deduplicated = log.deduplicated,
            degraded = log.degraded,
            "request completed"
        ),
        None => {}
        Some(error) if error.code().is_rejection() => {
            if let Some(count) = policy.log_refusal(error.code()) {
                tracing::warn!(
                    method = method.as_str(),
                    route = route.label(),
                    status,
                    latency_ms,
                    request_id = log.request_id.as_deref(),
                    queue_time_ms = log.queue_time_ms,
                    code = %error.code(),
                    error = error.message(),
                    count,
                    // The line also stands for the refusals folded since the last one.
                    summary = (count > 1).then_some(true),
                    "request rejected"
                );
            }
        }
        Some(error) => {
            if let Some(count) = policy.log_failure(error.code()) {
                tracing::error!(
                    method = method.as_str(),
                    route = route.label(),
                    status,
                    latency_ms,
                    request_id = log.request_id.as_deref(),
                    queue_time_ms = log.queue_time_ms,
                    code = %error.code(),
                    error = error.message(),
                    count,
                    // The line also stands for the refusals folded since the last one.
                    summary = (count > 1).then_some(true),
                    "request failed"
                );
            }
        }
    }
    response
}

struct ActiveGuard<'a>(&'a App);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.stats.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}
