//! Each signal against its threshold.

use proptest::prelude::*;
use ray_core::config::{Profile, profile_defaults};

use super::super::parse::{Limit, PsiLine};
use super::super::sources::CpuStat;
use super::*;

const MIB_U: u64 = 1024 * 1024;

fn config() -> GracefulDegradationConfig {
    // sub1b: RSS 512 MiB, cgroup ratio 0.9, throttled 0.2, memory PSI 10/1, CPU PSI 50/5,
    // critical 0.97 and 25.
    profile_defaults(Profile::Sub1b).graceful_degradation
}

fn psi(some: f64, full: f64) -> Option<Psi> {
    let line = |avg10| PsiLine {
        avg10,
        avg60: avg10 / 2.0,
        avg300: avg10 / 4.0,
        total_usec: 1_000,
    };
    Some(Psi {
        some: Some(line(some)),
        full: Some(line(full)),
    })
}

fn cgroup(current_mib: u64, max_mib: Option<u64>) -> CgroupReading {
    CgroupReading {
        version: 2,
        path: "/system.slice/ray-gateway.service".into(),
        memory_current: Some(current_mib * MIB_U),
        memory_high: Some(Limit::Unlimited),
        memory_max: Some(max_mib.map_or(Limit::Unlimited, |m| Limit::Value(m * MIB_U))),
        inactive_file: Some(0),
        swap_current: Some(0),
        swap_max: Some(Limit::Unlimited),
        events: MemoryEvents {
            high: Some(0),
            max: Some(0),
            oom: Some(0),
            oom_kill: Some(0),
        },
        memory_psi: psi(0.0, 0.0),
        cpu: CpuStat::default(),
        cpu_max: None,
        cpu_psi: psi(0.0, 0.0),
    }
}

fn memory_of(reading: &Reading) -> MemoryHealth {
    evaluate(&config(), reading, None).0
}

#[test]
fn nothing_readable_is_no_pressure_and_no_fields() {
    let (memory, cpu) = evaluate(&config(), &Reading::default(), None);
    assert!(!memory.degraded && !memory.critical && !cpu.degraded);
    assert_eq!(memory.signals.process_rss_mib, None);
    assert_eq!(memory.signals.cgroup_memory_current_mib, None);
    assert_eq!(memory.signals.linux_memory_psi_some_avg10_threshold, None);
    assert_eq!(memory.cgroup_version, None);
    let json = serde_json::to_value(&cpu).unwrap();
    assert_eq!(json, serde_json::json!({"degraded": false, "sources": []}));
}

#[test]
fn process_rss_at_its_threshold_is_pressure() {
    let below = memory_of(&Reading {
        rss_bytes: Some(511 * MIB_U),
        ..Reading::default()
    });
    assert!(!below.degraded);
    assert_eq!(below.signals.process_rss_mib, Some(511.0));
    let at = memory_of(&Reading {
        rss_bytes: Some(512 * MIB_U),
        ..Reading::default()
    });
    assert_eq!(at.sources, vec!["process_rss"]);
    assert_eq!(at.signals.process_rss_pressure_ratio, Some(1.0));
    assert_eq!(at.signals.memory_pressure_sources, vec!["process_rss"]);
}

#[test]
fn the_cgroup_ratio_uses_memory_high_when_set() {
    let mut cg = cgroup(900, Some(1_000));
    let memory = memory_of(&Reading {
        cgroup: Some(cg.clone()),
        ..Reading::default()
    });
    assert_eq!(memory.sources, vec!["cgroup"]);
    assert_eq!(memory.signals.cgroup_memory_pressure_ratio, Some(0.9));
    assert_eq!(memory.signals.cgroup_memory_limit_mib, Some(1_000.0));
    assert_eq!(memory.cgroup_version, Some(2));
    assert!(!memory.critical, "0.9 of the limit is not critical");

    // With memory.high at 2000 MiB the same use is only 45% of the bound.
    cg.memory_max = Some(Limit::Value(4_000 * MIB_U));
    cg.memory_high = Some(Limit::Value(2_000 * MIB_U));
    let memory = memory_of(&Reading {
        cgroup: Some(cg),
        ..Reading::default()
    });
    assert!(!memory.degraded);
    assert_eq!(memory.signals.cgroup_memory_pressure_ratio, Some(0.45));
    assert_eq!(memory.signals.cgroup_memory_high_mib, Some(2_000.0));
}

