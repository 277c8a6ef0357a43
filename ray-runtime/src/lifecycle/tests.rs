#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn model(id: &str, footprint_mib: u64) -> LifecycleModel {
    LifecycleModel {
        id: id.into(),
        footprint_mib,
        resident: false,
        min_resident: Duration::ZERO,
        idle_unload: None,
        load_time: None,
    }
}

fn settings(budget_mib: u64) -> LifecycleSettings {
    LifecycleSettings {
        budget_mib,
        drain_timeout: ms(1_000),
        swap_batch_requests: 16,
        swap_batch: Duration::ZERO,
    }
}

fn loads(effects: &[Effect]) -> Vec<usize> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Load { model } => Some(*model),
            _ => None,
        })
        .collect()
}

fn unloads(effects: &[Effect]) -> Vec<usize> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Unload { model } => Some(*model),
            _ => None,
        })
        .collect()
}

fn served(effects: &[Effect]) -> Vec<WaiterId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Serve { waiter, .. } => Some(*waiter),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_loads_its_model_and_others_join_the_load() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(60);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    let Admission::Wait(first) = life.admit(0, t0, far) else {
        panic!("an unloaded model makes the request wait")
    };
    let Admission::Wait(second) = life.admit(0, t0 + ms(5), far) else {
        panic!("a loading model makes the request wait")
    };
    let effects = life.take_effects();
    assert_eq!(loads(&effects), vec![0], "one load for both: {effects:?}");
    assert_eq!(life.committed_mib(), 400);
    life.loaded(0, t0 + ms(700), Some(380));
    let effects = life.take_effects();
    assert_eq!(served(&effects), vec![first, second]);
    let status = &life.statuses()[0];
    assert_eq!(status.state, ModelState::Ready);
    assert_eq!(
        (status.resident_mib, status.footprint_measured),
        (380, true)
    );
    assert_eq!(
        (status.loads, status.in_flight, status.last_load_ms),
        (1, 2, Some(700))
    );
    assert_eq!(life.admit(0, t0 + ms(800), far), Admission::Go);
}

#[test]
fn a_model_larger_than_the_budget_is_refused_and_never_loaded() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(settings(1_000), vec![model("huge", 1_500)], t0);
    assert_eq!(
        life.admit(0, t0, t0 + Duration::from_secs(60)),
        Admission::Refused(Refusal::DoesNotFit {
            needed_mib: 1_500,
            budget_mib: 1_000
        })
    );
    assert!(loads(&life.take_effects()).is_empty());
}

#[test]
fn a_deadline_the_measured_load_cannot_meet_is_refused_at_once() {
    let t0 = Instant::now();
    let mut slow = model("slow", 400);
    slow.load_time = Some(ms(3_000));
    let mut life = Lifecycle::new(settings(1_000), vec![slow], t0);
    assert_eq!(
        life.admit(0, t0, t0 + ms(1_000)),
        Admission::Refused(Refusal::TooSlow {
            retry_after: ms(3_000)
        })
    );
    assert!(matches!(
        life.admit(0, t0, t0 + ms(5_000)),
        Admission::Wait(_)
    ));
    // While it loads, the wait left shrinks.
    assert_eq!(
        life.admit(0, t0 + ms(2_500), t0 + ms(2_800)),
        Admission::Refused(Refusal::TooSlow {
            retry_after: ms(500)
        })
    );
}

#[test]
fn an_idle_model_is_evicted_for_another_and_a_busy_one_drains_first() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(60);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 600), model("b", 600)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.take_effects();
    // a is busy: b's request makes a drain, not unload.
    let Admission::Wait(waiter) = life.admit(1, t0 + ms(20), far) else {
        panic!("b must wait")
    };
    let effects = life.take_effects();
    assert!(unloads(&effects).is_empty(), "{effects:?}");
    assert_eq!(life.state(0), Some(&ModelState::Draining));
    // A new request for a waits while it drains.
    assert!(matches!(
        life.admit(0, t0 + ms(25), far),
        Admission::Wait(_)
    ));
    life.finished(0, t0 + ms(30));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    life.unloaded(0, t0 + ms(40));
    assert_eq!(loads(&life.take_effects()), vec![1]);
    life.loaded(1, t0 + ms(50), None);
    assert_eq!(served(&life.take_effects()), vec![waiter]);
    // b is now busy and a waits: b drains as soon as its request ends.
    life.finished(1, t0 + ms(60));
    assert_eq!(unloads(&life.take_effects()), vec![1]);
    let status = &life.statuses()[0];
    assert_eq!((status.evictions, status.unloads), (1, 1));
}

fn batched(budget_mib: u64, requests: u32, batch_ms: u64) -> LifecycleSettings {
    LifecycleSettings {
        swap_batch_requests: requests,
        swap_batch: ms(batch_ms),
        ..settings(budget_mib)
    }
}

/// `a` loaded and busy with one request, `b` (which cannot load beside it) unloaded.
fn a_busy(settings: LifecycleSettings, t0: Instant) -> Lifecycle {
    let mut life = Lifecycle::new(settings, vec![model("a", 600), model("b", 600)], t0);
    life.admit(0, t0, t0 + Duration::from_secs(600));
    life.loaded(0, t0 + ms(10), None);
    life.take_effects();
    life
}

