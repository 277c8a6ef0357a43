//! Pressure signals read from a fabricated machine (a cgroup v2 tree and PSI files in a temporary
//! directory), through the whole runtime: the clamps and their diagnostics, health, readiness,
//! metrics, and the critical-memory refusal.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ray_core::ErrorCode;
use ray_core::config::ConfigLoader;
use ray_core::wire::{InferRequest, ProviderStatus};
use ray_runtime::{PressureSources, Runtime};

const MIB: u64 = 1024 * 1024;

/// A machine whose gateway runs in `ray.service` under a 1 GiB limit, with PSI files.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let host = Host { _dir: dir, root };
        host.write("proc/self/cgroup", "0::/system.slice/ray.service\n");
        host.write(
            "proc/self/status",
            "Name:\tray-server\nVmRSS:\t    8192 kB\n",
        );
        host.write("sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        host.memory(100, 0);
        host.cgroup("memory.max", &(1024 * MIB).to_string());
        host.cgroup("memory.high", "max");
        host.cgroup("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
        host.cgroup("memory.swap.current", "0");
        host.cgroup("memory.swap.max", "max");
        host.cgroup("cpu.max", "max 100000");
        host.cpu_stat(0, 0);
        host.psi("proc/pressure/memory", 0.0, 0.0);
        host.psi("proc/pressure/cpu", 0.0, 0.0);
        host.psi(
            "sys/fs/cgroup/system.slice/ray.service/memory.pressure",
            0.0,
            0.0,
        );
        host.psi(
            "sys/fs/cgroup/system.slice/ray.service/cpu.pressure",
            0.0,
            0.0,
        );
        host
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn cgroup(&self, file: &str, contents: &str) {
        self.write(
            &format!("sys/fs/cgroup/system.slice/ray.service/{file}"),
            contents,
        );
    }

    /// `memory.current` and the reclaimable `inactive_file`, in MiB.
    fn memory(&self, current_mib: u64, inactive_mib: u64) {
        self.cgroup("memory.current", &(current_mib * MIB).to_string());
        self.cgroup(
            "memory.stat",
            &format!(
                "anon {}\ninactive_file {}\n",
                current_mib * MIB,
                inactive_mib * MIB
            ),
        );
    }

    fn cpu_stat(&self, periods: u64, throttled: u64) {
        self.cgroup(
            "cpu.stat",
            &format!(
                "usage_usec 5000000\nuser_usec 4000000\nsystem_usec 1000000\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {}\n",
                throttled * 1_000
            ),
        );
    }

    fn psi(&self, relative: &str, some: f64, full: f64) {
        self.write(
            relative,
            &format!(
                "some avg10={some:.2} avg60=0.00 avg300=0.00 total=100\nfull avg10={full:.2} avg60=0.00 avg300=0.00 total=50\n"
            ),
        );
    }

    fn sources(&self) -> PressureSources {
        PressureSources::under(&self.root).with_sample_interval(Duration::ZERO)
    }
}

fn runtime(host: &Host, extra: &str) -> Runtime {
    let config = ConfigLoader::new()
        .with_json(
            "t",
            format!(
                r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":0}}}}{extra}}}"#
            ),
        )
        .load()
        .unwrap()
        .config;
    Runtime::builder(config)
        .pressure_sources(host.sources())
        .build()
        .unwrap()
}

fn uncached(input: &str) -> InferRequest {
    InferRequest {
        cache: Some(false),
        ..InferRequest::new(input)
    }
}

fn metric(runtime: &Runtime, name: &str) -> Option<f64> {
    runtime
        .metrics()
        .to_prometheus_text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
}

#[tokio::test]
async fn a_calm_cgroup_is_read_and_reported_everywhere() {
    let host = Host::new();
    let runtime = runtime(&host, "");
    let response = runtime.infer(uncached("hello")).await.unwrap();
    assert!(!response.degraded);
    let memory = serde_json::to_value(&response.diagnostics.degradation).unwrap();
    assert_eq!(memory["cgroupMemoryCurrentMiB"], 100.0);
    assert_eq!(memory["cgroupMemoryLimitMiB"], 1024.0);
    assert_eq!(memory["cgroupMemoryWorkingSetRatio"], 0.0977);
    assert_eq!(memory["processRssMiB"], 8.0);
    assert_eq!(memory["linuxMemoryPsiFullAvg10"], 0.0);
    assert_eq!(memory["cgroupCpuThrottledRatio"], 0.0);
    assert!(memory.get("memoryPressureSources").is_none());

    let health = runtime.health().await;
    assert_eq!(health.runtime.memory.cgroup_version, Some(2));
    assert_eq!(
        health.runtime.memory.cgroup_path.as_deref(),
        Some("/system.slice/ray.service")
    );
    assert!(!health.runtime.memory.degraded && !health.runtime.cpu.degraded);
    assert_eq!(
        metric(&runtime, "ray_cgroup_memory_current_bytes"),
        Some((100 * MIB) as f64)
    );
    assert_eq!(
        metric(
            &runtime,
            r#"ray_psi_avg10{resource="memory",scope="cgroup",kind="full"}"#
        ),
        Some(0.0)
    );
    assert_eq!(metric(&runtime, "ray_memory_pressure"), Some(0.0));
}

#[tokio::test]
async fn cgroup_memory_pressure_clamps_the_output_and_says_why() {
    let host = Host::new();
    let runtime = runtime(&host, "");
    host.memory(950, 0);
    let response = runtime.infer(uncached("hello")).await.unwrap();
    assert!(response.degraded);
    let degradation = &response.diagnostics.degradation;
    assert_eq!(degradation.reasons, vec!["memory_pressure"]);
    assert_eq!(degradation.memory.memory_pressure_sources, vec!["cgroup"]);
    assert_eq!(
        degradation.applied_max_tokens, 96,
        "tiny degradeToMaxTokens"
    );
    assert_eq!(
        degradation.memory.cgroup_memory_pressure_ratio,
        Some(0.9277)
    );
    assert_eq!(
        degradation.memory.cgroup_memory_pressure_ratio_threshold,
        Some(0.9)
    );
    let readiness = runtime.readiness().await;
    assert!(readiness.pressure.memory && !readiness.pressure.memory_critical);
    assert!(readiness.reasons.contains(&"memory_pressure".to_string()));
    assert!(readiness.is_ready(), "pressure alone does not stop serving");
    let health = runtime.health().await;
    assert_eq!(health.runtime.degradation.decisions["memory_pressure"], 1);
    assert_eq!(metric(&runtime, "ray_memory_pressure"), Some(1.0));
    assert_eq!(
        metric(&runtime, r#"ray_memory_pressure_source{source="cgroup"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &runtime,
            r#"ray_degradation_decisions_total{reason="memory_pressure"}"#
        ),
        Some(1.0)
    );

    // It eases: requests are whole again.
    host.memory(200, 0);
    assert!(!runtime.infer(uncached("hello")).await.unwrap().degraded);
}

#[tokio::test]
async fn a_new_oom_event_is_memory_pressure() {
    let host = Host::new();
    let runtime = runtime(&host, "");
    assert!(!runtime.infer(uncached("a")).await.unwrap().degraded);
    host.cgroup("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
    let response = runtime.infer(uncached("b")).await.unwrap();
    assert_eq!(
        response
            .diagnostics
            .degradation
            .memory
            .cgroup_memory_oom_kill_events_delta,
        Some(1)
    );
    assert!(response.degraded);
    // Nothing new since: no pressure.
    assert!(!runtime.infer(uncached("c")).await.unwrap().degraded);
}

#[tokio::test]
async fn cpu_throttling_and_cpu_psi_clamp_the_output() {
    let host = Host::new();
    let runtime = runtime(&host, "");
    assert!(!runtime.infer(uncached("a")).await.unwrap().degraded);
    // 100 more periods, 30 of them throttled: 30% against a 20% threshold.
    host.cpu_stat(100, 30);
    let response = runtime.infer(uncached("b")).await.unwrap();
    let degradation = &response.diagnostics.degradation;
    assert_eq!(degradation.reasons, vec!["cpu_pressure"]);
    assert_eq!(
        degradation.cpu.cpu_pressure_sources,
        vec!["cgroup_throttling"]
    );
    assert_eq!(degradation.cpu.cgroup_cpu_throttled_ratio, Some(0.3));

    host.cpu_stat(100, 30);
    host.psi("proc/pressure/cpu", 75.0, 0.0);
    let response = runtime.infer(uncached("c")).await.unwrap();
    assert_eq!(
        response.diagnostics.degradation.cpu.cpu_pressure_sources,
        vec!["linux_psi"]
    );
    let health = runtime.health().await;
    assert_eq!(health.runtime.cpu.sources, vec!["linux_psi"]);
    assert!(runtime.readiness().await.pressure.cpu);
}

#[tokio::test]
async fn critical_memory_refuses_new_work_but_cache_hits_are_answered() {
    let host = Host::new();
    let runtime = runtime(&host, "");
    let cached = runtime
        .infer(InferRequest::new("remember me"))
        .await
        .unwrap();
    assert!(!cached.cached);

    // 1000 of 1024 MiB and nothing reclaimable: a working set of 0.977 of the limit.
    host.memory(1_000, 0);
    let error = runtime.infer(uncached("new work")).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::MemoryPressureCritical);
    assert_eq!(error.status(), 503);
    assert_eq!(error.retry_after_secs(), Some(5));
    let details = error.details().unwrap();
    assert_eq!(details["criticalSources"][0], "cgroup_working_set");
    assert_eq!(details["criticalCgroupMemoryRatio"], 0.97);

    let hit = runtime
        .infer(InferRequest::new("remember me"))
        .await
        .unwrap();
    assert!(hit.cached, "the cache still answers");

    let readiness = runtime.readiness().await;
    assert!(readiness.pressure.memory_critical);
    assert!(!readiness.is_ready(), "refusing work is not ready");
    assert_eq!(readiness.provider_status, ProviderStatus::Ready);
    assert!(readiness.reasons.contains(&"memory_critical".to_string()));
    let health = runtime.health().await;
    assert!(health.runtime.memory.critical);
    assert_eq!(
        health.runtime.memory.critical_sources,
        vec!["cgroup_working_set"]
    );
    assert_eq!(health.runtime.degradation.memory_critical_refusals, 1);
    assert_eq!(metric(&runtime, "ray_memory_critical"), Some(1.0));
    assert_eq!(
        metric(&runtime, "ray_memory_critical_refusals_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &runtime,
            r#"ray_request_errors_total{code="memory_pressure_critical"}"#
        ),
        Some(1.0)
    );

    // The same use, but most of it reclaimable page cache: not critical, only pressure.
    host.memory(1_000, 300);
    let response = runtime.infer(uncached("new work")).await.unwrap();
    assert!(response.degraded);
    assert!(runtime.readiness().await.is_ready());
}

#[tokio::test]
async fn stalls_on_memory_are_critical_too_and_streams_are_refused_alike() {
    let host = Host::new();
    let runtime = runtime(&host, "");
    host.psi("proc/pressure/memory", 80.0, 30.0);
    let error = runtime.infer(uncached("x")).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::MemoryPressureCritical);
    assert_eq!(error.details().unwrap()["memoryPsiFullAvg10"], 30.0);
    let streamed = runtime.infer_stream(uncached("y")).await;
    assert_eq!(
        streamed.err().map(|e| e.code()),
        Some(ErrorCode::MemoryPressureCritical)
    );
    host.psi("proc/pressure/memory", 80.0, 20.0);
    let response = runtime.infer(uncached("z")).await.unwrap();
    assert_eq!(
        response
            .diagnostics
            .degradation
            .memory
            .memory_pressure_sources,
        vec!["linux_psi"]
    );
}

