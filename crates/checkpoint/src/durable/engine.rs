//! The engine: runs durable functions, suspends them, resumes them by replay.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fnhub_core::{
    Checkpoint, CheckpointStore, Clock, ErrorKind, Event, ExecutionId, FunctionError, FunctionName,
    Invocation, Outcome, PendingDependency, Version, Wake,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::answer::{Ended, EngineError, Finished, RunResult, Woken};
use super::context::{ChildCall, DurableContext, RunState, Stop};
use super::estimator::Estimator;
use super::{DurableHost, DynDurable, SuspendPolicy, Suspension};

/// The function and version an execution runs: where its replays go (see
/// [`DurableHost::run_resumed`]).
pub(crate) type Target = (FunctionName, Version);

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) host: Arc<dyn DurableHost>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: SuspendPolicy,
    pub(crate) estimator: Mutex<Estimator>,
    pub(super) hub: String,
    pub(super) functions: RwLock<HashMap<(FunctionName, Version), Arc<dyn DynDurable>>>,
    /// Executions waiting for an event.
    pub(super) waiting: Mutex<Vec<EventWait>>,
    /// Whether `waiting` is non-empty, readable without its lock (a hub asks on every
    /// publish).
    pub(super) any_waiting: std::sync::atomic::AtomicBool,
    /// Executions being driven now, each with its run's state (`None` while
    /// [`Engine::stop`] holds it): a second resume of one of them is refused.
    pub(super) running: Mutex<HashMap<ExecutionId, Option<Arc<Mutex<RunState>>>>>,
    /// Told whenever a run ends (see [`Engine::wake`], which may wait for one).
    pub(super) run_ended: tokio::sync::Notify,
    /// Callers waiting for an execution's final outcome.
    pub(super) watchers: Mutex<HashMap<ExecutionId, Vec<oneshot::Sender<Outcome>>>>,
    /// Whether low-priority executions are being shed.
    pub(crate) shedding: std::sync::atomic::AtomicBool,
    pub(crate) load_policy: Mutex<super::LoadPolicy>,
    /// When the pressure last rose to the threshold, while it stays there.
    pub(super) pressure_since: Mutex<Option<Instant>>,
    /// Executions suspended to relieve load: where each one's wake goes, and the journal
    /// position it stopped at.
    pub(super) shed: Mutex<Vec<(Target, u32, ExecutionId)>>,
    /// False while starts wait for a recovery to list the store (see
    /// [`Engine::hold_starts`]).
    pub(super) starts_open: tokio::sync::watch::Sender<bool>,
    /// The latest executions that ended, for callers that ask after the fact.
    pub(super) finished: Mutex<std::collections::VecDeque<Ended>>,
    pub(super) me: Weak<Shared>,
}

impl Shared {
    /// Records a suspension decision in tracing and metrics.
    pub(crate) fn decision(&self, dependency: &str, predicted: Option<Duration>, suspended: bool) {
        tracing::debug!(
            dependency,
            predicted_ms = predicted.map(|d| d.as_millis() as u64),
            threshold_ms = self.policy.threshold.as_millis() as u64,
            suspended,
            "durable wait"
        );
        metrics::counter!(
            "fnhub_durable_waits_total",
            "suspended" => if suspended { "true" } else { "false" }
        )
        .increment(1);
    }

    /// Mirrors whether `waiting` (held locked by the caller) has entries.
    pub(super) fn mark_waiting(&self, waiting: &[EventWait]) {
        self.any_waiting
            .store(!waiting.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// Hands `wake` to the host, which runs the replay as an invocation of the execution's
    /// function (see [`DurableHost::run_resumed`]); one the host does not take runs on a
    /// task of its own.
    pub(crate) fn resume_later(&self, target: &Target, wake: Wake) {
        let Err(wake) = self.host.run_resumed(&target.0, target.1, wake) else {
            return;
        };
        let Some(shared) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let execution = wake.execution;
            if let Err(e) = (Engine { shared }).run_wake(wake).await {
                tracing::warn!(%execution, error = %e, "could not resume a durable execution");
            }
        });
    }

