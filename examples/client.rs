//! Calls a running `ray-server` with the typed SDK.
//!
//! Start a server in one terminal:
//!
//! ```text
//! cargo run --release -p ray-server -- --config examples/config/ray.tiny.json
//! ```
//!
//! then run this in another:
//!
//! ```text
//! cargo run -p ray-examples --example client -- http://127.0.0.1:3000
//! ```
//!
//! Set `RAY_API_KEY` when the server has auth enabled.

use futures_util::StreamExt;
use ray_sdk::{ErrorCode, InferEvent, InferRequest, RayClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000".to_string());
    let mut builder = RayClient::builder(&base_url);
    if let Ok(key) = std::env::var("RAY_API_KEY") {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;

    let ready = client.ready().await?;
    println!(
        "ready={} provider={:?} reasons={:?}",
        ready.is_ready(),
        ready.provider_status,
        ready.reasons
    );

    let request = InferRequest {
        system: Some("Be terse.".into()),
        max_tokens: Some(64),
        ..InferRequest::new("Explain why cheap VPS inference matters.")
    };
    match client.infer(&request).await {
        Ok(response) => {
            println!("{}", response.output);
            println!(
                "id={} cached={} deduplicated={} queueTimeMs={} latencyMs={}",
                response.id,
                response.cached,
                response.deduplicated,
                response.queue_time_ms,
                response.latency_ms
            );
        }
        Err(error) if error.code() == Some(ErrorCode::QueueFull) => {
            println!("the gateway is busy; retry in {:?}", error.retry_after());
        }
        Err(error) if error.code() == Some(ErrorCode::Unauthorized) => {
            println!("auth is enabled: set RAY_API_KEY");
        }
        Err(error) => return Err(error.into()),
    }

    // The same, streamed: text as it is generated, then the whole response.
    let mut stream = client
        .infer_stream(&InferRequest::new(
            "Stream a short answer about bounded queues.",
        ))
        .await?;
    while let Some(event) = stream.next().await {
        match event? {
            InferEvent::Delta(delta) => print!("{}", delta.text),
            InferEvent::Done(response) => println!("\n(streamed {} chars)", response.output.len()),
            InferEvent::Error(body) => println!("\nstream failed: {}", body.error.message),
        }
    }

    let health = client.health().await?;
    println!(
        "health={:?} queue={}/{} cache entries={}",
        health.status, health.queue_depth, health.runtime.queue.max_queue, health.cache_entries
    );
    Ok(())
}
