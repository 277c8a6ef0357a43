use std::sync::Arc;
use std::time::Duration;

use ray_core::config::{ConfigLoader, ValidConfig};
use ray_core::wire::InferRequest;

use super::*;

fn config(json: &str) -> ValidConfig {
    ConfigLoader::new()
        .with_json("test", json)
        .load()
        .expect("valid test config")
        .config
}

const TWO: &str = r#"{"profile":"tiny","models":[
    {"id":"a","adapter":{"kind":"mock","latencyMs":0,"seed":"a"}},
    {"id":"b","adapter":{"kind":"mock","latencyMs":0,"seed":"b"}}]}"#;

fn request(model: &str) -> InferRequest {
    InferRequest {
        input: Some("hello".into()),
        model: Some(model.into()),
        ..InferRequest::default()
    }
}

#[tokio::test]
async fn a_reload_adds_changes_and_removes_models_and_keeps_the_unchanged_entries() {
    let runtime = Runtime::new(config(TWO)).unwrap();
    let kept = runtime.live().registry.get("a").unwrap().clone();
    let report = runtime
        .reload(config(
            r#"{"profile":"tiny","models":[
            {"id":"a","adapter":{"kind":"mock","latencyMs":0,"seed":"a"}},
            {"id":"c","adapter":{"kind":"mock","latencyMs":0,"seed":"c"}}],
            "rateLimit":{"enabled":true,"maxRequests":7,"windowMs":60000}}"#,
        ))
        .await
        .unwrap();
    assert!(report.changed);
    assert_eq!(report.models_added, vec!["c"]);
    assert_eq!(report.models_removed, vec!["b"]);
    assert!(report.models_changed.is_empty());
    assert!(report.not_applied.is_empty(), "{report:?}");
    assert!(report.applied.contains(&"models".to_string()));
    assert!(report.applied.contains(&"rateLimit".to_string()));
    assert_eq!(runtime.model_ids(), vec!["a", "c"]);
    assert!(Arc::ptr_eq(
        runtime.live().registry.get("a").unwrap(),
        &kept
    ));
    let limiter = runtime.rate_limiter().unwrap();
    assert_eq!(limiter.check(&limiter.key("127.0.0.1", None)).limit, 7);
    assert!(runtime.infer(request("c")).await.is_ok());
    let gone = runtime.infer(request("b")).await.unwrap_err();
    assert_eq!(gone.code(), ray_core::ErrorCode::ModelNotFound, "{gone}");
}

#[tokio::test]
async fn a_changed_model_gets_a_new_entry_and_a_request_in_progress_finishes_on_the_old_one() {
    let slow = r#"{"profile":"tiny","models":[
        {"id":"a","adapter":{"kind":"mock","latencyMs":400,"seed":"a"}}]}"#;
    let runtime = Runtime::new(config(slow)).unwrap();
    let old = runtime.live().registry.get("a").unwrap().clone();
    let running = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.infer(request("a")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(old.scheduler.snapshot().in_flight, 1);
    let report = runtime
        .reload(config(
            r#"{"profile":"tiny","models":[
            {"id":"a","maxOutputTokens":64,"adapter":{"kind":"mock","latencyMs":0,"seed":"a"}}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(report.models_changed, vec!["a"]);
    let new = runtime.live().registry.get("a").unwrap().clone();
    assert!(!Arc::ptr_eq(&old, &new));
    assert_eq!(runtime.max_output_tokens(Some("a")), 64);
    // The request that started before the reload finishes, on the entry it started on.
    let answer = running
        .await
        .unwrap()
        .expect("the request in progress is not cut");
    assert_eq!(answer.model, "a");
    assert_eq!(old.scheduler.snapshot().in_flight, 0);
    assert_eq!(new.scheduler.snapshot().in_flight, 0);
}

#[tokio::test]
async fn parts_built_at_start_keep_running_and_are_named() {
    let runtime = Runtime::new(config(TWO)).unwrap();
    let report = runtime
        .reload(config(
            r#"{"profile":"tiny","server":{"port":9999},"cache":{"enabled":false},
            "models":[
            {"id":"a","adapter":{"kind":"mock","latencyMs":0,"seed":"a"}},
            {"id":"b","adapter":{"kind":"mock","latencyMs":0,"seed":"b"}}]}"#,
        ))
        .await
        .unwrap();
    let fields: Vec<&str> = report
        .not_applied
        .iter()
        .map(|n| n.field.as_str())
        .collect();
    assert_eq!(fields, vec!["server", "cache"], "{report:?}");
    assert!(report.not_applied[0].reason.contains("restart"));
    assert!(!report.changed, "nothing else changed: {report:?}");
    assert_ne!(runtime.config().server.port, 9999);
    assert!(runtime.config().cache.enabled);
}

/// `TWO` without `b`, with a supervised llama.cpp model `m` (the `sub1b` profile's, with
/// `ctx` as its context) and, with `rule`, a routing rule to it.
fn with_supervised(ctx: u32, rule: bool) -> ValidConfig {
    let mut config = config(TWO).get().clone();
    config.models.truncate(1);
    let mut m = ValidConfig::from_profile(ray_core::config::Profile::Sub1b)
        .model
        .clone();
    m.id = "m".into();
    m.warm_on_boot = false;
    let ray_core::config::AdapterConfig::LlamaCpp(adapter) = &mut m.adapter else {
        panic!("sub1b's model is a llama.cpp one");
    };
    let launch = adapter
        .launch_profile
        .as_mut()
        .expect("sub1b has a launch profile");
    launch.supervise = true;
    launch.ctx_size = ctx;
    config.models.push(m);
    if rule {
        config.routing =
            serde_json::from_str(r#"{"rules":[{"name":"to-m","tasks":["classify"],"model":"m"}]}"#)
                .unwrap();
    }
    ValidConfig::new(config).expect("valid alone").0
}

#[tokio::test]
async fn a_config_that_is_invalid_once_the_running_parts_are_kept_changes_nothing() {
    let runtime = Runtime::new(config(TWO)).unwrap();
    let before = runtime.config();
    // Valid alone; but its supervised model waits for a restart, and its rule then names a
    // model the gateway does not have.
    let error = runtime
        .reload(with_supervised(2048, true))
        .await
        .unwrap_err();
    assert!(matches!(error, ReloadError::Invalid(_)), "{error}");
    assert!(error.to_string().contains("routing"), "{error}");
    assert_eq!(runtime.config(), before);
    assert_eq!(runtime.model_ids(), vec!["a", "b"]);
}

#[tokio::test]
async fn a_supervised_model_keeps_its_running_definition() {
    let runtime = Runtime::new(with_supervised(2048, false)).unwrap();
    let report = runtime.reload(with_supervised(4096, false)).await.unwrap();
    assert_eq!(report.not_applied.len(), 1, "{report:?}");
    assert_eq!(report.not_applied[0].field, "models[m]");
    assert!(report.not_applied[0].reason.contains("llama-server"));
    assert!(!report.changed);
    let running = runtime.config();
    let m = running.find_model("m").unwrap();
    assert_eq!(m.adapter.launch_profile().unwrap().ctx_size, 2048);
}