#[test]
fn a_busy_model_takes_its_batch_of_requests_before_it_drains() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = a_busy(batched(1_000, 3, 60_000), t0);
    let Admission::Wait(waiter) = life.admit(1, t0 + ms(20), far) else {
        panic!("b must wait")
    };
    assert_eq!(life.state(0), Some(&ModelState::Ready), "a's turn begins");
    // Three more requests for a go at once; the third ends its turn and it drains.
    for i in 0..3 {
        assert_eq!(
            life.admit(0, t0 + ms(30 + i), far),
            Admission::Go,
            "request {i}"
        );
    }
    assert_eq!(life.state(0), Some(&ModelState::Draining));
    let drained = life
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::Transition(t) if t.to == "draining" => Some(t.reason),
            _ => None,
        })
        .unwrap();
    assert!(drained.contains("after its turn (3 requests"), "{drained}");
    // The next one waits for a's next turn.
    assert!(matches!(
        life.admit(0, t0 + ms(40), far),
        Admission::Wait(_)
    ));
    for _ in 0..4 {
        life.finished(0, t0 + ms(50));
    }
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    life.unloaded(0, t0 + ms(60));
    assert_eq!(loads(&life.take_effects()), vec![1]);
    life.loaded(1, t0 + ms(70), None);
    assert_eq!(served(&life.take_effects()), vec![waiter]);
}

#[test]
fn a_busy_model_yields_when_its_batch_time_is_over() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = a_busy(batched(1_000, 1_000, 2_000), t0);
    assert!(matches!(
        life.admit(1, t0 + ms(20), far),
        Admission::Wait(_)
    ));
    life.tick(t0 + ms(1_000));
    assert_eq!(life.state(0), Some(&ModelState::Ready));
    assert_eq!(life.admit(0, t0 + ms(1_500), far), Admission::Go);
    life.tick(t0 + ms(2_030));
    assert_eq!(life.state(0), Some(&ModelState::Draining));
}

#[test]
fn the_wait_estimate_counts_the_turn_left_and_the_measured_load() {
    let t0 = Instant::now();
    let mut settings = batched(1_000, 100, 5_000);
    settings.drain_timeout = ms(1_000);
    let mut life = Lifecycle::new(
        settings,
        vec![
            model("a", 600),
            LifecycleModel {
                load_time: Some(ms(2_000)),
                ..model("b", 600)
            },
        ],
        t0,
    );
    life.admit(0, t0, t0 + Duration::from_secs(600));
    life.loaded(0, t0 + ms(10), None);
    // b's load takes 2 s, and a may still take requests for 5 s: 6 s are not enough.
    match life.admit(1, t0 + ms(20), t0 + ms(6_020)) {
        Admission::Refused(Refusal::TooSlow { retry_after }) => {
            assert_eq!(retry_after, ms(7_000));
        }
        other => panic!("{other:?}"),
    }
    // With a deadline past both it waits.
    assert!(matches!(
        life.admit(1, t0 + ms(20), t0 + ms(8_000)),
        Admission::Wait(_)
    ));
}

#[test]
fn pinned_and_young_models_stay_and_idle_ones_unload() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut pinned = model("pinned", 500);
    pinned.resident = true;
    let mut young = model("young", 400);
    young.min_resident = ms(1_000);
    young.idle_unload = Some(ms(500));
    let mut life = Lifecycle::new(
        settings(1_000),
        vec![pinned, young, model("other", 400)],
        t0,
    );
    life.start(t0);
    assert_eq!(loads(&life.take_effects()), vec![0]);
    life.loaded(0, t0 + ms(10), None);
    life.admit(1, t0 + ms(10), far);
    life.loaded(1, t0 + ms(20), None);
    life.finished(1, t0 + ms(30));
    life.take_effects();
    // other needs room; young is idle but inside minResidentMs, pinned never goes.
    let Admission::Wait(_) = life.admit(2, t0 + ms(100), far) else {
        panic!("other must wait")
    };
    assert!(unloads(&life.take_effects()).is_empty());
    life.tick(t0 + ms(1_020));
    assert_eq!(unloads(&life.take_effects()), vec![1]);
    life.unloaded(1, t0 + ms(1_030));
    assert_eq!(loads(&life.take_effects()), vec![2]);

    // idleUnloadMs: young alone, unused, goes after its idle time once past minResidentMs.
    let mut young = model("young", 400);
    young.min_resident = ms(1_000);
    young.idle_unload = Some(ms(500));
    let mut life = Lifecycle::new(settings(1_000), vec![young], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.finished(0, t0 + ms(20));
    life.take_effects();
    life.tick(t0 + ms(600));
    assert!(
        unloads(&life.take_effects()).is_empty(),
        "minResidentMs holds"
    );
    life.tick(t0 + ms(1_010));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
}

#[test]
fn a_drain_past_its_deadline_is_abandoned_without_cutting_work() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 600), model("b", 600)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.admit(1, t0 + ms(20), far);
    assert_eq!(life.state(0), Some(&ModelState::Draining));
    life.tick(t0 + ms(1_100));
    assert_eq!(life.state(0), Some(&ModelState::Ready));
    let effects = life.take_effects();
    assert!(unloads(&effects).is_empty(), "{effects:?}");
}

#[test]
fn a_measurement_above_the_estimate_evicts_idle_models_to_stay_in_budget() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400), model("b", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.finished(0, t0 + ms(20));
    life.admit(1, t0 + ms(30), far);
    life.take_effects();
    life.loaded(1, t0 + ms(40), Some(700));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
}

