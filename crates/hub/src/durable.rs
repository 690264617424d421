//! Durable functions on the edge hub: the engine's host is the hub itself.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fnhub_checkpoint::durable::{DurableHost, Engine, EngineError, Finished, RunResult, Woken};
use fnhub_core::{
    BoxFuture, Clock, ErrorKind, ExecutionId, FunctionError, FunctionName, FunctionSpec,
    Invocation, InvocationId, LoadProbe, Outcome, PendingDependency, Version,
};
use fnhub_router::topic::{TopicFilter, TopicName};
use fnhub_scheduler::{Scheduler, SubmitError, WeakScheduler};
use parking_lot::Mutex;

use crate::edge::route::{Routes, too_deep};

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

/// How the first run of a tracked invocation of a durable function ended.
#[derive(Debug)]
pub(crate) enum DurableEnd {
    /// It suspended: on what, at which journal position.
    Suspended(PendingDependency, u32),
    /// It finished, and its outcome went through [`DurableHost::completed`].
    Completed,
    /// The engine failed (the store, or delivering the outcome): it should run again.
    Failed,
}

/// Runs a durable execution's children on the hub's scheduler and matches its waits with
/// MQTT topic filters.
pub(crate) struct HubHost {
    /// The hub's scheduler, which the host's children and replays run on; weak, as the
    /// host lives inside it (through the durable functions' handlers).
    scheduler: WeakScheduler,
    /// The hub's depth limit, which durable children count against like any child.
    max_depth: u32,
    /// Replays waiting for a worker, by the id of the invocation of their function that
    /// will run them (the function's handler looks here before it starts an execution).
    resumes: Resumes,
    /// Set when the hub serves a cloud runtime: children run there, and suspended
    /// executions are woken there, on whichever node.
    pub(crate) cloud: OnceLock<Arc<dyn CloudLink>>,
    /// Invocations whose caller wants to know whether their durable execution suspended
    /// (filled while they run; see [`HubHost::track`]).
    tracked: Mutex<HashMap<InvocationId, Option<DurableEnd>>>,
    /// Each durable function's timeout, which bounds each of its runs.
    run_timeouts: Mutex<HashMap<(FunctionName, Version), Duration>>,
}

