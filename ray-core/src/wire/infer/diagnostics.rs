//! The `diagnostics` of an [`InferResponse`](super::InferResponse): why a request was shaped and
//! routed the way it was (routing, degradation and the signals behind it, the prompt compiler,
//! adaptive tuning, the scheduler, the provider and its timings).

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::generation::ParameterClamp;

/// How much of [`Diagnostics`] a response carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticsDetail {
    /// Every block and reading.
    #[default]
    Full,
    /// What Ray decided, without the readings behind it: `degradation` (`applied`,
    /// `reasons`, `requestedMaxTokens`, `appliedMaxTokens`), `promptCompiler`,
    /// `learnedOutputCap` (`applied`, `appliedMaxTokens`), `adaptiveTuning` (`reduced`,
    /// `appliedMaxTokens`), `scheduler`, `provider.requestShape`, `routing` and `clamped`.
    Summary,
}

impl DiagnosticsDetail {
    /// `full` or `summary`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DiagnosticsDetail::Full => "full",
            DiagnosticsDetail::Summary => "summary",
        }
    }

    /// Parses `full` or `summary` (any case, surrounding spaces ignored).
    pub fn parse(value: &str) -> Option<DiagnosticsDetail> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("full") {
            Some(DiagnosticsDetail::Full)
        } else if value.eq_ignore_ascii_case("summary") {
            Some(DiagnosticsDetail::Summary)
        } else {
            None
        }
    }
}

/// Why a request was shaped and routed the way it was.
///
/// Serialised in full or as a summary as `detail` says; a summary deserialises with the
/// fields it leaves out at their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Diagnostics {
    /// Pressure clamps.
    pub degradation: DegradationDiagnostics,
    /// Prompt normalisation.
    pub prompt_compiler: PromptCompilerDiagnostics,
    /// The per-family learned output cap.
    pub learned_output_cap: LearnedCapDiagnostics,
    /// Adaptive output reduction.
    pub adaptive_tuning: AdaptiveTuningDiagnostics,
    /// Informational task classification.
    pub task_routing: TaskRoutingDiagnostics,
    /// Admission: lane, token cost and where the prompt token count came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerDiagnostics>,
    /// What the backend adapter did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderDiagnostics>,
    /// Which model served the request and why. New in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingDiagnostics>,
    /// Request values brought into range rather than refused (`/v1/infer`'s documented
    /// clamps of `maxTokens`, `temperature` and `topP`); absent when none was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clamped: Vec<ParameterClamp>,
    /// `full`, or `summary` when the response carries only the summary (absent from older
    /// servers' responses, which were always full).
    pub detail: DiagnosticsDetail,
}

/// Writes `diagnostics` in full or as its summary, as its `detail` says.
#[allow(clippy::borrowed_box)] // serde's `serialize_with` hands over the field as it is.
pub(super) fn serialize_diagnostics<S: serde::Serializer>(
    diagnostics: &Box<Diagnostics>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match diagnostics.detail {
        DiagnosticsDetail::Full => diagnostics.serialize(serializer),
        DiagnosticsDetail::Summary => DiagnosticsSummary::of(diagnostics).serialize(serializer),
    }
}

