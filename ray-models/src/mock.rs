//! The built-in mock provider: deterministic output, no model, optional latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use ray_core::wire::jobs::first_chars;
use ray_core::wire::{Availability, DetectedCapabilities, FinishReason, ProviderDiagnostics};

use crate::error::ProviderError;
use crate::provider::{
    EmbeddingOutput, EmbeddingRequest, Provider, ProviderOutput, ProviderRequest, StreamEvent,
    TokenStream,
};

/// A provider that echoes its prompt after `latency`, the way the existing Ray's mock does:
/// `[ray:mock model=<id> profile=<profile> seed=<seed>]`, then `system=` and the first 72 chars
/// of the system prompt (if any), then the first 320 chars of the input.
#[derive(Debug)]
pub struct MockProvider {
    model_id: String,
    /// The first line of every answer, written once.
    header: String,
    latency: Duration,
    calls: AtomicU64,
}

impl MockProvider {
    /// A mock for `model_id` under `profile`, answering after `latency`.
    pub fn new(
        model_id: impl Into<String>,
        profile: impl Into<String>,
        seed: Option<String>,
        latency: Duration,
    ) -> MockProvider {
        let model_id = model_id.into();
        let header = format!(
            "[ray:mock model={model_id} profile={} seed={}]\n",
            profile.into(),
            seed.as_deref().unwrap_or("none")
        );
        MockProvider {
            model_id,
            header,
            latency,
            calls: AtomicU64::new(0),
        }
    }

    /// Calls made so far (infer and stream).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The text the mock answers `request` with.
    pub fn render(&self, request: &ProviderRequest) -> String {
        let input = first_chars(&request.input, 320);
        let mut text = String::with_capacity(self.header.len() + input.len() + 90);
        text.push_str(&self.header);
        if let Some(system) = &request.system {
            text.push_str("system=");
            text.push_str(first_chars(system, 72));
            text.push('\n');
        }
        text.push_str(input);
        text
    }

    fn output(&self, text: String) -> ProviderOutput {
        ProviderOutput {
            text,
            finish_reason: Some(FinishReason::Stop),
            prompt_tokens: None,
            completion_tokens: None,
            diagnostics: ProviderDiagnostics {
                request_shape: "mock".into(),
                model_ref: Some(self.model_id.clone()),
                ..ProviderDiagnostics::default()
            },
            tool_calls: None,
            logprobs: None,
        }
    }

    /// The mock echoes its prompt: it cannot call tools, report log probabilities or follow a
    /// JSON schema, and says so (penalties and logit bias change nothing in an echo and are
    /// accepted).
    fn refuse_unsupported(&self, request: &ProviderRequest) -> Result<(), ProviderError> {
        let extensions = &request.extensions;
        let refused = if extensions.uses_tools() {
            Some(("tools", "tool calling"))
        } else if extensions.logprobs == Some(true) {
            Some(("logprobs", "log probabilities"))
        } else if extensions.json_schema.is_some() {
            Some(("response_format", "JSON-schema output"))
        } else {
            None
        };
        match refused {
            Some((param, what)) => Err(ProviderError::Unsupported {
                param: param.into(),
                reason: format!(
                    "The model {:?} is served by the mock adapter, which does not support {what}",
                    self.model_id
                ),
            }),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Provider for MockProvider {
    fn kind(&self) -> &'static str {
        "mock"
    }

    async fn prepare(
        &self,
        request: &ProviderRequest,
    ) -> Result<Option<crate::provider::PreparedPrompt>, ProviderError> {
        self.refuse_unsupported(request)?;
        Ok(None)
    }

    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
        self.refuse_unsupported(request)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            sleep_until_precisely(tokio::time::Instant::now() + self.latency).await;
        }
        Ok(self.output(self.render(request)))
    }

    /// Streams the answer word by word, spreading `latency` over the words.
    async fn stream(&self, request: &ProviderRequest) -> Result<TokenStream, ProviderError> {
        self.refuse_unsupported(request)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let text = self.render(request);
        let words: Vec<String> = text.split_inclusive(' ').map(String::from).collect();
        let pause = self
            .latency
            .checked_div(words.len().max(1) as u32)
            .unwrap_or_default();
        let done = self.output(text);
        // Each word is due at its own deadline from the start, so the timer's lateness does not
        // add up over the words and the last one arrives `latency` after the start.
        let started = tokio::time::Instant::now();
        let deltas = futures_util::stream::iter(words.into_iter().zip(1u32..)).then(
            move |(word, index)| async move {
                if !pause.is_zero() {
                    sleep_until_precisely(started + pause * index).await;
                }
                Ok(StreamEvent::Delta(word))
            },
        );
        let end = futures_util::stream::once(async move { Ok(StreamEvent::Done(Box::new(done))) });
        Ok(Box::pin(deltas.chain(end)))
    }

