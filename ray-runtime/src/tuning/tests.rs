//! Learned caps and adaptive reduction.

use proptest::prelude::*;
use ray_core::config::{Profile, profile_defaults};

use super::*;

fn config() -> AdaptiveTuningConfig {
    // sub1b: 32 samples, 350 ms, 14 tok/s, at most 0.5, at least 64 tokens; 64 lengths per
    // family, 8 samples needed, p95 draft / p90 short, 24 tokens of headroom.
    profile_defaults(Profile::Sub1b).adaptive_tuning
}

fn outcome(family: u64, tokens: u64) -> Outcome {
    Outcome {
        family,
        completion_tokens: tokens,
        queue_time: Duration::ZERO,
        tokens_per_second: None,
    }
}

#[test]
fn the_cap_is_a_percentile_plus_headroom() {
    let mut samples = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
    // floor(9 × 0.95) = 8: the ninth smallest.
    assert_eq!(percentile_cap(&mut samples, 0.95, 24), 90 + 24);
    assert_eq!(percentile_cap(&mut samples, 1.0, 0), 100);
    assert_eq!(percentile_cap(&mut samples, 0.0, 5), 15);
    assert_eq!(percentile_cap(&mut [7], 0.9, 1), 8);
}

#[test]
fn caps_and_reductions_stay_within_their_floor_and_the_request() {
    assert_eq!(apply_cap(256, 40, 64), 64, "never below minOutputTokens");
    assert_eq!(apply_cap(32, 10, 64), 32, "nor above a smaller request");
    assert_eq!(apply_cap(256, 500, 64), 256, "a cap only lowers");
    assert_eq!(apply_cap(256, 100, 64), 100);
    assert_eq!(apply_reduction(256, 0.5, 64), 128);
    assert_eq!(apply_reduction(100, 0.5, 64), 64);
    assert_eq!(apply_reduction(40, 0.5, 64), 40);
    assert_eq!(apply_reduction(255, 0.1, 1), 229, "floored");
}

#[test]
fn reduction_follows_queue_latency_and_throughput() {
    let config = config();
    assert_eq!(reduction_for(None, None, &config), (0.0, None));
    assert_eq!(reduction_for(Some(350.0), Some(14.0), &config), (0.0, None));
    // Twice the queue threshold: 0.25 × (2 − 1).
    assert_eq!(
        reduction_for(Some(700.0), None, &config),
        (0.25, Some("queue_latency"))
    );
    // Half the minimum speed: 0.25 × (2 − 1).
    assert_eq!(
        reduction_for(None, Some(7.0), &config),
        (0.25, Some("throughput"))
    );
    // Both: the larger, capped at maxOutputReductionRatio.
    let (ratio, reason) = reduction_for(Some(3_500.0), Some(7.0), &config);
    assert_eq!((ratio, reason), (0.5, Some("queue_latency+throughput")));
}

#[test]
fn learned_caps_need_enough_samples_and_follow_the_lane() {
    let tuner = Tuner::new(&config());
    for tokens in [20, 22, 24, 26, 28, 30, 32] {
        tuner.record(outcome(7, tokens));
    }
    let early = tuner.learned_cap("k", 7, Lane::Draft, 256);
    assert!(!early.applied);
    assert_eq!(early.sample_count, 7);
    assert_eq!(early.learned_cap_tokens, None);

    tuner.record(outcome(7, 200));
    let draft = tuner.learned_cap("k", 7, Lane::Draft, 256);
    // 8 samples, p95: index floor(7 × 0.95) = 6 → 32, plus 24 = 56, raised to the floor 64.
    assert_eq!(draft.learned_cap_tokens, Some(56));
    assert_eq!((draft.applied, draft.applied_max_tokens), (true, 64));
    assert_eq!(draft.percentile, OrderedF64(0.95));
    let short = tuner.learned_cap("k", 7, Lane::Short, 256);
    assert_eq!(short.percentile, OrderedF64(0.9));
    assert_eq!(
        short.learned_cap_tokens,
        Some(56),
        "index floor(7 × 0.9) = 6"
    );
    assert!(
        !tuner.learned_cap("k", 8, Lane::Draft, 256).applied,
        "another family"
    );
    assert_eq!(tuner.health().learned_caps_applied, 2);
    assert_eq!(tuner.last_cap_ratio(), 0.25);
}

#[test]
fn a_family_remembers_its_last_lengths_only() {
    let mut config = config();
    config.family_history_size = 8;
    let tuner = Tuner::new(&config);
    for _ in 0..8 {
        tuner.record(outcome(1, 500));
    }
    for _ in 0..8 {
        tuner.record(outcome(1, 100));
    }
    let cap = tuner.learned_cap("k", 1, Lane::Draft, 1_000);
    assert_eq!(cap.sample_count, 8);
    assert_eq!(cap.learned_cap_tokens, Some(124), "the 500s are forgotten");
}

