//! Durable functions on the edge hub: the engine's host is the hub itself.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fnhub_checkpoint::durable::{
    DurableHost, Engine, EngineError, Finished, RunResult, Suspension, Woken,
};
use fnhub_core::{
    BoxFuture, Clock, ErrorKind, ExecutionId, FunctionError, FunctionName, FunctionSpec,
    Invocation, InvocationId, LoadProbe, Outcome, PendingDependency, Version, Wake,
};
use fnhub_router::topic::{TopicFilter, TopicName};
use fnhub_scheduler::{Scheduler, SubmitError, WeakScheduler};
use parking_lot::Mutex;

use crate::edge::route::{Routes, too_deep};
use crate::wakes::{Due, Timers};

/// Runs children where a hub attached to a cloud runtime sends them (any node), and wakes
/// its durable executions on any node.
pub(crate) trait CloudLink: Send + Sync + 'static {
    /// Runs a child invocation somewhere; the future resolves to its outcome.
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome>;

    /// Delivers the outcome of a finished execution (see [`DurableHost::completed`]).
    fn completed(
        &self,
        finished: &Finished,
    ) -> BoxFuture<'static, Result<(), fnhub_checkpoint::durable::DeliveryError>>;

    /// An event published on this hub: executions waiting for it, on any node, are woken.
    fn event(&self, event: &fnhub_core::Event);

    /// A durable execution started on this hub (not through the remote) suspended at
    /// journal position `at`, waiting for `pending`: the remote sees that it is woken.
    fn suspended(&self, execution: ExecutionId, pending: PendingDependency, at: u32);
}

/// How a tracked invocation of a durable function ended: the first run of its execution,
/// or the wake it carried.
#[derive(Debug)]
pub(crate) enum DurableEnd {
    /// It suspended: on what, at which journal position.
    Suspended(PendingDependency, u32),
    /// It finished, and its outcome went through [`DurableHost::completed`].
    Completed,
    /// The engine failed (the store, or delivering the outcome): it should run again.
    Failed,
    /// The invocation carried a wake (see [`Invocation::wake`]): what it did.
    Woke(Result<Woken, EngineError>),
}

/// Runs a durable execution's children on the hub's scheduler and matches its waits with
/// MQTT topic filters.
pub(crate) struct HubHost {
    /// The hub's scheduler, which the host's children and replays run on; weak, as the
    /// host lives inside it (through the durable functions' handlers).
    scheduler: WeakScheduler,
    /// The hub's depth limit, which durable children count against like any child.
    max_depth: u32,
    /// Where the outputs of resumed executions are published.
    routes: Arc<Routes>,
    /// Set when the hub serves a cloud runtime: children run there, and suspended
    /// executions are woken there, on whichever node.
    pub(crate) cloud: OnceLock<Arc<dyn CloudLink>>,
    /// Invocations whose caller wants to know whether their durable execution suspended
    /// (filled while they run; see [`HubHost::track`]).
    tracked: Mutex<HashMap<InvocationId, Option<DurableEnd>>>,
    /// Each durable function's timeout, which bounds each of its runs.
    run_timeouts: Mutex<HashMap<(FunctionName, Version), Duration>>,
    /// The hub's timer table, which wakes the executions suspended in a sleep.
    pub(crate) timers: Arc<Timers>,
}

/// How long after a durable function's timeout its invocation is cut, if the engine has not
/// ended the run by then (it stops the run at the timeout and delivers a `Timeout` outcome).
pub(crate) const BACKSTOP: Duration = Duration::from_secs(1);

/// The cloud runtime's work subject for wakes of suspended durable executions
/// (`fnhub.{deployment}.work.fnhub-resume`): a wake names its execution, whose function the
/// node learns from its checkpoint. Not a function: on a hub, a resumed execution replays
/// as an invocation of its own function (counted, limited and timed as that function), and
/// a replay cut short (its timeout, a dropped call) keeps its checkpoint and no longer
/// counts as running: it can be taken over or recovered from its journal.
pub const RESUME_FUNCTION: &str = "fnhub-resume";

