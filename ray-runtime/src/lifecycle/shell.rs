//! The async shell around the lifecycle core: requests wait for their model here, the core's
//! effects are carried out (a [`ModelDriver`] starts and stops processes, waiting requests are
//! woken), and each transition becomes one JSON log line saying why.
//!
//! The core sits behind a mutex that is never held across an `.await`. A waiting request owns
//! a oneshot receiver; if it is dropped (the client left) or its deadline passes, its place is
//! removed at once. A [`Lease`] counts a request in flight until it is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::core::Lifecycle;
use super::types::{Admission, Effect, LifecycleModel, ModelStatus, Refusal, Transition, WaiterId};

/// Starts and stops the processes of managed models, and reports back to the shell
/// ([`LifecycleShell::loaded`], [`LifecycleShell::load_failed`], [`LifecycleShell::unloaded`],
/// [`LifecycleShell::exited`]). Called with no lock held; must not block.
pub trait ModelDriver: Send + Sync + 'static {
    /// Start the process of model `model` (its index).
    fn load(&self, model: usize);
    /// Stop the process of model `model`.
    fn unload(&self, model: usize);
    /// The definition a config reload gave model `model` applies now (no process of it
    /// runs): start its next process with it. Comes before the load that uses it.
    fn reconfigured(&self, model: usize) {
        let _ = model;
    }
    /// Begin carrying out orders (called once, from inside a Tokio runtime, before the pinned
    /// models load). Orders given before are kept until then.
    fn start(&self) {}
    /// Stop every process and wait for them (the gateway shuts down).
    fn stop(&self) -> BoxFuture {
        Box::pin(async {})
    }
}

/// The future [`ModelDriver::stop`] returns.
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Told of every state change of a model (its id and the transition), after its log line.
pub type TransitionSink = Arc<dyn Fn(&str, &Transition) + Send + Sync>;

struct Shared {
    core: Mutex<Lifecycle>,
    waiters: Mutex<HashMap<WaiterId, oneshot::Sender<Result<(), Refusal>>>>,
    driver: Box<dyn ModelDriver>,
    /// Every model's id by index (models a reload added come last).
    ids: parking_lot::RwLock<Vec<String>>,
    sink: std::sync::OnceLock<TransitionSink>,
}

/// The lifecycle of the managed models, shared by every request. Cloning is cheap.
#[derive(Clone)]
pub struct LifecycleShell {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LifecycleShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleShell")
            .field("models", &self.shared.ids)
            .finish()
    }
}

/// A request counted in flight on its model until dropped.
#[derive(Debug)]
pub struct Lease {
    shell: LifecycleShell,
    model: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shell
            .with_core(|core| core.finished(self.model, Instant::now()));
    }
}

/// A waiting request's place. Dropped before its answer was taken (the client left, or the
/// deadline passed), it gives the place up, or, when the request was let go in the meantime,
/// ends it as a finished request, so the model's in-flight count never leaks.
struct Waiting<'a> {
    shell: &'a LifecycleShell,
    id: Option<WaiterId>,
    model: usize,
    receiver: oneshot::Receiver<Result<(), Refusal>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        // Answers are sent under the map's lock: either the sender is still there (no answer
        // was sent; one the core already decided finds no sender and is undone by `apply`),
        // or the answer is in the receiver now.
        let unanswered = self.shell.shared.waiters.lock().remove(&id).is_some();
        if unanswered {
            self.shell.with_core(|core| core.cancel(id, Instant::now()));
        } else if let Ok(Ok(())) = self.receiver.try_recv() {
            let model = self.model;
            self.shell
                .with_core(|core| core.finished(model, Instant::now()));
        }
    }
}

