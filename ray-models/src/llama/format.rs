//! Choosing and rendering the prompt: the format and why, the model's template through
//! `/apply-template`, template scaffolds, exact token counts from `/tokenize`, and the
//! prepared-prompt cache that makes a repeated prompt cost no backend call.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ray_core::config::PromptFormatPreference;
use ray_core::wire::{Availability, ChatTurn, ResponseFormatKind};

use super::caps::Caps;
use super::native::{
    ApplyTemplateRequest, ApplyTemplateResponse, TokenizeRequest, TokenizeResponse,
};
use super::prompt::{Scaffold, plain_completion, ray_chat_fallback, template_matches};
use super::{LlamaCppProvider, Prepared};
use crate::error::ProviderError;
use crate::openai::messages_of;
use crate::provider::{PreparedPrompt, PromptFormat, ProviderRequest, sentinel};

/// How far a chat-template scaffold for plain requests is trusted: the model's template is
/// rendered once with placeholders and split there, and the split is checked against real
/// renderings before it replaces them.
#[derive(Debug, Clone)]
pub(crate) enum ChatShape {
    /// Not built yet.
    Unknown,
    /// Built; it matched the real rendering this many times so far.
    Checking(Arc<Scaffold>, u8),
    /// It matched often enough: prompts of this shape are rendered from it.
    Trusted(Arc<Scaffold>),
    /// The template changes what it is given (or the placeholders did not survive): always
    /// ask `/apply-template`.
    Unusable,
}

/// Real renderings a scaffold must match before it is trusted.
const SCAFFOLD_CHECKS: u8 = 2;

impl LlamaCppProvider {
    /// Renders a prompt without history through the model's chat template: from a trusted
    /// scaffold without a backend call, else through `/apply-template` (checking the scaffold
    /// against the result while it is not trusted yet).
    async fn render_native(&self, request: &ProviderRequest) -> Result<String, ProviderError> {
        let system = request.system.as_deref();
        if !request.history.is_empty() {
            return self
                .apply_template(system, &request.history, &request.input)
                .await;
        }
        let shape = usize::from(system.is_some());
        let values: Vec<&str> = system.into_iter().chain([request.input.as_str()]).collect();
        let state = self.chat_scaffolds.lock()[shape].clone();
        let scaffold = match state {
            ChatShape::Trusted(scaffold) => return Ok(scaffold.render_values(&values)),
            ChatShape::Unusable => None,
            ChatShape::Checking(scaffold, seen) => Some((scaffold, seen)),
            ChatShape::Unknown => {
                let placeholders: Vec<String> = (0..values.len()).map(sentinel).collect();
                let (sys, input) = match placeholders.as_slice() {
                    [sys, input] => (Some(sys.as_str()), input.as_str()),
                    [input] => (None, input.as_str()),
                    _ => unreachable!("one or two values"),
                };
                let rendered = self.apply_template(sys, &[], input).await?;
                let built = Scaffold::parse(&rendered, values.len());
                let next = match &built {
                    Some(scaffold) => ChatShape::Checking(Arc::new(scaffold.clone()), 0),
                    None => ChatShape::Unusable,
                };
                self.chat_scaffolds.lock()[shape] = next;
                built.map(|s| (Arc::new(s), 0))
            }
        };
        let text = self.apply_template(system, &[], &request.input).await?;
        if let Some((scaffold, seen)) = scaffold {
            let next = if scaffold.render_values(&values) == text {
                if seen + 1 >= SCAFFOLD_CHECKS {
                    tracing::debug!(
                        system = system.is_some(),
                        "the chat template scaffold matched the backend; prompts of this shape \
                         are rendered without /apply-template"
                    );
                    ChatShape::Trusted(scaffold)
                } else {
                    ChatShape::Checking(scaffold, seen + 1)
                }
            } else {
                tracing::debug!(
                    system = system.is_some(),
                    "the chat template changes its input; prompts of this shape always use \
                     /apply-template"
                );
                ChatShape::Unusable
            };
            self.chat_scaffolds.lock()[shape] = next;
        }
        Ok(text)
    }

    /// Forgets the chat scaffolds (the backend, and its template, may have changed).
    pub(super) fn forget_chat_scaffolds(&self) {
        *self.chat_scaffolds.lock() = [ChatShape::Unknown, ChatShape::Unknown];
    }

