//! Durable functions on the edge hub: the engine's host is the hub itself.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use fnhub_checkpoint::durable::{DurableHost, Finished};
use fnhub_core::{
    BoxFuture, ErrorKind, ExecutionId, FunctionError, FunctionName, FunctionSpec, Invocation,
    InvocationId, Outcome, PendingDependency, Version,
};
use fnhub_router::topic::{TopicFilter, TopicName};
use parking_lot::Mutex;

use crate::edge::HubInner;

/// Runs children where a hub attached to a cloud runtime sends them (any node), and wakes
/// its durable executions on any node.
pub(crate) trait Remote: Send + Sync + 'static {
    /// Runs a child invocation somewhere; the future resolves to its outcome.
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome>;

    /// Delivers the outcome of a finished execution (see [`DurableHost::completed`]).
    fn completed(&self, finished: &Finished) -> BoxFuture<'static, Result<(), String>>;

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
    pub(crate) hub: OnceLock<Weak<HubInner>>,
    /// Replays waiting for a worker, by the id of the invocation that will run them.
    pub(crate) resumes: Arc<Mutex<HashMap<InvocationId, BoxFuture<'static, ()>>>>,
    /// Set when the hub serves a cloud runtime: children run there, and suspended
    /// executions are woken there, on whichever node.
    pub(crate) remote: OnceLock<Arc<dyn Remote>>,
    /// Invocations whose caller wants to know whether their durable execution suspended
    /// (filled while they run; see [`HubHost::track`]).
    tracked: Mutex<HashMap<InvocationId, Option<DurableEnd>>>,
    /// Each durable function's timeout, which bounds each of its runs.
    run_timeouts: Mutex<HashMap<(FunctionName, Version), Duration>>,
}

/// How long after a durable function's timeout its invocation is cut, if the engine has not
/// ended the run by then (it stops the run at the timeout and delivers a `Timeout` outcome).
pub(crate) const BACKSTOP: Duration = Duration::from_secs(1);

/// The function whose invocations run resumed durable executions on the hub's workers. Its
/// timeout is the longest of the hub's durable functions' timeouts (plus a second), so a
/// replay may run as long as its function may; the engine stops each replay at its own
/// function's timeout. A run cut short otherwise (a dropped call) keeps its checkpoint and
/// no longer counts as running: it can be taken over or recovered from its journal.
pub const RESUME_FUNCTION: &str = "fnhub-resume";

impl HubHost {
    pub(crate) fn new() -> HubHost {
        HubHost {
            hub: OnceLock::new(),
            resumes: Arc::default(),
            remote: OnceLock::new(),
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
        if let (DurableEnd::Suspended(pending, at), Some(remote)) = (end, self.remote.get()) {
            remote.suspended(id.into(), pending, at);
        }
    }

    /// The spec and handler of [`RESUME_FUNCTION`]: each invocation runs the replay
    /// registered under its id.
    pub(crate) fn resume_function(&self) -> (FunctionSpec, impl fnhub_core::Function) {
        let name = FunctionName::new(RESUME_FUNCTION).unwrap_or_else(|_| unreachable!());
        let resumes = self.resumes.clone();
        let handler = fnhub_core::from_fn(move |inv: Invocation| {
            let replay = resumes.lock().remove(&inv.id);
            async move {
                if let Some(replay) = replay {
                    replay.await;
                }
                Ok(Bytes::new())
            }
        });
        (FunctionSpec::in_process(name), handler)
    }
}

impl DurableHost for HubHost {
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome> {
        if let Some(remote) = self.remote.get() {
            return remote.invoke(child);
        }
        let hub = self.hub.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(hub) = hub else {
                return Err(FunctionError::new(ErrorKind::Cancelled, "the hub is gone"));
            };
            match hub.scheduler.try_submit(child) {
                Ok(ticket) => ticket.await.outcome,
                Err(e) => Err(FunctionError::new(ErrorKind::Rejected, e.to_string())),
            }
        })
    }

    /// The replay becomes an invocation of [`RESUME_FUNCTION`], so that it waits for a
    /// worker, counts against admission and shows in the load like any work. A hub that
    /// refuses it (full, shutting down) leaves it to a task of its own: a resumed
    /// execution is never dropped.
    fn run_resumed(&self, execution: ExecutionId, replay: BoxFuture<'static, ()>) {
        let Some(hub) = self.hub.get().and_then(Weak::upgrade) else {
            tokio::spawn(replay);
            return;
        };
        let Ok(function) = RESUME_FUNCTION.parse() else {
            tokio::spawn(replay);
            return;
        };
        let invocation = Invocation::new(function, Bytes::new());
        let id = invocation.id;
        self.resumes.lock().insert(id, replay);
        if let Err(error) = hub.scheduler.try_submit_detached(invocation) {
            tracing::debug!(%execution, %error, "resumed execution not admitted; it runs on a task");
            if let Some(replay) = self.resumes.lock().remove(&id) {
                tokio::spawn(replay);
            }
        }
    }

    /// Attached to a cloud runtime, every suspended execution is woken through it, on any
    /// node: timers, children, events, and executions shed under load.
    fn wakes(&self, _execution: ExecutionId, _pending: &PendingDependency) -> bool {
        self.remote.get().is_some()
    }

    fn run_timeout(&self, function: &FunctionName, version: Version) -> Option<Duration> {
        self.run_timeouts
            .lock()
            .get(&(function.clone(), version))
            .copied()
    }

    fn completed(&self, finished: &Finished) -> BoxFuture<'static, Result<(), String>> {
        match self.remote.get() {
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
