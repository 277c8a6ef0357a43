//! Turning an `InferRequest` into a plan: defaults, templates, prompt compilation, lane,
//! family, degradation clamps and the cache key. Pure functions of the request, the config
//! and a pressure snapshot, so every rule is testable without a runtime.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ray_core::RayError;
use ray_core::config::{CacheKeyStrategy, ModelConfig, RayConfig};
use ray_core::wire::{
    AdaptiveTuningDiagnostics, ChatTurn, DegradationDiagnostics, DiagnosticsDetail,
    GenerationExtensions, InferRequest, Lane, LearnedCapDiagnostics, OrderedF64, ParameterClamp,
    PromptCompilerDiagnostics, ResponseFormat, ResponseFormatKind, RoutingDiagnostics,
    TaskRoutingDiagnostics,
};
use ray_models::{ProviderRequest, TemplateRef};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::degrade::Decision;
use crate::prompt::{self, Family};
use crate::templates;
use crate::tuning::Tuner;

/// Default sampling temperature.
pub const DEFAULT_TEMPERATURE: f64 = 0.2;
/// Default nucleus sampling.
pub const DEFAULT_TOP_P: f64 = 0.95;

/// Everything the runtime decided about one request before it reaches the cache.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) input: String,
    pub(crate) system: Option<String>,
    /// Chars of the prompt as sent (input, system and history), counted once: the prompt
    /// itself moves to the provider's request.
    pub(crate) prompt_chars: u64,
    /// Earlier turns of a conversation, oldest first.
    pub(crate) history: Vec<ChatTurn>,
    pub(crate) max_tokens: u32,
    pub(crate) temperature: f64,
    pub(crate) top_p: f64,
    pub(crate) seed: Option<i64>,
    pub(crate) stop: Option<Vec<String>>,
    pub(crate) response_format: ResponseFormatKind,
    pub(crate) use_cache: bool,
    pub(crate) dedupe_key: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) template: Option<TemplateRef>,
    pub(crate) lane: Lane,
    pub(crate) family: Family,
    pub(crate) degraded: bool,
    pub(crate) degradation: DegradationDiagnostics,
    pub(crate) prompt_compiler: PromptCompilerDiagnostics,
    pub(crate) learned_output_cap: LearnedCapDiagnostics,
    pub(crate) adaptive_tuning: AdaptiveTuningDiagnostics,
    pub(crate) task_routing: TaskRoutingDiagnostics,
    /// Which model serves the request and what chose it (set by the front once routed).
    pub(crate) routing: RoutingDiagnostics,
    /// Parameters passed through to the backend; a request with any is neither cached nor
    /// joined with identical ones.
    pub(crate) extensions: GenerationExtensions,
    /// Request values brought into range (`diagnostics.clamped`).
    pub(crate) clamped: Vec<ParameterClamp>,
    /// The priority decision.
    pub(crate) admission: crate::priority::Admission,
    /// How much of the diagnostics the response carries: the request's `diagnostics`, else
    /// `telemetry.responseDiagnostics`.
    pub(crate) detail: DiagnosticsDetail,
}

/// Extra knobs for internal callers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlanOptions {
    /// Use this temperature and top-p regardless of the request (warm-up).
    pub(crate) greedy: bool,
    /// An internal request (warm-up): not refused while the backend warms up.
    pub(crate) internal: bool,
    /// The priority decision ([`crate::priority::decide`]).
    pub(crate) admission: crate::priority::Admission,
    /// A stream: its total deadline (`streaming.totalTimeoutMs`) bounds its waits too.
    pub(crate) stream: bool,
}