#[test]
fn a_crashed_model_fails_its_waiters_and_loads_again_later() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.exited(0, t0 + ms(20), "killed by signal 9".into());
    assert_eq!(life.state(0).map(ModelState::name), Some("failed"));
    assert_eq!(life.committed_mib(), 0);
    assert!(matches!(
        life.admit(0, t0 + ms(30), far),
        Admission::Refused(Refusal::LoadFailed { .. })
    ));
    life.take_effects();
    assert!(matches!(
        life.admit(0, t0 + ms(30) + FAILED_RETRY, far),
        Admission::Wait(_)
    ));
    assert_eq!(loads(&life.take_effects()), vec![0]);
}

#[test]
fn failures_in_a_row_double_the_retry_wait_up_to_its_cap_and_a_load_resets_it() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(3_600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..7 {
        let Admission::Wait(waiter) = life.admit(0, now, far) else {
            panic!("the retry wait is over: a request loads it");
        };
        life.take_effects();
        life.load_failed(0, now + ms(10), "exit status 1".into());
        let refused = life.take_effects().into_iter().find_map(|e| match e {
            Effect::Refuse {
                waiter: w,
                refusal: Refusal::LoadFailed { retry_after, .. },
            } if w == waiter => Some(retry_after),
            _ => None,
        });
        let wait = refused.expect("the waiting request is refused with the wait");
        // Within the wait, a request is refused at once.
        assert!(matches!(
            life.admit(0, now + ms(10) + wait - ms(1), far),
            Admission::Refused(Refusal::LoadFailed { .. })
        ));
        waits.push(wait.as_secs());
        now += ms(10) + wait;
    }
    assert_eq!(waits, vec![2, 4, 8, 16, 32, 60, 60]);
    // A load that succeeds starts the count again.
    life.admit(0, now, far);
    life.loaded(0, now + ms(10), None);
    life.exited(0, now + ms(20), "killed by signal 9".into());
    assert!(matches!(
        life.admit(0, now + ms(20) + FAILED_RETRY, far),
        Admission::Wait(_)
    ));
}

#[test]
fn after_its_retry_wait_a_failed_pinned_model_loads_again_and_another_counts_as_unloaded() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let pinned = LifecycleModel {
        resident: true,
        ..model("p", 300)
    };
    let mut life = Lifecycle::new(settings(1_000), vec![pinned, model("a", 300)], t0);
    life.start(t0);
    life.loaded(0, t0 + ms(10), None);
    life.admit(1, t0 + ms(10), far);
    life.loaded(1, t0 + ms(20), None);
    life.finished(1, t0 + ms(30));
    life.exited(0, t0 + ms(40), "killed by signal 9".into());
    life.exited(1, t0 + ms(40), "killed by signal 9".into());
    life.take_effects();
    // Within the wait, nothing happens without a request.
    life.tick(t0 + ms(40) + FAILED_RETRY - ms(1));
    assert!(loads(&life.take_effects()).is_empty());
    assert_eq!(life.state(0).map(ModelState::name), Some("failed"));
    // Then the pinned one loads by itself; the other waits for a request, as unloaded.
    life.tick(t0 + ms(40) + FAILED_RETRY);
    assert_eq!(loads(&life.take_effects()), vec![0]);
    assert_eq!(life.state(0), Some(&ModelState::Loading));
    assert_eq!(life.state(1), Some(&ModelState::Unloaded));
}

#[test]
fn closing_refuses_the_waiting_requests_and_loads_nothing_more() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let pinned = LifecycleModel {
        resident: true,
        ..model("p", 300)
    };
    let mut life = Lifecycle::new(settings(1_000), vec![pinned, model("a", 300)], t0);
    life.start(t0);
    life.loaded(0, t0 + ms(10), None);
    assert_eq!(life.admit(0, t0 + ms(20), far), Admission::Go);
    let Admission::Wait(waiter) = life.admit(1, t0 + ms(20), far) else {
        panic!("a waits for its load");
    };
    life.take_effects();
    life.close();
    let effects = life.take_effects();
    assert!(
        effects.contains(&Effect::Refuse {
            waiter,
            refusal: Refusal::ShuttingDown
        }),
        "{effects:?}"
    );
    assert_eq!(
        life.admit(0, t0 + ms(30), far),
        Admission::Refused(Refusal::ShuttingDown)
    );
    // The request in flight is not disturbed; a pinned model that dies is not loaded again.
    assert_eq!(life.state(0), Some(&ModelState::Ready));
    life.finished(0, t0 + ms(40));
    life.exited(0, t0 + ms(50), "killed by signal 9".into());
    life.tick(t0 + ms(50) + MAX_FAILED_RETRY);
    assert!(loads(&life.take_effects()).is_empty());
}

