//! Tests of request planning.

use ray_core::config::{CacheKeyStrategy, Profile, profile_defaults};
use ray_core::wire::{InferRequest, Lane, ResponseFormatKind, TemplateValue};

use super::*;
use crate::pressure::PressureSnapshot;

/// Plans `request` for the config's `model` under the decision `pressure` leads to.
fn plan(
    config: &RayConfig,
    request: InferRequest,
    pressure: &PressureSnapshot,
    tuner: &Tuner,
    options: PlanOptions,
) -> Result<Plan, RayError> {
    let decision = crate::degrade::decide(config, pressure.clone(), false);
    super::plan(config, &config.model, request, &decision, tuner, options)
}

fn calm() -> PressureSnapshot {
    PressureSnapshot::default()
}

fn tuner(config: &ray_core::config::RayConfig) -> Tuner {
    Tuner::new(&config.adaptive_tuning)
}

fn plan_for(json: &str) -> Result<Plan, RayError> {
    let config = profile_defaults(Profile::Sub1b);
    let request: InferRequest = serde_json::from_str(json).unwrap();
    plan(
        &config,
        request,
        &calm(),
        &tuner(&config),
        PlanOptions::default(),
    )
}

#[test]
fn applies_the_documented_defaults_and_clamps() {
    let p = plan_for(r#"{"input":"  hello  ","temperature":9,"topP":0}"#).unwrap();
    assert_eq!(p.input, "hello");
    assert_eq!(p.max_tokens, 256);
    assert_eq!((p.temperature, p.top_p), (2.0, 0.1));
    assert_eq!(p.lane, Lane::Draft);
    let p = plan_for(r#"{"input":"x","maxTokens":0}"#).unwrap();
    assert_eq!(p.max_tokens, 1);
    assert_eq!(p.lane, Lane::Short);
    let p = plan_for(r#"{"input":"x","maxTokens":100000}"#).unwrap();
    assert_eq!(p.max_tokens, 256);
}

#[test]
fn templates_render_and_set_their_metadata() {
    let p = plan_for(
        r#"{"templateId":"email.reply_classification.v1","templateVariables":{"replyText":"Send pricing."},
            "metadata":{"promptFamily":"mine"}}"#,
    )
    .unwrap();
    assert!(p.input.contains("Send pricing."));
    assert_eq!(p.metadata["promptFamily"], "email.reply_classification");
    assert_eq!(p.metadata["promptLane"], "short");
    assert_eq!(p.response_format, ResponseFormatKind::JsonObject);
    assert_eq!(p.max_tokens, 80);
    assert_eq!(p.lane, Lane::Short);
    assert_eq!(p.family.label, "email.reply_classification");
    assert_eq!(p.task_routing.task_kind, "classification");
}

#[test]
fn unknown_templates_and_lanes_are_refused() {
    let error = plan_for(r#"{"templateId":"nope"}"#).unwrap_err();
    assert!(error.message().starts_with("templateId: unknown template"));
    let error = plan_for(r#"{"input":"x","metadata":{"promptLane":"fast"}}"#).unwrap_err();
    assert!(error.message().contains("promptLane"));
}

#[test]
fn queue_pressure_clamps_the_output() {
    let config = profile_defaults(Profile::Sub1b);
    let pressure = PressureSnapshot {
        queue_depth: 16,
        ..PressureSnapshot::default()
    };
    let p = plan(
        &config,
        InferRequest::new("x"),
        &pressure,
        &tuner(&config),
        PlanOptions::default(),
    )
    .unwrap();
    assert!(p.degraded);
    assert_eq!(p.max_tokens, 128);
    assert_eq!(p.degradation.reasons, vec!["queue_depth"]);
    assert_eq!(p.degradation.requested_max_tokens, 256);
    assert_eq!(p.lane, Lane::Draft, "the lane follows the requested size");
}

#[test]
fn long_prompts_keep_their_instructions() {
    let mut config = profile_defaults(Profile::Sub1b);
    config.graceful_degradation.max_prompt_chars = 100;
    let request = InferRequest {
        system: Some("Answer briefly.".into()),
        ..InferRequest::new("word ".repeat(100))
    };
    let p = plan(
        &config,
        request,
        &calm(),
        &tuner(&config),
        PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.system.as_deref(), Some("Answer briefly."));
    assert!(p.prompt_chars <= 100);
    assert!(
        p.input.ends_with("word"),
        "cut at a word boundary: {:?}",
        p.input
    );
    assert_eq!(p.degradation.reasons, vec!["prompt_length"]);
}

#[test]
fn cache_keys_follow_the_strategy() {
    let a = plan_for(r#"{"input":"x","temperature":0.1}"#).unwrap();
    let b = plan_for(r#"{"input":"x","temperature":0.7}"#).unwrap();
    let c = plan_for(r#"{"input":"  x\n\n\n"}"#).unwrap();
    assert_ne!(
        a.cache_key("m", CacheKeyStrategy::InputParams),
        b.cache_key("m", CacheKeyStrategy::InputParams)
    );
    assert_eq!(
        a.cache_key("m", CacheKeyStrategy::Input),
        b.cache_key("m", CacheKeyStrategy::Input)
    );
    assert_eq!(
        c.cache_key("m", CacheKeyStrategy::Input),
        a.cache_key("m", CacheKeyStrategy::Input),
        "the key is taken after normalisation"
    );
    assert_ne!(
        a.cache_key("m", CacheKeyStrategy::Input),
        a.cache_key("other-model", CacheKeyStrategy::Input)
    );
}

#[test]
fn cache_false_disables_implicit_dedupe_only() {
    let p = plan_for(r#"{"input":"x","cache":false}"#).unwrap();
    assert_eq!(p.dedupe_key(p.use_cache.then_some(1)), None);
    let p = plan_for(r#"{"input":"x","cache":false,"dedupeKey":"k"}"#).unwrap();
    assert!(p.dedupe_key(p.use_cache.then_some(1)).is_some());
    let p = plan_for(r#"{"input":"x"}"#).unwrap();
    assert_eq!(p.dedupe_key(p.use_cache.then_some(7)), Some(7));
    // The cache disabled in the config: no implicit dedupe either.
    assert_eq!(p.dedupe_key(None), None);
}

#[test]
fn template_values_of_any_type_render() {
    let config = profile_defaults(Profile::Sub1b);
    let request = InferRequest {
        template_id: Some("email.reply_rewrite.v1".into()),
        template_variables: Some(
            [
                ("replyText".to_string(), TemplateValue::Bool(true)),
                ("rewriteGoal".to_string(), TemplateValue::Number(7.into())),
            ]
            .into(),
        ),
        ..InferRequest::default()
    };
    let p = plan(
        &config,
        request,
        &calm(),
        &tuner(&config),
        PlanOptions::default(),
    )
    .unwrap();
    assert!(p.input.contains("Goal: 7"));
}

fn learned_tuner(config: &ray_core::config::RayConfig, family: u64, tokens: u64) -> Tuner {
    let tuner = tuner(config);
    for _ in 0..config.adaptive_tuning.learned_cap_min_samples {
        tuner.record(crate::tuning::Outcome {
            family,
            completion_tokens: tokens,
            queue_time: std::time::Duration::ZERO,
            tokens_per_second: None,
        });
    }
    tuner
}

#[test]
fn a_learned_cap_comes_before_the_pressure_clamps() {
    let config = profile_defaults(Profile::Sub1b);
    let request = || -> InferRequest {
        serde_json::from_str(r#"{"input":"x","metadata":{"promptFamily":"tickets"}}"#).unwrap()
    };
    let family = plan(
        &config,
        request(),
        &calm(),
        &tuner(&config),
        PlanOptions::default(),
    )
    .unwrap()
    .family
    .affinity;
    // This family's completions are 150 tokens: the cap is 150 + 24 headroom.
    let tuner = learned_tuner(&config, family, 150);
    let pressure = PressureSnapshot {
        queue_depth: 16,
        ..PressureSnapshot::default()
    };
    let p = plan(
        &config,
        request(),
        &pressure,
        &tuner,
        PlanOptions::default(),
    )
    .unwrap();
    let cap = &p.learned_output_cap;
    assert!(cap.applied);
    assert_eq!(cap.sample_count, 8);
    assert_eq!(cap.learned_cap_tokens, Some(174));
    assert_eq!(
        (cap.requested_max_tokens, cap.applied_max_tokens),
        (256, 174)
    );
    let clamp = &p.degradation;
    assert_eq!(
        (clamp.requested_max_tokens, clamp.applied_max_tokens),
        (174, 128)
    );
    assert_eq!(p.adaptive_tuning.requested_max_tokens, 128);
    assert_eq!(p.max_tokens, 128);

    // Warm-up requests are never capped.
    let internal = PlanOptions {
        internal: true,
        ..PlanOptions::default()
    };
    let p = plan(&config, request(), &calm(), &tuner, internal).unwrap();
    assert!(!p.learned_output_cap.applied);
    assert_eq!(p.max_tokens, 256);
}

#[test]
fn adaptive_reduction_comes_after_the_clamps() {
    let config = profile_defaults(Profile::Sub1b);
    let tuner = tuner(&config);
    // Executions waited three times the 350 ms threshold: 0.25 × (3 − 1) = 0.5.
    for _ in 0..4 {
        tuner.record(crate::tuning::Outcome {
            family: 1,
            completion_tokens: 10,
            queue_time: std::time::Duration::from_millis(1_050),
            tokens_per_second: None,
        });
    }
    let p = plan(
        &config,
        InferRequest::new("x"),
        &calm(),
        &tuner,
        PlanOptions::default(),
    )
    .unwrap();
    let adaptive = &p.adaptive_tuning;
    assert!(adaptive.reduced);
    assert_eq!(adaptive.reason.as_deref(), Some("queue_latency"));
    assert_eq!(adaptive.reduction_ratio.0, 0.5);
    assert_eq!(
        (adaptive.requested_max_tokens, adaptive.applied_max_tokens),
        (256, 128)
    );
    assert!(!p.degraded, "adaptive tuning is not a pressure clamp");
    assert_eq!(p.degradation.applied_max_tokens, 256);
    assert_eq!(p.max_tokens, 128);
    // A small request keeps at least its own size, never below minOutputTokens (64).
    let p = plan(
        &config,
        serde_json::from_str(r#"{"input":"x","maxTokens":100}"#).unwrap(),
        &calm(),
        &tuner,
        PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.max_tokens, 64);
}

#[test]
fn a_clamped_request_also_looks_under_its_unclamped_key() {
    let config = profile_defaults(Profile::Sub1b);
    let calm_plan = plan_for(r#"{"input":"same"}"#).unwrap();
    assert_eq!(
        calm_plan.unclamped_cache_key("m", CacheKeyStrategy::InputParams),
        None
    );
    let pressure = PressureSnapshot {
        queue_depth: 16,
        ..PressureSnapshot::default()
    };
    let clamped = plan(
        &config,
        InferRequest::new("same"),
        &pressure,
        &tuner(&config),
        PlanOptions::default(),
    )
    .unwrap();
    let strategy = CacheKeyStrategy::InputParams;
    assert_ne!(
        clamped.cache_key("m", strategy),
        calm_plan.cache_key("m", strategy)
    );
    assert_eq!(
        clamped.unclamped_cache_key("m", strategy),
        Some(calm_plan.cache_key("m", strategy))
    );
    assert_eq!(
        clamped.unclamped_cache_key("m", CacheKeyStrategy::Input),
        None,
        "maxTokens is not part of the key"
    );
}
