//! Degradation as one decision: from the pressure snapshot (queue depth, memory, CPU) and the
//! `gracefulDegradation` config, decide once per request whether to trim its prompt, clamp its
//! output, or refuse it. The plan applies the trim and clamp and reports them in the response's
//! diagnostics; the front applies the refusal after the cache had its chance to answer.

use ray_core::RayError;
use ray_core::config::RayConfig;
use ray_core::wire::MemoryHealth;

use crate::pressure::PressureSnapshot;

/// What degradation decided for one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decision {
    /// The pressure the decision was made on (reported in the diagnostics).
    pub(crate) pressure: PressureSnapshot,
    /// Prompts longer than this many chars are trimmed (`gracefulDegradation.maxPromptChars`;
    /// `None` when degradation is off).
    pub(crate) prompt_budget: Option<usize>,
    /// `maxTokens` is clamped to this, for these reasons (`queue_depth`, `memory_pressure`,
    /// `cpu_pressure`).
    pub(crate) clamp: Option<(u32, Vec<&'static str>)>,
    /// Memory pressure is critical: new work is refused with `memory_pressure_critical`.
    pub(crate) refuse: bool,
}

/// Decides for a request arriving under `pressure`; `critical` says whether the monitor
/// refuses new work (memory critical and `refuseOnCriticalMemory` on).
pub(crate) fn decide(config: &RayConfig, pressure: PressureSnapshot, critical: bool) -> Decision {
    let degradation = &config.graceful_degradation;
    if !degradation.enabled {
        return Decision {
            pressure,
            refuse: critical,
            ..Decision::default()
        };
    }
    let mut reasons = Vec::new();
    if pressure.queue_depth >= degradation.queue_depth_threshold {
        reasons.push("queue_depth");
    }
    if pressure.signals.memory.degraded {
        reasons.push("memory_pressure");
    }
    if pressure.signals.cpu.degraded {
        reasons.push("cpu_pressure");
    }
    Decision {
        prompt_budget: Some(degradation.max_prompt_chars as usize),
        clamp: (!reasons.is_empty()).then_some((degradation.degrade_to_max_tokens, reasons)),
        refuse: critical,
        pressure,
    }
}

/// `503 memory_pressure_critical`, naming the signals that crossed their critical threshold.
pub(crate) fn memory_critical(config: &RayConfig, memory: &MemoryHealth) -> RayError {
    let g = &config.graceful_degradation;
    RayError::new(
        ray_core::ErrorCode::MemoryPressureCritical,
        format!(
            "Memory pressure is critical ({}); new work is refused until it eases",
            memory.critical_sources.join(", ")
        ),
    )
    .with_details(serde_json::json!({
        "criticalSources": memory.critical_sources,
        "cgroupMemoryWorkingSetRatio": memory.signals.cgroup_memory_working_set_ratio,
        "criticalCgroupMemoryRatio": g.critical_cgroup_memory_ratio,
        "memoryPsiFullAvg10": higher(
            memory.signals.linux_memory_psi_full_avg10,
            memory.signals.cgroup_memory_psi_full_avg10,
        ),
        "criticalMemoryPsiFullAvg10": g.critical_memory_psi_full_avg10,
    }))
}

fn higher(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