#[test]
fn a_changed_model_finishes_its_work_then_loads_again_with_its_new_definition() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), Some(380));
    life.finished(0, t0 + ms(15));
    life.take_effects();
    // One request in flight when the reload comes.
    assert_eq!(life.admit(0, t0 + ms(20), far), Admission::Go);
    life.reconfigure(0, model("a", 600), t0 + ms(30));
    assert_eq!(life.state(0).map(ModelState::name), Some("draining"));
    let effects = life.take_effects();
    assert!(
        unloads(&effects).is_empty(),
        "the request in flight is not cut"
    );
    // A new request waits for the new process.
    let Admission::Wait(waiter) = life.admit(0, t0 + ms(40), far) else {
        panic!("a request during the restart waits");
    };
    life.finished(0, t0 + ms(50));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    life.unloaded(0, t0 + ms(60));
    let effects = life.take_effects();
    assert_eq!(loads(&effects), vec![0]);
    // The driver learns of the new definition before the load that uses it.
    let at = |wanted: &Effect| effects.iter().position(|e| e == wanted).unwrap();
    assert!(at(&Effect::Reconfigured { model: 0 }) < at(&Effect::Load { model: 0 }));
    // The new definition counts: its estimate, not the old measurement.
    assert_eq!(life.status(0).unwrap().footprint_mib, 600);
    assert_eq!(life.committed_mib(), 600);
    life.loaded(0, t0 + ms(70), None);
    assert_eq!(served(&life.take_effects()), vec![waiter]);
    assert_eq!(life.status(0).unwrap().loads, 2);
}

#[test]
fn a_changed_model_without_a_process_takes_its_definition_at_once() {
    let t0 = Instant::now();
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    life.reconfigure(0, model("a", 700), t0);
    assert_eq!(life.state(0).map(ModelState::name), Some("unloaded"));
    assert_eq!(life.status(0).unwrap().footprint_mib, 700);
    assert_eq!(life.take_effects(), vec![Effect::Reconfigured { model: 0 }]);
    // A pinned one loads again at once.
    let pinned = LifecycleModel {
        resident: true,
        ..model("a", 300)
    };
    life.reconfigure(0, pinned, t0 + ms(1));
    assert_eq!(loads(&life.take_effects()), vec![0]);
}

#[test]
fn new_settings_apply_without_a_restart() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400), model("b", 300)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), Some(380));
    life.finished(0, t0 + ms(15));
    assert_eq!(life.admit(0, t0 + ms(20), far), Admission::Go);
    life.take_effects();
    // a, busy, now unloads after 100 ms idle; nothing restarts and its measurement stays.
    let idle = LifecycleModel {
        idle_unload: Some(ms(100)),
        footprint_mib: 999,
        ..model("a", 400)
    };
    life.retune(0, idle, t0 + ms(30));
    assert_eq!(life.state(0).map(ModelState::name), Some("ready"));
    assert!(life.take_effects().is_empty());
    assert_eq!(life.status(0).unwrap().footprint_mib, 380);
    life.finished(0, t0 + ms(40));
    life.tick(t0 + ms(90));
    assert!(
        unloads(&life.take_effects()).is_empty(),
        "idle for 50 ms only"
    );
    life.tick(t0 + ms(150));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    assert_eq!(life.status(0).unwrap().loads, 1);
    // b, unloaded, becomes resident: it loads at once.
    let pinned = LifecycleModel {
        resident: true,
        ..model("b", 300)
    };
    life.retune(1, pinned, t0 + ms(160));
    assert_eq!(loads(&life.take_effects()), vec![1]);
    assert!(life.status(1).unwrap().pinned);
}

