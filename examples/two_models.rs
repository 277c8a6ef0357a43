//! Two models in one embedded runtime: the built-in mock as a general model, and a provider
//! of your own as a classifier, routed by a rule on the request's `task`, with the mock as
//! the classifier's fallback when it refuses.
//!
//! Run with:
//!
//! ```text
//! cargo run -p ray-examples --example two_models
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use ray_core::config::ConfigLoader;
use ray_core::wire::{FinishReason, InferRequest, ProviderStatus};
use ray_models::{Provider, ProviderError, ProviderHealthReport, ProviderOutput, ProviderRequest};
use ray_runtime::Runtime;

/// A keyword classifier; `down` makes it refuse like a dead backend.
#[derive(Debug, Default)]
struct Keywords {
    down: AtomicBool,
}

#[async_trait]
impl Provider for Keywords {
    fn kind(&self) -> &'static str {
        "keywords"
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(ProviderError::upstream(503, b"classifier is down"));
        }
        let label = if request.input.to_lowercase().contains("refund") {
            "billing"
        } else {
            "other"
        };
        Ok(ProviderOutput {
            text: label.into(),
            finish_reason: Some(FinishReason::Stop),
            ..ProviderOutput::default()
        })
    }

    async fn health(&self) -> ProviderHealthReport {
        ProviderHealthReport::status(ProviderStatus::Ready)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ConfigLoader::new()
        .with_json(
            "inline",
            r#"{"profile":"tiny",
                "models":[
                  {"id":"general","adapter":{"kind":"mock","latencyMs":0}},
                  {"id":"keywords","aliases":["classifier"],"role":"classifier",
                   "warmOnBoot":false,"fallback":["general"]}],
                "defaultModel":"general",
                "routing":{"rules":[{"name":"classify","tasks":["classify"],"model":"classifier"}]}}"#,
        )
        .load()?
        .config;
    for sentence in ray_core::config::explain_models(&config) {
        println!("config: {sentence}");
    }
    let keywords = Arc::new(Keywords::default());
    // The classifier's adapter (the mock the profile names) is replaced by our provider.
    let runtime = Runtime::builder(config)
        .provider_for("keywords", keywords.clone())
        .build()?;
    let _background = runtime.start();

    let ask = |input: &str, task: Option<&str>| InferRequest {
        task: task.map(String::from),
        cache: Some(false),
        ..InferRequest::new(input)
    };
    for (input, task) in [
        ("Please refund my last invoice", Some("classify")),
        ("Write a friendly greeting", None),
    ] {
        let response = runtime.infer(ask(input, task)).await?;
        let routing = response.diagnostics.routing.expect("routing diagnostics");
        println!(
            "{input:?}: model={} chosenBy={} output={:?}",
            response.model, routing.chosen_by, response.output
        );
    }

    // The classifier refuses: the request falls back to the general model, and says so.
    keywords.down.store(true, Ordering::Relaxed);
    let response = runtime
        .infer(ask("Please refund my last invoice", Some("classify")))
        .await?;
    let routing = response.diagnostics.routing.expect("routing diagnostics");
    println!(
        "while the classifier is down: model={} fallbackFrom={:?} skipped={:?}",
        response.model, routing.fallback_from, routing.skipped
    );
    assert_eq!(response.model, "general");
    println!("models: {:?}", runtime.model_ids());
    Ok(())
}