#[test]
fn no_limit_means_no_ratio_but_the_readings_stay() {
    let memory = memory_of(&Reading {
        cgroup: Some(cgroup(900, None)),
        ..Reading::default()
    });
    assert!(!memory.degraded);
    assert_eq!(memory.signals.cgroup_memory_current_mib, Some(900.0));
    assert_eq!(memory.signals.cgroup_memory_pressure_ratio, None);
    assert_eq!(memory.signals.cgroup_memory_working_set_ratio, None);
    assert_eq!(
        memory.signals.cgroup_memory_pressure_ratio_threshold,
        Some(0.9)
    );
}

#[test]
fn swap_counts_against_its_own_limit() {
    let mut cg = cgroup(100, Some(1_000));
    cg.swap_current = Some(95 * MIB_U);
    cg.swap_max = Some(Limit::Value(100 * MIB_U));
    let memory = memory_of(&Reading {
        cgroup: Some(cg),
        ..Reading::default()
    });
    assert_eq!(memory.sources, vec!["cgroup"]);
    assert_eq!(memory.signals.cgroup_memory_swap_pressure_ratio, Some(0.95));
    assert_eq!(
        memory.signals.cgroup_memory_swap_pressure_ratio_threshold,
        Some(0.9)
    );
}

#[test]
fn memory_events_are_pressure_only_when_they_grow() {
    let mut first = cgroup(100, Some(1_000));
    first.events.oom_kill = Some(3);
    let first = Reading {
        cgroup: Some(first),
        ..Reading::default()
    };
    let (memory, _) = evaluate(&config(), &first, None);
    assert!(!memory.degraded, "old events alone are not pressure now");
    assert_eq!(memory.signals.cgroup_memory_oom_kill_events, Some(3));
    assert_eq!(memory.signals.cgroup_memory_oom_kill_events_delta, None);

    let (memory, _) = evaluate(&config(), &first, Some(&first));
    assert!(!memory.degraded);
    assert_eq!(memory.signals.cgroup_memory_oom_kill_events_delta, Some(0));

    let mut grown = first.clone();
    if let Some(cg) = grown.cgroup.as_mut() {
        cg.events.max = Some(2);
    }
    let (memory, _) = evaluate(&config(), &grown, Some(&first));
    assert_eq!(memory.sources, vec!["cgroup"]);
    assert_eq!(memory.signals.cgroup_memory_max_events_delta, Some(2));
    // A counter that went backwards (a new cgroup) is no growth.
    let (memory, _) = evaluate(&config(), &first, Some(&grown));
    assert_eq!(memory.signals.cgroup_memory_max_events_delta, Some(0));
}

#[test]
fn memory_psi_of_host_or_cgroup_is_pressure() {
    let host = memory_of(&Reading {
        host_memory_psi: psi(10.0, 0.0),
        ..Reading::default()
    });
    assert_eq!(host.sources, vec!["linux_psi"]);
    assert_eq!(host.signals.linux_memory_psi_some_avg10, Some(10.0));
    assert_eq!(
        host.signals.linux_memory_psi_some_avg10_threshold,
        Some(10.0)
    );
    let mut cg = cgroup(10, Some(1_000));
    cg.memory_psi = psi(0.0, 1.5);
    let in_cgroup = memory_of(&Reading {
        host_memory_psi: psi(0.0, 0.0),
        cgroup: Some(cg),
        ..Reading::default()
    });
    assert_eq!(in_cgroup.sources, vec!["linux_psi"]);
    assert_eq!(in_cgroup.signals.cgroup_memory_psi_full_avg10, Some(1.5));
    assert!(!in_cgroup.critical);
}