impl LifecycleShell {
    /// A shell over `core`, carrying out its effects with `driver`. Call
    /// [`LifecycleShell::start`] to load the pinned models.
    pub fn new(core: Lifecycle, driver: impl ModelDriver) -> LifecycleShell {
        let ids = core.statuses().into_iter().map(|s| s.id).collect();
        LifecycleShell {
            shared: Arc::new(Shared {
                core: Mutex::new(core),
                waiters: Mutex::new(HashMap::new()),
                driver: Box::new(driver),
                ids: parking_lot::RwLock::new(ids),
                sink: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Runs `f` on the core, then carries out what it asked for (outside the lock).
    fn with_core<T>(&self, f: impl FnOnce(&mut Lifecycle) -> T) -> T {
        let (value, effects) = {
            let mut core = self.shared.core.lock();
            let value = f(&mut core);
            (value, core.take_effects())
        };
        self.apply(effects);
        value
    }

    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Load { model } => self.shared.driver.load(model),
                Effect::Unload { model } => self.shared.driver.unload(model),
                Effect::Reconfigured { model } => self.shared.driver.reconfigured(model),
                Effect::Serve { waiter, model } => {
                    let delivered = {
                        let mut waiters = self.shared.waiters.lock();
                        waiters
                            .remove(&waiter)
                            .is_some_and(|sender| sender.send(Ok(())).is_ok())
                    };
                    // The request left before it could go: it never runs.
                    if !delivered {
                        self.with_core(|core| core.finished(model, Instant::now()));
                    }
                }
                Effect::Refuse { waiter, refusal } => {
                    let mut waiters = self.shared.waiters.lock();
                    if let Some(sender) = waiters.remove(&waiter) {
                        let _ = sender.send(Err(refusal));
                    }
                }
                Effect::Transition(t) => {
                    let model = self
                        .shared
                        .ids
                        .read()
                        .get(t.model)
                        .cloned()
                        .unwrap_or_else(|| "?".into());
                    let model = model.as_str();
                    tracing::info!(
                        model,
                        from = t.from,
                        to = t.to,
                        reason = %t.reason,
                        "model lifecycle: {} -> {}",
                        t.from,
                        t.to
                    );
                    if let Some(sink) = self.shared.sink.get() {
                        sink(model, &t);
                    }
                }
            }
        }
    }

    /// The index of model `id` (not counting a model of that id a reload removed).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.position(id, false)
    }

    /// The index of the model `id` that a reload removed (`retired`) or not.
    fn position(&self, id: &str, retired: bool) -> Option<usize> {
        let core = self.shared.core.lock();
        self.shared
            .ids
            .read()
            .iter()
            .enumerate()
            .position(|(i, m)| m == id && core.is_retired(i) == retired)
    }

    /// Tells `sink` of every transition from now on (once; later calls are ignored).
    pub fn on_transition(&self, sink: TransitionSink) {
        let _ = self.shared.sink.set(sink);
    }

    /// Starts the driver, then loads the pinned models that fit. Call it once, from inside a
    /// Tokio runtime.
    pub fn start(&self) {
        self.shared.driver.start();
        self.with_core(|core| core.start(Instant::now()));
    }

    /// The gateway shuts down: waiting requests are refused now and nothing loads any more
    /// ([`Lifecycle::close`]).
    pub fn close(&self) {
        self.with_core(Lifecycle::close);
    }

    /// Stops every model's process and waits for them (the gateway shuts down; requests in
    /// progress must have ended).
    pub async fn shutdown(&self) {
        self.shared.driver.stop().await;
    }

    /// The ids of the managed models, in order (a model's index is its position; models a
    /// reload added come last, and a removed model keeps its place).
    pub fn ids(&self) -> Vec<String> {
        self.shared.ids.read().clone()
    }

    /// Adds a model (a config reload added it): it starts `unloaded`, or loads at once when
    /// pinned and it fits. Returns its index. The driver must know the model's process at that
    /// index before it is asked to load it.
    pub fn add(&self, model: LifecycleModel) -> usize {
        let id = model.id.clone();
        self.with_core(|core| {
            let index = core.add(model, Instant::now());
            let mut ids = self.shared.ids.write();
            ids.resize(index, String::new());
            ids.push(id);
            index
        })
    }

    /// A config reload changed the model at `index`: see [`Lifecycle::reconfigure`]. Stage
    /// the new process with the driver first; the driver is told when it applies
    /// ([`ModelDriver::reconfigured`]).
    pub fn reconfigure(&self, index: usize, model: LifecycleModel) {
        self.with_core(|core| core.reconfigure(index, model, Instant::now()));
    }

    /// A config reload changed only the settings of the model at `index`, not its process:
    /// see [`Lifecycle::retune`].
    pub fn retune(&self, index: usize, model: LifecycleModel) {
        self.with_core(|core| core.retune(index, model, Instant::now()));
    }

    /// The index of the model `id` a reload removed, when it has one.
    pub fn retired_index_of(&self, id: &str) -> Option<usize> {
        self.position(id, true)
    }