impl HubHost {
    pub(crate) fn new(
        scheduler: WeakScheduler,
        routes: Arc<Routes>,
        max_depth: u32,
        timers: Arc<Timers>,
    ) -> HubHost {
        HubHost {
            scheduler,
            routes,
            max_depth,
            timers,
            cloud: OnceLock::new(),
            tracked: Mutex::default(),
            run_timeouts: Mutex::default(),
        }
    }

    /// Records the timeout of durable function `spec`, which bounds each of its runs.
    pub(crate) fn set_run_timeout(&self, spec: &FunctionSpec) {
        self.run_timeouts
            .lock()
            .insert((spec.name.clone(), spec.version), spec.resources.timeout);
    }

    /// Starts listening for a suspension of the invocation `id`.
    pub(crate) fn track(&self, id: InvocationId) {
        self.tracked.lock().insert(id, None);
    }

    /// Stops listening: how its durable execution's first run ended, if it was one.
    pub(crate) fn untrack(&self, id: InvocationId) -> Option<DurableEnd> {
        self.tracked.lock().remove(&id).flatten()
    }

    /// Records how invocation `id` of a durable function ended, if someone listens. A
    /// suspension nobody listens for (a durable function invoked on the hub itself, not
    /// through its cloud runtime node, or a replay the hub resumed itself) goes to the cloud
    /// runtime, if the hub serves one, to be woken there.
    pub(crate) fn ended(&self, id: InvocationId, end: DurableEnd) {
        if let Some(slot) = self.tracked.lock().get_mut(&id) {
            *slot = Some(end);
            return;
        }
        let suspended = match end {
            DurableEnd::Suspended(pending, at) => Some((id.into(), pending, at)),
            DurableEnd::Woke(Ok(Woken::Ran {
                run:
                    RunResult::Suspended {
                        execution,
                        waiting_for,
                        at,
                    },
            })) => Some((execution, waiting_for, at)),
            DurableEnd::Woke(Err(error)) => {
                tracing::warn!(invocation = %id, %error, "could not resume a durable execution");
                None
            }
            _ => None,
        };
        if let (Some((execution, pending, at)), Some(remote)) = (suspended, self.cloud.get()) {
            remote.suspended(execution, pending, at);
        }
    }
}

impl DurableHost for HubHost {
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome> {
        if let Some(remote) = self.cloud.get() {
            return remote.invoke(child);
        }
        if let Some(refusal) = too_deep(&child.function, &child.context, self.max_depth) {
            let error =
                FunctionError::new(ErrorKind::Rejected, refusal).with_type("DepthLimitExceeded");
            return Box::pin(std::future::ready(Err(error)));
        }
        let scheduler = self.scheduler.upgrade();
        Box::pin(async move {
            let Some(scheduler) = scheduler else {
                return Err(FunctionError::new(ErrorKind::Cancelled, "the hub is gone"));
            };
            // The child's context came from `InvocationContext::child` in the engine.
            match scheduler.try_submit_child(child) {
                Ok(ticket) => ticket.await.outcome,
                Err(e) => Err(FunctionError::new(ErrorKind::Rejected, e.to_string())),
            }
        })
    }