    /// Wakes `execution`, suspended at journal position `at` on child `child`, with the
    /// child's outcome once `call` finishes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resume_when_done(
        &self,
        execution: ExecutionId,
        at: u32,
        target: Target,
        dependency: String,
        started: Instant,
        child: fnhub_core::InvocationId,
        call: ChildCall,
    ) {
        let suspension = Suspension {
            execution,
            function: target.0.clone(),
            version: target.1,
            at,
            pending: PendingDependency::Child(child),
        };
        if self.host.arm(suspension).is_ok() {
            // Whoever runs the child wakes the execution, wherever it is by then.
            return;
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            // Waiting for the child holds no worker; the replay runs where the host says.
            let outcome = call.await;
            if let Some(shared) = me.upgrade() {
                shared.estimator.lock().observe(
                    &dependency,
                    shared.clock.now().saturating_duration_since(started),
                );
                shared.resume_later(&target, Wake::new(execution, at, outcome));
            }
        });
    }

    /// Arranges for `execution`, suspended at journal position `at` waiting for `pending`,
    /// to be woken: by its host, when the host takes it ([`DurableHost::arm`]: a cloud
    /// runtime, a hub's table of timers), else here — a task that sleeps until the timer,
    /// an entry in the table of event waits, the list of executions shed under load. A
    /// child's wake is armed when the execution suspends on it (see
    /// [`Shared::resume_when_done`]).
    pub(super) fn schedule(
        &self,
        execution: ExecutionId,
        target: &Target,
        pending: &PendingDependency,
        at: u32,
    ) {
        // A child's wake is armed as the execution suspends on it (see `resume_when_done`).
        if matches!(pending, PendingDependency::Child(_)) {
            return;
        }
        let suspension = Suspension {
            execution,
            function: target.0.clone(),
            version: target.1,
            at,
            pending: pending.clone(),
        };
        let Err(suspension) = self.host.arm(suspension) else {
            return;
        };
        match &suspension.pending {
            PendingDependency::Timer(due) => {
                let wake = suspension.wake(Ok(Bytes::new()));
                let left = due
                    .duration_since(self.clock.system_time())
                    .unwrap_or(Duration::ZERO);
                let me = self.me.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(left).await;
                    if let Some(shared) = me.upgrade() {
                        shared.resume_later(&target, wake);
                    }
                });
            }
            PendingDependency::Event { filter } => {
                let mut waiting = self.waiting.lock();
                waiting.push(EventWait {
                    execution,
                    filter: filter.clone(),
                    target: target.clone(),
                    at,
                });
                self.mark_waiting(&waiting);
            }
            PendingDependency::Load => {
                self.shed.lock().push((target.clone(), at, execution));
                // Shedding may have stopped meanwhile (or this engine is not shedding, as
                // after an import): then it runs again now.
                if !self.shedding.load(std::sync::atomic::Ordering::Acquire) {
                    let mut shed = self.shed.lock();
                    if let Some(i) = shed.iter().position(|(.., id)| *id == execution) {
                        shed.swap_remove(i);
                        drop(shed);
                        self.resume_later(target, Wake::new(execution, at, Ok(Bytes::new())));
                    }
                }
            }
            _ => {}
        }
    }
}

/// An execution waiting for an event: the filter, and where its wake goes.
pub(crate) struct EventWait {
    pub(crate) execution: ExecutionId,
    pub(crate) filter: String,
    pub(crate) target: Target,
    /// The journal position it suspended at.
    pub(crate) at: u32,
}

/// The outcome of a run stopped at its limit.
fn timed_out(limit: Duration) -> FunctionError {
    FunctionError::new(
        ErrorKind::Timeout,
        format!("the durable run timed out after {limit:?}"),
    )
    .with_type("Durable.Timeout")
}

/// Removes an execution from the running set when its run ends, however it ends.
pub(super) struct RunningGuard<'a> {
    shared: &'a Shared,
    id: ExecutionId,
}

impl<'a> RunningGuard<'a> {
    /// The guard of `id`, which the caller has just put in the running set.
    pub(super) fn new(shared: &'a Shared, id: ExecutionId) -> RunningGuard<'a> {
        RunningGuard { shared, id }
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.shared.running.lock().remove(&self.id);
        self.shared.run_ended.notify_waiters();
    }
}

/// Runs durable functions: journals their operations in a [`CheckpointStore`], suspends
/// them when they would block long (their worker is freed), and resumes them by replay when
/// what they wait for arrives — here, or on another hub after [`Engine::export`] and
/// [`Engine::import`]. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("hub", &self.shared.hub)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Outcomes kept for [`Engine::outcome`] calls that come after the fact.
    pub const REMEMBERED_OUTCOMES: usize = 1024;

