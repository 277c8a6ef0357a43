//! [`InferResponse`] written as JSON by hand: the bytes `serde_json` writes for it, at a
//! fraction of the cost (keys are literals, ids and enum names need no escape, integers are
//! written without a formatter). This runs once per answer of `/v1/infer`.
//!
//! The full diagnostics, tool calls, log probabilities and clamps (answers that asked for
//! them) go through `serde_json`, so what is written by hand is the summary every other answer
//! carries. The tests compare both writers on generated responses.

use super::diagnostics::{DiagnosticsDetail, SchedulerDiagnostics};
use super::{FinishReason, InferResponse, Usage};
use crate::json_text::{push_bool, push_string, push_u64};
use crate::wire::PriorityDiagnostics;

impl InferResponse {
    /// The response as JSON, exactly as `serde_json::to_string` writes it, appended to `out`.
    ///
    /// ```
    /// # use ray_core::wire::{InferResponse, Usage, Diagnostics};
    /// let response = InferResponse {
    ///     id: "req_0123456789abcdef".into(),
    ///     model: "tiny".into(),
    ///     output: "hello \"world\"".into(),
    ///     usage: Usage::default(),
    ///     cached: false,
    ///     deduplicated: false,
    ///     queue_time_ms: 0,
    ///     latency_ms: 3,
    ///     degraded: false,
    ///     diagnostics: Box::new(Diagnostics::default()),
    ///     finish_reason: None,
    ///     created_at: "2026-01-01T00:00:00.000Z".into(),
    ///     tool_calls: None,
    ///     logprobs: None,
    /// };
    /// let mut out = String::new();
    /// response.write_json(&mut out);
    /// assert_eq!(out, serde_json::to_string(&response).unwrap());
    /// ```
    pub fn write_json(&self, out: &mut String) {
        out.reserve(1024 + self.output.len());
        out.push_str("{\"id\":");
        push_string(out, &self.id);
        out.push_str(",\"model\":");
        push_string(out, &self.model);
        out.push_str(",\"output\":");
        push_string(out, &self.output);
        out.push_str(",\"usage\":");
        write_usage(out, &self.usage);
        out.push_str(",\"cached\":");
        push_bool(out, self.cached);
        out.push_str(",\"deduplicated\":");
        push_bool(out, self.deduplicated);
        out.push_str(",\"queueTimeMs\":");
        push_u64(out, self.queue_time_ms);
        out.push_str(",\"latencyMs\":");
        push_u64(out, self.latency_ms);
        out.push_str(",\"degraded\":");
        push_bool(out, self.degraded);
        out.push_str(",\"diagnostics\":");
        match self.diagnostics.detail {
            DiagnosticsDetail::Summary => self.write_summary(out),
            DiagnosticsDetail::Full => push_serde(out, &*self.diagnostics),
        }
        if let Some(reason) = self.finish_reason {
            out.push_str(",\"finishReason\":\"");
            out.push_str(match reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::ToolCalls => "tool_calls",
            });
            out.push('"');
        }
        out.push_str(",\"createdAt\":");
        push_string(out, &self.created_at);
        if let Some(calls) = &self.tool_calls {
            out.push_str(",\"toolCalls\":");
            push_serde(out, calls);
        }
        if let Some(logprobs) = &self.logprobs {
            out.push_str(",\"logprobs\":");
            push_serde(out, logprobs);
        }
        out.push('}');
    }

    /// The summary of the diagnostics (see [`DiagnosticsDetail::Summary`]).
    fn write_summary(&self, out: &mut String) {
        let full = &*self.diagnostics;
        let degradation = &full.degradation;
        out.push_str("{\"degradation\":{\"applied\":");
        push_bool(out, degradation.applied);
        out.push_str(",\"reasons\":");
        write_strings(out, &degradation.reasons);
        out.push_str(",\"requestedMaxTokens\":");
        push_u64(out, u64::from(degradation.requested_max_tokens));
        out.push_str(",\"appliedMaxTokens\":");
        push_u64(out, u64::from(degradation.applied_max_tokens));
        let compiler = &full.prompt_compiler;
        out.push_str("},\"promptCompiler\":{\"familyKey\":");
        push_string(out, &compiler.family_key);
        out.push_str(",\"lane\":\"");
        out.push_str(compiler.lane.as_str());
        out.push_str("\",\"charsBefore\":");
        push_u64(out, compiler.chars_before);
        out.push_str(",\"charsAfter\":");
        push_u64(out, compiler.chars_after);
        out.push_str(",\"charsSaved\":");
        push_u64(out, compiler.chars_saved);
        out.push_str("},\"learnedOutputCap\":{\"applied\":");
        push_bool(out, full.learned_output_cap.applied);
        out.push_str(",\"appliedMaxTokens\":");
        push_u64(out, u64::from(full.learned_output_cap.applied_max_tokens));
        out.push_str("},\"adaptiveTuning\":{\"reduced\":");
        push_bool(out, full.adaptive_tuning.reduced);
        out.push_str(",\"appliedMaxTokens\":");
        push_u64(out, u64::from(full.adaptive_tuning.applied_max_tokens));
        out.push('}');
        if let Some(scheduler) = &full.scheduler {
            out.push_str(",\"scheduler\":");
            write_scheduler(out, scheduler);
        }
        if let Some(provider) = &full.provider {
            out.push_str(",\"provider\":{\"requestShape\":");
            push_string(out, &provider.request_shape);
            out.push('}');
        }
        if let Some(routing) = &full.routing {
            out.push_str(",\"routing\":{\"model\":");
            push_string(out, &routing.model);
            out.push_str(",\"chosenBy\":");
            push_string(out, &routing.chosen_by);
            if let Some(from) = &routing.fallback_from {
                out.push_str(",\"fallbackFrom\":");
                push_string(out, from);
            }
            if !routing.skipped.is_empty() {
                out.push_str(",\"skipped\":");
                write_strings(out, &routing.skipped);
            }
            out.push('}');
        }
        if !full.clamped.is_empty() {
            out.push_str(",\"clamped\":");
            push_serde(out, &full.clamped);
        }
        out.push_str(",\"detail\":\"summary\"}");
    }
}

