//! Capability detection: `/props`, `/apply-template` and `/tokenize` probed together, JSON
//! mode probed once at warm-up, the result reused for [`CAPABILITY_TTL`].

use std::time::{Duration, Instant};

use ray_core::wire::{Availability, DetectedCapabilities, ResponseFormatKind};

use super::native::{
    ApplyTemplateRequest, ApplyTemplateResponse, Props, TokenizeRequest, TokenizeResponse,
};
use super::{CAPABILITY_TTL, LlamaCppProvider, is_json_object};
use crate::http::upstream_error;
use crate::openai::{ChatMessage, chat_request, open_chat};
use crate::provider::ProviderRequest;
use crate::upstream::{self, CallTimeout};

/// What was detected about the backend.
#[derive(Debug, Clone, Default)]
pub(super) struct Caps {
    pub(super) detected: bool,
    pub(super) n_ctx: Option<u32>,
    pub(super) total_slots: Option<u32>,
    pub(super) chat_template: Availability,
    pub(super) apply_template: Availability,
    pub(super) tokenize: Availability,
    pub(super) slots: Availability,
    pub(super) metrics: Availability,
    pub(super) json_mode: Availability,
    /// Tools: from `/props` `chat_template_caps` (unknown on servers that do not say).
    pub(super) tools: Availability,
    pub(super) backend_model: Option<String>,
    pub(super) errors: Vec<String>,
}

impl LlamaCppProvider {
    /// The detected capabilities, re-detected when older than a minute (or when `force`).
    pub(super) async fn caps(&self, force: bool) -> Caps {
        if !force && let Some(caps) = self.fresh_caps() {
            return caps;
        }
        let _refreshing = self.caps_refresh.lock().await;
        if !force && let Some(caps) = self.fresh_caps() {
            return caps;
        }
        let json_mode = self
            .caps
            .lock()
            .as_ref()
            .map_or(Availability::Unknown, |(_, c)| c.json_mode);
        let caps = self.detect(json_mode).await;
        if let Some(window) = self.window(&caps) {
            self.last_window
                .store(window, std::sync::atomic::Ordering::Relaxed);
        }
        if force {
            // The backend came (back) up, perhaps with another model or template: what was
            // rendered and counted against the old one no longer holds.
            self.forget_chat_scaffolds();
            self.prepared.lock().clear();
        }
        *self.caps.lock() = Some((Instant::now(), caps.clone()));
        caps
    }

    pub(super) fn fresh_caps(&self) -> Option<Caps> {
        self.caps
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < CAPABILITY_TTL)
            .map(|(_, caps)| caps.clone())
    }

    /// The last detected capabilities without touching the backend.
    pub(super) fn known_caps(&self) -> Caps {
        self.caps
            .lock()
            .as_ref()
            .map(|(_, caps)| caps.clone())
            .unwrap_or_default()
    }

    pub(super) async fn detect(&self, json_mode: Availability) -> Caps {
        let props_timeout = self.short_timeout(Duration::from_secs(5));
        let probe_timeout = self.short_timeout(Duration::from_millis(2_500));
        let probe = ApplyTemplateRequest {
            messages: vec![
                ChatMessage::text("system", "You are a liveness probe."),
                ChatMessage::text("user", "ping"),
            ],
        };
        let tokenize = TokenizeRequest {
            content: "ping",
            add_special: false,
        };
        let (props, template, tokens) = tokio::join!(
            self.client.get("/props", props_timeout),
            self.client.post_json::<_, ApplyTemplateResponse>(
                "/apply-template",
                &probe,
                probe_timeout
            ),
            self.client
                .post_json::<_, TokenizeResponse>("/tokenize", &tokenize, probe_timeout),
        );
        let mut caps = Caps {
            detected: true,
            json_mode,
            ..Caps::default()
        };
        match props.and_then(|r| {
            if (200..300).contains(&r.status) {
                r.json::<Props>()
            } else {
                Err(upstream_error(&r))
            }
        }) {
            Ok(props) => {
                let settings = props.default_generation_settings.unwrap_or_default();
                caps.n_ctx = settings.n_ctx;
                caps.total_slots = props.total_slots;
                caps.chat_template = if props.chat_template.is_some_and(|t| !t.is_empty()) {
                    Availability::Available
                } else {
                    Availability::Unavailable
                };
                caps.backend_model = props.model_alias.or(settings.model).or(props.model_path);
                caps.slots = availability(props.endpoint_slots);
                caps.tools = match props.chat_template_caps {
                    Some(template) => availability(Some(
                        template.supports_tools.unwrap_or(false)
                            && template.supports_tool_calls.unwrap_or(false),
                    )),
                    None => Availability::Unknown,
                };
                caps.metrics = availability(props.endpoint_metrics);
            }
            Err(error) => caps.errors.push(format!("props: {error}")),
        }
        match template {
            Ok(response) if !response.prompt.is_empty() => {
                caps.apply_template = Availability::Available;
            }
            Ok(_) => caps.apply_template = Availability::Unavailable,
            Err(error) => {
                caps.apply_template = Availability::Unavailable;
                caps.errors.push(format!("apply-template: {error}"));
            }
        }
        match tokens {
            Ok(response) if !response.tokens.is_empty() => {
                caps.tokenize = Availability::Available;
            }
            Ok(_) => caps.tokenize = Availability::Unavailable,
            Err(error) => {
                caps.tokenize = Availability::Unavailable;
                caps.errors.push(format!("tokenize: {error}"));
            }
        }
        caps
    }

    /// Probes JSON mode: a short chat completion asked for `{"ok":true}`.
    pub(super) async fn probe_json_mode(&self) -> Availability {
        let mut request = ProviderRequest::new("ray_json_probe", "Return exactly {\"ok\":true}", 8);
        request.system = Some("Answer with one compact JSON object.".into());
        request.temperature = 0.0;
        request.top_p = 1.0;
        request.response_format = ResponseFormatKind::JsonObject;
        let body = chat_request(&self.settings.model_ref, &request);
        let timeout = self.short_timeout(Duration::from_secs(5));
        let timeout = CallTimeout::Whole(timeout);
        let answer = match open_chat(&self.client, &body, Default::default(), timeout).await {
            Ok(stream) => upstream::collect(stream).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(output) if is_json_object(&output.text) => Availability::Available,
            _ => Availability::Unavailable,
        }
    }

    pub(super) fn window(&self, caps: &Caps) -> Option<u32> {
        caps.n_ctx
            .map(|n| n.min(self.settings.model_context_window))
    }

    pub(super) fn to_capabilities(&self, caps: &Caps) -> DetectedCapabilities {
        let (format, _) = self.choose_format(&ProviderRequest::new("", "", 1), caps);
        DetectedCapabilities {
            model_ref: Some(self.settings.model_ref.clone()),
            backend_model: caps.backend_model.clone(),
            launch_preset: self.settings.launch_preset.clone(),
            apply_template: caps.apply_template,
            chat_template: caps.chat_template,
            json_mode: caps.json_mode,
            tokenize: caps.tokenize,
            slots: caps.slots,
            metrics: caps.metrics,
            streaming: Availability::Available,
            tools: caps.tools,
            context_window: self.window(caps),
            total_slots: caps.total_slots,
            prompt_format_preference: caps.detected.then(|| format.as_str().to_string()),
            errors: caps.errors.clone(),
        }
    }
}

fn availability(flag: Option<bool>) -> Availability {
    match flag {
        Some(true) => Availability::Available,
        Some(false) => Availability::Unavailable,
        None => Availability::Unknown,
    }
}