/// The summary form of [`Diagnostics`] (see [`DiagnosticsDetail::Summary`]), borrowed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiagnosticsSummary<'a> {
    degradation: DegradationSummary<'a>,
    prompt_compiler: &'a PromptCompilerDiagnostics,
    learned_output_cap: CapSummary,
    adaptive_tuning: TuningSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<&'a SchedulerDiagnostics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<ProviderSummary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<&'a RoutingDiagnostics>,
    #[serde(skip_serializing_if = "<[ParameterClamp]>::is_empty")]
    clamped: &'a [ParameterClamp],
    detail: DiagnosticsDetail,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DegradationSummary<'a> {
    applied: bool,
    reasons: &'a [String],
    requested_max_tokens: u32,
    applied_max_tokens: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CapSummary {
    applied: bool,
    applied_max_tokens: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TuningSummary {
    reduced: bool,
    applied_max_tokens: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProviderSummary<'a> {
    request_shape: &'a str,
}

impl<'a> DiagnosticsSummary<'a> {
    fn of(full: &'a Diagnostics) -> DiagnosticsSummary<'a> {
        DiagnosticsSummary {
            degradation: DegradationSummary {
                applied: full.degradation.applied,
                reasons: &full.degradation.reasons,
                requested_max_tokens: full.degradation.requested_max_tokens,
                applied_max_tokens: full.degradation.applied_max_tokens,
            },
            prompt_compiler: &full.prompt_compiler,
            learned_output_cap: CapSummary {
                applied: full.learned_output_cap.applied,
                applied_max_tokens: full.learned_output_cap.applied_max_tokens,
            },
            adaptive_tuning: TuningSummary {
                reduced: full.adaptive_tuning.reduced,
                applied_max_tokens: full.adaptive_tuning.applied_max_tokens,
            },
            scheduler: full.scheduler.as_ref(),
            provider: full.provider.as_ref().map(|provider| ProviderSummary {
                request_shape: &provider.request_shape,
            }),
            routing: full.routing.as_ref(),
            clamped: &full.clamped,
            detail: DiagnosticsDetail::Summary,
        }
    }
}

/// How a request was routed to the model that served it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingDiagnostics {
    /// The model that served the request.
    pub model: String,
    /// What chose it: `request` (the request named it), `rule:NAME` (a routing rule), or
    /// `default` (`defaultModel`).
    pub chosen_by: Cow<'static, str>,
    /// The model first chosen, when a fallback served the request instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
    /// Why each earlier model did not serve it, in order (`model: code`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// Pressure clamps applied to one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DegradationDiagnostics {
    /// Any clamp applied.
    pub applied: bool,
    /// `prompt_length`, `queue_depth`, `memory_pressure`, `cpu_pressure`.
    pub reasons: Vec<String>,
    /// `maxTokens` before the clamps.
    pub requested_max_tokens: u32,
    /// `maxTokens` after the clamps.
    pub applied_max_tokens: u32,
    /// Queue depth when the request arrived.
    pub queue_depth: u32,
    /// `gracefulDegradation.queueDepthThreshold`.
    pub queue_depth_threshold: u32,
    /// Memory signals at the time.
    #[serde(flatten)]
    pub memory: MemorySignals,
    /// CPU signals at the time.
    #[serde(flatten)]
    pub cpu: CpuSignals,
}

/// Memory pressure signals. Fields are absent when their source is unavailable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySignals {
    /// Which sources report pressure: `process_rss`, `cgroup`, `linux_psi`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_pressure_sources: Vec<String>,
    /// Gateway RSS in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "processRssMiB")]
    pub process_rss_mib: Option<f64>,
    /// `gracefulDegradation.memoryRssThresholdMiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryRssThresholdMiB")]
    pub memory_rss_threshold_mib: Option<f64>,
    /// RSS / threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_rss_pressure_ratio: Option<f64>,
    /// cgroup `memory.current` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cgroupMemoryCurrentMiB")]
    pub cgroup_memory_current_mib: Option<f64>,
    /// cgroup `memory.high` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cgroupMemoryHighMiB")]
    pub cgroup_memory_high_mib: Option<f64>,
    /// cgroup `memory.max` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cgroupMemoryLimitMiB")]
    pub cgroup_memory_limit_mib: Option<f64>,
    /// current / (high, else max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_pressure_ratio: Option<f64>,
    /// The threshold for the ratio above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_pressure_ratio_threshold: Option<f64>,
    /// cgroup `memory.swap.current` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cgroupMemorySwapCurrentMiB")]
    pub cgroup_memory_swap_current_mib: Option<f64>,
    /// cgroup `memory.swap.max` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cgroupMemorySwapLimitMiB")]
    pub cgroup_memory_swap_limit_mib: Option<f64>,
    /// swap current / swap limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_swap_pressure_ratio: Option<f64>,
    /// The threshold for the ratio above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_swap_pressure_ratio_threshold: Option<f64>,
    /// `memory.events` `high` counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_high_events: Option<u64>,
    /// `memory.events` `max` counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_max_events: Option<u64>,
    /// `memory.events` `oom` counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_oom_events: Option<u64>,
    /// `memory.events` `oom_kill` counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_oom_kill_events: Option<u64>,
    /// Growth of the `high` counter since the previous read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_high_events_delta: Option<u64>,
    /// Growth of the `max` counter since the previous read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_max_events_delta: Option<u64>,
    /// Growth of the `oom` counter since the previous read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_oom_events_delta: Option<u64>,
    /// Growth of the `oom_kill` counter since the previous read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_oom_kill_events_delta: Option<u64>,
    /// Memory PSI `some avg10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_memory_psi_some_avg10: Option<f64>,
    /// Its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_memory_psi_some_avg10_threshold: Option<f64>,
    /// Memory PSI `full avg10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_memory_psi_full_avg10: Option<f64>,
    /// Its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_memory_psi_full_avg10_threshold: Option<f64>,
    /// The cgroup's working set in MiB: `memory.current` minus the reclaimable
    /// `inactive_file` of `memory.stat` (cgroup v1: usage minus `total_inactive_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cgroupMemoryWorkingSetMiB")]
    pub cgroup_memory_working_set_mib: Option<f64>,
    /// Working set / `memory.max`: how close the cgroup is to the OOM killer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_working_set_ratio: Option<f64>,
    /// `gracefulDegradation.criticalCgroupMemoryRatio`, the ratio above at which new work is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_critical_ratio_threshold: Option<f64>,
    /// Memory PSI `some avg10` of the gateway's cgroup (`memory.pressure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_psi_some_avg10: Option<f64>,
    /// Memory PSI `full avg10` of the gateway's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_memory_psi_full_avg10: Option<f64>,
    /// `gracefulDegradation.criticalMemoryPsiFullAvg10`: memory PSI `full avg10` (host or
    /// cgroup) at which new work is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_psi_full_avg10_critical_threshold: Option<f64>,
}