    /// An engine for hub `hub`, keeping checkpoints in `store`, running children through
    /// `host`.
    pub fn new(
        hub: impl Into<String>,
        store: Arc<dyn CheckpointStore>,
        host: Arc<dyn DurableHost>,
        clock: Arc<dyn Clock>,
        policy: SuspendPolicy,
    ) -> Engine {
        let hub = hub.into();
        Engine {
            shared: Arc::new_cyclic(|me| Shared {
                store,
                host,
                clock,
                policy,
                estimator: Mutex::new(Estimator::default()),
                hub,
                functions: RwLock::new(HashMap::new()),
                waiting: Mutex::new(Vec::new()),
                any_waiting: std::sync::atomic::AtomicBool::new(false),
                running: Mutex::new(HashMap::new()),
                run_ended: tokio::sync::Notify::new(),
                watchers: Mutex::new(HashMap::new()),
                finished: Mutex::new(std::collections::VecDeque::new()),
                shedding: std::sync::atomic::AtomicBool::new(false),
                load_policy: Mutex::new(super::LoadPolicy::default()),
                pressure_since: Mutex::new(None),
                shed: Mutex::new(Vec::new()),
                starts_open: tokio::sync::watch::Sender::new(true),
                me: me.clone(),
            }),
        }
    }

    /// Registers `function` as version `version` of `name`.
    pub fn register(
        &self,
        name: FunctionName,
        version: Version,
        function: impl super::DurableFunction,
    ) {
        self.shared
            .functions
            .write()
            .insert((name, version), Arc::new(super::Typed(function)));
    }

    /// Starts a durable execution of `version` of the invoked function. Its id is the
    /// invocation's.
    ///
    /// An invocation that was started before (the same id delivered again, as after a node
    /// died before acknowledging it) does not start over: a suspended execution stays
    /// suspended (its host is asked again to wake it), and one that was running continues
    /// from its journal, so completed steps are not run again.
    pub async fn start(
        &self,
        invocation: Invocation,
        version: Version,
    ) -> Result<RunResult, EngineError> {
        let execution: ExecutionId = invocation.id.into();
        self.starts_opened().await;
        if let Some(mut stored) = self.shared.store.load(execution).await? {
            if let Some(pending) = stored.pending.clone() {
                // The host is asked again; what it hands back already waits here.
                let _ = self.shared.host.arm(Suspension {
                    execution,
                    function: stored.function.clone(),
                    version: stored.version,
                    at: stored.journal.len() as u32,
                    pending: pending.clone(),
                });
                return Ok(RunResult::Suspended {
                    execution,
                    waiting_for: pending,
                    at: stored.journal.len() as u32,
                });
            }
            if self.shared.running.lock().contains_key(&execution) {
                return Err(EngineError::NotSuspended(execution));
            }
            stored.pending = None;
            return self.drive(stored, true).await;
        }
        let mut checkpoint = Checkpoint::new(
            invocation.id.into(),
            invocation.function.name.clone(),
            version,
            invocation.payload,
            self.shared.hub.clone(),
            self.shared.clock.system_time(),
        );
        checkpoint.context = invocation.context;
        self.drive(checkpoint, false).await
    }

    /// Resumes a suspended execution with the result of what it waited for.
    pub async fn resume(
        &self,
        execution: ExecutionId,
        result: Result<Bytes, FunctionError>,
    ) -> Result<RunResult, EngineError> {
        let mut checkpoint = self
            .shared
            .store
            .load(execution)
            .await?
            .ok_or(EngineError::UnknownExecution(execution))?;
        if checkpoint.pending.is_none() || self.shared.running.lock().contains_key(&execution) {
            return Err(EngineError::NotSuspended(execution));
        }
        checkpoint.pending = None;
        checkpoint.resolution = Some(result);
        // Durable before the replay, so a crash now still knows the dependency arrived.
        self.shared.store.save(&checkpoint).await?;
        self.drive(checkpoint, true).await
    }

