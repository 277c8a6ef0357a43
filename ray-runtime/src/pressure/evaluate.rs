//! Turning a reading into pressure: each signal against its `gracefulDegradation` threshold,
//! the sources that report pressure, and whether memory pressure is critical. Pure, so every
//! rule is tested without files.

use ray_core::config::GracefulDegradationConfig;
use ray_core::wire::{CpuHealth, MemoryHealth};

use super::parse::Psi;
use super::sources::{CgroupReading, MemoryEvents, Reading};

const MIB: f64 = 1024.0 * 1024.0;

/// Memory and CPU pressure from `reading`; `previous` is the reading before it, for the
/// counters that matter by how much they grew (memory events, throttled CPU periods).
pub(crate) fn evaluate(
    config: &GracefulDegradationConfig,
    reading: &Reading,
    previous: Option<&Reading>,
) -> (MemoryHealth, CpuHealth) {
    let previous_cgroup = previous.and_then(|p| p.cgroup.as_ref());
    (
        memory(config, reading, previous_cgroup),
        cpu(config, reading, previous_cgroup),
    )
}

fn mib(bytes: u64) -> f64 {
    round(bytes as f64 / MIB, 2)
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn avg10(psi: Option<Psi>) -> (Option<f64>, Option<f64>) {
    (
        psi.and_then(|p| p.some).map(|l| l.avg10),
        psi.and_then(|p| p.full).map(|l| l.avg10),
    )
}

/// The higher of two optional readings (host and cgroup PSI).
fn higher(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn at_least(value: Option<f64>, threshold: f64) -> bool {
    value.is_some_and(|v| v >= threshold)
}

fn memory(
    config: &GracefulDegradationConfig,
    reading: &Reading,
    previous: Option<&CgroupReading>,
) -> MemoryHealth {
    let mut health = MemoryHealth::default();
    let signals = &mut health.signals;
    let rss_threshold = f64::from(config.memory_rss_threshold_mib);
    signals.memory_rss_threshold_mib = Some(rss_threshold);
    let mut process_rss = false;
    if let Some(rss) = reading.rss_bytes {
        let rss_mib = rss as f64 / MIB;
        let rss_ratio = if rss_threshold > 0.0 {
            rss_mib / rss_threshold
        } else {
            0.0
        };
        signals.process_rss_mib = Some(round(rss_mib, 2));
        signals.process_rss_pressure_ratio = Some(round(rss_ratio, 4));
        process_rss = rss_ratio >= 1.0;
    }

    let mut cgroup = false;
    let mut critical_working_set = false;
    let (mut cgroup_some, mut cgroup_full) = (None, None);
    if let Some(cg) = &reading.cgroup {
        health.cgroup_version = Some(cg.version);
        health.cgroup_path = Some(cg.path.clone()).filter(|p| !p.is_empty());
        (cgroup_some, cgroup_full) = avg10(cg.memory_psi);
        if let Some(current) = cg.memory_current {
            let threshold = config.memory_cgroup_pressure_ratio_threshold;
            let high = cg.memory_high.and_then(|l| l.value());
            let max = cg.memory_max.and_then(|l| l.value());
            signals.cgroup_memory_current_mib = Some(mib(current));
            signals.cgroup_memory_high_mib = high.map(mib);
            signals.cgroup_memory_limit_mib = max.map(mib);
            let pressure_ratio = high.or(max).and_then(|bound| ratio(current, bound));
            signals.cgroup_memory_pressure_ratio = pressure_ratio.map(|r| round(r, 4));
            signals.cgroup_memory_pressure_ratio_threshold = Some(threshold);

            let working_set = current.saturating_sub(cg.inactive_file.unwrap_or(0));
            let working_set_ratio = max.and_then(|max| ratio(working_set, max));
            signals.cgroup_memory_working_set_mib = Some(mib(working_set));
            signals.cgroup_memory_working_set_ratio = working_set_ratio.map(|r| round(r, 4));
            signals.cgroup_memory_critical_ratio_threshold =
                Some(config.critical_cgroup_memory_ratio);
            critical_working_set = at_least(working_set_ratio, config.critical_cgroup_memory_ratio);

            signals.cgroup_memory_swap_current_mib = cg.swap_current.map(mib);
            let swap_limit = cg.swap_max.and_then(|l| l.value()).filter(|l| *l > 0);
            signals.cgroup_memory_swap_limit_mib = swap_limit.map(mib);
            let swap_ratio = cg
                .swap_current
                .zip(swap_limit)
                .and_then(|(current, limit)| ratio(current, limit));
            signals.cgroup_memory_swap_pressure_ratio = swap_ratio.map(|r| round(r, 4));
            signals.cgroup_memory_swap_pressure_ratio_threshold = swap_ratio.map(|_| threshold);

            let events = cg.events;
            let before = previous.map(|p| p.events);
            let delta = |now: Option<u64>, then: fn(&MemoryEvents) -> Option<u64>| {
                let now = now?;
                let then = before.as_ref().and_then(then)?;
                Some(now.saturating_sub(then))
            };
            signals.cgroup_memory_high_events = events.high;
            signals.cgroup_memory_max_events = events.max;
            signals.cgroup_memory_oom_events = events.oom;
            signals.cgroup_memory_oom_kill_events = events.oom_kill;
            signals.cgroup_memory_high_events_delta = delta(events.high, |e| e.high);
            signals.cgroup_memory_max_events_delta = delta(events.max, |e| e.max);
            signals.cgroup_memory_oom_events_delta = delta(events.oom, |e| e.oom);
            signals.cgroup_memory_oom_kill_events_delta = delta(events.oom_kill, |e| e.oom_kill);
            let events_grew = [
                signals.cgroup_memory_high_events_delta,
                signals.cgroup_memory_max_events_delta,
                signals.cgroup_memory_oom_events_delta,
                signals.cgroup_memory_oom_kill_events_delta,
            ]
            .iter()
            .any(|d| d.is_some_and(|d| d > 0));
            cgroup = at_least(pressure_ratio, threshold)
                || at_least(swap_ratio, threshold)
                || events_grew;
        }
        signals.cgroup_memory_psi_some_avg10 = cgroup_some;
        signals.cgroup_memory_psi_full_avg10 = cgroup_full;
    }

    let (host_some, host_full) = avg10(reading.host_memory_psi);
    signals.linux_memory_psi_some_avg10 = host_some;
    signals.linux_memory_psi_full_avg10 = host_full;
    let some = higher(host_some, cgroup_some);
    let full = higher(host_full, cgroup_full);
    let any_psi = some.is_some() || full.is_some();
    if any_psi {
        signals.linux_memory_psi_some_avg10_threshold =
            Some(config.memory_psi_some_avg10_threshold);
        signals.linux_memory_psi_full_avg10_threshold =
            Some(config.memory_psi_full_avg10_threshold);
        signals.memory_psi_full_avg10_critical_threshold =
            Some(config.critical_memory_psi_full_avg10);
    }
    let linux_psi = at_least(some, config.memory_psi_some_avg10_threshold)
        || at_least(full, config.memory_psi_full_avg10_threshold);
    let critical_psi = at_least(full, config.critical_memory_psi_full_avg10);

    for (set, source) in [
        (process_rss, "process_rss"),
        (cgroup, "cgroup"),
        (linux_psi, "linux_psi"),
    ] {
        if set {
            health.sources.push(source.into());
        }
    }
    for (set, source) in [
        (critical_working_set, "cgroup_working_set"),
        (critical_psi, "linux_psi_full"),
    ] {
        if set {
            health.critical_sources.push(source.into());
        }
    }
    health.critical = !health.critical_sources.is_empty();
    // Critical pressure is pressure, whatever the lower thresholds say.
    if health.critical && !cgroup && critical_working_set {
        health.sources.push("cgroup".into());
    }
    if health.critical && !linux_psi && critical_psi {
        health.sources.push("linux_psi".into());
    }
    health.degraded = !health.sources.is_empty();
    health.signals.memory_pressure_sources = health.sources.clone();
    health
}

fn cpu(
    config: &GracefulDegradationConfig,
    reading: &Reading,
    previous: Option<&CgroupReading>,
) -> CpuHealth {
    let mut health = CpuHealth::default();
    let signals = &mut health.signals;
    let mut throttling = false;
    let (mut cgroup_some, mut cgroup_full) = (None, None);
    if let Some(cg) = &reading.cgroup {
        let stat = cg.cpu;
        signals.cgroup_cpu_usage_usec = stat.usage_usec;
        signals.cgroup_cpu_user_usec = stat.user_usec;
        signals.cgroup_cpu_system_usec = stat.system_usec;
        signals.cgroup_cpu_periods = stat.nr_periods;
        signals.cgroup_cpu_throttled_periods = stat.nr_throttled;
        signals.cgroup_cpu_throttled_usec = stat.throttled_usec;
        if let Some((quota, period)) = cg.cpu_max {
            signals.cgroup_cpu_period_usec = Some(period);
            if let Some(quota) = quota.value() {
                signals.cgroup_cpu_quota_usec = Some(quota);
                signals.cgroup_cpu_quota_cores = Some(round(quota as f64 / period as f64, 4));
            }
        }
        if let (Some(periods), Some(throttled)) = (stat.nr_periods, stat.nr_throttled) {
            // Since the previous reading; the first reading counts from the cgroup's start.
            let (before_periods, before_throttled) = previous
                .and_then(|p| p.cpu.nr_periods.zip(p.cpu.nr_throttled))
                .unwrap_or((0, 0));
            let periods = periods.saturating_sub(before_periods);
            let throttled = throttled.saturating_sub(before_throttled);
            let throttled_ratio = ratio(throttled, periods).unwrap_or(0.0).min(1.0);
            let threshold = config.cpu_throttled_ratio_threshold;
            signals.cgroup_cpu_throttled_ratio = Some(round(throttled_ratio, 4));
            signals.cgroup_cpu_throttled_ratio_threshold = Some(threshold);
            throttling = throttled_ratio >= threshold;
        }
        (cgroup_some, cgroup_full) = avg10(cg.cpu_psi);
        signals.cgroup_cpu_psi_some_avg10 = cgroup_some;
        signals.cgroup_cpu_psi_full_avg10 = cgroup_full;
    }
    let (host_some, host_full) = avg10(reading.host_cpu_psi);
    signals.linux_cpu_psi_some_avg10 = host_some;
    signals.linux_cpu_psi_full_avg10 = host_full;
    let some = higher(host_some, cgroup_some);
    let full = higher(host_full, cgroup_full);
    if some.is_some() || full.is_some() {
        signals.linux_cpu_psi_some_avg10_threshold = Some(config.cpu_psi_some_avg10_threshold);
        signals.linux_cpu_psi_full_avg10_threshold = Some(config.cpu_psi_full_avg10_threshold);
    }
    let linux_psi = at_least(some, config.cpu_psi_some_avg10_threshold)
        || at_least(full, config.cpu_psi_full_avg10_threshold);
    for (set, source) in [(throttling, "cgroup_throttling"), (linux_psi, "linux_psi")] {
        if set {
            health.sources.push(source.into());
        }
    }
    health.degraded = !health.sources.is_empty();
    health.signals.cpu_pressure_sources = health.sources.clone();
    health
}

#[cfg(test)]
mod tests;