/// CPU pressure signals. Fields are absent when their source is unavailable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuSignals {
    /// Which sources report CPU pressure: `cgroup_throttling`, `linux_psi`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_pressure_sources: Vec<String>,
    /// cgroup `cpu.stat` `usage_usec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_usage_usec: Option<u64>,
    /// cgroup `cpu.stat` `user_usec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_user_usec: Option<u64>,
    /// cgroup `cpu.stat` `system_usec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_system_usec: Option<u64>,
    /// cgroup `cpu.max` quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_quota_usec: Option<u64>,
    /// cgroup `cpu.max` period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_period_usec: Option<u64>,
    /// quota / period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_quota_cores: Option<f64>,
    /// `nr_periods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_periods: Option<u64>,
    /// `nr_throttled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_throttled_periods: Option<u64>,
    /// `throttled_usec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_throttled_usec: Option<u64>,
    /// Throttled periods / periods since the previous read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_throttled_ratio: Option<f64>,
    /// Its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_throttled_ratio_threshold: Option<f64>,
    /// CPU PSI `some avg10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_cpu_psi_some_avg10: Option<f64>,
    /// Its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_cpu_psi_some_avg10_threshold: Option<f64>,
    /// CPU PSI `full avg10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_cpu_psi_full_avg10: Option<f64>,
    /// Its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_cpu_psi_full_avg10_threshold: Option<f64>,
    /// CPU PSI `some avg10` of the gateway's cgroup (`cpu.pressure`), compared with the same
    /// threshold as the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_psi_some_avg10: Option<f64>,
    /// CPU PSI `full avg10` of the gateway's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_cpu_psi_full_avg10: Option<f64>,
}

/// What the prompt compiler did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptCompilerDiagnostics {
    /// 16-hex prompt family key (scheduler affinity, slot affinity, learned caps).
    pub family_key: String,
    /// `short` or `draft`.
    pub lane: Lane,
    /// Chars of input plus system before normalisation.
    pub chars_before: u64,
    /// ... and after.
    pub chars_after: u64,
    /// The difference.
    pub chars_saved: u64,
}