    /// The function and version `execution` runs, from its checkpoint: where a host sends
    /// its replay before it calls [`Engine::wake`]. `None` when the store has no
    /// checkpoint of it.
    pub async fn target_of(
        &self,
        execution: ExecutionId,
    ) -> Result<Option<(FunctionName, Version)>, EngineError> {
        Ok(self
            .shared
            .store
            .load(execution)
            .await?
            .map(|c| (c.function, c.version)))
    }

    /// Wakes an execution whose operation at journal position `at` has its result: a timer
    /// that fired, a child that finished, an event that came (its payload is `result`).
    /// An execution shed under load at `at` runs on from there, and `result` is not used.
    /// For hosts that wake executions themselves (see
    /// [`DurableHost::arm`]); any engine that shares the checkpoint store and has the
    /// function registered can be the one called. Only an execution suspended at `at`
    /// runs; calling it twice for one operation runs the replay once.
    pub async fn wake(
        &self,
        execution: ExecutionId,
        at: u32,
        result: Result<Bytes, FunctionError>,
    ) -> Result<Woken, EngineError> {
        let mut checkpoint = loop {
            let Some(checkpoint) = self.shared.store.load(execution).await? else {
                // A checkpoint is saved before anything can wait: none means it finished.
                return Ok(Woken::Finished);
            };
            // Saved as suspended at `at` and still counted as running: its run saved the
            // suspension and is stopping (a child that finished at once woke it this
            // soon). Once it has stopped, look again.
            let stopping = checkpoint.pending.is_some()
                && checkpoint.journal.len() == at as usize
                && self.is_running(execution);
            if stopping && self.run_ends(execution).await {
                continue;
            }
            break checkpoint;
        };
        let recorded = checkpoint.journal.len();
        match checkpoint.pending.clone() {
            Some(waiting_for) if recorded > at as usize => Ok(Woken::Waiting {
                waiting_for,
                at: recorded as u32,
            }),
            Some(pending) if recorded == at as usize && !self.is_running(execution) => {
                checkpoint.pending = None;
                // Shed under load, it stopped before an operation that has not run: it
                // runs now. Anything else hands the operation its result.
                if pending != PendingDependency::Load {
                    checkpoint.resolution = Some(result);
                }
                // Durable before the replay, so a crash now still knows the dependency
                // arrived.
                self.shared.store.save(&checkpoint).await?;
                let run = self.drive(checkpoint, true).await?;
                Ok(Woken::Ran { run })
            }
            _ => Ok(Woken::Running),
        }
    }

    /// Hands `wake` of an execution of `function` at `version` to the host to run as an
    /// invocation of that function ([`DurableHost::run_resumed`]), or runs it on a task of
    /// its own when the host does not take it: what a host's own timer does when it fires
    /// (see [`DurableHost::arm`]).
    pub fn resume_later(&self, function: &FunctionName, version: Version, wake: Wake) {
        self.shared.resume_later(&(function.clone(), version), wake);
    }

    /// Carries out `wake`: [`Engine::wake`], then, with [`Wake::take_over`], continues an
    /// execution found neither suspended at its position nor running here from its journal
    /// ([`Engine::take_over`]). What the handler of a durable function runs for an
    /// invocation that carries a wake (see [`Invocation::wake`]).
    pub async fn run_wake(&self, wake: Wake) -> Result<Woken, EngineError> {
        let Wake {
            execution,
            at,
            result,
            take_over,
            ..
        } = wake;
        match self.wake(execution, at, result).await {
            Ok(Woken::Running) if take_over => self.take_over(execution).await,
            other => other,
        }
    }

    /// Continues a stored execution whose run died with its node (a host that sees the
    /// work that drove it delivered again calls this): a suspended one is left waiting
    /// ([`Woken::Waiting`]), one running here is left alone ([`Woken::Running`]), any other
    /// runs again from its journal — completed operations are not done again.
    pub async fn take_over(&self, execution: ExecutionId) -> Result<Woken, EngineError> {
        let Some(mut checkpoint) = self.shared.store.load(execution).await? else {
            return Ok(Woken::Finished);
        };
        if let Some(waiting_for) = checkpoint.pending.clone() {
            return Ok(Woken::Waiting {
                waiting_for,
                at: checkpoint.journal.len() as u32,
            });
        }
        if self.is_running(execution) {
            return Ok(Woken::Running);
        }
        checkpoint.pending = None;
        let run = self.drive(checkpoint, true).await?;
        Ok(Woken::Ran { run })
    }

