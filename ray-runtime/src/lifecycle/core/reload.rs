//! What a config reload does to the managed models: a model added, changed (it drains,
//! unloads and takes its new definition), removed (it drains, unloads and never loads again)
//! or added back. Each is an event of the core like any other.

use tokio::time::Instant;

use super::super::types::{Effect, LifecycleModel, ModelState, Refusal};
use super::{Lifecycle, Slot};

impl Lifecycle {
    /// A model added by a config reload, at the end (its index is returned). It starts
    /// `unloaded`; a pinned one loads at once when it fits, like at start.
    pub fn add(&mut self, config: LifecycleModel, now: Instant) -> usize {
        let index = self.slots.len();
        self.slots.push(Slot::new(config, now));
        self.load_if_pinned(index, now, "pinned (resident): added by a config reload");
        self.pump(now);
        index
    }

    /// A config reload changed model `model`'s process (its launch profile; its footprint
    /// follows from it), and maybe its settings with it; a change to the settings alone is
    /// [`Lifecycle::retune`]. Nothing is cut: a loaded model takes no new request, finishes
    /// the ones in flight (however long they take: each has its own deadline), unloads, and
    /// takes the new definition; requests that wait for it meanwhile load it again with the
    /// new one. A model without a process takes the new definition at once.
    pub fn reconfigure(&mut self, model: usize, config: LifecycleModel, now: Instant) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if slot.retired {
            return;
        }
        slot.pending = Some(config);
        match slot.state {
            ModelState::Unloaded | ModelState::Failed { .. } => self.take_pending(model, now),
            ModelState::Ready | ModelState::Draining => self.leave(model, now),
            // After the load or the unload under way.
            ModelState::Loading | ModelState::Unloading => {}
        }
        self.pump(now);
    }

    /// A config reload changed only model `model`'s settings (`resident`, `minResidentMs`,
    /// `idleUnloadMs`), not its process: the model takes them at once, in whatever state it
    /// is, without a restart. One that becomes resident loads at once when it is unloaded and
    /// fits in the memory free now (a failed one keeps its retry wait); a drain to make room
    /// for another model is called off; one unloading loads again once stopped. One that no
    /// longer is resident can be evicted, and unloads when idle, from now on. The rest of
    /// `config` (its footprint, its load time) is not read: the process is the same, and what
    /// was measured of it stays. A restart already pending takes the settings with it.
    pub fn retune(&mut self, model: usize, config: LifecycleModel, now: Instant) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if slot.retired {
            return;
        }
        if let Some(pending) = slot.pending.as_mut() {
            pending.resident = config.resident;
            pending.min_resident = config.min_resident;
            pending.idle_unload = config.idle_unload;
            self.pump(now);
            return;
        }
        let made_resident = config.resident && !slot.config.resident;
        slot.config.resident = config.resident;
        slot.config.min_resident = config.min_resident;
        slot.config.idle_unload = config.idle_unload;
        if made_resident {
            match slot.state {
                ModelState::Unloaded => self.load_if_pinned(
                    model,
                    now,
                    "pinned (resident): made resident by a config reload",
                ),
                // Not a restart (none is pending): a drain to make room for another model.
                ModelState::Draining => {
                    slot.drain_until = None;
                    self.transition(
                        model,
                        ModelState::Ready,
                        now,
                        "pinned (resident) by a config reload: its drain to make room is \
                         called off"
                            .into(),
                    );
                }
                // Unloading: `unloaded` loads it again; failed: after its retry wait.
                _ => {}
            }
        }
        self.pump(now);
    }

    /// A config reload added back model `model`, which an earlier reload removed: it takes
    /// `config` as a changed model does (see [`Lifecycle::reconfigure`]), in its old place.
    pub fn revive(&mut self, model: usize, config: LifecycleModel, now: Instant) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if !slot.retired {
            return;
        }
        slot.retired = false;
        self.reconfigure(model, config, now);
    }

    /// A config reload removed model `model`. Its waiting requests are refused; a loaded model
    /// takes no new request, finishes the ones in flight, then unloads, and is never loaded
    /// again.
    pub fn retire(&mut self, model: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(model) else {
            return;
        };
        if slot.retired {
            return;
        }
        slot.retired = true;
        slot.pending = None;
        self.refuse_waiting(model, &Refusal::Removed);
        if matches!(
            self.slots[model].state,
            ModelState::Ready | ModelState::Draining
        ) {
            self.leave(model, now);
        }
        self.pump(now);
    }

    /// A loaded model a reload removed or changed: unloads now when idle, else drains without
    /// a deadline (the drain is never abandoned, so the old definition ends).
    pub(super) fn leave(&mut self, model: usize, now: Instant) {
        let slot = &mut self.slots[model];
        slot.drain_until = None;
        slot.no_drain_until = None;
        let (in_flight, ready) = (slot.in_flight, slot.state == ModelState::Ready);
        if in_flight == 0 {
            let reason = self.leave_reason(model, "idle");
            self.begin_unload(model, now, reason, false);
        } else if ready {
            let reason = format!(
                "draining: {in_flight} requests in flight finish first, new ones wait; then {}",
                self.leave_reason(model, "").trim_start_matches("; ")
            );
            self.transition(model, ModelState::Draining, now, reason);
        }
    }

    /// Why a model a reload removed or changed unloads: `what` (idle, drained, ...) and the
    /// reload's reason.
    pub(super) fn leave_reason(&self, model: usize, what: &str) -> String {
        if self.slots[model].retired {
            format!("{what}; unloading: removed from the config by a reload")
        } else {
            format!("{what}; unloading to restart with its new definition from a config reload")
        }
    }

    /// A model without a process takes the definition a reload gave it; a pinned one loads
    /// again when it fits (others load on the next request).
    pub(super) fn take_pending(&mut self, model: usize, now: Instant) {
        let slot = &mut self.slots[model];
        let Some(config) = slot.pending.take() else {
            return;
        };
        slot.config = config;
        slot.measured_mib = None;
        // A new definition is a new start: the failures of the old one do not lengthen its
        // retry wait.
        slot.failed_in_a_row = 0;
        self.effects.push(Effect::Reconfigured { model });
        self.load_if_pinned(
            model,
            now,
            "pinned (resident): restarting with its new definition",
        );
    }

    /// Loads a pinned, unloaded model when it fits in the memory free now.
    pub(super) fn load_if_pinned(&mut self, model: usize, now: Instant, reason: &str) {
        let slot = &self.slots[model];
        if slot.config.resident
            && !self.closing
            && !slot.retired
            && matches!(slot.state, ModelState::Unloaded | ModelState::Failed { .. })
            && slot.footprint() <= self.free_mib()
        {
            self.begin_load(model, now, reason.to_string());
        }
    }
}