    pub(super) fn key(&self, parts: &[&str]) -> u128 {
        let hash = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            for part in parts {
                part.hash(&mut hasher);
            }
            hasher.finish()
        };
        (u128::from(hash(&self.hash_keys.0)) << 64) | u128::from(hash(&self.hash_keys.1))
    }

    /// Chooses the prompt format and says why.
    pub(super) fn choose_format(
        &self,
        request: &ProviderRequest,
        caps: &Caps,
    ) -> (PromptFormat, String) {
        if let Some(forced) = request
            .prompt_format
            .as_deref()
            .and_then(PromptFormat::parse)
        {
            return (
                forced,
                format!("forced by metadata.rayPromptFormat={}", forced.as_str()),
            );
        }
        if request.response_format == ResponseFormatKind::JsonObject {
            return (
                PromptFormat::OpenAiChat,
                "JSON mode uses the chat endpoint, whose response_format constrains the output"
                    .into(),
            );
        }
        if request.response_format == ResponseFormatKind::JsonSchema
            || !request.extensions.is_empty()
        {
            return (
                PromptFormat::OpenAiChat,
                "tools, log probabilities, penalties, logit bias and JSON schemas use the chat \
                 endpoint, which takes them"
                    .into(),
            );
        }
        match self.settings.recommended_format {
            Some(PromptFormatPreference::PlainCompletion) => {
                return (
                    PromptFormat::PlainCompletion,
                    "model.operational.recommendedPromptFormat is plain-completion".into(),
                );
            }
            Some(PromptFormatPreference::OpenaiChat) => {
                return (
                    PromptFormat::OpenAiChat,
                    "model.operational.recommendedPromptFormat is openai-chat".into(),
                );
            }
            Some(PromptFormatPreference::NativeTemplate) | None => {}
        }
        if caps.apply_template != Availability::Available
            || caps.chat_template == Availability::Unavailable
        {
            return (
                PromptFormat::RayChatFallback,
                "the backend has no usable chat template (/apply-template unavailable); Ray's \
                 System/User/Assistant framing is used"
                    .into(),
            );
        }
        if let Some(template) = &request.template
            && !template.variables.is_empty()
            && template_matches(request, template)
        {
            return (
                PromptFormat::PromptScaffold,
                format!(
                    "template {} uses a cached scaffold of the model's chat template",
                    template.id
                ),
            );
        }
        (
            PromptFormat::NativeTemplate,
            "llama.cpp native template applied".into(),
        )
    }

    /// Refuses, before admission, what this backend cannot do: tools when its chat template
    /// has none (or `--jinja` is off), and log probabilities together with tools (which
    /// `llama-server` does not stream, and Ray always streams from it).
    pub(super) fn check_supported(
        &self,
        request: &ProviderRequest,
        caps: &Caps,
    ) -> Result<(), ProviderError> {
        let extensions = &request.extensions;
        let tools_on =
            extensions.uses_tools() && extensions.tool_choice.as_ref().is_none_or(|c| c != "none");
        if tools_on && caps.tools == Availability::Unavailable {
            return Err(ProviderError::Unsupported {
                param: "tools".into(),
                reason: format!(
                    "The model {:?} does not support tools: its llama-server reports no tool \
                     support in its chat template (/props chat_template_caps); start it with \
                     --jinja and a tool-capable template (--chat-template-file)",
                    self.settings.model_ref
                ),
            });
        }
        if tools_on && extensions.logprobs == Some(true) {
            return Err(ProviderError::Unsupported {
                param: "logprobs".into(),
                reason: format!(
                    "The model {:?} (llama-server) cannot return log probabilities together \
                     with tools; send one or the other",
                    self.settings.model_ref
                ),
            });
        }
        Ok(())
    }

    pub(super) async fn apply_template(
        &self,
        system: Option<&str>,
        history: &[ChatTurn],
        input: &str,
    ) -> Result<String, ProviderError> {
        let messages = messages_of(system, history, input);
        let response: ApplyTemplateResponse = self
            .client
            .post_json(
                "/apply-template",
                &ApplyTemplateRequest { messages },
                self.client.timeout(),
            )
            .await?;
        if response.prompt.is_empty() {
            return Err(ProviderError::InvalidResponse {
                reason: "/apply-template returned an empty prompt".into(),
            });
        }
        Ok(response.prompt)
    }

    pub(super) async fn tokenize(&self, text: &str) -> Option<u32> {
        let request = TokenizeRequest {
            content: text,
            add_special: true,
        };
        let timeout = self.short_timeout(Duration::from_secs(30));
        self.client
            .post_json::<_, TokenizeResponse>("/tokenize", &request, timeout)
            .await
            .ok()
            .map(|r| r.tokens.len() as u32)
    }

    pub(super) async fn scaffold(
        &self,
        request: &ProviderRequest,
    ) -> Result<Option<String>, ProviderError> {
        let Some(template) = &request.template else {
            return Ok(None);
        };
        let key = format!("{}\u{0}{:?}", template.id, request.response_format);
        let cached = self.scaffolds.lock().get(&key, Instant::now());
        let scaffold = match cached {
            Some(scaffold) => scaffold,
            None => {
                let rendered = self
                    .apply_template(
                        Some(&template.sentinel_system),
                        &[],
                        &template.sentinel_input,
                    )
                    .await?;
                let Some(scaffold) = Scaffold::parse(&rendered, template.variables.len()) else {
                    return Ok(None);
                };
                let scaffold = Arc::new(scaffold);
                self.scaffolds
                    .lock()
                    .insert(key, scaffold.clone(), Instant::now());
                scaffold
            }
        };
        Ok(Some(scaffold.render(template)))
    }

    /// Renders the prompt for `format` (or says it cannot), without caching.
    pub(super) async fn render(
        &self,
        format: PromptFormat,
        request: &ProviderRequest,
    ) -> Result<Option<String>, ProviderError> {
        match format {
            PromptFormat::RayChatFallback => Ok(Some(ray_chat_fallback(request))),
            PromptFormat::PlainCompletion => Ok(Some(plain_completion(request))),
            PromptFormat::NativeTemplate | PromptFormat::OpenAiChat => {
                self.render_native(request).await.map(Some)
            }
            PromptFormat::PromptScaffold => self.scaffold(request).await,
        }
    }

    /// [`crate::Provider::prepare`] for llama.cpp.
    pub(super) async fn prepare_prompt(
        &self,
        request: &ProviderRequest,
    ) -> Result<Option<PreparedPrompt>, ProviderError> {
        let caps = self.caps(false).await;
        self.check_supported(request, &caps)?;
        let (mut format, mut reason) = self.choose_format(request, &caps);
        let mut parts = Vec::with_capacity(3 + 2 * request.history.len());
        parts.push(format.as_str());
        parts.push(request.system.as_deref().unwrap_or("\u{0}"));
        for turn in &request.history {
            parts.push(turn.role.as_str());
            parts.push(&turn.content);
        }
        parts.push("\u{0}input");
        parts.push(&request.input);
        let key = self.key(&parts);
        if let Some(hit) = self.prepared.lock().get(&key, Instant::now()) {
            return Ok(Some(PreparedPrompt {
                format,
                reason,
                text: (format != PromptFormat::OpenAiChat).then(|| hit.text.clone()),
                tokens: hit.tokens,
            }));
        }
        let forced = request.prompt_format.is_some();
        let rendered = match self.render(format, request).await {
            Ok(Some(text)) => Some(text),
            Ok(None) => None,
            // The backend is down: fail now, clearly, rather than after admission.
            Err(error @ (ProviderError::RequestFailed { .. } | ProviderError::Timeout { .. })) => {
                return Err(error);
            }
            Err(error) if forced => return Err(error),
            Err(error) => {
                reason = format!(
                    "{} failed ({error}); Ray's System/User/Assistant framing is used",
                    format.as_str()
                );
                None
            }
        };
        let text = match rendered {
            Some(text) => text,
            // A chat request still works without the rendered prompt; only its count is lost.
            None if format == PromptFormat::OpenAiChat => {
                return Ok(Some(PreparedPrompt {
                    format,
                    reason,
                    text: None,
                    tokens: None,
                }));
            }
            None => {
                if format == PromptFormat::PromptScaffold {
                    reason =
                        "the template's scaffold could not be built; the native template is used"
                            .into();
                    format = PromptFormat::NativeTemplate;
                    match self
                        .apply_template(request.system.as_deref(), &request.history, &request.input)
                        .await
                    {
                        Ok(text) => text,
                        Err(_) => {
                            format = PromptFormat::RayChatFallback;
                            ray_chat_fallback(request)
                        }
                    }
                } else {
                    format = PromptFormat::RayChatFallback;
                    ray_chat_fallback(request)
                }
            }
        };
        let tokens = if caps.tokenize == Availability::Unavailable {
            None
        } else {
            self.tokenize(&text).await
        };
        let text: Arc<str> = Arc::from(text);
        self.prepared.lock().insert(
            key,
            Arc::new(Prepared {
                text: text.clone(),
                tokens,
            }),
            Instant::now(),
        );
        Ok(Some(PreparedPrompt {
            format,
            reason,
            text: (format != PromptFormat::OpenAiChat).then_some(text),
            tokens,
        }))
    }
}
