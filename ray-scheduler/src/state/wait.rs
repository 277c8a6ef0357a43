//! The wait bound: the earliest-deadline-first simulation with the service-time estimate that
//! admission (rule 1) and the choice of the next job (rule 2) both ask, and the estimated waits
//! `/health` shows.

use std::time::{Duration, Instant};

use ray_core::wire::{Lane, Priority, PriorityClass};

use super::{Evicted, JobSpec, Reject, SchedulerState, Waiting};

impl<T> SchedulerState<T> {
    /// The longest a job of this priority may wait: its class bound, a tenth shorter per level.
    pub(super) fn bound(&self, priority: Priority) -> Duration {
        let base = self.settings.max_wait(priority.class);
        let level = u32::from(priority.level.min(ray_core::wire::MAX_PRIORITY_LEVEL));
        base * (10 - level) / 10
    }

    /// The latest start admission accepts for a job of `priority` that arrived at `arrived`
    /// with latest start `start_by`: `start_by` itself for an interactive job; for a batch or
    /// background job, one interactive bound (at most half its own) sooner. That room is kept
    /// for interactive requests, which go first, so a lower-class flood never fills the queue
    /// past the point where one still gets in. (At most half its own bound, so a class whose
    /// bound is no longer than interactive's still queues.)
    pub(super) fn admission_limit(
        &self,
        priority: Priority,
        arrived: Instant,
        start_by: Instant,
    ) -> Instant {
        if priority.class == PriorityClass::Interactive {
            return start_by;
        }
        let bound = self.bound(priority);
        let reserve = self
            .settings
            .max_wait(PriorityClass::Interactive)
            .min(bound / 2);
        start_by.min(arrived + (bound - reserve))
    }

    /// Refuses a job whose estimated start lies past its latest start (its bound, or too late to
    /// finish by its deadline; for a lower class, less the room kept for interactive jobs), or
    /// whose admission would push a waiting job past its own bound.
    pub(super) fn check_wait(
        &self,
        spec: JobSpec,
        now: Instant,
        start_by: Instant,
    ) -> Option<Reject> {
        let limit = self.admission_limit(spec.priority, now, start_by);
        self.check_wait_from(spec, now, now, start_by, limit)
    }

    /// [`SchedulerState::check_wait`] for a job that arrived at `arrived` (not later than
    /// `now`) and is accepted only if it starts by `limit`; the waits in the refusal count from
    /// its arrival.
    fn check_wait_from(
        &self,
        spec: JobSpec,
        arrived: Instant,
        now: Instant,
        start_by: Instant,
        limit: Instant,
    ) -> Option<Reject> {
        let estimate = self.estimate?;
        let lower_ok = spec.priority.class == PriorityClass::Interactive
            || self.lower_in_flight < self.settings.lower_class_permits();
        let free = self.slots.iter().any(|s| !s.busy && s.hold_until.is_none());
        if self.depth() == 0 && free && lower_ok {
            return None;
        }
        let extra = Extra {
            class: spec.priority.class,
            start_by,
        };
        let (late, start) = self.late_jobs(now, None, Some(extra));
        let start = start.unwrap_or(now);
        let own_late = start > limit;
        let others_late = late - usize::from(start > start_by);
        let pushes_others = others_late > 0 && others_late > self.late_jobs(now, None, None).0;
        if !own_late && !pushes_others {
            return None;
        }
        let estimated_wait = start.saturating_duration_since(arrived);
        Some(Reject::WaitExceedsDeadline {
            class: spec.priority.class,
            estimated_wait,
            allowed: limit.saturating_duration_since(arrived),
            retry_after: start.saturating_duration_since(now).max(estimate),
        })
    }