/// Plans `request` for `model` under the degradation `decision`.
pub(crate) fn plan(
    config: &RayConfig,
    model: &ModelConfig,
    mut request: InferRequest,
    decision: &Decision,
    tuner: &Tuner,
    options: PlanOptions,
) -> Result<Plan, RayError> {
    request.validate()?;
    if let Some(priority) = &request.priority {
        crate::priority::parse_field(priority)?;
    }
    let pressure = &decision.pressure;
    let model_max = model.max_output_tokens;
    let extensions = request.extensions();
    let clamped = request.clamps(model_max);
    let mut metadata = request.metadata.take().unwrap_or_default();

    // Templates: rendered now, their metadata overriding the caller's of the same names.
    let (mut input, mut system, template, template_lane, default_max, default_format) =
        match &request.template_id {
            Some(id) => {
                let template = templates::find(id).ok_or_else(|| {
                    let known: Vec<&str> = templates::TEMPLATES.iter().map(|t| t.id).collect();
                    RayError::invalid_request(format!(
                        "templateId: unknown template {id:?}; known templates: {}",
                        known.join(", ")
                    ))
                })?;
                let rendered = template.render(request.template_variables.as_ref())?;
                let sentinels = template.sentinels();
                metadata.insert("promptFamily".into(), template.family.into());
                metadata.insert("promptTemplateId".into(), template.id.into());
                metadata.insert("promptTemplateVersion".into(), template.version.into());
                metadata.insert("promptLane".into(), template.lane.as_str().into());
                (
                    rendered.input,
                    Some(rendered.system),
                    Some(TemplateRef {
                        id: template.id.into(),
                        variables: rendered.variables,
                        sentinel_system: sentinels.system,
                        sentinel_input: sentinels.input,
                    }),
                    Some(template.lane),
                    template.max_tokens,
                    template.response_format,
                )
            }
            None => (
                request.input.take().unwrap_or_default(),
                request.system.take(),
                None,
                None,
                model_max,
                ResponseFormatKind::Text,
            ),
        };
    // A plain completion (`/v1/completions`) continues the prompt as written: trimming, and
    // the compiler's whitespace and line tidying, would change what the model continues.
    let verbatim = metadata.get("rayPromptFormat").map(String::as_str) == Some("plain-completion");
    if !verbatim {
        trim_in_place(&mut input);
    }
    system = system
        .map(|mut s| {
            trim_in_place(&mut s);
            s
        })
        .filter(|s| !s.is_empty());
    let mut history: Vec<ChatTurn> = request.history.take().unwrap_or_default();

    let requested_max_tokens = request
        .max_tokens
        .unwrap_or(default_max)
        .clamp(1, model_max);
    let (temperature, top_p) = if options.greedy {
        (0.0, 1.0)
    } else {
        (
            request
                .temperature
                .unwrap_or(DEFAULT_TEMPERATURE)
                .clamp(0.0, 2.0),
            request.top_p.unwrap_or(DEFAULT_TOP_P).clamp(0.1, 1.0),
        )
    };
    let response_format = request
        .response_format
        .map_or(default_format, |f: ResponseFormat| f.kind);

    let lane = match template_lane {
        Some(lane) => lane,
        None => match metadata.get("promptLane").map(String::as_str) {
            Some("short") => Lane::Short,
            Some("draft") => Lane::Draft,
            Some(other) => {
                return Err(RayError::invalid_request(format!(
                    "metadata.promptLane: must be short or draft, got {other:?}"
                )));
            }
            None if response_format == ResponseFormatKind::JsonObject
                || requested_max_tokens <= config.scheduler.short_job_max_tokens =>
            {
                Lane::Short
            }
            None => Lane::Draft,
        },
    };

    // Degradation, step 1: prompt length (before compilation, as the reference does).
    let degradation_config = &config.graceful_degradation;
    let mut reasons: Vec<String> = Vec::new();
    if let Some(budget) = decision.prompt_budget {
        // The oldest turns of a conversation go first; then the input is cut.
        let mut trimmed = drop_old_turns(&mut history, &input, system.as_deref(), budget);
        if let Some((new_input, new_system)) = trim_prompt(&input, system.as_deref(), budget) {
            input = new_input;
            system = new_system;
            trimmed = true;
        }
        if trimmed {
            reasons.push("prompt_length".into());
        }
    }

    let compiled = if verbatim {
        let compiler = ray_core::config::PromptCompilerConfig {
            enabled: false,
            ..config.prompt_compiler.clone()
        };
        prompt::compile(&compiler, &input, system.as_deref())
    } else {
        prompt::compile(&config.prompt_compiler, &input, system.as_deref())
    };
    input = compiled.input;
    system = compiled.system;
    let family = prompt::family(
        &config.prompt_compiler,
        template
            .as_ref()
            .and(metadata.get("promptFamily").map(String::as_str)),
        &metadata,
        system.as_deref(),
        &input,
    );

    // The learned family cap comes before the pressure clamps, adaptive reduction after them;
    // each only lowers maxTokens, and each says what it saw and did. Internal requests
    // (warm-up) are left alone.
    let learned_output_cap = if options.internal {
        untouched_cap(config, &family, lane, requested_max_tokens)
    } else {
        tuner.learned_cap(&family.key, family.affinity, lane, requested_max_tokens)
    };
    let before_clamps = learned_output_cap.applied_max_tokens;

    // Degradation, step 2: the decision's output clamp under queue, memory and CPU pressure.
    let mut max_tokens = before_clamps;
    if let Some((clamp_to, clamp_reasons)) = &decision.clamp {
        max_tokens = max_tokens.min(*clamp_to);
        reasons.extend(clamp_reasons.iter().map(|r| (*r).to_string()));
    }
    let degraded = !reasons.is_empty();
    let adaptive_tuning = if options.internal {
        AdaptiveTuningDiagnostics {
            requested_max_tokens: max_tokens,
            applied_max_tokens: max_tokens,
            ..AdaptiveTuningDiagnostics::default()
        }
    } else {
        tuner.adaptive(max_tokens)
    };
    let clamped_max_tokens = max_tokens;
    max_tokens = adaptive_tuning.applied_max_tokens;
    let degradation = DegradationDiagnostics {
        applied: degraded,
        reasons,
        requested_max_tokens: before_clamps,
        applied_max_tokens: clamped_max_tokens,
        queue_depth: pressure.queue_depth,
        queue_depth_threshold: degradation_config.queue_depth_threshold,
        memory: {
            let mut memory = pressure.signals.memory.signals.clone();
            memory
                .memory_pressure_sources
                .clone_from(&pressure.signals.memory.sources);
            memory
        },
        cpu: pressure.signals.cpu.signals.clone(),
    };
    let prompt_compiler = PromptCompilerDiagnostics {
        family_key: family.key.clone(),
        lane,
        chars_before: compiled.chars_before,
        chars_after: compiled.chars_after,
        chars_saved: compiled.chars_before.saturating_sub(compiled.chars_after),
    };
    let task_routing = task_routing(config, model, response_format, &family.label, &input);

    let history_chars: usize = history.iter().map(|t| t.content.chars().count()).sum();
    let prompt_chars = (input.chars().count()
        + system.as_deref().map_or(0, |s| s.chars().count())
        + history_chars) as u64;
    Ok(Plan {
        input,
        system,
        prompt_chars,
        history,
        max_tokens,
        temperature,
        top_p,
        seed: request.seed,
        stop: request.stop,
        response_format,
        use_cache: request.cache.unwrap_or(true) && extensions.is_empty(),
        dedupe_key: request.dedupe_key,
        metadata,
        template,
        lane,
        family,
        degraded,
        degradation,
        prompt_compiler,
        learned_output_cap,
        adaptive_tuning,
        task_routing,
        // Set by the front once the request is routed.
        routing: RoutingDiagnostics::default(),
        extensions,
        clamped,
        admission: options.admission,
        detail: match request.diagnostics {
            Some(true) => DiagnosticsDetail::Full,
            Some(false) => DiagnosticsDetail::Summary,
            None => config.telemetry.response_diagnostics,
        },
    })
}