#[test]
fn the_family_table_is_bounded_and_keeps_recurring_families() {
    let tuner = Tuner::new(&config());
    for _ in 0..8 {
        tuner.record(outcome(42, 30));
        let _ = tuner.learned_cap("k", 42, Lane::Draft, 256);
    }
    // A flood of one-off prompt families.
    for family in 1_000..1_000 + 4 * MAX_FAMILIES as u64 {
        tuner.record(outcome(family, 10));
    }
    let health = tuner.health();
    assert!(health.learned_families as usize <= MAX_FAMILIES);
    assert_eq!(health.max_learned_families, 512);
    let cap = tuner.learned_cap("k", 42, Lane::Draft, 256);
    assert_eq!(
        cap.sample_count, 8,
        "the recurring family survived the flood"
    );
}

#[test]
fn recent_samples_drive_the_reduction_and_age_out() {
    let mut config = config();
    config.sample_size = 4;
    let tuner = Tuner::new(&config);
    for _ in 0..4 {
        tuner.record(Outcome {
            queue_time: Duration::from_millis(700),
            ..outcome(1, 10)
        });
    }
    let adaptive = tuner.adaptive(256);
    assert!(adaptive.reduced);
    assert_eq!(adaptive.reduction_ratio, OrderedF64(0.25));
    assert_eq!(adaptive.reason.as_deref(), Some("queue_latency"));
    assert_eq!(adaptive.applied_max_tokens, 192);
    let health = tuner.health();
    assert_eq!((health.samples, health.avg_queue_time_ms), (4, Some(700.0)));
    assert_eq!(health.reductions, 1);
    // Four fast executions push the slow ones out.
    for _ in 0..4 {
        tuner.record(Outcome {
            tokens_per_second: Some(40.0),
            ..outcome(1, 10)
        });
    }
    let adaptive = tuner.adaptive(256);
    assert!(!adaptive.reduced);
    assert_eq!(adaptive.reason, None);
    assert_eq!(tuner.health().avg_completion_tokens_per_second, Some(40.0));
}

#[test]
fn disabled_tuning_learns_and_changes_nothing() {
    let mut config = config();
    config.enabled = false;
    let tuner = Tuner::new(&config);
    for _ in 0..10 {
        tuner.record(Outcome {
            queue_time: Duration::from_secs(5),
            ..outcome(1, 10)
        });
    }
    assert!(!tuner.learned_cap("k", 1, Lane::Draft, 256).applied);
    assert!(!tuner.adaptive(256).reduced);
    let health = tuner.health();
    assert_eq!((health.samples, health.learned_families), (0, 0));
    assert!(!health.learned_family_cap_enabled);

    let mut config = super::tests::config();
    config.learned_family_cap_enabled = false;
    let tuner = Tuner::new(&config);
    for _ in 0..10 {
        tuner.record(outcome(1, 10));
    }
    assert!(!tuner.learned_cap("k", 1, Lane::Draft, 256).applied);
    assert_eq!(
        tuner.health().samples,
        10,
        "samples are still kept for the reduction"
    );
}

proptest! {
    #![proptest_config(crate::fuzz_config(1_024))]

    #[test]
    fn decisions_stay_within_bounds(
        max_tokens in 1u32..=2048,
        min_output in 1u32..=2048,
        cap in 0u32..5_000,
        ratio in -1.0f64..2.0,
        mut samples in prop::collection::vec(any::<u16>(), 1..64),
        percentile in 0.0f64..=1.0,
        headroom in 0u32..2048,
    ) {
        let floor = min_output.min(max_tokens);
        let capped = apply_cap(max_tokens, cap, min_output);
        prop_assert!(capped >= floor && capped <= max_tokens);
        let reduced = apply_reduction(max_tokens, ratio, min_output);
        prop_assert!(reduced >= floor && reduced <= max_tokens);
        let learned = percentile_cap(&mut samples, percentile, headroom);
        let highest = u32::from(*samples.iter().max().unwrap());
        let lowest = u32::from(*samples.iter().min().unwrap());
        prop_assert!(learned >= lowest + headroom && learned <= highest + headroom);
    }

    #[test]
    fn the_reduction_never_exceeds_its_maximum(
        queue in prop::option::of(0.0f64..1e7),
        tps in prop::option::of(0.0f64..1e4),
        max_ratio in 0.0f64..=1.0,
    ) {
        let mut config = config();
        config.max_output_reduction_ratio = max_ratio;
        let (ratio, reason) = reduction_for(queue, tps, &config);
        prop_assert!((0.0..=max_ratio).contains(&ratio));
        prop_assert_eq!(ratio > 0.0, ratio > 0.0 && reason.is_some());
    }
}
