//! Generation: the slot a request goes to, `/completion` or `/v1/chat/completions` streamed
//! from the backend, and one JSON repair in JSON mode.
//!
//! Ray always asks `llama-server` to stream, also when its own client wants one document:
//! `llama-server` only notices a client that went away while it is writing to it, so a
//! non-streamed generation would run to its end after Ray gave up on it.

use ray_core::wire::{ProviderDiagnostics, ResponseFormatKind};

use super::LlamaCppProvider;
use super::caps::Caps;
use super::native::{CompletionRequest, CompletionResponse};
use crate::error::ProviderError;
use crate::openai::{chat_request, check_schema, finish_reason, open_chat};
use crate::provider::{PreparedPrompt, PromptFormat, ProviderOutput, ProviderRequest, TokenStream};
use crate::upstream::{self, Assembler, CallTimeout, Opened, Step};

/// A generation under way.
pub(super) struct Started {
    pub(super) stream: TokenStream,
    /// The chat endpoint serves it (JSON mode can be repaired there).
    chat: bool,
    slot: i64,
}

impl LlamaCppProvider {
    /// Which slot a request goes to, and why: the operator's fixed slot, else the slot of the
    /// request's scheduler permit (so a family keeps landing where its prefix is cached, and
    /// Ray's view of which slot is busy stays true).
    pub(super) fn slot_for(&self, request: &ProviderRequest, caps: &Caps) -> (i64, &'static str) {
        if let Some(slot) = self.settings.slot_id {
            return (i64::from(slot), "adapter_slot_id");
        }
        match (request.slot_hint, caps.total_slots) {
            (Some(hint), Some(total)) if hint < total => (
                i64::from(hint),
                if request.slot_warm {
                    "family_warm_permit"
                } else {
                    "permit_slot"
                },
            ),
            _ => (-1, "backend_choice"),
        }
    }

    pub(super) fn base_diagnostics(
        &self,
        caps: &Caps,
        prepared: &PreparedPrompt,
    ) -> ProviderDiagnostics {
        ProviderDiagnostics {
            request_shape: if prepared.format == PromptFormat::OpenAiChat {
                "openai-chat".into()
            } else {
                "llama.cpp-completion".into()
            },
            prompt_format: Some(prepared.format.as_str().into()),
            prompt_format_reason: Some(prepared.reason.clone()),
            model_ref: Some(self.settings.model_ref.clone()),
            backend_model: caps.backend_model.clone(),
            launch_preset: self.settings.launch_preset.clone(),
            total_slots: caps.total_slots,
            context_window: self.window(caps),
            ..ProviderDiagnostics::default()
        }
    }

    /// Starts the generation: the prepared prompt (prepared now if the runtime did not), the
    /// slot, then the streamed call, `timeout` bounding it.
    pub(super) async fn start(
        &self,
        request: &ProviderRequest,
        timeout: CallTimeout,
    ) -> Result<Started, ProviderError> {
        let prepared = match &request.prepared {
            Some(prepared) => prepared.clone(),
            None => self.prepare_prompt(request).await?.ok_or_else(|| {
                ProviderError::PreparationInvalid {
                    reason: "the prompt could not be prepared".into(),
                }
            })?,
        };
        let caps = self.known_caps();
        let (slot, route) = self.slot_for(request, &caps);
        let mut diagnostics = self.base_diagnostics(&caps, &prepared);
        diagnostics.preferred_slot = (slot >= 0).then_some(slot);
        diagnostics.slot_route_reason = Some(route.into());
        let (stream, chat) = match (&prepared.text, prepared.format) {
            (_, PromptFormat::OpenAiChat) | (None, _) => {
                let mut body = chat_request(&self.settings.model_ref, request);
                body.id_slot = Some(slot);
                body.cache_prompt = Some(self.settings.cache_prompt);
                let stream = open_chat(&self.client, &body, diagnostics, timeout).await?;
                (check_schema(stream, request), true)
            }
            (Some(prompt), _) => {
                let body = CompletionRequest {
                    prompt,
                    n_predict: request.max_tokens,
                    temperature: request.temperature,
                    top_p: request.top_p,
                    seed: request.seed,
                    stop: request.stop.as_deref(),
                    cache_prompt: self.settings.cache_prompt,
                    id_slot: slot,
                    stream: true,
                };
                let assembler = CompletionAssembler {
                    diagnostics,
                    last: None,
                };
                let stream =
                    match upstream::open(&self.client, "/completion", &body, timeout).await? {
                        Opened::Events(reader) => upstream::token_stream(reader, assembler),
                        Opened::Document(bytes) => {
                            let response: CompletionResponse = serde_json::from_slice(&bytes)
                                .map_err(|error| ProviderError::InvalidResponse {
                                    reason: format!("the backend's JSON does not match: {error}"),
                                })?;
                            let mut assembler = assembler;
                            let text = response.content.clone();
                            assembler.last = Some(response);
                            upstream::document_stream(assembler.finish(text, true)?)
                        }
                    };
                (stream, false)
            }
        };
        Ok(Started { stream, chat, slot })
    }