#[test]
fn a_model_made_resident_keeps_its_memory_whatever_it_was_doing() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let pinned = |id: &str, mib: u64| LifecycleModel {
        resident: true,
        ..model(id, mib)
    };
    // a, busy, drains to make room for b (swap_batch 0): made resident, it stays.
    let mut life = Lifecycle::new(settings(500), vec![model("a", 400), model("b", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    let Admission::Wait(_) = life.admit(1, t0 + ms(20), far) else {
        panic!("b waits for a's memory");
    };
    assert_eq!(life.state(0).map(ModelState::name), Some("draining"));
    life.retune(0, pinned("a", 400), t0 + ms(30));
    assert_eq!(life.state(0).map(ModelState::name), Some("ready"));
    life.finished(0, t0 + ms(40));
    life.tick(t0 + ms(50));
    assert!(
        unloads(&life.take_effects()).is_empty(),
        "a pinned model is never evicted"
    );

    // a unloads when idle; made resident meanwhile, it loads again once stopped.
    let idle = LifecycleModel {
        idle_unload: Some(ms(100)),
        ..model("a", 400)
    };
    let mut life = Lifecycle::new(settings(500), vec![idle], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.finished(0, t0 + ms(20));
    life.tick(t0 + ms(200));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    life.retune(0, pinned("a", 400), t0 + ms(210));
    assert!(
        loads(&life.take_effects()).is_empty(),
        "its process is still stopping"
    );
    life.unloaded(0, t0 + ms(220));
    assert_eq!(loads(&life.take_effects()), vec![0]);

    // A failed model made resident keeps its retry wait.
    let mut life = Lifecycle::new(settings(500), vec![model("a", 400)], t0);
    life.admit(0, t0, far);
    life.take_effects();
    life.load_failed(0, t0 + ms(10), "no such file".into());
    life.retune(0, pinned("a", 400), t0 + ms(20));
    assert!(loads(&life.take_effects()).is_empty());
}

#[test]
fn new_settings_during_a_restart_go_with_the_new_definition() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    assert_eq!(life.admit(0, t0 + ms(20), far), Admission::Go);
    life.take_effects();
    life.reconfigure(0, model("a", 500), t0 + ms(30));
    let pinned = LifecycleModel {
        resident: true,
        ..model("a", 500)
    };
    life.retune(0, pinned, t0 + ms(40));
    assert_eq!(life.state(0).map(ModelState::name), Some("draining"));
    life.finished(0, t0 + ms(50));
    life.finished(0, t0 + ms(50));
    life.unloaded(0, t0 + ms(60));
    // The new definition, pinned, loads again at once with nobody waiting.
    assert_eq!(loads(&life.take_effects()), vec![0]);
    assert!(life.status(0).unwrap().pinned);
    assert_eq!(life.status(0).unwrap().footprint_mib, 500);
}

#[test]
fn a_removed_model_refuses_new_work_finishes_the_rest_and_stops() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(500), vec![model("a", 400), model("b", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    life.finished(0, t0 + ms(15));
    assert_eq!(life.admit(0, t0 + ms(20), far), Admission::Go);
    // b waits for a's memory.
    let Admission::Wait(b_waiter) = life.admit(1, t0 + ms(30), far) else {
        panic!("b waits");
    };
    life.take_effects();
    life.retire(0, t0 + ms(40));
    assert_eq!(life.state(0).map(ModelState::name), Some("draining"));
    assert_eq!(
        life.admit(0, t0 + ms(50), far),
        Admission::Refused(Refusal::Removed)
    );
    assert!(unloads(&life.take_effects()).is_empty());
    life.finished(0, t0 + ms(60));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    life.unloaded(0, t0 + ms(70));
    // Its memory goes to b; it never loads again.
    assert_eq!(loads(&life.take_effects()), vec![1]);
    life.loaded(1, t0 + ms(80), None);
    assert_eq!(served(&life.take_effects()), vec![b_waiter]);
    assert!(life.statuses().iter().all(|s| s.id != "a"));
    assert_eq!(life.index_of("a"), Some(0));
}

#[test]
fn a_model_removed_and_added_back_takes_its_old_place_after_its_old_process_stops() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    life.admit(0, t0, far);
    life.loaded(0, t0 + ms(10), None);
    // Its request is still in flight when a reload removes it and the next adds it back.
    life.retire(0, t0 + ms(20));
    life.revive(0, model("a", 500), t0 + ms(30));
    assert_eq!(life.index_of("a"), Some(0));
    let Admission::Wait(waiter) = life.admit(0, t0 + ms(40), far) else {
        panic!("a request waits for the new process");
    };
    life.take_effects();
    life.finished(0, t0 + ms(50));
    assert_eq!(unloads(&life.take_effects()), vec![0]);
    life.unloaded(0, t0 + ms(60));
    assert_eq!(loads(&life.take_effects()), vec![0]);
    assert_eq!(life.status(0).unwrap().footprint_mib, 500);
    life.loaded(0, t0 + ms(70), None);
    assert_eq!(served(&life.take_effects()), vec![waiter]);
}

#[test]
fn an_added_model_starts_unloaded_and_loads_on_demand() {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(600);
    let mut life = Lifecycle::new(settings(1_000), vec![model("a", 400)], t0);
    let index = life.add(model("b", 300), t0);
    assert_eq!(index, 1);
    assert_eq!(life.state(1).map(ModelState::name), Some("unloaded"));
    assert!(life.take_effects().is_empty());
    assert!(matches!(life.admit(1, t0 + ms(1), far), Admission::Wait(_)));
    assert_eq!(loads(&life.take_effects()), vec![1]);
}

// ---- property tests ----

/// The lifecycle settings of a model as its status shows them (for a reload's new definition).
fn model_of(status: &crate::lifecycle::ModelStatus) -> LifecycleModel {
    LifecycleModel {
        id: status.id.clone(),
        footprint_mib: status.footprint_mib,
        resident: status.pinned,
        min_resident: ms(0),
        idle_unload: None,
        load_time: status.last_load_ms.map(ms),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit {
        model: usize,
        deadline_ms: u64,
    },
    Finish {
        model: usize,
    },
    Cancel {
        nth: usize,
    },
    Advance {
        ms: u64,
    },
    Loaded {
        model: usize,
        measured_pct: Option<u64>,
    },
    LoadFailed {
        model: usize,
    },
    Unloaded {
        model: usize,
    },
    Exited {
        model: usize,
    },
    /// A reload changed the model's definition.
    Reconfigure {
        model: usize,
        footprint_mib: u64,
        resident: bool,
    },
    /// A reload changed only the model's settings.
    Retune {
        model: usize,
        resident: bool,
        idle_ms: Option<u64>,
        min_ms: u64,
    },
    /// A reload removed the model.
    Retire {
        model: usize,
    },
    /// A reload added back a model an earlier one removed.
    Revive {
        model: usize,
        footprint_mib: u64,
    },
    /// A reload added a model.
    Add {
        footprint_mib: u64,
        resident: bool,
    },
}

impl Op {
    /// The op with its model index taken modulo `models` (models come and go).
    fn within(self, models: usize) -> Op {
        match self {
            Op::Admit { model, deadline_ms } => Op::Admit {
                model: model % models,
                deadline_ms,
            },
            Op::Finish { model } => Op::Finish {
                model: model % models,
            },
            Op::Loaded {
                model,
                measured_pct,
            } => Op::Loaded {
                model: model % models,
                measured_pct,
            },
            Op::LoadFailed { model } => Op::LoadFailed {
                model: model % models,
            },
            Op::Unloaded { model } => Op::Unloaded {
                model: model % models,
            },
            Op::Exited { model } => Op::Exited {
                model: model % models,
            },
            Op::Reconfigure {
                model,
                footprint_mib,
                resident,
            } => Op::Reconfigure {
                model: model % models,
                footprint_mib,
                resident,
            },
            Op::Retune {
                model,
                resident,
                idle_ms,
                min_ms,
            } => Op::Retune {
                model: model % models,
                resident,
                idle_ms,
                min_ms,
            },
            Op::Retire { model } => Op::Retire {
                model: model % models,
            },
            Op::Revive {
                model,
                footprint_mib,
            } => Op::Revive {
                model: model % models,
                footprint_mib,
            },
            other => other,
        }
    }
}

fn op(models: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..models, prop_oneof![10u64..3_000, Just(3_600_000)])
            .prop_map(|(model, deadline_ms)| Op::Admit { model, deadline_ms }),
        3 => (0..models).prop_map(|model| Op::Finish { model }),
        1 => (0usize..8).prop_map(|nth| Op::Cancel { nth }),
        3 => (1u64..800).prop_map(|ms| Op::Advance { ms }),
        3 => (0..models, proptest::option::of(50u64..=100))
            .prop_map(|(model, measured_pct)| Op::Loaded { model, measured_pct }),
        1 => (0..models).prop_map(|model| Op::LoadFailed { model }),
        3 => (0..models).prop_map(|model| Op::Unloaded { model }),
        1 => (0..models).prop_map(|model| Op::Exited { model }),
        1 => (0..models, 50u64..1_400, proptest::bool::weighted(0.2)).prop_map(
            |(model, footprint_mib, resident)| Op::Reconfigure { model, footprint_mib, resident }
        ),
        1 => (
            0..models,
            proptest::bool::weighted(0.2),
            proptest::option::of(100u64..2_000),
            0u64..600
        )
            .prop_map(|(model, resident, idle_ms, min_ms)| Op::Retune {
                model,
                resident,
                idle_ms,
                min_ms
            }),
        1 => (0..models).prop_map(|model| Op::Retire { model }),
        1 => (0..models, 50u64..1_400)
            .prop_map(|(model, footprint_mib)| Op::Revive { model, footprint_mib }),
        1 => (50u64..1_400, proptest::bool::weighted(0.2))
            .prop_map(|(footprint_mib, resident)| Op::Add { footprint_mib, resident }),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    budget: u64,
    models: Vec<LifecycleModel>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        300u64..1_200,
        proptest::collection::vec(
            (
                50u64..1_400,
                proptest::bool::weighted(0.2),
                0u64..600,
                proptest::option::of(100u64..2_000),
                proptest::option::of(10u64..1_500),
            ),
            1..5,
        ),
    )
        .prop_map(|(budget, models)| Setup {
            budget,
            models: models
                .into_iter()
                .enumerate()
                .map(
                    |(i, (footprint, resident, min_ms, idle, load))| LifecycleModel {
                        id: format!("m{i}"),
                        footprint_mib: footprint,
                        resident,
                        min_resident: ms(min_ms),
                        idle_unload: idle.map(ms),
                        load_time: load.map(ms),
                    },
                )
                .collect(),
        })
}

/// The world around the core: the requests it let go, the ones waiting, the processes it
/// asked to start or stop. Checks every effect as it comes.
struct World {
    life: Lifecycle,
    now: Instant,
    /// Requests going, per model (as the shell counts them).
    going: Vec<u32>,
    /// Waiting requests: id → (model, deadline).
    waiting: BTreeMap<WaiterId, (usize, Instant)>,
    /// Requests refused for reasons other than their deadline.
    refused: Vec<(usize, Refusal)>,
    loading: BTreeSet<usize>,
    unloading: BTreeSet<usize>,
    /// The footprint each model was counted for when its last load started: a measurement
    /// at or below it keeps the budget (one above it is shed, see the unit test).
    estimates: Vec<u64>,
    /// Models a reload changed whose old process may still run: no request goes to them
    /// until a new process starts.
    changing: BTreeSet<usize>,
    /// Models a reload removed.
    retired: BTreeSet<usize>,
}

impl World {
    fn new(setup: &Setup) -> World {
        let now = Instant::now();
        let life = Lifecycle::new(settings(setup.budget), setup.models.clone(), now);
        let mut world = World {
            going: vec![0; life.len()],
            life,
            now,
            waiting: BTreeMap::new(),
            refused: Vec::new(),
            loading: BTreeSet::new(),
            unloading: BTreeSet::new(),
            estimates: setup.models.iter().map(|m| m.footprint_mib).collect(),
            changing: BTreeSet::new(),
            retired: BTreeSet::new(),
        };
        world.life.start(now);
        world.absorb();
        world
    }

    fn absorb(&mut self) {
        for effect in self.life.take_effects() {
            match effect {
                Effect::Load { model } => {
                    assert!(
                        !self.retired.contains(&model),
                        "a removed model {model} loads"
                    );
                    self.changing.remove(&model);
                    assert!(self.loading.insert(model), "loading {model} twice");
                    self.estimates[model] = self.life.status(model).unwrap().footprint_mib;
                    assert!(!self.unloading.contains(&model));
                }
                Effect::Unload { model } => {
                    assert_eq!(
                        self.going[model], 0,
                        "model {model} unloaded with requests in flight"
                    );
                    assert!(self.unloading.insert(model), "unloading {model} twice");
                }
                Effect::Serve { waiter, .. } => {
                    let (model, _) = self
                        .waiting
                        .remove(&waiter)
                        .expect("a served request was waiting");
                    // Served by a process that runs (it may already be asked to drain
                    // by a later effect of the same batch).
                    assert!(matches!(
                        self.life.state(model),
                        Some(ModelState::Ready | ModelState::Draining)
                    ));
                    assert!(
                        !self.changing.contains(&model) && !self.retired.contains(&model),
                        "a request went to model {model}'s old or removed process"
                    );
                    self.going[model] += 1;
                }
                Effect::Refuse { waiter, refusal } => {
                    let (model, deadline) = self
                        .waiting
                        .remove(&waiter)
                        .expect("a refused request was waiting");
                    if let Refusal::Expired { .. } = refusal {
                        assert!(deadline <= self.now, "refused before its deadline");
                    } else {
                        self.refused.push((model, refusal));
                    }
                }
                Effect::Transition(t) => {
                    assert!(!t.reason.is_empty());
                }
                Effect::Reconfigured { model } => {
                    // A new definition applies only when no process of the model runs.
                    assert!(
                        !self.loading.contains(&model) && !self.unloading.contains(&model),
                        "model {model} reconfigured while its process runs"
                    );
                }
            }
        }
        let committed = self.life.committed_mib();
        assert!(
            committed <= self.life.settings().budget_mib,
            "{committed} MiB committed over the {} MiB budget: {:?}",
            self.life.settings().budget_mib,
            self.life.statuses()
        );
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Admit { model, deadline_ms } => {
                let deadline = self.now + ms(deadline_ms);
                match self.life.admit(model, self.now, deadline) {
                    Admission::Go => {
                        assert_eq!(self.life.state(model), Some(&ModelState::Ready));
                        assert!(
                            !self.changing.contains(&model) && !self.retired.contains(&model),
                            "a request went to model {model}'s old or removed process"
                        );
                        self.going[model] += 1;
                    }
                    Admission::Refused(Refusal::Removed) => {
                        assert!(self.retired.contains(&model));
                    }
                    Admission::Wait(id) => {
                        self.waiting.insert(id, (model, deadline));
                    }
                    Admission::Refused(refusal) => self.refused.push((model, refusal)),
                }
            }
            Op::Finish { model } => {
                if self.going[model] > 0 {
                    self.going[model] -= 1;
                    self.life.finished(model, self.now);
                }
            }
            Op::Cancel { nth } => {
                if let Some(&id) = self.waiting.keys().nth(nth) {
                    self.waiting.remove(&id);
                    self.life.cancel(id, self.now);
                }
            }
            Op::Advance { ms: step } => {
                self.now += ms(step);
                self.life.tick(self.now);
            }
            Op::Loaded {
                model,
                measured_pct,
            } => {
                if self.loading.remove(&model) {
                    let measured = measured_pct.map(|p| self.estimates[model] * p / 100);
                    self.life.loaded(model, self.now, measured);
                }
            }
            Op::LoadFailed { model } => {
                if self.loading.remove(&model) {
                    self.life
                        .load_failed(model, self.now, "exit status 1".into());
                }
            }
            Op::Unloaded { model } => {
                if self.unloading.remove(&model) {
                    self.life.unloaded(model, self.now);
                }
            }
            Op::Exited { model } => {
                // Only a process that runs can die.
                let runs = matches!(
                    self.life.state(model),
                    Some(ModelState::Ready | ModelState::Draining)
                );
                if runs {
                    self.life
                        .exited(model, self.now, "killed by signal 9".into());
                }
            }
            Op::Reconfigure {
                model,
                footprint_mib,
                resident,
            } => {
                if !self.retired.contains(&model) {
                    let runs = self.life.state(model).is_some_and(ModelState::holds_memory);
                    if runs {
                        self.changing.insert(model);
                    }
                    let config = LifecycleModel {
                        footprint_mib,
                        resident,
                        ..self.life.status(model).map(|s| model_of(&s)).unwrap()
                    };
                    self.life.reconfigure(model, config, self.now);
                }
            }
            Op::Retune {
                model,
                resident,
                idle_ms,
                min_ms,
            } => {
                if let Some(status) = self.life.status(model) {
                    let config = LifecycleModel {
                        resident,
                        idle_unload: idle_ms.map(ms),
                        min_resident: ms(min_ms),
                        ..model_of(&status)
                    };
                    self.life.retune(model, config, self.now);
                }
            }
            Op::Retire { model } => {
                self.retired.insert(model);
                self.life.retire(model, self.now);
            }
            Op::Revive {
                model,
                footprint_mib,
            } => {
                if self.retired.remove(&model) {
                    let runs = self.life.state(model).is_some_and(ModelState::holds_memory);
                    if runs {
                        self.changing.insert(model);
                    }
                    let config = LifecycleModel {
                        footprint_mib,
                        ..self.life.status(model).map(|s| model_of(&s)).unwrap()
                    };
                    self.life.revive(model, config, self.now);
                }
            }
            Op::Add {
                footprint_mib,
                resident,
            } => {
                let index = self.going.len();
                let config = LifecycleModel {
                    id: format!("m{index}"),
                    footprint_mib,
                    resident,
                    min_resident: ms(0),
                    idle_unload: None,
                    load_time: None,
                };
                self.going.push(0);
                self.estimates.push(footprint_mib);
                assert_eq!(self.life.add(config, self.now), index);
            }
        }
        self.absorb();
        // Every request past its deadline has been answered once the clock ticked.
        if matches!(op, Op::Advance { .. }) {
            for (id, (_, deadline)) in &self.waiting {
                assert!(*deadline > self.now, "request {id} outlived its deadline");
            }
        }
    }

    /// Lets everything finish: requests end, processes start and stop, the clock runs.
    fn settle(&mut self) {
        for _ in 0..400 {
            if self.waiting.is_empty() {
                return;
            }
            for model in 0..self.going.len() {
                while self.going[model] > 0 {
                    self.going[model] -= 1;
                    self.life.finished(model, self.now);
                }
            }
            self.absorb();
            for model in std::mem::take(&mut self.loading) {
                self.life.loaded(model, self.now, None);
            }
            self.absorb();
            for model in std::mem::take(&mut self.unloading) {
                self.life.unloaded(model, self.now);
            }
            self.absorb();
            self.now += ms(50);
            self.life.tick(self.now);
            self.absorb();
        }
    }
}

