//! A backend of your own behind Ray's runtime: implement [`ray_models::Provider`] and hand it
//! to [`ray_runtime::Runtime::builder`]. The runtime keeps doing what it does for llama.cpp:
//! admission with the token counts the provider reports, the result cache, in-flight dedupe,
//! deadlines (dropping the provider's future), health and readiness from its probe, metrics.
//!
//! Run with:
//!
//! ```text
//! cargo run -p ray-examples --example custom_provider
//! ```
//!
//! The provider here answers from a table of canned replies (a stand-in for a rules engine, a
//! remote API or a model library called in-process) and counts tokens as words.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ray_core::config::ConfigLoader;
use ray_core::wire::{FinishReason, InferRequest, ProviderStatus};
use ray_models::{
    PreparedPrompt, PromptFormat, Provider, ProviderError, ProviderHealthReport, ProviderOutput,
    ProviderRequest,
};
use ray_runtime::Runtime;

/// Answers from canned replies, slowly enough that dedupe has something to share.
#[derive(Debug, Default)]
struct CannedReplies {
    calls: AtomicU32,
}

impl CannedReplies {
    fn reply(input: &str) -> Option<&'static str> {
        let input = input.to_lowercase();
        [
            ("price", "Pricing starts at one VPS; see the plans page."),
            ("refund", "Refunds are possible within 30 days."),
            ("hello", "Hello! How can I help?"),
        ]
        .into_iter()
        .find(|(keyword, _)| input.contains(keyword))
        .map(|(_, reply)| reply)
    }
}

#[async_trait]
impl Provider for CannedReplies {
    fn kind(&self) -> &'static str {
        "canned-replies"
    }

    /// Exact prompt costs for admission: here, one token per word.
    async fn prepare(
        &self,
        request: &ProviderRequest,
    ) -> Result<Option<PreparedPrompt>, ProviderError> {
        let words = request.input.split_whitespace().count()
            + request
                .system
                .as_deref()
                .map_or(0, |s| s.split_whitespace().count());
        Ok(Some(PreparedPrompt {
            format: PromptFormat::PlainCompletion,
            reason: "canned replies take the input as is".into(),
            text: None,
            tokens: Some(words as u32),
        }))
    }

    /// Called under a scheduler permit; dropped (cancelled) when the caller leaves or the
    /// deadline passes, which a sleep or an HTTP call honours by itself.
    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(reply) = Self::reply(&request.input) else {
            // Errors map onto Ray's stable codes (`provider_upstream_error`, 502 here).
            return Err(ProviderError::upstream(404, b"no canned reply for that"));
        };
        let words: Vec<&str> = reply.split(' ').collect();
        let kept = words.len().min(request.max_tokens as usize);
        Ok(ProviderOutput {
            text: words[..kept].join(" "),
            finish_reason: Some(if kept < words.len() {
                FinishReason::Length
            } else {
                FinishReason::Stop
            }),
            prompt_tokens: Some(request.input.split_whitespace().count() as u64),
            completion_tokens: Some(kept as u64),
            ..ProviderOutput::default()
        })
    }

    /// Readiness follows this probe (the runtime caches it for a second).
    async fn health(&self) -> ProviderHealthReport {
        ProviderHealthReport::status(ProviderStatus::Ready)
    }

    fn has_health_probe(&self) -> bool {
        true
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Any config works: the adapter it names is replaced by the provider given below.
    let config = ConfigLoader::new()
        .with_json(
            "inline",
            r#"{"profile":"tiny","model":{"id":"canned","warmOnBoot":false}}"#,
        )
        .load()?
        .config;
    let provider = Arc::new(CannedReplies::default());
    let runtime = Runtime::builder(config)
        .provider(provider.clone())
        .build()?;
    let _background = runtime.start();

    // Two identical requests at once: one provider call, shared.
    let question = InferRequest::new("What is the price of one node?");
    let (a, b) = tokio::join!(
        runtime.infer(question.clone()),
        runtime.infer(question.clone())
    );
    let (a, b) = (a?, b?);
    println!("answer: {:?}", a.output);
    println!(
        "shared: {} (provider calls so far: {})",
        a.deduplicated || b.deduplicated,
        provider.calls.load(Ordering::Relaxed)
    );
    if let Some(scheduler) = &a.diagnostics.scheduler {
        println!(
            "admitted at {} prompt tokens, counted by the {}",
            scheduler.prompt_tokens, scheduler.prompt_tokens_source
        );
    }

    // Again: from the result cache, no provider call.
    let again = runtime.infer(question).await?;
    println!(
        "cached: {} (provider calls: {})",
        again.cached,
        provider.calls.load(Ordering::Relaxed)
    );

    // The provider's error, as a client sees it.
    let error = runtime
        .infer(InferRequest::new("Tell me a joke"))
        .await
        .expect_err("no canned reply");
    println!(
        "refused: {} ({}) {}",
        error.code(),
        error.status(),
        error.message()
    );

    let ready = runtime.readiness().await;
    println!("ready: {} ({:?})", ready.is_ready(), ready.provider_status);
    Ok(())
}