    /// A whole answer: the stream collected, then, in JSON mode, one repair if the answer is
    /// not a JSON object.
    pub(super) async fn generate(
        &self,
        request: &ProviderRequest,
    ) -> Result<ProviderOutput, ProviderError> {
        let timeout = CallTimeout::Whole(self.client.timeout());
        let started = self.start(request, timeout).await?;
        let output = upstream::collect(started.stream).await?;
        if started.chat
            && request.json_repair
            && request.response_format == ResponseFormatKind::JsonObject
            && !is_json_object(&output.text)
        {
            return Ok(self.repair_json(request, output, started.slot).await);
        }
        Ok(output)
    }

    /// One repair call when JSON mode produced something that is not a JSON object. The
    /// original output stays when the repair fails too.
    pub(super) async fn repair_json(
        &self,
        request: &ProviderRequest,
        mut output: ProviderOutput,
        slot: i64,
    ) -> ProviderOutput {
        let mut repair = ProviderRequest::new(
            request.request_id.clone(),
            format!(
                "Task:\n{}\n\nInvalid output:\n{}\n\nReturn the corrected JSON object only.",
                request.input, output.text
            ),
            request.max_tokens.clamp(32, 128),
        );
        repair.system = Some("Repair the output into one valid, compact JSON object.".into());
        repair.temperature = 0.0;
        repair.top_p = 1.0;
        repair.response_format = ResponseFormatKind::JsonObject;
        let mut body = chat_request(&self.settings.model_ref, &repair);
        body.id_slot = Some(slot);
        body.cache_prompt = Some(self.settings.cache_prompt);
        output.diagnostics.json_repair_attempted = Some(true);
        let timeout = CallTimeout::Whole(self.client.timeout());
        let repaired =
            match open_chat(&self.client, &body, ProviderDiagnostics::default(), timeout).await {
                Ok(stream) => upstream::collect(stream).await,
                Err(error) => Err(error),
            };
        match repaired {
            Ok(fixed) if is_json_object(&fixed.text) => {
                output.text = fixed.text;
                output.finish_reason = fixed.finish_reason;
                output.prompt_tokens = sum(output.prompt_tokens, fixed.prompt_tokens);
                output.completion_tokens = sum(output.completion_tokens, fixed.completion_tokens);
                output.diagnostics.json_repair_succeeded = Some(true);
            }
            _ => output.diagnostics.json_repair_succeeded = Some(false),
        }
        output
    }
}

/// Reads `/completion`'s stream: text from every event's `content`, then usage, timings and
/// the slot from the last event (`"stop": true`).
struct CompletionAssembler {
    diagnostics: ProviderDiagnostics,
    last: Option<CompletionResponse>,
}

impl Assembler for CompletionAssembler {
    fn event(&mut self, data: &str) -> Result<Step, ProviderError> {
        let mut event: CompletionResponse =
            serde_json::from_str(data).map_err(|error| ProviderError::InvalidResponse {
                reason: format!("an event of the backend's stream does not match: {error}"),
            })?;
        if let Some(error) = &event.error {
            return Err(upstream::error_event(data, error));
        }
        let text = std::mem::take(&mut event.content);
        let end = event.stop;
        if end {
            self.last = Some(event);
        }
        Ok(Step {
            text: Some(text),
            end,
        })
    }

    fn finish(self, text: String, _complete: bool) -> Result<ProviderOutput, ProviderError> {
        let Some(last) = self.last else {
            return Err(ProviderError::InvalidResponse {
                reason: "the backend's stream ended before the answer was complete".into(),
            });
        };
        let mut diagnostics = self.diagnostics;
        diagnostics.slot_id = last.id_slot;
        // Prompt tokens reused from the slot's cache: `timings.cache_n`. (The event's
        // `tokens_cached` counts every token in the slot after the answer, generated ones
        // included, so it is never 0 and says nothing about reuse.)
        diagnostics.tokens_cached = last.timings.and_then(|t| t.cache_n).or(last.tokens_cached);
        diagnostics.tokens_evaluated = last.tokens_evaluated;
        diagnostics.truncated = last.truncated;
        if let Some(model) = last.model {
            diagnostics.backend_model.get_or_insert(model);
        }
        diagnostics.timings = last.timings.map(|t| t.to_diagnostics());
        Ok(ProviderOutput {
            text,
            finish_reason: finish_reason(last.stop_type.as_deref()),
            prompt_tokens: last.tokens_evaluated,
            completion_tokens: last.tokens_predicted,
            diagnostics,
            tool_calls: None,
            logprobs: None,
        })
    }
}

fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// Whether `text` is one JSON object.
pub(crate) fn is_json_object(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text.trim()).is_ok_and(|v| v.is_object())
}