    /// The first service time was just measured. The jobs that wait were admitted without an
    /// estimate, so nothing bounded how many: each is admitted again, in arrival order, as if
    /// the estimate had been known when it arrived, and one that could not start within its
    /// latest start (for a lower class, less the room kept for interactive jobs) is refused
    /// now ([`SchedulerState::take_evicted`]) instead of waiting past its bound.
    pub(super) fn readmit_unestimated(&mut self, now: Instant) {
        if self.estimate.is_none() || self.depth() == 0 {
            return;
        }
        let mut jobs: Vec<(Lane, Waiting<T>)> = std::mem::take(&mut self.short)
            .into_iter()
            .map(|w| (Lane::Short, w))
            .chain(
                std::mem::take(&mut self.draft)
                    .into_iter()
                    .map(|w| (Lane::Draft, w)),
            )
            .collect();
        jobs.sort_by_key(|(_, w)| (w.enqueued_at, w.id));
        // The lanes fill again in arrival order, so each lane keeps its order; the places,
        // tokens and sender counts of the jobs kept do not change.
        for (lane, job) in jobs {
            let limit = self.admission_limit(job.spec.priority, job.enqueued_at, job.start_by);
            let refusal = self.check_wait_from(job.spec, job.enqueued_at, now, job.start_by, limit);
            let Some(reject) = refusal else {
                self.lane_mut(lane).push_back(job);
                continue;
            };
            self.queued_tokens -= u64::from(job.spec.cost);
            self.sender_left(job.spec.sender);
            self.counters.rejected_wait_by_class[job.spec.priority.class.index()] += 1;
            self.evicted.push(Evicted {
                id: job.id,
                payload: job.payload,
                reject,
            });
        }
    }

    /// When `spec` cannot be admitted (no place, no tokens, or not within every bound):
    /// refuses instead the youngest
    /// waiting job of the sender with the most jobs waiting, when that sender is past its fair
    /// share against `spec`'s (it has at least two more jobs waiting) or the job is of a lower
    /// class, and only when that makes room. Returns whether it did; the refused job goes to
    /// [`SchedulerState::take_evicted`]. So one sender's flood (or a lower class's) fills the
    /// queue only until someone else asks, and the bound of every admitted job still holds.
    pub(super) fn make_fair_room(
        &mut self,
        spec: &JobSpec,
        now: Instant,
        start_by: Instant,
    ) -> bool {
        let estimate = self.estimate.unwrap_or_default();
        let rank = spec.priority.class.index();
        let waiting_of = |sender: u64| self.senders.get(&sender).map_or(0, |s| s.waiting);
        let mine = waiting_of(spec.sender);
        // The candidates: jobs of other senders, of `spec`'s class or lower.
        let victim = self
            .short
            .iter()
            .map(|w| (Lane::Short, w))
            .chain(self.draft.iter().map(|w| (Lane::Draft, w)))
            .filter(|(_, w)| w.spec.sender != spec.sender && w.spec.priority.class.index() >= rank)
            .filter(|(_, w)| {
                waiting_of(w.spec.sender) > mine + 1 || w.spec.priority.class.index() > rank
            })
            // The heaviest sender, then the lowest class, then the youngest job.
            .max_by_key(|(_, w)| {
                (
                    waiting_of(w.spec.sender),
                    w.spec.priority.class.index(),
                    w.enqueued_at,
                    w.id,
                )
            })
            .map(|(lane, w)| (lane, w.id));
        let Some((lane, id)) = victim else {
            return false;
        };
        let Some(index) = self.lane(lane).iter().position(|w| w.id == id) else {
            return false;
        };
        let Some(job) = self.lane_mut(lane).remove(index) else {
            return false;
        };
        // Room only if the newcomer is then admitted: a place, its tokens and every bound.
        self.queued_tokens -= u64::from(job.spec.cost);
        let fits = self.admission_problem(*spec, now, start_by).is_none();
        self.queued_tokens += u64::from(job.spec.cost);
        self.lane_mut(lane).insert(index, job);
        if !fits {
            return false;
        }
        let Some(job) = self.remove_waiting(lane, index) else {
            return false;
        };
        let class = job.spec.priority.class;
        self.counters.rejected_wait_by_class[class.index()] += 1;
        let allowed = job.start_by.saturating_duration_since(job.enqueued_at);
        self.evicted.push(Evicted {
            id: job.id,
            payload: job.payload,
            reject: Reject::WaitExceedsDeadline {
                class,
                estimated_wait: allowed + estimate,
                allowed,
                retry_after: estimate.max(Duration::from_secs(1)),
            },
        });
        true
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