    /// A config reload added back the model at `index` (removed by an earlier one): see
    /// [`Lifecycle::revive`]. Stage its process with the driver first.
    pub fn revive(&self, index: usize, model: LifecycleModel) {
        self.with_core(|core| core.revive(index, model, Instant::now()));
    }

    /// A config reload removed the model at `index`: see [`Lifecycle::retire`].
    pub fn retire(&self, index: usize) {
        self.with_core(|core| core.retire(index, Instant::now()));
    }

    /// The budget in MiB.
    pub fn budget_mib(&self) -> u64 {
        self.shared.core.lock().settings().budget_mib
    }

    /// MiB held now by the models that hold memory.
    pub fn committed_mib(&self) -> u64 {
        self.shared.core.lock().committed_mib()
    }

    /// Waits until model `id` can take a request, loading it (or joining its load) when
    /// needed, within `deadline`. Dropping the future gives the place up.
    pub async fn acquire(&self, id: &str, deadline: Instant) -> Result<Lease, Refusal> {
        match self.index_of(id) {
            Some(model) => self.acquire_at(model, deadline).await,
            None => Err(Refusal::UnknownModel),
        }
    }

    /// [`LifecycleShell::acquire`] for the model at `model` (its index).
    pub async fn acquire_at(&self, model: usize, deadline: Instant) -> Result<Lease, Refusal> {
        let receiver = {
            let mut core = self.shared.core.lock();
            let admission = core.admit(model, Instant::now(), deadline);
            let receiver = match &admission {
                Admission::Wait(waiter) => {
                    let (sender, receiver) = oneshot::channel();
                    self.shared.waiters.lock().insert(*waiter, sender);
                    Some((*waiter, receiver))
                }
                _ => None,
            };
            let effects = core.take_effects();
            drop(core);
            self.apply(effects);
            match admission {
                Admission::Go => {
                    return Ok(Lease {
                        shell: self.clone(),
                        model,
                    });
                }
                Admission::Refused(refusal) => return Err(refusal),
                Admission::Wait(_) => receiver,
            }
        };
        let Some((waiter, receiver)) = receiver else {
            return Err(Refusal::UnknownModel);
        };
        let mut place = Waiting {
            shell: self,
            id: Some(waiter),
            model,
            receiver,
        };
        let answer = tokio::time::timeout_at(deadline, &mut place.receiver).await;
        match answer {
            Ok(Ok(Ok(()))) => {
                place.id = None;
                Ok(Lease {
                    shell: self.clone(),
                    model,
                })
            }
            Ok(Ok(Err(refusal))) => {
                place.id = None;
                Err(refusal)
            }
            // The sender went away without an answer, or the deadline passed: the place is
            // given up when `place` drops.
            Ok(Err(_)) | Err(_) => Err(Refusal::Expired {
                retry_after: self
                    .status_at(model)
                    .and_then(|s| s.last_load_ms)
                    .map(Duration::from_millis),
            }),
        }
    }

    /// The model's process answers (`measured_mib`: its RSS after warm-up, when read).
    pub fn loaded(&self, model: usize, measured_mib: Option<u64>) {
        self.with_core(|core| core.loaded(model, Instant::now(), measured_mib));
    }

    /// The model's load failed.
    pub fn load_failed(&self, model: usize, reason: String) {
        self.with_core(|core| core.load_failed(model, Instant::now(), reason));
    }

    /// The model's process was stopped.
    pub fn unloaded(&self, model: usize) {
        self.with_core(|core| core.unloaded(model, Instant::now()));
    }

    /// The model's process ended without being asked.
    pub fn exited(&self, model: usize, reason: String) {
        self.with_core(|core| core.exited(model, Instant::now(), reason));
    }

    /// Lets the clock act: deadlines, drains, idle unloads. Call it every
    /// [`LIFECYCLE_TICK`].
    pub fn tick(&self) {
        self.with_core(|core| core.tick(Instant::now()));
    }

    /// Every model's status.
    pub fn statuses(&self) -> Vec<ModelStatus> {
        self.shared.core.lock().statuses()
    }

    /// The status of model `id`.
    pub fn status(&self, id: &str) -> Option<ModelStatus> {
        let index = self.index_of(id)?;
        self.status_at(index)
    }