proptest! {
    #![proptest_config(crate::fuzz_config(512))]

    /// Never over budget, never an unload with work in flight, every waiting request answered
    /// by its deadline, and (when everything is let to finish) every request that could be
    /// served is served.
    #[test]
    fn the_lifecycle_keeps_its_rules(
        setup in setup(),
        ops in proptest::collection::vec(op(4), 1..120),
    ) {
        let mut world = World::new(&setup);
        for op in ops {
            let op = op.within(world.going.len());
            world.apply(op);
        }
        let waiting: Vec<(WaiterId, usize)> =
            world.waiting.iter().map(|(id, (model, _))| (*id, *model)).collect();
        world.settle();
        // No model stays failed past its longest retry wait: a pinned one loads again (when it
        // fits), another counts as unloaded.
        world.now += MAX_FAILED_RETRY;
        world.life.tick(world.now);
        world.absorb();
        for status in world.life.statuses() {
            prop_assert!(
                !matches!(status.state, ModelState::Failed { .. }),
                "{} still failed after the retry wait: {status:?}",
                status.id
            );
        }
        // A request still waiting after everything finished can only be one whose model
        // cannot fit beside the pinned models that hold memory.
        let statuses = world.life.statuses();
        let pinned_mib: u64 = statuses
            .iter()
            .filter(|s| s.pinned)
            .map(|s| s.resident_mib)
            .sum();
        for (id, model) in waiting {
            if world.waiting.contains_key(&id) {
                let need = world.life.status(model).unwrap().footprint_mib;
                prop_assert!(
                    need + pinned_mib > setup.budget,
                    "request {id} for model {model} starved: {statuses:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(crate::fuzz_config(256))]

    /// Fair swapping: however busy `a` is kept, a request for `b` (which cannot load beside
    /// it) sees `b` start loading within `swapBatchMs` plus the drain of what `a` holds, and
    /// `a` takes at most `swapBatchRequests` new requests meanwhile.
    #[test]
    fn a_waiting_model_gets_its_turn_within_the_bound(
        requests in 1u32..20,
        batch_ms in 0u64..3_000,
        steps in proptest::collection::vec((0u32..4, 1u64..300), 1..200),
        b_at in 0usize..50,
    ) {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3_600);
        let mut life = a_busy(batched(1_000, requests, batch_ms), t0);
        let mut now = t0 + ms(10);
        // Requests going on each model, and those that started in the current step.
        let mut going = [1u32, 0];
        let mut b_since: Option<Instant> = None;
        let mut b_load: Option<Instant> = None;
        let mut a_taken = 0u32;
        let longest_step = ms(300);
        for (i, (new, step)) in steps.into_iter().enumerate() {
            if i == b_at {
                prop_assert!(matches!(life.admit(1, now, far), Admission::Wait(_)));
                b_since = Some(now);
            }
            let before = going;
            for _ in 0..new {
                if life.admit(0, now, far) == Admission::Go {
                    going[0] += 1;
                    if b_since.is_some() && b_load.is_none() {
                        a_taken += 1;
                    }
                }
            }
            // What was going when the step began ends within the step.
            for model in 0..2 {
                for _ in 0..before[model] {
                    going[model] -= 1;
                    life.finished(model, now);
                }
            }
            now += ms(step);
            life.tick(now);
            // The processes start and stop at once.
            loop {
                let effects = life.take_effects();
                if effects.is_empty() {
                    break;
                }
                for effect in effects {
                    match effect {
                        Effect::Unload { model } => {
                            prop_assert_eq!(going[model], 0, "unloaded with work in flight");
                            life.unloaded(model, now);
                        }
                        Effect::Load { model } => {
                            if model == 1 && b_load.is_none() {
                                b_load = Some(now);
                            }
                            life.loaded(model, now, None);
                        }
                        Effect::Serve { model, .. } => going[model] += 1,
                        Effect::Refuse { .. } | Effect::Transition(_) | Effect::Reconfigured { .. } => {}
                    }
                }
            }
            if let (Some(since), None) = (b_since, b_load) {
                prop_assert!(
                    now.saturating_duration_since(since) <= ms(batch_ms) + longest_step * 2,
                    "b waited {:?} with swapBatchMs {batch_ms}",
                    now.saturating_duration_since(since)
                );
            }
            prop_assert!(life.committed_mib() <= 1_000);
        }
        prop_assert!(
            a_taken <= requests,
            "a took {a_taken} requests while b waited (swapBatchRequests {requests})"
        );
    }
}