#[tokio::test]
async fn with_the_refusal_off_critical_memory_only_clamps() {
    let host = Host::new();
    let runtime = runtime(
        &host,
        r#","gracefulDegradation":{"refuseOnCriticalMemory":false}"#,
    );
    host.memory(1_020, 0);
    let response = runtime.infer(uncached("x")).await.unwrap();
    assert!(response.degraded);
    let health = runtime.health().await;
    assert!(health.runtime.memory.critical, "still reported");
    let readiness = runtime.readiness().await;
    assert!(!readiness.pressure.memory_critical && readiness.is_ready());
}

#[tokio::test]
async fn a_machine_without_cgroups_or_psi_reports_only_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigLoader::new()
        .with_json("t", r#"{"profile":"tiny"}"#)
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::builder(config)
        .pressure_sources(PressureSources::under(dir.path()))
        .build()
        .unwrap();
    let response = runtime.infer(InferRequest::new("x")).await.unwrap();
    let degradation = serde_json::to_value(&response.diagnostics.degradation).unwrap();
    let keys: Vec<&str> = degradation
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "applied",
            "reasons",
            "requestedMaxTokens",
            "appliedMaxTokens",
            "queueDepth",
            "queueDepthThreshold",
            "memoryRssThresholdMiB"
        ]
    );
    let health = runtime.health().await;
    assert_eq!(health.runtime.memory.cgroup_version, None);
    let text = runtime.metrics().to_prometheus_text();
    assert!(text.contains("# TYPE ray_cgroup_memory_current_bytes gauge\n"));
    assert!(!text.contains("\nray_cgroup_memory_current_bytes "));
    assert!(Path::new(dir.path()).read_dir().unwrap().next().is_none());
}