#[test]
fn critical_memory_from_the_working_set_or_full_stalls() {
    // 990 MiB used but 100 MiB of it reclaimable cache: 0.89 of the limit, not critical.
    let mut cg = cgroup(990, Some(1_000));
    cg.inactive_file = Some(100 * MIB_U);
    let memory = memory_of(&Reading {
        cgroup: Some(cg.clone()),
        ..Reading::default()
    });
    assert!(memory.degraded, "0.99 of the limit is pressure");
    assert!(!memory.critical, "the working set is 0.89");
    assert_eq!(memory.signals.cgroup_memory_working_set_mib, Some(890.0));
    assert_eq!(memory.signals.cgroup_memory_working_set_ratio, Some(0.89));
    assert_eq!(
        memory.signals.cgroup_memory_critical_ratio_threshold,
        Some(0.97)
    );

    cg.inactive_file = Some(10 * MIB_U);
    let memory = memory_of(&Reading {
        cgroup: Some(cg),
        ..Reading::default()
    });
    assert!(memory.critical);
    assert_eq!(memory.critical_sources, vec!["cgroup_working_set"]);

    let memory = memory_of(&Reading {
        host_memory_psi: psi(60.0, 25.0),
        ..Reading::default()
    });
    assert!(memory.critical);
    assert_eq!(memory.critical_sources, vec!["linux_psi_full"]);
    assert_eq!(memory.sources, vec!["linux_psi"]);
    assert_eq!(
        memory.signals.memory_psi_full_avg10_critical_threshold,
        Some(25.0)
    );
}

#[test]
fn critical_pressure_is_pressure_whatever_the_lower_thresholds() {
    let mut config = config();
    config.memory_cgroup_pressure_ratio_threshold = 1.0;
    config.critical_cgroup_memory_ratio = 0.5;
    let (memory, _) = evaluate(
        &config,
        &Reading {
            cgroup: Some(cgroup(600, Some(1_000))),
            ..Reading::default()
        },
        None,
    );
    assert!(memory.critical && memory.degraded);
    assert_eq!(memory.sources, vec!["cgroup"]);
}

#[test]
fn throttling_is_measured_between_readings() {
    let mut cg = cgroup(10, None);
    cg.cpu = CpuStat {
        usage_usec: Some(5_000_000),
        user_usec: Some(4_000_000),
        system_usec: Some(1_000_000),
        nr_periods: Some(1_000),
        nr_throttled: Some(100),
        throttled_usec: Some(2_000_000),
    };
    cg.cpu_max = Some((Limit::Value(150_000), 100_000));
    let first = Reading {
        cgroup: Some(cg.clone()),
        ..Reading::default()
    };
    let (_, cpu) = evaluate(&config(), &first, None);
    assert!(!cpu.degraded, "10% since the start is below 20%");
    assert_eq!(cpu.signals.cgroup_cpu_throttled_ratio, Some(0.1));
    assert_eq!(cpu.signals.cgroup_cpu_throttled_ratio_threshold, Some(0.2));
    assert_eq!(cpu.signals.cgroup_cpu_quota_cores, Some(1.5));
    assert_eq!(cpu.signals.cgroup_cpu_period_usec, Some(100_000));

    // 100 more periods, 50 of them throttled: 50% over the last interval.
    cg.cpu.nr_periods = Some(1_100);
    cg.cpu.nr_throttled = Some(150);
    let second = Reading {
        cgroup: Some(cg.clone()),
        ..Reading::default()
    };
    let (_, cpu) = evaluate(&config(), &second, Some(&first));
    assert_eq!(cpu.sources, vec!["cgroup_throttling"]);
    assert_eq!(cpu.signals.cgroup_cpu_throttled_ratio, Some(0.5));
    assert_eq!(cpu.signals.cpu_pressure_sources, vec!["cgroup_throttling"]);

    // No period since: no throttling.
    let (_, cpu) = evaluate(&config(), &second, Some(&second));
    assert_eq!(cpu.signals.cgroup_cpu_throttled_ratio, Some(0.0));
    assert!(!cpu.degraded);
}

#[test]
fn an_unlimited_quota_has_a_period_but_no_cores() {
    let mut cg = cgroup(10, None);
    cg.cpu_max = Some((Limit::Unlimited, 100_000));
    let (_, cpu) = evaluate(
        &config(),
        &Reading {
            cgroup: Some(cg),
            ..Reading::default()
        },
        None,
    );
    assert_eq!(cpu.signals.cgroup_cpu_period_usec, Some(100_000));
    assert_eq!(cpu.signals.cgroup_cpu_quota_cores, None);
    assert_eq!(cpu.signals.cgroup_cpu_throttled_ratio, None);
}