    pub(super) fn is_running(&self, execution: ExecutionId) -> bool {
        self.shared.running.lock().contains_key(&execution)
    }

    /// Waits until `execution` no longer runs here, for as long as a run takes to stop
    /// (five seconds at most): false if it still runs then.
    pub(super) async fn run_ends(&self, execution: ExecutionId) -> bool {
        let patience = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(patience);
        loop {
            let ended = self.shared.run_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !self.is_running(execution) {
                return true;
            }
            tokio::select! {
                () = &mut ended => {}
                () = &mut patience => return !self.is_running(execution),
            }
        }
    }

    /// Delivers an event: every execution waiting for a matching topic is woken with its
    /// payload, its replay run where the host says (on a hub, as an invocation of its
    /// function). Returns how many were woken.
    pub async fn deliver(&self, event: &Event) -> usize {
        let due: Vec<EventWait> = {
            let mut waiting = self.shared.waiting.lock();
            let host = &self.shared.host;
            let (due, left) = std::mem::take(&mut *waiting)
                .into_iter()
                .partition(|w| host.matches(&w.filter, &event.topic));
            *waiting = left;
            self.shared.mark_waiting(&waiting);
            due
        };
        let woken = due.len();
        for w in due {
            let wake = Wake::new(w.execution, w.at, Ok(event.payload.clone()));
            self.shared.resume_later(&w.target, wake);
        }
        woken
    }

    /// After a restart, takes up every execution in the store: those waiting for a timer,
    /// an event or lower load wait again; those that were running, or waiting for a child
    /// (whose result died with the process), run again from their journal, each handed to
    /// the host as a wake that takes the execution over (see
    /// [`DurableHost::run_resumed`]): completed steps are not redone, and the child is
    /// invoked again under the same deterministic id. Returns the executions that run again;
    /// [`Engine::outcome`] tells how each ends.
    pub async fn recover(&self) -> Result<Vec<ExecutionId>, EngineError> {
        self.recover_except(|_| false).await
    }

    /// Makes starts and imports wait until the next [`Engine::recover`] has listed the
    /// store, so that it takes up only what was there before: an execution started here
    /// meanwhile is not taken for one left by an earlier engine. For a host that recovers
    /// on a task of its own as it starts.
    pub fn hold_starts(&self) {
        self.shared.starts_open.send_replace(false);
    }