/// Scheduler lanes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Short jobs: small `maxTokens`, JSON answers; served first.
    Short,
    /// Longer drafts.
    #[default]
    Draft,
}

impl Lane {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lane::Short => "short",
            Lane::Draft => "draft",
        }
    }
}

/// The learned per-family output cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LearnedCapDiagnostics {
    /// The cap lowered `maxTokens`.
    pub applied: bool,
    /// The family.
    pub family_key: String,
    /// The lane.
    pub lane: Lane,
    /// `maxTokens` before.
    pub requested_max_tokens: u32,
    /// `maxTokens` after.
    pub applied_max_tokens: u32,
    /// Completions remembered for the family.
    pub sample_count: u32,
    /// Percentile used.
    pub percentile: OrderedF64,
    /// The learned cap, when there are enough samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_cap_tokens: Option<u32>,
}

/// An `f64` that is compared bitwise, so diagnostics can derive `Eq`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct OrderedF64(pub f64);

impl PartialEq for OrderedF64 {
    fn eq(&self, other: &OrderedF64) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for OrderedF64 {}

/// Adaptive output reduction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AdaptiveTuningDiagnostics {
    /// `maxTokens` was reduced.
    pub reduced: bool,
    /// `maxTokens` before.
    pub requested_max_tokens: u32,
    /// `maxTokens` after.
    pub applied_max_tokens: u32,
    /// The reduction, 0 to `maxOutputReductionRatio`.
    pub reduction_ratio: OrderedF64,
    /// `queue_latency`, `throughput` or `queue_latency+throughput`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Informational task classification (no routing happens yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskRoutingDiagnostics {
    /// `classification`, `rewrite`, `draft` or `unknown`.
    pub task_kind: Cow<'static, str>,
    /// `classifier`, `drafter` or `general`.
    pub recommended_model_role: Cow<'static, str>,
    /// `tags.modelRole`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_model_role: Option<String>,
    /// Whether the active role suits the task.
    pub matched_active_role: bool,
}

/// Admission details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerDiagnostics {
    /// The lane the request waited in.
    pub lane: Lane,
    /// Prompt tokens counted for admission.
    pub prompt_tokens: u32,
    /// `tokenizer` (counted by the backend) or `estimate` (chars / 4).
    pub prompt_tokens_source: Cow<'static, str>,
    /// Prompt tokens plus `maxTokens`: what the request reserved from the token budgets.
    pub cost_tokens: u32,
    /// The priority it ran with and how long it waited for a permit.
    #[serde(default)]
    pub priority: crate::wire::PriorityDiagnostics,
}

/// What the backend adapter did. Fields depend on the adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderDiagnostics {
    /// `mock`, `openai-chat` or `llama.cpp-completion`.
    pub request_shape: Cow<'static, str>,
    /// `llama.cpp-template`, `prompt-scaffold` or `ray-chat-fallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format: Option<String>,
    /// Why that prompt format was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format_reason: Option<String>,
    /// The model name sent to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    /// The model the backend reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_model: Option<String>,
    /// The launch preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_preset: Option<String>,
    /// Slots of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_slots: Option<u32>,
    /// The slot that served the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<i64>,
    /// The slot Ray asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_slot: Option<i64>,
    /// Why that slot: `family_hot_idle`, `family_recent_idle`, `idle_slot`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_route_reason: Option<String>,
    /// Prompt tokens reused from the slot's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_cached: Option<u64>,
    /// Prompt tokens evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_evaluated: Option<u64>,
    /// The prompt was truncated by the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Context window per slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// A JSON repair call was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_repair_attempted: Option<bool>,
    /// The repair produced a valid JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_repair_succeeded: Option<bool>,
    /// Backend timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<ProviderTimings>,
}

/// Backend timings in ms and tokens per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTimings {
    /// Prompt processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ms: Option<f64>,
    /// Generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_ms: Option<f64>,
    /// Both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
    /// Time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Prompt tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_per_second: Option<f64>,
    /// Generated tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_per_second: Option<f64>,
}
