//! Shared helpers: a real `ray-server` app on `127.0.0.1:0`, and a raw HTTP client for requests
//! a well-behaved client would never send.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod exposition;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ray_core::config::ConfigLoader;
use ray_runtime::{PressureSources, Runtime};
use ray_sdk::RayClient;
use ray_server::{App, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _background: ray_runtime::Background,
}

impl TestServer {
    /// Starts a server for `config_json` layered over its profile, on a free port.
    pub async fn start(config_json: &str) -> TestServer {
        TestServer::start_with_keys(config_json, None).await
    }

    pub async fn start_with_keys(config_json: &str, keys: Option<&str>) -> TestServer {
        TestServer::start_with(config_json, keys, HttpLimits::default()).await
    }

    /// Starts a server with the given HTTP limits (shorter timeouts keep tests quick).
    pub async fn start_with(
        config_json: &str,
        keys: Option<&str>,
        limits: HttpLimits,
    ) -> TestServer {
        TestServer::start_reading(config_json, keys, limits, no_pressure_signals()).await
    }

    /// Starts a server that reads its pressure signals from `sources`. The others read none,
    /// so the load of the machine running the tests cannot clamp their requests.
    pub async fn start_reading(
        config_json: &str,
        keys: Option<&str>,
        limits: HttpLimits,
        sources: PressureSources,
    ) -> TestServer {
        let config = ConfigLoader::new()
            .with_json("test.json", config_json)
            .with_override("server.port", 0.into())
            .load()
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let runtime = Runtime::builder(config)
            .pressure_sources(sources)
            .build()
            .unwrap();
        TestServer::start_app(App::with_keys(runtime, keys).unwrap().with_limits(limits)).await
    }

    /// Starts a server over a runtime built by the test (a custom provider, job store, ...).
    pub async fn start_runtime(runtime: Runtime) -> TestServer {
        TestServer::start_app(App::with_keys(runtime, None).unwrap()).await
    }

    /// Starts a server over an app built by the test.
    pub async fn start_app(app: App) -> TestServer {
        let app = Arc::new(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let background = app.runtime().start();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ray_server::run(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            app,
            shutdown: Some(tx),
            task: Some(task),
            _background: background,
        }
    }

    /// Requests holding a permit now (`/health` `runtime.queue.inFlight`).
    pub async fn in_flight(&self) -> u32 {
        self.client()
            .health()
            .await
            .unwrap()
            .runtime
            .queue
            .in_flight
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn client(&self) -> RayClient {
        RayClient::new(self.url("")).unwrap()
    }

    pub fn client_with_key(&self, key: &str) -> RayClient {
        RayClient::builder(self.url(""))
            .api_key(key)
            .build()
            .unwrap()
    }

    /// Signals shutdown and waits for the server to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap()
    }

    /// Sends raw bytes and reads the whole response (the server closes or we time out).
    pub async fn raw(&self, request: &[u8]) -> RawResponse {
        raw_request(self.addr, request).await
    }

    /// Like [`TestServer::raw`], for requests built on the fly (the future owns everything).
    pub fn raw_owned(&self, request: Vec<u8>) -> impl Future<Output = RawResponse> + use<> {
        let addr = self.addr;
        async move { raw_request(addr, &request).await }
    }

    /// A metric's value from `/metrics` (the unlabelled sample).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, name).unwrap_or_else(|| panic!("metric {name} not found"))
    }
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

/// A root with no `proc/` or `sys/`: every pressure signal is unavailable.
pub fn no_pressure_signals() -> PressureSources {
    PressureSources::under(concat!(env!("CARGO_TARGET_TMPDIR"), "/no-pressure-signals"))
}

/// A parsed raw response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// One kept-alive client connection, for tests of what happens between requests.
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        RawConnection {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            buffer: Vec::new(),
        }
    }

    /// Sends a request and reads one whole response, leaving the connection open.
    pub async fn exchange(&mut self, request: &[u8]) -> RawResponse {
        self.stream.write_all(request).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut chunk = [0u8; 8192];
            while !response_complete(&self.buffer) {
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the server closed the connection mid-response");
                self.buffer.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("a response within 5 s");
        let response = parse_response(&self.buffer);
        self.buffer.clear();
        response
    }

    /// Waits up to `limit` for the server to close the connection (a read returns end of
    /// stream or a reset); returns whether it did.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(limit, self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buffer.extend_from_slice(&chunk[..n]);
                    if response_complete(&buffer) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    parse_response(&buffer)
}

fn response_complete(buffer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buffer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|len| body.len() >= len)
}

fn parse_response(buffer: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buffer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A POST with a JSON body.
pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The tiny profile with an instant mock.
pub const TINY: &str = r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}}}"#;