    fn supports_embeddings(&self) -> bool {
        true
    }

    /// Unit vectors of 32 dimensions derived from a hash of each text, after `latency`; the
    /// prompt tokens are estimated as chars / 4 per input.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingOutput, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(EmbeddingOutput {
            vectors: request
                .inputs
                .iter()
                .map(|text| crate::embed::mock_vector(text))
                .collect(),
            prompt_tokens: Some(
                request
                    .inputs
                    .iter()
                    .map(|text| (text.chars().count() as u64).div_ceil(4))
                    .sum(),
            ),
        })
    }

    fn capabilities(&self) -> Option<DetectedCapabilities> {
        Some(DetectedCapabilities {
            model_ref: Some(self.model_id.clone()),
            streaming: Availability::Available,
            json_mode: Availability::Unavailable,
            ..DetectedCapabilities::default()
        })
    }
}

/// How long before a deadline the mock stops sleeping on the timer and yields until the
/// deadline instead. Tokio's timer counts whole milliseconds and rounds up, so a plain sleep
/// wakes up to about a millisecond late (a 1 ms sleep took about 2.2 ms); the last stretch is
/// spent yielding to other tasks and reading the clock.
pub(crate) const SPIN_MARGIN: Duration = Duration::from_micros(1_500);

/// Waits until `deadline` to well under a millisecond: a timer sleep to [`SPIN_MARGIN`] before
/// it, then `yield_now` until it passes. Other tasks run during the yields; the thread stays
/// busy for at most the margin.
pub(crate) async fn sleep_until_precisely(deadline: tokio::time::Instant) {
    if let Some(early) = deadline.checked_sub(SPIN_MARGIN)
        && early > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(early).await;
    }
    // The same wait on the real clock bounds the loop when Tokio's clock is paused (tests):
    // a paused clock does not move while a task keeps yielding.
    let real_deadline =
        std::time::Instant::now() + deadline.saturating_duration_since(tokio::time::Instant::now());
    loop {
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        if std::time::Instant::now() >= real_deadline {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Only a paused clock gets here; its timer is exact.
    tokio::time::sleep_until(deadline).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_like_the_reference_mock() {
        let mock = MockProvider::new(
            "tiny-dev",
            "tiny",
            Some("ray-tiny".into()),
            Duration::from_millis(35),
        );
        let mut request = ProviderRequest::new("req_1", "x".repeat(400), 16);
        request.system = Some("s".repeat(100));
        let started = tokio::time::Instant::now();
        let output = mock.infer(&request).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(35));
        let expected = format!(
            "[ray:mock model=tiny-dev profile=tiny seed=ray-tiny]\nsystem={}\n{}",
            "s".repeat(72),
            "x".repeat(320)
        );
        assert_eq!(output.text, expected);
        assert_eq!(mock.calls(), 1);
        // Cut by chars, not bytes.
        let mut request = ProviderRequest::new("req_2", "é".repeat(400), 16);
        request.system = Some("€".repeat(73));
        let text = mock.render(&request);
        let expected = format!(
            "[ray:mock model=tiny-dev profile=tiny seed=ray-tiny]\nsystem={}\n{}",
            "€".repeat(72),
            "é".repeat(320)
        );
        assert_eq!(text, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn embeds_after_its_latency() {
        let mock = MockProvider::new("m", "tiny", None, Duration::from_millis(20));
        let request = EmbeddingRequest {
            request_id: "req_1".into(),
            inputs: vec!["a queue".into(), "a permit".into()],
        };
        let started = tokio::time::Instant::now();
        let output = mock.embed(&request).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(20));
        assert_eq!(output.vectors.len(), 2);
        assert_eq!(output.vectors[0], crate::embed::mock_vector("a queue"));
        assert_eq!(output.prompt_tokens, Some(4));
        assert!(mock.supports_embeddings());
    }

    #[tokio::test(start_paused = true)]
    async fn streams_word_by_word() {
        let mock = MockProvider::new("m", "tiny", None, Duration::from_millis(100));
        let request = ProviderRequest::new("req_1", "one two three", 16);
        let mut stream = mock.stream(&request).await.unwrap();
        let mut deltas = Vec::new();
        let mut done = None;
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                StreamEvent::Delta(text) => deltas.push(text),
                StreamEvent::Done(output) => done = Some(*output),
            }
        }
        let done = done.unwrap();
        assert!(deltas.len() > 3);
        assert_eq!(deltas.concat(), done.text);
    }
}