fn write_usage(out: &mut String, usage: &Usage) {
    let triple = |out: &mut String, prompt: u64, completion: u64, total: u64| {
        out.push_str("{\"prompt\":");
        push_u64(out, prompt);
        out.push_str(",\"completion\":");
        push_u64(out, completion);
        out.push_str(",\"total\":");
        push_u64(out, total);
        out.push('}');
    };
    out.push_str("{\"chars\":");
    triple(
        out,
        usage.chars.prompt,
        usage.chars.completion,
        usage.chars.total,
    );
    if let Some(tokens) = &usage.tokens {
        out.push_str(",\"tokens\":");
        triple(out, tokens.prompt, tokens.completion, tokens.total);
    }
    out.push('}');
}

fn write_scheduler(out: &mut String, scheduler: &SchedulerDiagnostics) {
    out.push_str("{\"lane\":\"");
    out.push_str(scheduler.lane.as_str());
    out.push_str("\",\"promptTokens\":");
    push_u64(out, u64::from(scheduler.prompt_tokens));
    out.push_str(",\"promptTokensSource\":");
    push_string(out, &scheduler.prompt_tokens_source);
    out.push_str(",\"costTokens\":");
    push_u64(out, u64::from(scheduler.cost_tokens));
    out.push_str(",\"priority\":");
    write_priority(out, &scheduler.priority);
    out.push('}');
}

fn write_priority(out: &mut String, priority: &PriorityDiagnostics) {
    out.push_str("{\"class\":\"");
    out.push_str(priority.class.as_str());
    out.push_str("\",\"level\":");
    push_u64(out, u64::from(priority.level));
    if let Some(requested) = &priority.requested {
        out.push_str(",\"requested\":");
        push_string(out, requested);
    }
    if priority.clamped {
        out.push_str(",\"clamped\":true");
    }
    out.push_str(",\"queueWaitMs\":");
    push_u64(out, priority.queue_wait_ms);
    out.push('}');
}

fn write_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_string(out, item);
    }
    out.push(']');
}

/// A part that is rare on the hot path, through `serde_json` (a value that cannot be
/// written, which these types never are, writes `null`).
fn push_serde<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("null"),
    }
}
