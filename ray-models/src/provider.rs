//! The `Provider` trait: the public extension point for backends.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use ray_core::wire::{
    ChatTurn, DetectedCapabilities, FinishReason, GenerationExtensions, ProviderDiagnostics,
    ProviderStatus, ResponseFormatKind, ToolCall,
};

use crate::error::ProviderError;

/// One generation request, as the runtime hands it to a backend: normalised, clamped and with
/// its prompt compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// The gateway's request id (`req_...`), sent as `user` to OpenAI-style backends.
    pub request_id: String,
    /// System prompt.
    pub system: Option<String>,
    /// User prompt: the latest user message.
    pub input: String,
    /// Earlier turns of the conversation, oldest first, between the system prompt and
    /// `input`.
    pub history: Vec<ChatTurn>,
    /// Output tokens at most.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling.
    pub top_p: f64,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Vec<String>>,
    /// Plain text or one JSON object.
    pub response_format: ResponseFormatKind,
    /// The prompt family (16 hex chars), for slot affinity.
    pub family_key: Option<String>,
    /// The scheduler permit index the request runs on; a backend with as many slots as permits
    /// can use it as the slot id to keep the family's prompt cache warm.
    pub slot_hint: Option<u32>,
    /// Whether the permit's last request had the same prompt family (its slot is warm).
    pub slot_warm: bool,
    /// A forced prompt format (`metadata.rayPromptFormat`).
    pub prompt_format: Option<String>,
    /// In JSON mode, whether an answer that is not a JSON object gets one repair call (on
    /// unless `metadata.rayJsonRepair` is `off`, as the OpenAI routes send it: there the
    /// answer is the model's own, cut-off or not).
    pub json_repair: bool,
    /// The built-in template the prompt came from, if any.
    pub template: Option<TemplateRef>,
    /// The prompt the backend will see, prepared before admission by [`Provider::prepare`].
    pub prepared: Option<PreparedPrompt>,
    /// Penalties, logit bias, log probabilities, tools and the JSON schema, for backends that
    /// support them (empty for a plain request). A request with any of them goes to the
    /// backend's chat endpoint.
    pub extensions: GenerationExtensions,
}

impl ProviderRequest {
    /// A request for `input` with neutral sampling settings.
    pub fn new(request_id: impl Into<String>, input: impl Into<String>, max_tokens: u32) -> Self {
        ProviderRequest {
            request_id: request_id.into(),
            system: None,
            input: input.into(),
            history: Vec::new(),
            max_tokens,
            temperature: 0.2,
            top_p: 0.95,
            seed: None,
            stop: None,
            response_format: ResponseFormatKind::Text,
            family_key: None,
            slot_hint: None,
            slot_warm: false,
            prompt_format: None,
            json_repair: true,
            template: None,
            prepared: None,
            extensions: GenerationExtensions::default(),
        }
    }
}

/// The template a prompt was rendered from, for backends that cache a prompt scaffold per
/// template and splice the variables in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// Template id, e.g. `email.follow_up.v1`.
    pub id: String,
    /// Variables in the order the template names them, with their rendered values.
    pub variables: Vec<(String, String)>,
    /// The system prompt with variable `i` written as [`sentinel`]`(i)`.
    pub sentinel_system: String,
    /// The input with variable `i` written as [`sentinel`]`(i)`.
    pub sentinel_input: String,
}

/// The placeholder of template variable `index` in a scaffold.
pub fn sentinel(index: usize) -> String {
    format!("__RAY_PROMPT_VAR_{index}__")
}

/// How a prompt is presented to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptFormat {
    /// The model's chat template, applied by the backend (`/apply-template`).
    NativeTemplate,
    /// A cached template scaffold with the variables spliced in.
    PromptScaffold,
    /// Chat messages sent to the backend's chat endpoint.
    OpenAiChat,
    /// Ray's own `System:`/`User:`/`Assistant:` framing.
    RayChatFallback,
    /// The system prompt and the input, one after the other, with no framing.
    PlainCompletion,
}

impl PromptFormat {
    /// The name in diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptFormat::NativeTemplate => "llama.cpp-template",
            PromptFormat::PromptScaffold => "prompt-scaffold",
            PromptFormat::OpenAiChat => "openai-chat",
            PromptFormat::RayChatFallback => "ray-chat-fallback",
            PromptFormat::PlainCompletion => "plain-completion",
        }
    }

    /// Parses a name (`metadata.rayPromptFormat`).
    pub fn parse(name: &str) -> Option<PromptFormat> {
        [
            PromptFormat::NativeTemplate,
            PromptFormat::PromptScaffold,
            PromptFormat::OpenAiChat,
            PromptFormat::RayChatFallback,
            PromptFormat::PlainCompletion,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }
}

/// The prompt a backend will see, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPrompt {
    /// The format chosen.
    pub format: PromptFormat,
    /// Why that format, in a sentence.
    pub reason: String,
    /// The prompt text, for completion endpoints (none for chat endpoints).
    pub text: Option<std::sync::Arc<str>>,
    /// Exact prompt tokens, when the backend tokenized it.
    pub tokens: Option<u32>,
}

/// What a backend produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderOutput {
    /// The generated text.
    pub text: String,
    /// Why generation stopped, when the backend says.
    pub finish_reason: Option<FinishReason>,
    /// Prompt tokens, when the backend reports them.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, when the backend reports them.
    pub completion_tokens: Option<u64>,
    /// What the adapter did.
    pub diagnostics: ProviderDiagnostics,
    /// The tools the model called.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Each output token's log probability (OpenAI's `logprobs.content` entries).
    pub logprobs: Option<Vec<serde_json::Value>>,
}

