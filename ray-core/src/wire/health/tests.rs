use super::*;

#[test]
fn readiness_orders_reasons_and_picks_the_status() {
    let pressure = PressureFlags {
        queue: true,
        gateway_http: true,
        ..PressureFlags::default()
    };
    let r = Readiness::new("ray-gateway", ProviderStatus::Warming, 3, 1, pressure);
    assert_eq!(
        r.reasons,
        vec![
            "provider_warming",
            "queue_pressure",
            "gateway_http_pressure"
        ]
    );
    assert_eq!(r.status, HealthStatus::Degraded);
    assert!(!r.is_ready(), "warming is not ready");
    let r = Readiness::new("s", ProviderStatus::Ready, 0, 0, PressureFlags::default());
    assert_eq!((r.status, r.is_ready()), (HealthStatus::Ok, true));
    let critical = PressureFlags {
        memory: true,
        memory_critical: true,
        ..PressureFlags::default()
    };
    let r = Readiness::new("s", ProviderStatus::Ready, 0, 0, critical);
    assert_eq!(r.reasons, vec!["memory_pressure", "memory_critical"]);
    assert_eq!(r.status, HealthStatus::Degraded);
    assert!(!r.is_ready(), "refusing new work is not ready");
    let r = Readiness::new(
        "s",
        ProviderStatus::Unavailable,
        0,
        0,
        PressureFlags::default(),
    );
    assert_eq!(r.status, HealthStatus::Unavailable);
    assert!(!r.is_ready());
}

#[test]
fn model_names_match_by_name_file_or_stem() {
    assert!(model_names_match("qwen", "qwen"));
    assert!(model_names_match("qwen", "/models/qwen.gguf"));
    assert!(model_names_match("/srv/qwen.gguf", "qwen.gguf"));
    assert!(!model_names_match("qwen", "llama"));
    let identity = ModelIdentity::check("ray-tiny", "ray-large", false);
    assert_eq!(identity.reason.as_deref(), Some("backend_model_mismatch"));
}

#[test]
fn a_mismatch_is_a_readiness_reason_after_the_providers() {
    let mut readiness = Readiness::new(
        "ray",
        ProviderStatus::Ready,
        0,
        0,
        PressureFlags {
            queue: true,
            ..PressureFlags::default()
        },
    );
    readiness.backend_model_mismatch = true;
    readiness.refresh();
    assert_eq!(
        readiness.reasons,
        ["backend_model_mismatch", "queue_pressure"]
    );
    assert_eq!(readiness.status, HealthStatus::Degraded);
    assert!(readiness.is_ready());
}
