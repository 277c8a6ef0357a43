//! The pressure signals as metrics: one family per signal, present even when its source is
//! not (then without a sample), so dashboards and the documentation see one fixed list.

use ray_core::config::GracefulDegradationConfig;

use super::PressureSignals;
use super::parse::{Psi, PsiLine};
use crate::metrics::{MetricKind, MetricsSnapshot, Sample};

fn flag(set: bool) -> f64 {
    if set { 1.0 } else { 0.0 }
}

fn labelled(labels: Vec<(&'static str, String)>, value: f64) -> Sample {
    Sample {
        suffix: "",
        labels,
        value,
    }
}

/// Adds the memory, CPU and PSI families for `signals`.
pub(crate) fn render(
    m: &mut MetricsSnapshot,
    signals: &PressureSignals,
    config: &GracefulDegradationConfig,
) {
    memory(m, signals, config);
    cpu(m, signals, config);
    psi(m, signals, config);
}

fn memory(m: &mut MetricsSnapshot, signals: &PressureSignals, config: &GracefulDegradationConfig) {
    let memory = &signals.memory;
    let s = &memory.signals;
    let cgroup = signals.reading.cgroup.as_ref();
    let bytes = |value: Option<u64>| value.map(|v| v as f64);
    m.gauge(
        "ray_memory_pressure",
        "1 while any memory source reports pressure (output is clamped).",
        Some("process.memory.pressure"),
        flag(memory.degraded),
    );
    m.labelled(
        "ray_memory_pressure_source",
        "1 while this memory source reports pressure: process_rss, cgroup, linux_psi.",
        MetricKind::Gauge,
        ["process_rss", "cgroup", "linux_psi"]
            .into_iter()
            .map(|source| {
                labelled(
                    vec![("source", source.into())],
                    flag(memory.sources.iter().any(|s| s == source)),
                )
            })
            .collect(),
    );
    m.gauge(
        "ray_memory_critical",
        "1 while memory pressure is critical (new work is refused when \
         gracefulDegradation.refuseOnCriticalMemory is on).",
        None,
        flag(memory.critical),
    );
    m.gauge(
        "ray_process_rss_threshold_mib",
        "gracefulDegradation.memoryRssThresholdMiB.",
        Some("process.memory.rss_threshold_mib"),
        f64::from(config.memory_rss_threshold_mib),
    );
    m.optional_gauge(
        "ray_process_rss_pressure_ratio",
        "Gateway RSS / gracefulDegradation.memoryRssThresholdMiB; pressure at 1.",
        Some("process.memory.rss_pressure_ratio"),
        s.process_rss_pressure_ratio,
    );
    m.optional_gauge(
        "ray_cgroup_memory_current_bytes",
        "The gateway cgroup's memory.current (v1: memory.usage_in_bytes).",
        None,
        bytes(cgroup.and_then(|c| c.memory_current)),
    );
    m.optional_gauge(
        "ray_cgroup_memory_high_bytes",
        "The cgroup's memory.high, when it is set.",
        None,
        bytes(cgroup.and_then(|c| c.memory_high).and_then(|l| l.value())),
    );
    m.optional_gauge(
        "ray_cgroup_memory_max_bytes",
        "The cgroup's hard limit, memory.max (v1: memory.limit_in_bytes), when it is set.",
        None,
        bytes(cgroup.and_then(|c| c.memory_max).and_then(|l| l.value())),
    );
    m.optional_gauge(
        "ray_cgroup_memory_working_set_bytes",
        "The cgroup's memory minus its reclaimable inactive page cache.",
        None,
        cgroup.and_then(|c| {
            c.memory_current
                .map(|current| current.saturating_sub(c.inactive_file.unwrap_or(0)) as f64)
        }),
    );
    m.optional_gauge(
        "ray_cgroup_memory_pressure_ratio",
        "memory.current / memory.high (else memory.max); pressure at the threshold.",
        Some("process.memory.cgroup_pressure_ratio"),
        s.cgroup_memory_pressure_ratio,
    );
    m.gauge(
        "ray_cgroup_memory_pressure_ratio_threshold",
        "gracefulDegradation.memoryCgroupPressureRatioThreshold.",
        Some("process.memory.cgroup_pressure_ratio_threshold"),
        config.memory_cgroup_pressure_ratio_threshold,
    );
    m.optional_gauge(
        "ray_cgroup_memory_working_set_ratio",
        "Working set / memory.max; critical at gracefulDegradation.criticalCgroupMemoryRatio.",
        None,
        s.cgroup_memory_working_set_ratio,
    );
    m.gauge(
        "ray_cgroup_memory_critical_ratio_threshold",
        "gracefulDegradation.criticalCgroupMemoryRatio.",
        None,
        config.critical_cgroup_memory_ratio,
    );
    m.optional_gauge(
        "ray_cgroup_memory_swap_current_bytes",
        "The cgroup's swap use, memory.swap.current (v1: memsw minus memory).",
        None,
        bytes(cgroup.and_then(|c| c.swap_current)),
    );
    m.optional_gauge(
        "ray_cgroup_memory_swap_max_bytes",
        "The cgroup's swap limit, memory.swap.max, when it is set.",
        None,
        bytes(cgroup.and_then(|c| c.swap_max).and_then(|l| l.value())),
    );
    m.optional_gauge(
        "ray_cgroup_memory_swap_pressure_ratio",
        "Swap use / swap limit; pressure at memoryCgroupPressureRatioThreshold.",
        Some("process.memory.cgroup_swap_pressure_ratio"),
        s.cgroup_memory_swap_pressure_ratio,
    );
    let events = cgroup.map(|c| c.events).unwrap_or_default();
    m.labelled(
        "ray_cgroup_memory_events_total",
        "memory.events counters of the cgroup: high, max, oom, oom_kill (v1: failcnt as max).",
        MetricKind::Counter,
        [
            ("high", events.high),
            ("max", events.max),
            ("oom", events.oom),
            ("oom_kill", events.oom_kill),
        ]
        .into_iter()
        .filter_map(|(event, value)| {
            value.map(|v| labelled(vec![("event", event.into())], v as f64))
        })
        .collect(),
    );
}

fn cpu(m: &mut MetricsSnapshot, signals: &PressureSignals, config: &GracefulDegradationConfig) {
    let cpu = &signals.cpu;
    let s = &cpu.signals;
    let seconds = |usec: Option<u64>| usec.map(|u| u as f64 / 1e6);
    let count = |value: Option<u64>| value.map(|v| v as f64);
    m.gauge(
        "ray_cpu_pressure",
        "1 while any CPU source reports pressure (output is clamped).",
        Some("process.cpu.pressure"),
        flag(cpu.degraded),
    );
    m.labelled(
        "ray_cpu_pressure_source",
        "1 while this CPU source reports pressure: cgroup_throttling, linux_psi.",
        MetricKind::Gauge,
        ["cgroup_throttling", "linux_psi"]
            .into_iter()
            .map(|source| {
                labelled(
                    vec![("source", source.into())],
                    flag(cpu.sources.iter().any(|s| s == source)),
                )
            })
            .collect(),
    );
    m.optional_counter(
        "ray_cgroup_cpu_usage_seconds_total",
        "CPU time used by the gateway's cgroup (cpu.stat usage_usec).",
        None,
        seconds(s.cgroup_cpu_usage_usec),
    );
    m.optional_counter(
        "ray_cgroup_cpu_user_seconds_total",
        "User CPU time of the cgroup.",
        None,
        seconds(s.cgroup_cpu_user_usec),
    );
    m.optional_counter(
        "ray_cgroup_cpu_system_seconds_total",
        "System CPU time of the cgroup.",
        None,
        seconds(s.cgroup_cpu_system_usec),
    );
    m.optional_gauge(
        "ray_cgroup_cpu_quota_cores",
        "The cgroup's CPU quota in cores (cpu.max), when one is set.",
        Some("process.cpu.cgroup_quota_cores"),
        s.cgroup_cpu_quota_cores,
    );
    m.optional_counter(
        "ray_cgroup_cpu_periods_total",
        "Enforcement periods of the CPU quota (cpu.stat nr_periods).",
        Some("process.cpu.cgroup_periods"),
        count(s.cgroup_cpu_periods),
    );
    m.optional_counter(
        "ray_cgroup_cpu_throttled_periods_total",
        "Periods in which the cgroup was throttled (nr_throttled).",
        Some("process.cpu.cgroup_throttled_periods"),
        count(s.cgroup_cpu_throttled_periods),
    );
    m.optional_counter(
        "ray_cgroup_cpu_throttled_seconds_total",
        "Time the cgroup spent throttled (throttled_usec).",
        None,
        seconds(s.cgroup_cpu_throttled_usec),
    );
    m.optional_gauge(
        "ray_cgroup_cpu_throttled_ratio",
        "Throttled periods / periods since the previous reading; pressure at the threshold.",
        Some("process.cpu.cgroup_throttled_ratio"),
        s.cgroup_cpu_throttled_ratio,
    );
    m.gauge(
        "ray_cgroup_cpu_throttled_ratio_threshold",
        "gracefulDegradation.cpuThrottledRatioThreshold.",
        Some("process.cpu.cgroup_throttled_threshold"),
        config.cpu_throttled_ratio_threshold,
    );
}

fn psi(m: &mut MetricsSnapshot, signals: &PressureSignals, config: &GracefulDegradationConfig) {
    let reading = &signals.reading;
    let cgroup = reading.cgroup.as_ref();
    let sources: [(&str, &str, Option<Psi>); 4] = [
        ("memory", "host", reading.host_memory_psi),
        ("memory", "cgroup", cgroup.and_then(|c| c.memory_psi)),
        ("cpu", "host", reading.host_cpu_psi),
        ("cpu", "cgroup", cgroup.and_then(|c| c.cpu_psi)),
    ];
    let lines: Vec<(&str, &str, &str, PsiLine)> = sources
        .iter()
        .flat_map(|(resource, scope, psi)| {
            let psi = psi.unwrap_or_default();
            [("some", psi.some), ("full", psi.full)]
                .into_iter()
                .filter_map(move |(kind, line)| line.map(|l| (*resource, *scope, kind, l)))
        })
        .collect();
    let samples = |value: fn(&PsiLine) -> f64| -> Vec<Sample> {
        lines
            .iter()
            .map(|(resource, scope, kind, line)| {
                labelled(
                    vec![
                        ("resource", (*resource).into()),
                        ("scope", (*scope).into()),
                        ("kind", (*kind).into()),
                    ],
                    value(line),
                )
            })
            .collect()
    };
    m.labelled(
        "ray_psi_avg10",
        "Linux PSI: share of the last 10 s with tasks stalled on the resource, in percent.",
        MetricKind::Gauge,
        samples(|l| l.avg10),
    );
    m.labelled(
        "ray_psi_avg60",
        "Linux PSI over the last 60 s, in percent.",
        MetricKind::Gauge,
        samples(|l| l.avg60),
    );
    m.labelled(
        "ray_psi_avg300",
        "Linux PSI over the last 300 s, in percent.",
        MetricKind::Gauge,
        samples(|l| l.avg300),
    );
    m.labelled(
        "ray_psi_stall_seconds_total",
        "Linux PSI: total stall time.",
        MetricKind::Counter,
        samples(|l| l.total_usec as f64 / 1e6),
    );
    m.labelled(
        "ray_psi_avg10_threshold",
        "The avg10 at which a resource's PSI (host or cgroup) counts as pressure.",
        MetricKind::Gauge,
        [
            ("memory", "some", config.memory_psi_some_avg10_threshold),
            ("memory", "full", config.memory_psi_full_avg10_threshold),
            ("cpu", "some", config.cpu_psi_some_avg10_threshold),
            ("cpu", "full", config.cpu_psi_full_avg10_threshold),
        ]
        .into_iter()
        .map(|(resource, kind, value)| {
            labelled(
                vec![("resource", resource.into()), ("kind", kind.into())],
                value,
            )
        })
        .collect(),
    );
    m.gauge(
        "ray_psi_memory_full_avg10_critical_threshold",
        "gracefulDegradation.criticalMemoryPsiFullAvg10.",
        None,
        config.critical_memory_psi_full_avg10,
    );
}