/// One event of a token stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Newly generated text.
    Delta(String),
    /// Generation ended; the complete output (text is the concatenation of the deltas).
    Done(Box<ProviderOutput>),
}

/// A stream of generated text, ending with [`StreamEvent::Done`]. Dropping it cancels the
/// generation.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// A batch of texts to embed, as the runtime hands it to a backend: validated, not cached yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingRequest {
    /// The gateway's request id (`req_...`).
    pub request_id: String,
    /// The texts, each non-empty.
    pub inputs: Vec<String>,
}

/// What a backend computed for an [`EmbeddingRequest`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddingOutput {
    /// One vector per input, in input order, all of one dimension.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read, when the backend reports them.
    pub prompt_tokens: Option<u64>,
}

/// A backend's health as the provider sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderHealthReport {
    /// Its state.
    pub status: ProviderStatus,
    /// How long the probe took.
    pub latency: Option<Duration>,
    /// What the backend can do.
    pub capabilities: Option<DetectedCapabilities>,
    /// Probe details (slots, errors, ...).
    pub details: Option<serde_json::Value>,
}

impl ProviderHealthReport {
    /// A report with only a status.
    pub fn status(status: ProviderStatus) -> ProviderHealthReport {
        ProviderHealthReport {
            status,
            latency: None,
            capabilities: None,
            details: None,
        }
    }
}

/// A model backend.
///
/// The runtime calls [`Provider::infer`] (or [`Provider::stream`]) under a scheduler permit
/// and drops the future when the caller leaves or the deadline passes, so an implementation
/// must stop its backend work when dropped (an HTTP client does this by closing the
/// connection). Queueing, caching, dedupe and retries are the runtime's business, not the
/// provider's.
///
/// ```
/// use async_trait::async_trait;
/// use ray_models::{Provider, ProviderError, ProviderOutput, ProviderRequest};
///
/// /// Answers every prompt in capitals.
/// #[derive(Debug)]
/// struct Shouty;
///
/// #[async_trait]
/// impl Provider for Shouty {
///     fn kind(&self) -> &'static str {
///         "shouty"
///     }
///
///     async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError> {
///         Ok(ProviderOutput { text: request.input.to_uppercase(), ..Default::default() })
///     }
/// }
/// # let output = futures_executor_block_on(Shouty.infer(&ProviderRequest::new("req_1", "hi", 8)));
/// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// # assert_eq!(output?.text, "HI");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// A short name: `mock`, `openai-compatible`, `llama.cpp`, ...
    fn kind(&self) -> &'static str;

    /// Generates a complete answer.
    async fn infer(&self, request: &ProviderRequest) -> Result<ProviderOutput, ProviderError>;

    /// Generates an answer as a stream of text. The default runs [`Provider::infer`] and
    /// yields its text as one delta.
    async fn stream(&self, request: &ProviderRequest) -> Result<TokenStream, ProviderError> {
        let output = self.infer(request).await?;
        let events = vec![
            Ok(StreamEvent::Delta(output.text.clone())),
            Ok(StreamEvent::Done(Box::new(output))),
        ];
        Ok(Box::pin(futures_util::stream::iter(events)))
    }

    /// Probes the backend. The default reports `ready`: a provider without a probe is assumed
    /// to be able to serve.
    async fn health(&self) -> ProviderHealthReport {
        ProviderHealthReport::status(ProviderStatus::Ready)
    }

    /// Whether [`Provider::health`] really probes a backend (the runtime caches probes and
    /// follows them for readiness).
    fn has_health_probe(&self) -> bool {
        false
    }

    /// Prepares the backend after start: capability detection, probes. Warm-up requests from
    /// the config are sent by the runtime through its normal path afterwards.
    async fn warm_up(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Whether [`Provider::prepare`] talks to the backend; if so the runtime bounds how many
    /// preparations run at once.
    fn prepares_with_backend(&self) -> bool {
        false
    }

    /// Prepares a request before admission: chooses the prompt format, renders the prompt the
    /// backend will see and counts its tokens with the backend's tokenizer, so admission uses
    /// exact costs. The runtime stores the result in [`ProviderRequest::prepared`]. The default
    /// prepares nothing (the runtime then estimates chars / 4).
    async fn prepare(
        &self,
        request: &ProviderRequest,
    ) -> Result<Option<PreparedPrompt>, ProviderError> {
        let _ = request;
        Ok(None)
    }

    /// What the backend can do, as last detected.
    fn capabilities(&self) -> Option<DetectedCapabilities> {
        None
    }

    /// The backend's context window per request, when known.
    fn context_window(&self) -> Option<u32> {
        None
    }

    /// The backend process behind the provider was started again (a managed model loaded
    /// after an unload or a crash), listening at `base_url` when it moved (a port Ray picked):
    /// what was detected about the old one, and what was rendered and counted with it, no
    /// longer holds. The next preparation detects again. The default does nothing.
    fn backend_replaced(&self, base_url: Option<&str>) {
        let _ = base_url;
    }

    /// Whether [`Provider::embed`] is implemented. The default is `false`: the runtime then
    /// answers embeddings requests with `model_capability_unsupported` without calling it.
    fn supports_embeddings(&self) -> bool {
        false
    }

    /// Computes one vector per input. The default refuses with
    /// [`ProviderError::CapabilityMissing`]. A backend that turns out not to serve embeddings (a
    /// `llama-server` started without `--embeddings`) answers the same way.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingOutput, ProviderError> {
        let _ = request;
        Err(ProviderError::CapabilityMissing {
            capability: "embeddings",
            reason: format!("the {} provider does not compute embeddings", self.kind()),
        })
    }
}