    /// Resolves once starts are not held (see [`Engine::hold_starts`]).
    pub(super) async fn starts_opened(&self) {
        if !*self.shared.starts_open.borrow() {
            let mut open = self.shared.starts_open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
    }

    /// [`Engine::recover`], leaving alone the checkpoints `others` says are not the
    /// engine's: a store shared with another kind of execution (a hub keeps its Lambda
    /// durable executions in the same store).
    pub async fn recover_except(
        &self,
        others: impl Fn(&Checkpoint) -> bool,
    ) -> Result<Vec<ExecutionId>, EngineError> {
        let listed = self.shared.store.list().await;
        // Held starts go on now, whether the store could be listed or not.
        self.shared.starts_open.send_replace(true);
        let mut ran = Vec::new();
        for id in listed? {
            let Some(mut checkpoint) = self.shared.store.load(id).await? else {
                continue;
            };
            if others(&checkpoint) {
                continue;
            }
            let target = (checkpoint.function.clone(), checkpoint.version);
            let at = checkpoint.journal.len() as u32;
            match checkpoint.pending.take() {
                Some(
                    p @ (PendingDependency::Timer(_)
                    | PendingDependency::Event { .. }
                    | PendingDependency::Load),
                ) => self.shared.schedule(id, &target, &p, at),
                pending => {
                    if pending.is_some() {
                        // A child's result died with the process: the operation runs
                        // again. Stored first, so the take-over finds it waiting for nothing.
                        self.shared.store.save(&checkpoint).await?;
                    }
                    let wake = Wake::new(id, at, Ok(Bytes::new())).taking_over();
                    self.shared.resume_later(&target, wake);
                    ran.push(id);
                }
            }
        }
        Ok(ran)
    }

    /// Whether some execution waits for an event (so events are worth delivering).
    pub fn is_waiting_for_events(&self) -> bool {
        self.shared
            .any_waiting
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits for the final outcome of an execution driven by this engine. An execution
    /// that finished before the call is answered from the last
    /// [`Engine::REMEMBERED_OUTCOMES`] outcomes. `None` if the engine is dropped first.
    pub async fn outcome(&self, execution: ExecutionId) -> Option<Outcome> {
        let rx = {
            // Checked under the watchers' lock, which completion takes before recording.
            let mut watchers = self.shared.watchers.lock();
            if let Some(done) = self.shared.finished_of(execution) {
                return Some(done.outcome);
            }
            let (tx, rx) = oneshot::channel();
            watchers.entry(execution).or_default().push(tx);
            rx
        };
        rx.await.ok()
    }

    /// Runs (or replays) an execution; `stored` says whether its checkpoint is in the store
    /// already.
    pub(super) async fn drive(
        &self,
        checkpoint: Checkpoint,
        stored: bool,
    ) -> Result<RunResult, EngineError> {
        let id = checkpoint.execution_id;
        let key = (checkpoint.function.clone(), checkpoint.version);
        let function = self
            .shared
            .functions
            .read()
            .get(&key)
            .cloned()
            .ok_or_else(|| EngineError::UnknownFunction(key.0.clone(), key.1))?;
        let restored = !checkpoint.journal.is_empty() || checkpoint.resolution.is_some();
        let input = checkpoint.input.clone();
        let context = checkpoint.context.clone();
        let started = checkpoint.created_at;
        let (stop_tx, stop_rx) = oneshot::channel();
        let ctx = DurableContext::new(checkpoint, stored, stop_tx, self.shared.clone());
        let state = ctx.state.clone();
        match self.shared.running.lock().entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                return Err(EngineError::NotSuspended(id));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Some(state.clone()));
            }
        }
        // A run whose future is dropped (its invocation timed out or was cancelled) stops
        // counting as running, so that it can be taken over or recovered from its journal.
        let running = RunningGuard {
            shared: &self.shared,
            id,
        };
        // A stored one that ended already (stopped while a wake saved it again) does not
        // run again. (A first run has nothing stored, so nothing to look up.)
        if let Some(done) = stored.then(|| self.shared.finished_of(id)).flatten() {
            self.shared.store.remove(id).await?;
            return Ok(RunResult::Completed(done.outcome));
        }
        if restored {
            function.on_restore_boxed(&ctx).await;
        }
        let run = function.run_boxed(ctx, input);
        // The run's own limit: past it the execution ends with a timeout, like any call.
        let limit = self.shared.host.run_timeout(&key.0, key.1);
        let overrun = async move {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let mut stop_rx = stop_rx;
        let stopped = |stop: Result<Stop, oneshot::error::RecvError>| match stop {
            Ok(Stop::Suspended(pending)) => Ok(Err(pending)),
            Ok(Stop::Stopped(reason)) => Ok(Ok(Err(reason))),
            Ok(Stop::Store(e)) => Err(EngineError::Store(e)),
            Err(_) => Err(EngineError::NotSuspended(id)),
        };
        let ended = tokio::select! {
            biased;
            stop = &mut stop_rx => stopped(stop),
            outcome = run => Ok(Ok(outcome)),
            () = overrun => match stop_rx.try_recv() {
                // It suspended in the same poll that the limit passed: the suspension holds.
                Ok(stop) => stopped(Ok(stop)),
                Err(_) => Ok(Ok(Err(timed_out(limit.unwrap_or_default())))),
            },
        };
        match ended? {
            Ok(outcome) => {
                let finished = Finished {
                    execution: id,
                    function: key.0.clone(),
                    version: key.1,
                    context,
                    outcome: outcome.clone(),
                    resumed: restored,
                };
                // Still counted as running until its end is recorded, so that whoever
                // waits for the run to end ([`Engine::stop`]) finds how it ended.
                self.conclude(finished, started, || Some(state.lock().checkpoint.clone()))
                    .await?;
                drop(running);
                Ok(RunResult::Completed(outcome))
            }
            Err(pending) => {
                drop(running);
                let at = state.lock().checkpoint.journal.len() as u32;
                self.shared.schedule(id, &key, &pending, at);
                Ok(RunResult::Suspended {
                    execution: id,
                    waiting_for: pending,
                    at,
                })
            }
        }
    }