    /// The replay becomes an invocation of its function carrying the wake, so that it
    /// waits for a worker, counts against admission and the function's limits and shows in
    /// the load and the function's stats like any run of it. A hub that refuses it (full)
    /// hands the wake back, for the engine to run on a task: a resumed execution is never
    /// dropped.
    fn run_resumed(
        &self,
        function: &FunctionName,
        version: Version,
        wake: Wake,
    ) -> Result<(), Wake> {
        // A hub that is gone or closing leaves the execution in its store, as it stands,
        // for the next hub on that store to take up (`EdgeHub::recover_durable`).
        let Some(scheduler) = self.scheduler.upgrade() else {
            tracing::debug!(execution = %wake.execution, "the hub is gone: the execution stays in its store");
            return Ok(());
        };
        let execution = wake.execution;
        match scheduler.try_submit_detached(Invocation::resuming(pinned(function, version), wake)) {
            Ok(_) => Ok(()),
            Err(SubmitError::ShuttingDown(_)) => {
                tracing::debug!(%execution, "the hub is closing: the execution stays in its store");
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%execution, %error, "resumed execution not admitted; it runs on a task");
                match error.into_invocation().wake {
                    Some(wake) => Err(wake),
                    None => Ok(()),
                }
            }
        }
    }

    /// The hub's wake strategy. Attached to a cloud runtime, the hub takes every
    /// suspension, and the cloud runtime wakes it on any node (the node records it once
    /// the run has ended: see [`HubHost::ended`]): timers, children, events, executions
    /// shed under load. Otherwise a timer goes in the hub's one table of timers (see
    /// [`crate::wakes`]), and the engine keeps the rest: its table of event waits, its list
    /// of shed executions, a task that awaits the child.
    fn arm(&self, suspension: Suspension) -> Result<(), Suspension> {
        if self.cloud.get().is_some() {
            return Ok(());
        }
        let PendingDependency::Timer(at) = suspension.pending else {
            return Err(suspension);
        };
        let wake = suspension.wake(Ok(Bytes::new()));
        self.timers.arm(
            at,
            Due::Engine {
                function: suspension.function,
                version: suspension.version,
                wake,
            },
        );
        Ok(())
    }

    fn run_timeout(&self, function: &FunctionName, version: Version) -> Option<Duration> {
        self.run_timeouts
            .lock()
            .get(&(function.clone(), version))
            .copied()
    }

    /// The outcome goes to the cloud runtime's caller, if the hub serves one; then the
    /// output of an execution that finished after a suspension is published on its
    /// function's output topic, like any output (the run that starts an execution returns
    /// its output through the scheduler). Before the checkpoint is removed, so a hub that
    /// dies in between publishes it again rather than never.
    fn completed(
        &self,
        finished: &Finished,
    ) -> BoxFuture<'static, Result<(), fnhub_checkpoint::durable::DeliveryError>> {
        let remote = self.cloud.get().map(|remote| remote.completed(finished));
        let output = match (&finished.outcome, finished.resumed) {
            (Ok(output), true) if !output.is_empty() => Some((finished.clone(), output.clone())),
            _ => None,
        };
        let (routes, scheduler) = (self.routes.clone(), self.scheduler.clone());
        Box::pin(async move {
            if let Some(remote) = remote {
                remote.await?;
            }
            if let (Some((done, output)), Some(scheduler)) = (output, scheduler.upgrade()) {
                publish_resumed_output(&routes, &scheduler, &done, output);
            }
            Ok(())
        })
    }

    fn matches(&self, filter: &str, topic: &str) -> bool {
        match (filter.parse::<TopicFilter>(), topic.parse::<TopicName>()) {
            (Ok(f), Ok(t)) => f.matches(&t),
            _ => false,
        }
    }
}