#[test]
fn cpu_psi_of_host_or_cgroup_is_pressure() {
    let (_, calm) = evaluate(
        &config(),
        &Reading {
            host_cpu_psi: psi(49.9, 4.9),
            ..Reading::default()
        },
        None,
    );
    assert!(!calm.degraded);
    assert_eq!(calm.signals.linux_cpu_psi_some_avg10_threshold, Some(50.0));
    let (_, busy) = evaluate(
        &config(),
        &Reading {
            host_cpu_psi: psi(50.0, 0.0),
            ..Reading::default()
        },
        None,
    );
    assert_eq!(busy.sources, vec!["linux_psi"]);
    let mut cg = cgroup(10, None);
    cg.cpu_psi = psi(0.0, 5.0);
    let (_, cgroup_full) = evaluate(
        &config(),
        &Reading {
            cgroup: Some(cg),
            ..Reading::default()
        },
        None,
    );
    assert_eq!(cgroup_full.sources, vec!["linux_psi"]);
    assert_eq!(cgroup_full.signals.cgroup_cpu_psi_full_avg10, Some(5.0));
}

fn limit() -> impl Strategy<Value = Option<Limit>> {
    prop_oneof![
        Just(None),
        Just(Some(Limit::Unlimited)),
        any::<u64>().prop_map(|v| Some(Limit::Value(v))),
    ]
}

fn any_psi() -> impl Strategy<Value = Option<Psi>> {
    prop::option::of((0.0f64..=100.0, 0.0f64..=100.0).prop_map(|(s, f)| psi(s, f).unwrap()))
}

prop_compose! {
    fn any_cgroup()(
        current in prop::option::of(any::<u64>()),
        high in limit(),
        max in limit(),
        inactive in prop::option::of(any::<u64>()),
        swap in prop::option::of(any::<u64>()),
        swap_max in limit(),
        events in prop::array::uniform4(prop::option::of(any::<u64>())),
        memory_psi in any_psi(),
        cpu in prop::array::uniform6(prop::option::of(any::<u64>())),
        cpu_max in prop::option::of((limit(), 1u64..)),
        cpu_psi in any_psi(),
    ) -> CgroupReading {
        CgroupReading {
            version: 2,
            path: "/x".into(),
            memory_current: current,
            memory_high: high,
            memory_max: max,
            inactive_file: inactive,
            swap_current: swap,
            swap_max,
            events: MemoryEvents { high: events[0], max: events[1], oom: events[2], oom_kill: events[3] },
            memory_psi,
            cpu: CpuStat {
                usage_usec: cpu[0], user_usec: cpu[1], system_usec: cpu[2],
                nr_periods: cpu[3], nr_throttled: cpu[4], throttled_usec: cpu[5],
            },
            cpu_max: cpu_max.and_then(|(l, p)| l.map(|l| (l, p))),
            cpu_psi,
        }
    }
}

prop_compose! {
    fn any_reading()(
        rss in prop::option::of(any::<u64>()),
        host_memory_psi in any_psi(),
        host_cpu_psi in any_psi(),
        cgroup in prop::option::of(any_cgroup()),
    ) -> Reading {
        Reading { rss_bytes: rss, host_memory_psi, host_cpu_psi, cgroup }
    }
}

proptest! {
    #![proptest_config(crate::fuzz_config(1_024))]

    #[test]
    fn any_reading_gives_consistent_health(reading in any_reading(), previous in any_reading()) {
        let (memory, cpu) = evaluate(&config(), &reading, Some(&previous));
        prop_assert_eq!(memory.degraded, !memory.sources.is_empty());
        prop_assert_eq!(memory.critical, !memory.critical_sources.is_empty());
        prop_assert!(!memory.critical || memory.degraded, "critical implies pressure");
        prop_assert_eq!(&memory.signals.memory_pressure_sources, &memory.sources);
        prop_assert_eq!(cpu.degraded, !cpu.sources.is_empty());
        if let Some(ratio) = cpu.signals.cgroup_cpu_throttled_ratio {
            prop_assert!((0.0..=1.0).contains(&ratio));
        }
        // Everything serialises (no NaN or infinity reaches the wire).
        prop_assert!(serde_json::to_string(&memory).is_ok());
        prop_assert!(serde_json::to_string(&cpu).is_ok());
        for value in [
            memory.signals.cgroup_memory_pressure_ratio,
            memory.signals.cgroup_memory_working_set_ratio,
            memory.signals.cgroup_memory_swap_pressure_ratio,
            memory.signals.process_rss_pressure_ratio,
        ].into_iter().flatten() {
            prop_assert!(value.is_finite() && value >= 0.0);
        }
    }
}
