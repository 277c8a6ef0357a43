//! The synchronous lifecycle core: states, the budget, eviction and waiting requests.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::types::{
    Admission, Effect, LifecycleModel, LifecycleSettings, ModelState, ModelStatus, Refusal,
    Transition, WaiterId,
};

mod reload;
mod room;

/// After a failed load, requests are refused at once for this long before one tries again
/// (a broken model must not cost a process start per request). Each failure in a row doubles
/// the wait, up to [`MAX_FAILED_RETRY`]; a load that succeeds starts again from this.
pub const FAILED_RETRY: Duration = Duration::from_secs(2);
/// The longest wait after failures in a row.
pub const MAX_FAILED_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Waiter {
    id: WaiterId,
    arrived: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct Slot {
    config: LifecycleModel,
    state: ModelState,
    measured_mib: Option<u64>,
    in_flight: u32,
    waiting: VecDeque<Waiter>,
    last_used: Option<Instant>,
    /// When the current state began.
    since: Instant,
    /// When it last became ready (the start of `minResidentMs`).
    ready_since: Option<Instant>,
    /// A drain's deadline.
    drain_until: Option<Instant>,
    /// Not asked to drain again before this (after an abandoned drain).
    no_drain_until: Option<Instant>,
    /// Fair swapping: since when another model's requests wait for this busy model's memory.
    contended_since: Option<Instant>,
    /// Fair swapping: requests this model took since then.
    served_in_turn: u32,
    loads: u64,
    unloads: u64,
    evictions: u64,
    failures: u64,
    /// Failures since its last successful load (the retry wait doubles with each).
    failed_in_a_row: u32,
    /// Removed by a config reload: it takes no request and is never loaded again.
    retired: bool,
    /// Changed by a config reload: the definition it takes once its process has stopped.
    pending: Option<LifecycleModel>,
}

impl Slot {
    fn new(config: LifecycleModel, now: Instant) -> Slot {
        Slot {
            config,
            state: ModelState::Unloaded,
            measured_mib: None,
            in_flight: 0,
            waiting: VecDeque::new(),
            last_used: None,
            since: now,
            ready_since: None,
            drain_until: None,
            no_drain_until: None,
            contended_since: None,
            served_in_turn: 0,
            loads: 0,
            unloads: 0,
            evictions: 0,
            failures: 0,
            failed_in_a_row: 0,
            retired: false,
            pending: None,
        }
    }

    /// Whether a config reload asked it to stop (removed) or to restart (changed).
    fn leaving(&self) -> bool {
        self.retired || self.pending.is_some()
    }

    fn footprint(&self) -> u64 {
        self.measured_mib.unwrap_or(self.config.footprint_mib)
    }

    /// How long after its last failure requests are refused before one loads it again:
    /// [`FAILED_RETRY`], doubled for each further failure in a row, at most
    /// [`MAX_FAILED_RETRY`].
    fn retry_wait(&self) -> Duration {
        let doublings = self.failed_in_a_row.saturating_sub(1).min(16);
        FAILED_RETRY
            .saturating_mul(1 << doublings)
            .min(MAX_FAILED_RETRY)
    }

    fn past_min_resident(&self, now: Instant) -> bool {
        self.ready_since
            .is_none_or(|since| now.saturating_duration_since(since) >= self.config.min_resident)
    }

    /// Whether this busy model has had its turn since another model's requests began to wait
    /// for its memory: `swapBatchRequests` new requests or `swapBatchMs`, whichever first.
    fn turn_over(&self, settings: &LifecycleSettings, now: Instant) -> bool {
        match self.contended_since {
            None => settings.swap_batch.is_zero(),
            Some(since) => {
                self.served_in_turn >= settings.swap_batch_requests
                    || now.saturating_duration_since(since) >= settings.swap_batch
            }
        }
    }

    /// Counts `n` requests this model took, toward its turn when it is contended.
    fn took(&mut self, n: u32, now: Instant) {
        self.in_flight += n;
        self.last_used = Some(now);
        if self.contended_since.is_some() {
            self.served_in_turn = self.served_in_turn.saturating_add(n);
        }
    }

    /// What a waiting request should expect before the model answers, when a load was
    /// measured.
    fn expected_wait(&self, now: Instant) -> Option<Duration> {
        let load = self.config.load_time?;
        Some(match self.state {
            ModelState::Loading => load.saturating_sub(now.saturating_duration_since(self.since)),
            _ => load,
        })
    }
}

/// The lifecycle of every managed model: see the [module docs](super).
#[derive(Debug)]
pub struct Lifecycle {
    settings: LifecycleSettings,
    slots: Vec<Slot>,
    next_waiter: WaiterId,
    effects: Vec<Effect>,
    /// The gateway shuts down: nothing waits, nothing new loads (see [`Lifecycle::close`]).
    closing: bool,
}

impl Lifecycle {
    /// Every model starts `unloaded`; call [`Lifecycle::start`] to load the pinned ones.
    pub fn new(settings: LifecycleSettings, models: Vec<LifecycleModel>, now: Instant) -> Self {
        let slots = models
            .into_iter()
            .map(|config| Slot::new(config, now))
            .collect();
        Lifecycle {
            settings,
            slots,
            next_waiter: 1,
            effects: Vec::new(),
            closing: false,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LifecycleSettings {
        &self.settings
    }

    /// How many models it manages.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it manages no model.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The index of the model `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.config.id == id)
    }

    /// The state of model `model`.
    pub fn state(&self, model: usize) -> Option<&ModelState> {
        self.slots.get(model).map(|s| &s.state)
    }

    /// MiB held by the models that hold memory now.
    pub fn committed_mib(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.state.holds_memory())
            .map(Slot::footprint)
            .sum()
    }

    /// Every model's status, in order; a model a reload removed is listed until its process
    /// has stopped (and not beside a model of the same id a later reload added).
    pub fn statuses(&self) -> Vec<ModelStatus> {
        let listed = |i: usize| {
            let slot = &self.slots[i];
            !slot.retired
                || (slot.state.holds_memory()
                    && !self
                        .slots
                        .iter()
                        .any(|s| !s.retired && s.config.id == slot.config.id))
        };
        (0..self.slots.len())
            .filter(|&i| listed(i))
            .filter_map(|i| self.status(i))
            .collect()
    }

    /// Whether model `model` was removed by a config reload.
    pub fn is_retired(&self, model: usize) -> bool {
        self.slots.get(model).is_some_and(|s| s.retired)
    }

    /// The status of model `model`.
    pub fn status(&self, model: usize) -> Option<ModelStatus> {
        self.slots.get(model).map(|s| ModelStatus {
            id: s.config.id.clone(),
            state: s.state.clone(),
            resident_mib: if s.state.holds_memory() {
                s.footprint()
            } else {
                0
            },
            footprint_mib: s.footprint(),
            footprint_measured: s.measured_mib.is_some(),
            pinned: s.config.resident,
            last_load_ms: s.config.load_time.map(|d| d.as_millis() as u64),
            loads: s.loads,
            unloads: s.unloads,
            evictions: s.evictions,
            failures: s.failures,
            in_flight: s.in_flight,
            waiting: s.waiting.len() as u32,
        })
    }

    /// Loads started for `model` so far (0 for an unknown index).
    pub fn loads(&self, model: usize) -> u64 {
        self.slots.get(model).map_or(0, |s| s.loads)
    }

    /// What the shell must do, in order, since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Loads the pinned models that fit, in order; the others stay `unloaded` until a
    /// request needs them. A pinned model that does not fit stays unloaded, with a transition
    /// saying so.
    pub fn start(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if !slot.config.resident || slot.retired || slot.state != ModelState::Unloaded {
                continue;
            }
            let need = self.slots[index].footprint();
            if need <= self.free_mib() {
                self.begin_load(index, now, "pinned (resident): loaded at start".into());
            } else {
                let reason = format!(
                    "pinned (resident) but its {need} MiB do not fit in the {} MiB left of the \
                     {} MiB budget; it loads when a request needs it",
                    self.free_mib(),
                    self.settings.budget_mib
                );
                self.transition(index, ModelState::Unloaded, now, reason);
            }
        }
    }

    /// The gateway shuts down: every waiting request is refused at once
    /// ([`Refusal::ShuttingDown`]), as is every new one, and no model is loaded any more.
    /// Requests in flight and their models are not disturbed; the shell stops the processes
    /// once they ended.
    pub fn close(&mut self) {
        self.closing = true;
        for model in 0..self.slots.len() {
            self.refuse_waiting(model, &Refusal::ShuttingDown);
        }
    }

    /// Refuses every request waiting for `model` with `refusal`.
    pub(super) fn refuse_waiting(&mut self, model: usize, refusal: &Refusal) {
        let waiting = self.slots[model].waiting.drain(..);
        self.effects.extend(waiting.map(|waiter| Effect::Refuse {
            waiter: waiter.id,
            refusal: refusal.clone(),
        }));
    }

    /// A request for model `model` arrived, to be answered by `deadline`.
    pub fn admit(&mut self, model: usize, now: Instant, deadline: Instant) -> Admission {
        if self.closing {
            return Admission::Refused(Refusal::ShuttingDown);
        }
        let budget = self.settings.budget_mib;
        let turn_left = self.turn_left(model, now);
        let Some(slot) = self.slots.get_mut(model) else {
            return Admission::Refused(Refusal::UnknownModel);
        };
        if slot.retired {
            return Admission::Refused(Refusal::Removed);
        }
        if slot.footprint() > budget {
            return Admission::Refused(Refusal::DoesNotFit {
                needed_mib: slot.footprint(),
                budget_mib: budget,
            });
        }
        match &slot.state {
            ModelState::Ready if slot.waiting.is_empty() => {
                slot.took(1, now);
                // The last request of its turn: the drain it owes starts now.
                if slot.contended_since.is_some() && slot.turn_over(&self.settings, now) {
                    self.pump(now);
                }
                return Admission::Go;
            }
            ModelState::Failed { reason } => {
                let retry = (slot.since + slot.retry_wait()).saturating_duration_since(now);
                if !retry.is_zero() {
                    return Admission::Refused(Refusal::LoadFailed {
                        reason: reason.clone(),
                        retry_after: retry,
                    });
                }
            }
            _ => {}
        }
        if let Some(wait) = slot.expected_wait(now).map(|load| load + turn_left)
            && now + wait > deadline
        {
            return Admission::Refused(Refusal::TooSlow { retry_after: wait });
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        slot.waiting.push_back(Waiter {
            id,
            arrived: now,
            deadline,
        });
        self.pump(now);
        Admission::Wait(id)
    }

    /// Fair swapping: how long the busy models whose memory `model` would need may still
    /// take new requests before they drain (zero when it loads at once or is loaded).
    fn turn_left(&self, model: usize, now: Instant) -> Duration {
        let Some(slot) = self.slots.get(model) else {
            return Duration::ZERO;
        };
        let must_load = matches!(slot.state, ModelState::Unloaded | ModelState::Failed { .. });
        if !must_load || slot.footprint() <= self.free_mib() {
            return Duration::ZERO;
        }
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                *i != model && s.state == ModelState::Ready && !s.config.resident && s.in_flight > 0
            })
            .map(|(_, s)| match s.contended_since {
                Some(since) => self
                    .settings
                    .swap_batch
                    .saturating_sub(now.saturating_duration_since(since)),
                None => self.settings.swap_batch,
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// A request that went (at once or after waiting) ended.
    pub fn finished(&mut self, model: usize, now: Instant) {
        if let Some(slot) = self.slots.get_mut(model) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.last_used = Some(now);
        }
        self.pump(now);
    }

    /// A waiting request left (its client went away); nothing follows for it.
    pub fn cancel(&mut self, waiter: WaiterId, now: Instant) {
        for slot in &mut self.slots {
            slot.waiting.retain(|w| w.id != waiter);
        }
        self.pump(now);
    }

    /// The model's load finished: it answers. `measured_mib` is its process's memory after
    /// warm-up, when it could be read; later decisions use it instead of the estimate.
    pub fn loaded(&mut self, model: usize, now: Instant, measured_mib: Option<u64>) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if slot.state != ModelState::Loading {
            return;
        }
        let took = now.saturating_duration_since(slot.since);
        slot.config.load_time = Some(took);
        if let Some(measured) = measured_mib {
            slot.measured_mib = Some(measured);
        }
        slot.ready_since = Some(now);
        slot.last_used = Some(now);
        slot.failed_in_a_row = 0;
        let reason = match measured_mib {
            Some(measured) => format!("loaded in {} ms; {measured} MiB measured", took.as_millis()),
            None => format!("loaded in {} ms", took.as_millis()),
        };
        self.transition(model, ModelState::Ready, now, reason);
        if self.slots[model].leaving() {
            // A reload removed or changed it while it loaded: it serves nothing on the old
            // definition.
            self.leave(model, now);
            self.pump(now);
            return;
        }
        self.shed_excess(model, now);
        self.pump(now);
    }

    /// The model's load failed (`reason` says how); its waiting requests are refused.
    pub fn load_failed(&mut self, model: usize, now: Instant, reason: String) {
        if self.slots.get(model).map(|s| &s.state) != Some(&ModelState::Loading) {
            return;
        }
        self.fail(model, now, reason);
        self.pump(now);
    }

    /// The model's process ended without being asked (it crashed or was killed).
    pub fn exited(&mut self, model: usize, now: Instant, reason: String) {
        let Some(slot) = self.slots.get(model) else {
            return;
        };
        match slot.state {
            ModelState::Unloading => self.unloaded(model, now),
            ModelState::Loading | ModelState::Ready | ModelState::Draining => {
                self.fail(model, now, format!("its process ended: {reason}"));
                self.pump(now);
            }
            ModelState::Unloaded | ModelState::Failed { .. } => {}
        }
    }

    /// The model's process was stopped.
    pub fn unloaded(&mut self, model: usize, now: Instant) {
        if self.slots.get(model).map(|s| &s.state) != Some(&ModelState::Unloading) {
            return;
        }
        self.slots[model].ready_since = None;
        self.transition(
            model,
            ModelState::Unloaded,
            now,
            "its process stopped".into(),
        );
        self.take_pending(model, now);
        // Made resident while it was unloading (see `retune`).
        self.load_if_pinned(
            model,
            now,
            "pinned (resident): loaded again once its process stopped",
        );
        self.pump(now);
    }

    /// The clock moved: refuses waiting requests past their deadline, ends drains that are
    /// done or too long, unloads models idle for their `idleUnloadMs`.
    pub fn tick(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let retry = self.slots[index].expected_wait(now);
            let slot = &mut self.slots[index];
            let mut expired = Vec::new();
            slot.waiting.retain(|w| {
                let keep = w.deadline > now;
                if !keep {
                    expired.push(w.id);
                }
                keep
            });
            for waiter in expired {
                self.effects.push(Effect::Refuse {
                    waiter,
                    refusal: Refusal::Expired { retry_after: retry },
                });
            }
            let slot = &self.slots[index];
            if slot.state == ModelState::Draining
                && slot.in_flight > 0
                && slot.drain_until.is_some_and(|until| now >= until)
            {
                let timeout = self.settings.drain_timeout;
                let slot = &mut self.slots[index];
                slot.no_drain_until = Some(now + timeout);
                slot.drain_until = None;
                let reason = format!(
                    "drain abandoned: {} requests still in flight after {} ms; they are not cut",
                    slot.in_flight,
                    timeout.as_millis()
                );
                self.transition(index, ModelState::Ready, now, reason);
                continue;
            }
            let slot = &self.slots[index];
            if matches!(slot.state, ModelState::Failed { .. })
                && !slot.retired
                && now >= slot.since + slot.retry_wait()
            {
                self.retry_over(index, now);
                continue;
            }
            let slot = &self.slots[index];
            if let Some(idle) = slot.config.idle_unload
                && slot.state == ModelState::Ready
                && !slot.config.resident
                && slot.in_flight == 0
                && slot.waiting.is_empty()
                && slot.past_min_resident(now)
            {
                let last = slot.last_used.unwrap_or(slot.since);
                let unused = now.saturating_duration_since(last);
                if unused >= idle {
                    let reason = format!(
                        "idle: no request for {} ms (idleUnloadMs {})",
                        unused.as_millis(),
                        idle.as_millis()
                    );
                    self.begin_unload(index, now, reason, false);
                }
            }
        }
        self.pump(now);
    }

    /// A failed model's retry wait is over: a pinned one that fits loads again; any other
    /// becomes `unloaded`, so that it counts as ready (the next request loads it) rather than
    /// failed for ever.
    fn retry_over(&mut self, model: usize, now: Instant) {
        let waited = self.slots[model].retry_wait();
        let reason = format!(
            "pinned (resident): loaded again after its {} ms retry wait",
            waited.as_millis()
        );
        self.load_if_pinned(model, now, &reason);
        if matches!(self.slots[model].state, ModelState::Failed { .. }) {
            let reason = format!(
                "its {} ms retry wait is over; the next request loads it again",
                waited.as_millis()
            );
            self.transition(model, ModelState::Unloaded, now, reason);
        }
    }

    /// MiB held by pinned models.
    fn pinned_mib(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.config.resident && s.state.holds_memory())
            .map(Slot::footprint)
            .sum()
    }

    fn free_mib(&self) -> u64 {
        self.settings
            .budget_mib
            .saturating_sub(self.committed_mib())
    }

    fn transition(&mut self, model: usize, to: ModelState, now: Instant, reason: String) {
        let slot = &mut self.slots[model];
        let from = slot.state.name();
        slot.state = to;
        slot.since = now;
        // A new state is a new turn.
        slot.contended_since = None;
        slot.served_in_turn = 0;
        self.effects.push(Effect::Transition(Transition {
            model,
            from,
            to: slot.state.name(),
            reason,
        }));
    }

    fn begin_load(&mut self, model: usize, now: Instant, reason: String) {
        self.slots[model].loads += 1;
        self.transition(model, ModelState::Loading, now, reason);
        self.effects.push(Effect::Load { model });
    }

    fn begin_unload(&mut self, model: usize, now: Instant, reason: String, eviction: bool) {
        let slot = &mut self.slots[model];
        slot.unloads += 1;
        if eviction {
            slot.evictions += 1;
        }
        slot.drain_until = None;
        self.transition(model, ModelState::Unloading, now, reason);
        self.effects.push(Effect::Unload { model });
    }

    fn fail(&mut self, model: usize, now: Instant, reason: String) {
        let slot = &mut self.slots[model];
        slot.failures += 1;
        slot.failed_in_a_row = slot.failed_in_a_row.saturating_add(1);
        slot.ready_since = None;
        slot.drain_until = None;
        let retry_after = slot.retry_wait();
        self.refuse_waiting(
            model,
            &Refusal::LoadFailed {
                reason: reason.clone(),
                retry_after,
            },
        );
        self.transition(
            model,
            ModelState::Failed {
                reason: reason.clone(),
            },
            now,
            reason,
        );
        // A definition a reload gave it applies from the next load.
        self.take_pending(model, now);
    }

    /// Serves ready models' waiting requests, finishes drains, and starts the loads waiting
    /// requests need, making room for the oldest one.
    fn pump(&mut self, now: Instant) {
        // Drains that are done.
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.state == ModelState::Draining && slot.in_flight == 0 {
                let reason = if slot.leaving() {
                    self.leave_reason(index, "drained: its last request finished")
                } else {
                    "drained: its last request finished; unloading to make room".into()
                };
                self.begin_unload(index, now, reason, false);
            }
        }
        // A turn ends when no request waits for a model that must load.
        let contended = self.slots.iter().any(|s| {
            !s.waiting.is_empty()
                && matches!(s.state, ModelState::Unloaded | ModelState::Failed { .. })
        });
        if !contended {
            for slot in &mut self.slots {
                slot.contended_since = None;
                slot.served_in_turn = 0;
            }
        }
        // Models with waiting requests, oldest first.
        // (Arrival, then the order of admission for requests of the same instant.)
        let mut order: Vec<(Instant, WaiterId, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.waiting.front().map(|w| (w.arrived, w.id, i)))
            .collect();
        order.sort();
        let mut blocked = false;
        for (_, _, index) in order {
            let budget = self.settings.budget_mib;
            let slot = &mut self.slots[index];
            match &slot.state {
                ModelState::Ready => {
                    let waiting: Vec<WaiterId> = slot.waiting.drain(..).map(|w| w.id).collect();
                    slot.took(waiting.len() as u32, now);
                    self.effects
                        .extend(waiting.into_iter().map(|waiter| Effect::Serve {
                            waiter,
                            model: index,
                        }));
                }
                ModelState::Loading | ModelState::Draining | ModelState::Unloading => {}
                ModelState::Unloaded | ModelState::Failed { .. } => {
                    let need = slot.footprint();
                    if need > budget {
                        let refusal = Refusal::DoesNotFit {
                            needed_mib: need,
                            budget_mib: budget,
                        };
                        self.refuse_waiting(index, &refusal);
                        continue;
                    }
                    if blocked {
                        // Memory freed for an older request is not taken by a younger one.
                        continue;
                    }
                    if need <= self.free_mib() {
                        let reason = format!(
                            "a request needs it; {need} MiB fit in the {} MiB free",
                            self.free_mib()
                        );
                        self.begin_load(index, now, reason);
                    } else if need + self.pinned_mib() <= budget {
                        blocked = true;
                        self.make_room(index, need, now);
                    }
                    // Else it cannot fit beside the pinned models: it waits (until a pinned
                    // model's process ends, or its deadline) without holding others up.
                }
            }
        }
    }
}