#[tokio::test]
async fn learned_caps_and_adaptive_reduction_show_in_health_and_metrics() {
    let host = Host::new();
    // sub1b's tuning (8 samples per family, p95 + 24) over the instant mock.
    let config = ConfigLoader::new()
        .with_json(
            "t",
            r#"{"profile":"sub1b","model":{"warmOnBoot":false,"adapter":{"kind":"mock","latencyMs":0}}}"#,
        )
        .load()
        .unwrap()
        .config;
    let runtime = Runtime::builder(config)
        .pressure_sources(host.sources())
        .build()
        .unwrap();
    let request = |n: usize| InferRequest {
        metadata: Some([("promptFamily".to_string(), "tickets".to_string())].into()),
        ..uncached(&format!("ticket {n}"))
    };
    for n in 0..8 {
        let response = runtime.infer(request(n)).await.unwrap();
        assert!(!response.diagnostics.learned_output_cap.applied);
        assert_eq!(
            response.diagnostics.learned_output_cap.sample_count,
            n as u32
        );
    }
    let response = runtime.infer(request(8)).await.unwrap();
    let cap = &response.diagnostics.learned_output_cap;
    assert!(cap.applied, "{cap:?}");
    assert_eq!(cap.applied_max_tokens, 64, "the floor, minOutputTokens");
    let health = runtime.health().await;
    assert_eq!(health.runtime.adaptive.learned_families, 1);
    assert_eq!(health.runtime.adaptive.learned_caps_applied, 1);
    assert_eq!(health.runtime.adaptive.samples, 9);
    assert_eq!(
        metric(&runtime, "ray_learned_output_cap_applied_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&runtime, "ray_learned_output_cap_max_tokens_ratio"),
        Some(0.25)
    );
    assert_eq!(metric(&runtime, "ray_adaptive_reduction_ratio"), Some(0.0));
}
