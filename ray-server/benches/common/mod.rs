//! Helpers the bench binaries share: a free port, and a keep-alive HTTP client loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One client on a kept-alive connection: posts each body `next_body` gives to `path` until it
/// gives none, and returns the latencies of the answers with status `ok`. Other answers and
/// failed sends count in `errors`. When the server closes the connection (its per-connection
/// cap, or a failure) the client connects again.
pub(crate) async fn post_until_done(
    addr: SocketAddr,
    path: &'static str,
    ok: u16,
    mut next_body: impl FnMut() -> Option<String>,
    errors: &AtomicU64,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    loop {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        loop {
            let Some(body) = next_body() else {
                return latencies;
            };
            let request = Request::post(path)
                .header("host", "localhost")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let sent = Instant::now();
            let Ok(response) = sender.send_request(request).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let answered = response.status() == ok;
            let closing = response
                .headers()
                .get("connection")
                .is_some_and(|v| v == "close");
            let _ = response.into_body().collect().await;
            if answered {
                latencies.push(sent.elapsed());
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            if closing {
                break;
            }
        }
    }
}
