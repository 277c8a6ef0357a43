//! The wait bound: the earliest-deadline-first simulation with the service-time estimate that
//! admission (rule 1) and the choice of the next job (rule 2) both ask, and the estimated waits
//! `/health` shows.

use std::time::{Duration, Instant};

use ray_core::wire::{Priority, PriorityClass};

use super::{JobSpec, Reject, SchedulerState};

impl<T> SchedulerState<T> {
    /// The longest a job of this priority may wait: its class bound, a tenth shorter per level.
    pub(super) fn bound(&self, priority: Priority) -> Duration {
        let base = self.settings.max_wait(priority.class);
        let level = u32::from(priority.level.min(ray_core::wire::MAX_PRIORITY_LEVEL));
        base * (10 - level) / 10
    }

    /// Refuses a job whose estimated start lies past its latest start (its bound, or too late to
    /// finish by its deadline), or whose admission
    /// would push a waiting job past its own bound.
    pub(super) fn check_wait(
        &self,
        spec: JobSpec,
        now: Instant,
        start_by: Instant,
    ) -> Option<Reject> {
        let estimate = self.estimate?;
        let lower_ok = spec.priority.class == PriorityClass::Interactive
            || self.lower_in_flight < self.settings.lower_class_permits();
        let free = self.slots.iter().any(|s| !s.busy && s.hold_until.is_none());
        if self.depth() == 0 && free && lower_ok {
            return None;
        }
        let allowed_until = start_by;
        let extra = Extra {
            class: spec.priority.class,
            start_by,
        };
        let (late, start) = self.late_jobs(now, None, Some(extra));
        let start = start.unwrap_or(now);
        let own_late = start > allowed_until;
        let others_late = late - usize::from(start > start_by);
        let pushes_others = others_late > 0 && others_late > self.late_jobs(now, None, None).0;
        if !own_late && !pushes_others {
            return None;
        }
        let estimated_wait = start.saturating_duration_since(now);
        Some(Reject::WaitExceedsDeadline {
            class: spec.priority.class,
            estimated_wait,
            allowed: allowed_until.saturating_duration_since(now),
            retry_after: estimated_wait.max(estimate),
        })
    }

    /// Simulates the earliest-deadline-first order from `now` with the service-time estimate:
    /// `placed` starts now on its permit, `extra` is a job not yet queued. Returns how many
    /// jobs would start past their latest start, and when `extra` would start.
    pub(super) fn late_jobs(
        &self,
        now: Instant,
        placed: Option<(u64, u32)>,
        extra: Option<Extra>,
    ) -> (usize, Option<Instant>) {
        let Some(estimate) = self.estimate else {
            return (0, extra.map(|_| now));
        };
        let mut free_at: Vec<Instant> = self
            .slots
            .iter()
            .map(|s| {
                if s.busy {
                    s.started.map_or(now, |t| (t + estimate).max(now))
                } else {
                    s.hold_until.unwrap_or(now).max(now)
                }
            })
            .collect();
        let lower_cap = self.settings.lower_class_permits() as usize;
        let mut lower_ends: Vec<Instant> = self
            .slots
            .iter()
            .filter(|s| s.busy && s.class != PriorityClass::Interactive)
            .map(|s| s.started.map_or(now, |t| (t + estimate).max(now)))
            .collect();
        let mut jobs: Vec<(Instant, u64, PriorityClass)> = self
            .short
            .iter()
            .chain(&self.draft)
            .filter_map(|w| {
                if let Some((id, slot)) = placed
                    && id == w.id
                {
                    free_at[slot as usize] = now + estimate;
                    if w.spec.priority.class != PriorityClass::Interactive {
                        lower_ends.push(now + estimate);
                    }
                    return None;
                }
                Some((w.start_by, w.id, w.spec.priority.class))
            })
            .collect();
        if let Some(extra) = extra {
            jobs.push((extra.start_by, u64::MAX, extra.class));
        }
        jobs.sort_unstable_by_key(|&(start_by, id, _)| (start_by, id));
        let mut late = 0;
        let mut extra_start = None;
        for (start_by, id, class) in jobs {
            let (index, mut at) = free_at
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|&(_, t)| t)
                .unwrap_or((0, now));
            if class != PriorityClass::Interactive {
                if lower_ends.len() >= lower_cap {
                    let (earliest, end) = lower_ends
                        .iter()
                        .copied()
                        .enumerate()
                        .min_by_key(|&(_, t)| t)
                        .unwrap_or((0, now));
                    lower_ends.swap_remove(earliest);
                    at = at.max(end);
                }
                lower_ends.push(at + estimate);
            }
            free_at[index] = at + estimate;
            if at > start_by {
                late += 1;
            }
            if id == u64::MAX {
                extra_start = Some(at);
            }
        }
        (late, extra_start)
    }

    /// The estimated wait of a new job of each class at level 0 arriving now (indexed by
    /// [`PriorityClass::index`]), or `None` before any job finished.
    pub fn estimated_waits(&self, now: Instant) -> Option<[Duration; 3]> {
        self.estimate?;
        let mut waits = [Duration::ZERO; 3];
        for class in PriorityClass::ALL {
            let extra = Extra {
                class,
                start_by: now + self.settings.max_wait(class),
            };
            let (_, start) = self.late_jobs(now, None, Some(extra));
            waits[class.index()] =
                start.map_or(Duration::ZERO, |s| s.saturating_duration_since(now));
        }
        Some(waits)
    }
}

/// A job not yet queued, in a simulation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Extra {
    pub(super) class: PriorityClass,
    pub(super) start_by: Instant,
}