    /// Ends execution `finished.execution` with its outcome: delivered through the host
    /// ([`DurableHost::completed`]), then its checkpoint removed, then told to whoever
    /// waits ([`Engine::outcome`]). When the host cannot deliver it, the checkpoint
    /// `unsaved` gives (as the run left it) is kept, so that the execution can run again
    /// to the same outcome and deliver it then.
    pub(super) async fn conclude(
        &self,
        finished: Finished,
        started: std::time::SystemTime,
        unsaved: impl FnOnce() -> Option<Checkpoint>,
    ) -> Result<(), EngineError> {
        let id = finished.execution;
        if let Err(reason) = self.shared.host.completed(&finished).await {
            if let Some(checkpoint) = unsaved() {
                self.shared.store.save(&checkpoint).await?;
            }
            return Err(EngineError::Delivery(reason));
        }
        self.shared.store.remove(id).await?;
        let outcome = finished.outcome.clone();
        let finished = Ended {
            execution: id,
            function: finished.function,
            version: finished.version,
            outcome: finished.outcome,
            started,
            ended: self.shared.clock.system_time(),
        };
        let waiting = {
            let mut watchers = self.shared.watchers.lock();
            let mut ended = self.shared.finished.lock();
            if ended.len() >= Self::REMEMBERED_OUTCOMES {
                ended.pop_front();
            }
            ended.push_back(finished);
            watchers.remove(&id).unwrap_or_default()
        };
        for w in waiting {
            let _ = w.send(outcome.clone());
        }
        Ok(())
    }
}

impl Shared {
    /// Takes `execution` out of the table of event waits and the list of executions shed
    /// under load (a timer that fires for it later finds it finished).
    pub(super) fn forget_waits(&self, execution: ExecutionId) {
        let mut waiting = self.waiting.lock();
        waiting.retain(|w| w.execution != execution);
        self.mark_waiting(&waiting);
        drop(waiting);
        self.shed.lock().retain(|(.., id)| *id != execution);
    }

    /// How `execution` ended, if it is among the latest to end here.
    pub(super) fn finished_of(&self, execution: ExecutionId) -> Option<Ended> {
        self.finished
            .lock()
            .iter()
            .rev()
            .find(|f| f.execution == execution)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhub_core::{BoxFuture, SystemClock};

    struct NoChildren;

    impl DurableHost for NoChildren {
        fn invoke(&self, _: Invocation) -> BoxFuture<'static, Outcome> {
            Box::pin(async { Ok(Bytes::new()) })
        }
    }

    /// A wake that comes while the run that suspended is still stopping (a child that
    /// finished at once) waits for it to stop, then runs the replay: it is not taken for a
    /// second run and dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_during_the_stop_of_the_run_that_suspended_waits_for_it() {
        let store = Arc::new(crate::MemoryStore::new());
        let engine = Engine::new(
            "hub",
            store.clone(),
            Arc::new(NoChildren),
            Arc::new(SystemClock),
            SuspendPolicy::default(),
        );
        let name = FunctionName::new("f").unwrap();
        engine.register(
            name.clone(),
            Version::FIRST,
            super::super::durable_fn(|_ctx: DurableContext, _input: Bytes| async {
                Ok(Bytes::from_static(b"replayed"))
            }),
        );
        // Saved as suspended at position 0, and still counted as running.
        let id = ExecutionId::random();
        let mut checkpoint = Checkpoint::new(
            id,
            name,
            Version::FIRST,
            Bytes::new(),
            "hub",
            std::time::SystemTime::now(),
        );
        checkpoint.pending = Some(PendingDependency::Child(fnhub_core::InvocationId::random()));
        store.save(&checkpoint).await.unwrap();
        engine.shared.running.lock().insert(id, None);
        let woken = tokio::spawn({
            let engine = engine.clone();
            async move { engine.wake(id, 0, Ok(Bytes::new())).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!woken.is_finished(), "it waits for the run to stop");
        // The run stops.
        drop(RunningGuard {
            shared: &engine.shared,
            id,
        });
        let woken = woken.await.unwrap().unwrap();
        assert!(
            matches!(woken, Woken::Ran { run: RunResult::Completed(Ok(ref out)) } if out == "replayed"),
            "{woken:?}"
        );
    }
}
