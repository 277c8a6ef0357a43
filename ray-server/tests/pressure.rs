//! Memory and CPU pressure over real HTTP, read from a fabricated cgroup v2 tree: the clamps in
//! the response, `/readyz`, `/health`, `/metrics`, and the critical-memory refusal with its
//! status and `Retry-After` on every inference route.
#![allow(clippy::unwrap_used)]

mod util;

use std::path::PathBuf;
use std::time::Duration;

use ray_runtime::PressureSources;
use ray_server::HttpLimits;
use util::{TestServer, post};

const MIB: u64 = 1024 * 1024;

/// The gateway in `ray.service` under a 1 GiB limit, with host and cgroup PSI.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let host = Host {
            root: dir.path().to_path_buf(),
            _dir: dir,
        };
        host.write("proc/self/cgroup", "0::/system.slice/ray.service\n");
        host.write("proc/self/status", "VmRSS:\t    6144 kB\n");
        host.write("sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        host.memory(200);
        host.cgroup("memory.max", &(1024 * MIB).to_string());
        host.cgroup("memory.events", "high 0\nmax 0\noom 0\noom_kill 0\n");
        host.cgroup(
            "cpu.stat",
            "usage_usec 10\nnr_periods 10\nnr_throttled 0\nthrottled_usec 0\n",
        );
        host.cgroup("cpu.max", "150000 100000\n");
        for file in [
            "proc/pressure/memory",
            "proc/pressure/cpu",
            "sys/fs/cgroup/system.slice/ray.service/memory.pressure",
            "sys/fs/cgroup/system.slice/ray.service/cpu.pressure",
        ] {
            host.write(
                file,
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            );
        }
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

    fn memory(&self, mib: u64) {
        self.cgroup("memory.current", &(mib * MIB).to_string());
    }

    async fn server(&self) -> TestServer {
        TestServer::start_reading(
            r#"{"profile":"tiny","model":{"adapter":{"kind":"mock","latencyMs":0}}}"#,
            None,
            HttpLimits::default(),
            PressureSources::under(&self.root).with_sample_interval(Duration::ZERO),
        )
        .await
    }
}