/// Replays parked for the invocations that will run them.
pub(crate) type Resumes = Arc<Mutex<HashMap<InvocationId, BoxFuture<'static, ()>>>>;

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
    pub(crate) fn new(scheduler: WeakScheduler, max_depth: u32) -> HubHost {
        HubHost {
            scheduler,
            max_depth,
            resumes: Arc::default(),
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

    /// Records how the first run of invocation `id` ended, if someone listens. A
    /// suspension nobody listens for (a durable function invoked on the hub itself, not
    /// through its cloud runtime node) goes to the cloud runtime, if the hub serves one,
    /// to be woken there.
    pub(crate) fn ended(&self, id: InvocationId, end: DurableEnd) {
        if let Some(slot) = self.tracked.lock().get_mut(&id) {
            *slot = Some(end);
            return;
        }
        if let (DurableEnd::Suspended(pending, at), Some(remote)) = (end, self.cloud.get()) {
            remote.suspended(id.into(), pending, at);
        }
    }

    /// The replays parked for invocations of durable functions: a durable function's
    /// handler runs the one parked under its invocation's id, if any, instead of starting
    /// an execution.
    pub(crate) fn resumes(&self) -> Resumes {
        self.resumes.clone()
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

    /// The replay becomes an invocation of its function, so that it waits for a worker,
    /// counts against admission and the function's limits and shows in the load and the
    /// function's stats like any run of it. A hub that refuses it (full, shutting down)
    /// leaves it to a task of its own: a resumed execution is never dropped.
    fn run_resumed(
        &self,
        execution: ExecutionId,
        function: &FunctionName,
        version: Version,
        replay: BoxFuture<'static, ()>,
    ) {
        // A hub that is gone or closing leaves the execution in its store, as it stands,
        // for the next hub on that store to take up (`EdgeHub::recover_durable`).
        let Some(scheduler) = self.scheduler.upgrade() else {
            tracing::debug!(%execution, "the hub is gone: the execution stays in its store");
            return;
        };
        let invocation = Invocation::new(pinned(function, version), Bytes::new());
        let id = invocation.id;
        self.resumes.lock().insert(id, replay);
        match scheduler.try_submit_detached(invocation) {
            Ok(_) => {}
            Err(SubmitError::ShuttingDown(_)) => {
                self.resumes.lock().remove(&id);
                tracing::debug!(%execution, "the hub is closing: the execution stays in its store");
            }
            Err(error) => {
                tracing::debug!(%execution, %error, "resumed execution not admitted; it runs on a task");
                if let Some(replay) = self.resumes.lock().remove(&id) {
                    tokio::spawn(replay);
                }
            }
        }
    }

    /// Attached to a cloud runtime, every suspended execution is woken through it, on any
    /// node: timers, children, events, and executions shed under load.
    fn wakes(&self, _execution: ExecutionId, _pending: &PendingDependency) -> bool {
        self.cloud.get().is_some()
    }

    fn run_timeout(&self, function: &FunctionName, version: Version) -> Option<Duration> {
        self.run_timeouts
            .lock()
            .get(&(function.clone(), version))
            .copied()
    }

    fn completed(
        &self,
        finished: &Finished,
    ) -> BoxFuture<'static, Result<(), fnhub_checkpoint::durable::DeliveryError>> {
        match self.cloud.get() {
            Some(remote) => remote.completed(finished),
            None => Box::pin(std::future::ready(Ok(()))),
        }
    }

    fn matches(&self, filter: &str, topic: &str) -> bool {
        match (filter.parse::<TopicFilter>(), topic.parse::<TopicName>()) {
            (Ok(f), Ok(t)) => f.matches(&t),
            _ => false,
        }
    }
}

impl HubHost {
    /// Wakes a durable execution whose operation at journal position `at` has its result
    /// (see [`Engine::wake`]); with `take_over`, one found running (its node died) is
    /// continued from its journal (see [`Engine::take_over`]). The replay runs on one of
    /// the hub's workers, as an invocation of the execution's function (read from its
    /// checkpoint), admitted with `admit` so that admission and load see it; `Err` hands
    /// back what the hub did not admit. An execution with no checkpoint is answered by the
    /// engine at once, as [`Engine::wake`] answers it.
    pub(crate) async fn wake(
        &self,
        engine: &Engine,
        admit: impl FnOnce(Invocation) -> Result<fnhub_scheduler::Ticket, SubmitError>,
        execution: ExecutionId,
        at: u32,
        result: Outcome,
        take_over: bool,
    ) -> Result<Result<Woken, EngineError>, SubmitError> {
        // Read here only for its function: the replay reads the checkpoint again when it
        // runs, as it may have moved on while the replay waited for a worker.
        let target = match engine.target_of(execution).await {
            Ok(Some(target)) => target,
            // Nothing to replay (gone, or not stored yet): the engine's answer as it is.
            Ok(None) => return Ok(engine.wake(execution, at, result).await),
            Err(e) => return Ok(Err(e)),
        };
        let engine = engine.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let replay: BoxFuture<'static, ()> = Box::pin(async move {
            let woken = match engine.wake(execution, at, result).await {
                Ok(Woken::Running) if take_over => engine.take_over(execution).await,
                other => other,
            };
            let _ = tx.send(woken);
        });
        let invocation = Invocation::new(pinned(&target.0, target.1), Bytes::new());
        let id = invocation.id;
        self.resumes.lock().insert(id, replay);
        let ticket = match admit(invocation) {
            Ok(ticket) => ticket,
            Err(refused) => {
                self.resumes.lock().remove(&id);
                return Err(refused);
            }
        };
        let completion = ticket.await;
        Ok(rx.await.unwrap_or_else(|_| {
            // Cut short (its timeout): it no longer runs, and a wake or take-over later
            // continues it from its journal.
            let reason = match completion.outcome {
                Err(e) => e.to_string(),
                Ok(_) => "the replay did not run".to_owned(),
            };
            Err(EngineError::Interrupted(reason))
        }))
    }
}

/// `function` at exactly `version`.
fn pinned(function: &FunctionName, version: Version) -> fnhub_core::FunctionRef {
    fnhub_core::FunctionRef::version(function.clone(), version)
}

/// Starts a durable execution for an invocation of a durable function.
pub(crate) async fn start(
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

/// Publishes the output of an execution that finished after a suspension on its
/// function's output topic, like any output (the run that starts an execution returns
/// its output through the scheduler).
pub(crate) fn completion_hook(
    routes: Arc<Routes>,
    scheduler: WeakScheduler,
) -> Arc<dyn Fn(&Finished) + Send + Sync> {
    Arc::new(move |done: &Finished| {
        let (Some(scheduler), true, Ok(output)) =
            (scheduler.upgrade(), done.resumed, &done.outcome)
        else {
            return;
        };
        publish_resumed_output(&routes, &scheduler, done, output);
    })
}

fn publish_resumed_output(routes: &Routes, scheduler: &Scheduler, done: &Finished, output: &Bytes) {
    let spec = scheduler
        .deployed()
        .into_iter()
        .find(|s| s.name == done.function && s.version == done.version);
    if let Some(template) = spec.and_then(|s| s.output_topic.clone())
        && !output.is_empty()
    {
        routes.publish_output(
            scheduler,
            &done.function,
            &done.context,
            &template,
            output.clone(),
        );
    }
}
