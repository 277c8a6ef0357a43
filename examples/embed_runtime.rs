//! Hosts the Ray runtime inside your own program: no HTTP, no socket, the same admission,
//! caching, dedupe and degradation as `ray-server`.
//!
//! Run with:
//!
//! ```text
//! cargo run -p ray-examples --example embed_runtime
//! ```
//!
//! It loads `examples/config/ray.tiny.json` (the mock provider: no model needed), sends a few
//! requests, and prints what the runtime decided for each.

use std::time::Duration;

use ray_core::config::ConfigLoader;
use ray_core::wire::InferRequest;
use ray_runtime::Runtime;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ray.tiny.json");
    let loaded = ConfigLoader::new()
        .with_file(config_path)
        .with_process_env()
        .load()?;
    for warning in &loaded.warnings {
        eprintln!("config warning: {warning}");
    }
    let runtime = Runtime::new(loaded.config)?;
    // Background work (warm-up) lives as long as this handle.
    let _background = runtime.start();

    // Identical concurrent requests share one backend call.
    let question = InferRequest::new("Why should a small box refuse work explicitly?");
    let (first, second) = tokio::join!(
        runtime.infer(question.clone()),
        runtime.infer(question.clone())
    );
    let (first, second) = (first?, second?);
    println!(
        "first:  deduplicated={} output={:?}",
        first.deduplicated, first.output
    );
    println!("second: deduplicated={}", second.deduplicated);

    // The same request again comes from the result cache.
    let cached = runtime.infer(question).await?;
    println!(
        "again:  cached={} queueTimeMs={}",
        cached.cached, cached.queue_time_ms
    );

    // A template, with its own lane and output budget.
    let classify: InferRequest = serde_json::from_value(serde_json::json!({
        "templateId": "email.reply_classification.v1",
        "templateVariables": {"replyText": "Send pricing and implementation details."}
    }))?;
    let classified = runtime.infer(classify).await?;
    println!(
        "template: lane={:?} maxTokens={}",
        classified.diagnostics.prompt_compiler.lane,
        classified.diagnostics.degradation.applied_max_tokens
    );

    // Bad input is refused with a stable code, as over HTTP.
    let error = runtime
        .infer(InferRequest::new("   "))
        .await
        .expect_err("blank input is refused");
    println!(
        "refused: {} ({}): {}",
        error.code(),
        error.status(),
        error.message()
    );

    let readiness = runtime.readiness().await;
    println!(
        "ready={} provider={:?} uptime={:?}",
        readiness.is_ready(),
        readiness.provider_status,
        runtime.uptime().min(Duration::from_secs(3600))
    );
    Ok(())
}