/// Trims `text`'s surrounding whitespace without a new allocation.
fn trim_in_place(text: &mut String) {
    let end = text.trim_end().len();
    text.truncate(end);
    let start = text.len() - text.trim_start().len();
    if start > 0 {
        text.drain(..start);
    }
}

/// Learned-cap diagnostics for a request the cap does not touch.
fn untouched_cap(
    config: &RayConfig,
    family: &Family,
    lane: Lane,
    max_tokens: u32,
) -> LearnedCapDiagnostics {
    let percentile = match lane {
        Lane::Short => config.adaptive_tuning.short_percentile,
        Lane::Draft => config.adaptive_tuning.draft_percentile,
    };
    LearnedCapDiagnostics {
        applied: false,
        family_key: family.key.clone(),
        lane,
        requested_max_tokens: max_tokens,
        applied_max_tokens: max_tokens,
        sample_count: 0,
        percentile: OrderedF64(percentile),
        learned_cap_tokens: None,
    }
}

/// Drops the oldest turns of a conversation while the whole prompt is longer than `budget`
/// chars. Says whether it dropped any.
fn drop_old_turns(
    history: &mut Vec<ChatTurn>,
    input: &str,
    system: Option<&str>,
    budget: usize,
) -> bool {
    let fixed = input.chars().count() + system.map_or(0, |s| s.chars().count());
    let mut total: usize = fixed
        + history
            .iter()
            .map(|t| t.content.chars().count())
            .sum::<usize>();
    let mut dropped = 0;
    while total > budget && dropped < history.len() {
        total -= history[dropped].content.chars().count();
        dropped += 1;
    }
    history.drain(..dropped);
    dropped > 0
}