#[tokio::test]
async fn critical_memory_is_refused_with_503_and_retry_after_on_every_inference_route() {
    let host = Host::new();
    let server = host.server().await;
    assert!(server.client().ready().await.unwrap().is_ready());

    host.memory(1_010);
    for (path, body) in [
        ("/v1/infer", r#"{"input":"x"}"#),
        ("/v1/infer", r#"{"input":"x","stream":true}"#),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
        ),
        ("/v1/completions", r#"{"prompt":"x"}"#),
    ] {
        let response = server.raw(&post(path, body)).await;
        assert_eq!(response.status, 503, "{path}: {}", response.body);
        assert_eq!(response.code(), "memory_pressure_critical", "{path}");
        assert_eq!(response.header("retry-after"), Some("5"), "{path}");
    }
    let readiness = server
        .raw(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(readiness.status, 503);
    let json = readiness.json();
    assert_eq!(json["pressure"]["memoryCritical"], true);
    assert_eq!(json["pressure"]["memory"], true);
    assert_eq!(json["providerStatus"], "ready");
    assert_eq!(
        json["reasons"],
        serde_json::json!(["memory_pressure", "memory_critical"])
    );
    // Liveness is unaffected: the process is fine, it is protecting itself.
    assert!(server.client().live().await.unwrap());

    let health: serde_json::Value = reqwest::get(server.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    let memory = &health["runtime"]["memory"];
    assert_eq!(memory["critical"], true);
    assert_eq!(memory["criticalSources"][0], "cgroup_working_set");
    assert_eq!(memory["cgroupVersion"], 2);
    assert_eq!(memory["cgroupMemoryLimitMiB"], 1024.0);
    assert_eq!(
        health["runtime"]["degradation"]["memoryCriticalRefusals"],
        4
    );
    assert_eq!(server.metric("ray_memory_critical").await, 1.0);
    assert_eq!(
        server.metric("ray_memory_critical_refusals_total").await,
        4.0
    );

    // It eases: work is accepted again and readiness comes back by itself.
    host.memory(300);
    let response = server.raw(&post("/v1/infer", r#"{"input":"x"}"#)).await;
    assert_eq!(response.status, 200);
    assert!(server.client().ready().await.unwrap().is_ready());
    server.stop().await;
}

#[tokio::test]
async fn every_signal_is_in_health_and_metrics_and_pressure_in_the_response() {
    let host = Host::new();
    let server = host.server().await;
    host.memory(950);
    host.write(
        "proc/pressure/cpu",
        "some avg10=62.50 avg60=40.00 avg300=10.00 total=123456789\nfull avg10=1.00 avg60=0.50 avg300=0.10 total=4567\n",
    );
    // The readings are in the full diagnostics, which the request asks for.
    let response = server
        .raw(&post("/v1/infer", r#"{"input":"x","diagnostics":true}"#))
        .await;
    let json = response.json();
    assert_eq!(json["degraded"], true);
    let degradation = &json["diagnostics"]["degradation"];
    assert_eq!(
        degradation["reasons"],
        serde_json::json!(["memory_pressure", "cpu_pressure"])
    );
    assert_eq!(
        degradation["memoryPressureSources"],
        serde_json::json!(["cgroup"])
    );
    assert_eq!(
        degradation["cpuPressureSources"],
        serde_json::json!(["linux_psi"])
    );
    assert_eq!(degradation["linuxCpuPsiSomeAvg10"], 62.5);
    assert_eq!(degradation["linuxCpuPsiSomeAvg10Threshold"], 50.0);
    assert_eq!(degradation["cgroupCpuQuotaCores"], 1.5);

    let readiness = server.client().ready().await.unwrap();
    assert!(readiness.is_ready());
    assert_eq!(readiness.reasons, vec!["memory_pressure", "cpu_pressure"]);

    let health: serde_json::Value = reqwest::get(server.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runtime = &health["runtime"];
    for field in [
        "processRssMiB",
        "memoryRssThresholdMiB",
        "processRssPressureRatio",
        "cgroupMemoryCurrentMiB",
        "cgroupMemoryLimitMiB",
        "cgroupMemoryPressureRatio",
        "cgroupMemoryPressureRatioThreshold",
        "cgroupMemoryWorkingSetMiB",
        "cgroupMemoryWorkingSetRatio",
        "cgroupMemoryCriticalRatioThreshold",
        "cgroupMemoryHighEvents",
        "cgroupMemoryMaxEvents",
        "cgroupMemoryOomEvents",
        "cgroupMemoryOomKillEvents",
        "linuxMemoryPsiSomeAvg10",
        "linuxMemoryPsiSomeAvg10Threshold",
        "linuxMemoryPsiFullAvg10",
        "linuxMemoryPsiFullAvg10Threshold",
        "cgroupMemoryPsiSomeAvg10",
        "cgroupMemoryPsiFullAvg10",
        "memoryPsiFullAvg10CriticalThreshold",
    ] {
        assert!(
            runtime["memory"][field].is_number(),
            "runtime.memory.{field}"
        );
    }
    for field in [
        "cgroupCpuUsageUsec",
        "cgroupCpuQuotaUsec",
        "cgroupCpuPeriodUsec",
        "cgroupCpuQuotaCores",
        "cgroupCpuPeriods",
        "cgroupCpuThrottledPeriods",
        "cgroupCpuThrottledUsec",
        "cgroupCpuThrottledRatio",
        "cgroupCpuThrottledRatioThreshold",
        "linuxCpuPsiSomeAvg10",
        "linuxCpuPsiSomeAvg10Threshold",
        "linuxCpuPsiFullAvg10",
        "linuxCpuPsiFullAvg10Threshold",
        "cgroupCpuPsiSomeAvg10",
        "cgroupCpuPsiFullAvg10",
    ] {
        assert!(runtime["cpu"][field].is_number(), "runtime.cpu.{field}");
    }
    assert_eq!(runtime["cpu"]["degraded"], true);
    assert_eq!(runtime["degradation"]["decisions"]["cpu_pressure"], 1);
    assert!(runtime["adaptive"]["maxLearnedFamilies"].is_number());

    let text = server.client().metrics_text().await.unwrap();
    util::exposition::check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, value) in [
        ("ray_memory_pressure", 1.0),
        ("ray_cpu_pressure", 1.0),
        (r#"ray_cpu_pressure_source{source="linux_psi"}"#, 1.0),
        (
            r#"ray_cpu_pressure_source{source="cgroup_throttling"}"#,
            0.0,
        ),
        ("ray_cgroup_memory_current_bytes", (950 * MIB) as f64),
        ("ray_cgroup_memory_max_bytes", (1024 * MIB) as f64),
        ("ray_cgroup_cpu_quota_cores", 1.5),
        (
            r#"ray_psi_avg10{resource="cpu",scope="host",kind="some"}"#,
            62.5,
        ),
        (
            r#"ray_psi_avg60{resource="cpu",scope="host",kind="some"}"#,
            40.0,
        ),
        (
            r#"ray_psi_stall_seconds_total{resource="cpu",scope="host",kind="some"}"#,
            123.456789,
        ),
        (
            r#"ray_psi_avg10_threshold{resource="memory",kind="full"}"#,
            1.0,
        ),
        (r#"ray_cgroup_memory_events_total{event="oom_kill"}"#, 0.0),
        (
            r#"ray_degradation_decisions_total{reason="cpu_pressure"}"#,
            1.0,
        ),
    ] {
        assert_eq!(util::metric_value(&text, name), Some(value), "{name}");
    }
    server.stop().await;
}