    /// Loads started for the model at `index` so far: it changes each time a new process
    /// serves the model.
    pub fn loads_at(&self, index: usize) -> u64 {
        self.shared.core.lock().loads(index)
    }

    /// The status of the model at `index`.
    pub fn status_at(&self, index: usize) -> Option<ModelStatus> {
        self.shared.core.lock().status(index)
    }
}

/// How often the shell's clock ticks.
pub const LIFECYCLE_TICK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::super::types::{LifecycleModel, LifecycleSettings, ModelState};
    use super::*;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl ModelDriver for Recorder {
        fn load(&self, model: usize) {
            self.0.lock().push(format!("load {model}"));
        }
        fn unload(&self, model: usize) {
            self.0.lock().push(format!("unload {model}"));
        }
    }

    fn shell(recorder: &Recorder) -> LifecycleShell {
        let model = |id: &str| LifecycleModel {
            id: id.into(),
            footprint_mib: 600,
            resident: false,
            min_resident: Duration::ZERO,
            idle_unload: None,
            load_time: None,
        };
        let core = Lifecycle::new(
            LifecycleSettings {
                budget_mib: 1_000,
                drain_timeout: Duration::from_secs(5),
                swap_batch_requests: 16,
                swap_batch: Duration::ZERO,
            },
            vec![model("a"), model("b")],
            Instant::now(),
        );
        LifecycleShell::new(core, recorder.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn requests_join_one_load_and_a_swap_waits_for_the_lease() {
        let recorder = Recorder::default();
        let shell = shell(&recorder);
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = tokio::spawn({
            let shell = shell.clone();
            async move { shell.acquire("a", deadline).await }
        });
        let second = tokio::spawn({
            let shell = shell.clone();
            async move { shell.acquire("a", deadline).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*recorder.0.lock(), vec!["load 0".to_string()]);
        shell.loaded(0, Some(550));
        let first = first.await.unwrap().unwrap();
        let second = second.await.unwrap().unwrap();
        // b needs a's room: a drains while both leases live.
        let b = tokio::spawn({
            let shell = shell.clone();
            async move { shell.acquire("b", deadline).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(shell.status("a").unwrap().state, ModelState::Draining);
        drop(first);
        assert_eq!(recorder.0.lock().len(), 1, "one request still in flight");
        drop(second);
        assert_eq!(recorder.0.lock().last().unwrap(), "unload 0");
        shell.unloaded(0);
        assert_eq!(recorder.0.lock().last().unwrap(), "load 1");
        shell.loaded(1, None);
        let lease = b.await.unwrap().unwrap();
        let status = shell.status("a").unwrap();
        assert_eq!((status.loads, status.evictions), (1, 1));
        drop(lease);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_leaves_or_times_out_gives_its_place_up() {
        let recorder = Recorder::default();
        let shell = shell(&recorder);
        let soon = Instant::now() + Duration::from_millis(200);
        match shell.acquire("a", soon).await {
            Err(Refusal::Expired { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(shell.status("a").unwrap().waiting, 0);
        let far = Instant::now() + Duration::from_secs(30);
        let waiting = tokio::spawn({
            let shell = shell.clone();
            async move { shell.acquire("a", far).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(shell.status("a").unwrap().waiting, 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(shell.status("a").unwrap().waiting, 0);
        assert!(matches!(
            shell.acquire("nope", far).await,
            Err(Refusal::UnknownModel)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_let_go_after_it_left_is_not_left_in_flight() {
        let recorder = Recorder::default();
        let shell = shell(&recorder);
        let far = Instant::now() + Duration::from_secs(30);
        let waiting = tokio::spawn({
            let shell = shell.clone();
            async move { shell.acquire("a", far).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The load ends and lets the request go, but it leaves before it runs again.
        shell.loaded(0, None);
        waiting.abort();
        let _ = waiting.await;
        let status = shell.status("a").unwrap();
        assert_eq!((status.in_flight, status.waiting), (0, 0), "{status:?}");
        // So the model can still make room for another.
        let b = tokio::spawn({
            let shell = shell.clone();
            async move { shell.acquire("b", far).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(recorder.0.lock().last().unwrap(), "unload 0");
        shell.unloaded(0);
        shell.loaded(1, None);
        drop(b.await.unwrap().unwrap());
        assert_eq!(shell.status("b").unwrap().in_flight, 0);
    }
}