impl HubHost {
    /// Carries out `wake` (see [`Engine::run_wake`]) on one of the hub's workers, as an
    /// invocation of the execution's function (read from its checkpoint) admitted with
    /// `admit`, so that admission and load see it; `Err` hands back what the hub did not
    /// admit. An execution with no checkpoint is answered by the engine at once, as
    /// [`Engine::wake`] answers it.
    pub(crate) async fn wake(
        &self,
        engine: &Engine,
        admit: impl FnOnce(Invocation) -> Result<fnhub_scheduler::Ticket, SubmitError>,
        wake: Wake,
    ) -> Result<Result<Woken, EngineError>, SubmitError> {
        // Read here only for its function: the replay reads the checkpoint again when it
        // runs, as it may have moved on while the replay waited for a worker.
        let target = match engine.target_of(wake.execution).await {
            Ok(Some(target)) => target,
            // Nothing to replay (gone, or not stored yet): the engine's answer as it is.
            Ok(None) => return Ok(engine.run_wake(wake).await),
            Err(e) => return Ok(Err(e)),
        };
        let invocation = Invocation::resuming(pinned(&target.0, target.1), wake);
        let id = invocation.id;
        self.track(id);
        let ticket = match admit(invocation) {
            Ok(ticket) => ticket,
            Err(refused) => {
                self.untrack(id);
                return Err(refused);
            }
        };
        let completion = ticket.await;
        Ok(match self.untrack(id) {
            Some(DurableEnd::Woke(woken)) => woken,
            // Cut short (its timeout): it no longer runs, and a wake or take-over later
            // continues it from its journal.
            _ => {
                let reason = match completion.outcome {
                    Err(e) => e.to_string(),
                    Ok(_) => "the replay did not run".to_owned(),
                };
                Err(EngineError::Interrupted(reason))
            }
        })
    }
}

/// `function` at exactly `version`.
fn pinned(function: &FunctionName, version: Version) -> fnhub_core::FunctionRef {
    fnhub_core::FunctionRef::version(function.clone(), version)
}

/// Runs an invocation of a durable function: carries out the wake it carries (a resumed
/// execution), or else starts an execution. How it ended goes to [`HubHost::ended`].
pub(crate) async fn run(
    engine: &Engine,
    host: &HubHost,
    mut invocation: Invocation,
    version: Version,
) -> Outcome {
    match invocation.wake.take() {
        Some(wake) => {
            let woken = engine.run_wake(wake).await;
            host.ended(invocation.id, DurableEnd::Woke(woken));
            // Its output, when it ends, goes out through the engine's completion hook;
            // this run answers nothing of its own.
            Ok(Bytes::new())
        }
        None => start(engine, host, invocation, version).await,
    }
}

/// Starts a durable execution for an invocation of a durable function.
async fn start(
    engine: &Engine,
    host: &HubHost,
    invocation: Invocation,
    version: Version,
) -> Outcome {
    let id = invocation.id;
    match engine.start(invocation, version).await {
        Ok(RunResult::Completed(outcome)) => {
            host.ended(id, DurableEnd::Completed);
            outcome
        }
        // Suspended: nothing to output yet. The execution's id is the invocation's.
        Ok(RunResult::Suspended {
            waiting_for, at, ..
        }) => {
            host.ended(id, DurableEnd::Suspended(waiting_for, at));
            Ok(Bytes::new())
        }
        Ok(_) => Err(FunctionError::new(
            ErrorKind::Rejected,
            "unknown run result",
        )),
        Err(e) => {
            host.ended(id, DurableEnd::Failed);
            Err(FunctionError::new(ErrorKind::Rejected, e.to_string()).with_type("DurableEngine"))
        }
    }
}

/// Feeds the scheduler's load to the durable engine every second, while the scheduler
/// lives and is open.
pub(crate) async fn watch_load(scheduler: WeakScheduler, engine: Engine, clock: Arc<dyn Clock>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let Some(scheduler) = scheduler.upgrade() else {
            return;
        };
        if scheduler.is_closed() {
            return;
        }
        let snapshot = scheduler.snapshot();
        engine.check_load(&snapshot, clock.now()).await;
    }
}

/// Publishes `output` of `done` on its function's output topic, if it has one.
fn publish_resumed_output(routes: &Routes, scheduler: &Scheduler, done: &Finished, output: Bytes) {
    let spec = scheduler
        .deployed()
        .into_iter()
        .find(|s| s.name == done.function && s.version == done.version);
    if let Some(template) = spec.and_then(|s| s.output_topic.clone()) {
        routes.publish_output(scheduler, &done.function, &done.context, &template, output);
    }
}