/// Trims a prompt longer than `budget` chars. Unlike the existing Ray, which kept the start of
/// the input and gave the system prompt what was left, this keeps the system prompt (the
/// instructions) up to half the budget and cuts the input at a line or word boundary.
fn trim_prompt(
    input: &str,
    system: Option<&str>,
    budget: usize,
) -> Option<(String, Option<String>)> {
    let input_chars = input.chars().count();
    let system_chars = system.map_or(0, |s| s.chars().count());
    if input_chars + system_chars <= budget {
        return None;
    }
    let system_keep = system_chars.min(budget / 2);
    let input_keep = budget - system_keep;
    let system = system
        .map(|s| cut_at_boundary(s, system_keep))
        .filter(|s| !s.is_empty());
    let input = cut_at_boundary(input, input_keep);
    Some((input, system))
}

/// The first `limit` chars of `text`, shortened to the last line break or space in the final
/// quarter when there is one, trimmed.
fn cut_at_boundary(text: &str, limit: usize) -> String {
    let end = text
        .char_indices()
        .nth(limit)
        .map_or(text.len(), |(index, _)| index);
    let head = &text[..end];
    if end == text.len() {
        return head.trim().to_string();
    }
    let floor = head.len() * 3 / 4;
    let cut = head
        .rfind('\n')
        .filter(|i| *i >= floor)
        .or_else(|| head.rfind(' ').filter(|i| *i >= floor))
        .unwrap_or(head.len());
    head[..cut].trim().to_string()
}

fn task_routing(
    config: &RayConfig,
    model: &ModelConfig,
    response_format: ResponseFormatKind,
    family: &str,
    input: &str,
) -> TaskRoutingDiagnostics {
    // ASCII case-insensitive: no other char lower-cases into these words.
    let task_kind = if response_format == ResponseFormatKind::JsonObject
        || contains_ignore_ascii_case(family, "classification")
    {
        "classification"
    } else if contains_ignore_ascii_case(family, "rewrite") {
        "rewrite"
    } else if contains_ignore_ascii_case(family, "email")
        || contains_ignore_ascii_case(input, "email")
    {
        "draft"
    } else {
        "unknown"
    };
    let recommended = match task_kind {
        "classification" => "classifier",
        "rewrite" | "draft" => "drafter",
        _ => "general",
    };
    // The model's role: its `role`, else its `tags.modelRole`, else the config's.
    let active = model
        .role
        .map(|r| r.as_str().to_string())
        .or_else(|| model.tags.get("modelRole").cloned())
        .or_else(|| config.tags.get("modelRole").cloned());
    let matched = active
        .as_deref()
        .is_none_or(|role| role == recommended || recommended == "general" || role == "general");
    TaskRoutingDiagnostics {
        task_kind: Cow::Borrowed(task_kind),
        recommended_model_role: Cow::Borrowed(recommended),
        active_model_role: active,
        matched_active_role: matched,
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

impl Plan {
    /// What the provider is asked to do. The prompt (input, system, history), the stop
    /// strings, the template and the extensions move to it: the keys that hash them are
    /// computed before, and the response reads only [`Plan::prompt_chars`] of them.
    pub(crate) fn take_provider_request(&mut self, request_id: &str) -> ProviderRequest {
        ProviderRequest {
            request_id: request_id.to_string(),
            system: self.system.take(),
            input: std::mem::take(&mut self.input),
            history: std::mem::take(&mut self.history),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.take(),
            response_format: self.response_format,
            family_key: Some(self.family.key.clone()),
            slot_hint: None,
            slot_warm: false,
            prompt_format: self.metadata.get("rayPromptFormat").cloned(),
            json_repair: self.metadata.get("rayJsonRepair").map(String::as_str) != Some("off"),
            template: self.template.take(),
            prepared: None,
            extensions: std::mem::take(&mut self.extensions),
        }
    }

    /// Prompt tokens estimated at four chars a token (used when the backend has no tokenizer).
    pub(crate) fn estimated_prompt_tokens(&self) -> u32 {
        (self.prompt_chars.div_ceil(4)).max(1) as u32
    }

    /// The result-cache key: a SHA-256 of the request's identity under the key strategy,
    /// computed after compilation and clamps.
    pub(crate) fn cache_key(&self, model_id: &str, strategy: CacheKeyStrategy) -> u128 {
        self.cache_key_for(model_id, strategy, self.max_tokens)
    }

    /// The key the request would have had without learned caps, pressure clamps and adaptive
    /// reduction, when they changed it: a result cached under it answers the request too (it
    /// is the fuller answer, and serving it costs nothing), so hit rates do not collapse
    /// exactly when the box is under pressure.
    pub(crate) fn unclamped_cache_key(
        &self,
        model_id: &str,
        strategy: CacheKeyStrategy,
    ) -> Option<u128> {
        let requested = self.learned_output_cap.requested_max_tokens;
        (strategy == CacheKeyStrategy::InputParams && requested != self.max_tokens)
            .then(|| self.cache_key_for(model_id, strategy, requested))
    }

    fn cache_key_for(&self, model_id: &str, strategy: CacheKeyStrategy, max_tokens: u32) -> u128 {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Identity<'a> {
            // Alphabetical order: the serialisation is the canonical form.
            #[serde(skip_serializing_if = "<[ChatTurn]>::is_empty")]
            history: &'a [ChatTurn],
            input: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            max_tokens: Option<u32>,
            metadata: &'a BTreeMap<String, String>,
            model: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            response_format: Option<ResponseFormatKind>,
            #[serde(skip_serializing_if = "Option::is_none")]
            seed: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            stop: Option<&'a [String]>,
            system: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            temperature: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            top_p: Option<f64>,
        }
        let with_params = strategy == CacheKeyStrategy::InputParams;
        let identity = Identity {
            history: &self.history,
            input: &self.input,
            max_tokens: with_params.then_some(max_tokens),
            metadata: &self.metadata,
            model: model_id,
            response_format: (self.response_format != ResponseFormatKind::Text)
                .then_some(self.response_format),
            seed: self.seed,
            stop: self.stop.as_deref(),
            system: self.system.as_deref().unwrap_or(""),
            temperature: with_params.then_some(self.temperature),
            top_p: with_params.then_some(self.top_p),
        };
        // Stream the canonical JSON into the hasher instead of building it in memory.
        let mut hasher = HashWriter(Sha256::new());
        hasher.0.update(b"cache");
        hasher.0.update([0]);
        let _ = serde_json::to_writer(&mut hasher, &identity);
        first_u128(&hasher.0.finalize())
    }

    /// The in-flight dedupe key: the explicit `dedupeKey`, else the cache key when the result
    /// is cacheable (`cache_key` is given only then: the request allows caching and
    /// `cache.enabled` is on). With the cache off, identical requests run independently, so
    /// samples at `temperature > 0` stay independent, as in the existing Ray.
    pub(crate) fn dedupe_key(&self, cache_key: Option<u128>) -> Option<u128> {
        match &self.dedupe_key {
            Some(key) => Some(digest_u128(b"dedupe", key.as_bytes())),
            None => cache_key,
        }
    }
}

fn digest_u128(domain: &[u8], bytes: &[u8]) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update([0]);
    hasher.update(bytes);
    first_u128(&hasher.finalize())
}

fn first_u128(digest: &[u8]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Feeds serialised bytes straight into a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
