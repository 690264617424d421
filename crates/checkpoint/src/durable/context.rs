//! The function-facing side of durable execution.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Checkpoint, ErrorKind, ExecutionId, FunctionError, FunctionRef, Invocation,
    JournalEntry, Operation, Outcome, PendingDependency,
};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::engine::Shared;

/// Why a run stopped without an outcome.
pub(crate) enum Stop {
    /// Suspended on a dependency: the checkpoint is saved.
    Suspended(PendingDependency),
    /// The journal could not be saved.
    Store(fnhub_core::StoreError),
    /// Stopped from outside ([`Engine::stop`](super::Engine::stop)): the execution ends
    /// with this error.
    Stopped(FunctionError),
}

pub(crate) struct RunState {
    pub(crate) checkpoint: Checkpoint,
    cursor: usize,
    /// Tells the engine the run stops without an outcome of its own; taken by the first
    /// to tell it.
    pub(crate) stop: Option<oneshot::Sender<Stop>>,
    /// Whether the checkpoint is in the store (a fresh execution's is not, until its first
    /// save).
    stored: bool,
}

/// What a durable function uses to do things that must survive suspension, migration and
/// crashes: each completed operation is journaled (and durable) before the call returns,
/// and on replay returns its recorded result without running again.
///
/// Operations are matched by position and name: a replay must call them in the same order
/// with the same names, or it fails with a non-determinism error.
#[derive(Clone)]
pub struct DurableContext {
    pub(crate) state: Arc<Mutex<RunState>>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for DurableContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("DurableContext")
            .field("execution", &s.checkpoint.execution_id)
            .field("journal", &s.checkpoint.journal.len())
            .field("cursor", &s.cursor)
            .finish()
    }
}

/// What the next operation finds in the journal.
enum Slot {
    /// Already done: its recorded result.
    Recorded(Result<Bytes, FunctionError>),
    /// The dependency this run was waiting for has arrived.
    Resolved(Result<Bytes, FunctionError>),
    /// New work.
    Fresh,
}

fn nondeterminism(at: usize, expected: &str, got: &str) -> FunctionError {
    FunctionError::new(
        ErrorKind::Unhandled,
        format!("non-deterministic replay: operation {at} was {expected:?} and is now {got:?}"),
    )
    .with_type("NonDeterministicReplay")
}

impl DurableContext {
    pub(crate) fn new(
        checkpoint: Checkpoint,
        stored: bool,
        stop: oneshot::Sender<Stop>,
        shared: Arc<Shared>,
    ) -> DurableContext {
        DurableContext {
            state: Arc::new(Mutex::new(RunState {
                checkpoint,
                cursor: 0,
                stop: Some(stop),
                stored,
            })),
            shared,
        }
    }

    /// The execution this context belongs to.
    pub fn execution_id(&self) -> ExecutionId {
        self.state.lock().checkpoint.execution_id
    }

    /// Whether recorded operations remain to be replayed.
    pub fn is_replaying(&self) -> bool {
        let s = self.state.lock();
        s.cursor < s.checkpoint.journal.len()
    }

    /// The completed operations so far.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state.lock().checkpoint.journal.clone()
    }

    fn next(&self, name: &str) -> Result<Slot, FunctionError> {
        let mut s = self.state.lock();
        let at = s.cursor;
        if let Some(entry) = s.checkpoint.journal.get(at) {
            if entry.name != name {
                return Err(nondeterminism(at, &entry.name, name));
            }
            let result = entry.result.clone();
            s.cursor += 1;
            return Ok(Slot::Recorded(result));
        }
        if let Some(resolution) = s.checkpoint.resolution.take() {
            return Ok(Slot::Resolved(resolution));
        }
        Ok(Slot::Fresh)
    }

    /// Appends a completed operation and makes the journal durable before returning.
    async fn record(
        &self,
        name: &str,
        operation: Operation,
        result: Result<Bytes, FunctionError>,
    ) -> Result<Bytes, FunctionError> {
        let snapshot = {
            let mut s = self.state.lock();
            let seq = s.checkpoint.journal.len() as u32;
            s.checkpoint
                .journal
                .push(JournalEntry::new(seq, name, operation, result.clone()));
            s.checkpoint.pending = None;
            s.checkpoint.updated_at = self.shared.clock.system_time();
            s.cursor += 1;
            s.stored = true;
            s.checkpoint.clone()
        };
        if let Err(e) = self.shared.store.save(&snapshot).await {
            return self.stop(Stop::Store(e)).await;
        }
        result
    }

    /// Saves the checkpoint if it has never been saved, so that whoever wakes this
    /// execution can tell "not there yet" from "finished" (see
    /// [`Engine::wake`](super::Engine::wake)).
    async fn ensure_stored(&self) {
        let snapshot = {
            let mut s = self.state.lock();
            if s.stored {
                return;
            }
            s.stored = true;
            s.checkpoint.clone()
        };
        if let Err(e) = self.shared.store.save(&snapshot).await {
            self.stop::<()>(Stop::Store(e)).await;
        }
    }

    /// Saves the checkpoint with `pending`, then runs `after_save`, then stops the run;
    /// never returns. Whatever resumes the execution starts in `after_save`, so it cannot
    /// find the checkpoint before it says what it waits for.
    async fn suspend<T>(&self, pending: PendingDependency, after_save: impl FnOnce()) -> T {
        let snapshot = {
            let mut s = self.state.lock();
            s.checkpoint.pending = Some(pending.clone());
            s.checkpoint.updated_at = self.shared.clock.system_time();
            s.stored = true;
            s.checkpoint.clone()
        };
        match self.shared.store.save(&snapshot).await {
            Ok(()) => {
                after_save();
                self.stop(Stop::Suspended(pending)).await
            }
            Err(e) => self.stop(Stop::Store(e)).await,
        }
    }

    async fn stop<T>(&self, why: Stop) -> T {
        if let Some(tx) = self.state.lock().stop.take() {
            let _ = tx.send(why);
        }
        // The engine drops this run once it hears of the stop.
        std::future::pending().await
    }

    /// Suspends this execution if the engine is shedding load and its priority is low
    /// enough; called before each new operation (its next await point).
    async fn shed_if_asked(&self) {
        use std::sync::atomic::Ordering;
        if !self.shared.shedding.load(Ordering::Acquire) {
            return;
        }
        let max = self.shared.load_policy.lock().max_priority;
        if self.state.lock().checkpoint.context.priority > max {
            return;
        }
        self.shared.decision("load", None, true);
        self.suspend(PendingDependency::Load, || ()).await
    }

    /// Runs `work` once, ever: its result is journaled, and a replay returns the recorded
    /// result without running it again.
    pub async fn step<F, Fut>(&self, name: &str, work: F) -> Result<Bytes, FunctionError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, FunctionError>>,
    {
        match self.next(name)? {
            Slot::Recorded(r) | Slot::Resolved(r) => r,
            Slot::Fresh => {
                self.shed_if_asked().await;
                let result = work().await;
                self.record(name, Operation::Step, result).await
            }
        }
    }

    /// Sleeps for `duration`, durably. A sleep longer than the engine's suspension
    /// threshold suspends the execution (its worker is freed) and resumes it when due.
    pub async fn sleep(&self, name: &str, duration: Duration) -> Result<(), FunctionError> {
        match self.next(name)? {
            Slot::Recorded(r) => r.map(|_| ()),
            Slot::Resolved(r) => self.record(name, Operation::Sleep, r).await.map(|_| ()),
            Slot::Fresh => {
                self.shed_if_asked().await;
                let shared = &self.shared;
                if shared.policy.suspends(Some(duration)) {
                    shared.decision("sleep", Some(duration), true);
                    let wake = shared.clock.system_time() + duration;
                    return self.suspend(PendingDependency::Timer(wake), || ()).await;
                }
                shared.decision("sleep", Some(duration), false);
                tokio::time::sleep(duration).await;
                self.record(name, Operation::Sleep, Ok(Bytes::new()))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Invokes a child function and waits for its outcome, durably. When the child is
    /// predicted (from its past durations) to take longer than the suspension threshold and
    /// has not finished within the grace period, the execution suspends and resumes when the
    /// child's outcome arrives. A child not predicted slow that has not finished within the
    /// threshold suspends the execution then: its worker is not held through a long wait
    /// (a queue behind other work, a node that died holding the child).
    pub async fn invoke(&self, name: &str, function: FunctionRef, payload: Bytes) -> Outcome {
        let child_id = {
            let s = self.state.lock();
            super::child_id(s.checkpoint.execution_id, s.cursor as u32)
        };
        let operation = Operation::Invoke {
            child: child_id,
            function: function.clone(),
        };
        match self.next(name)? {
            Slot::Recorded(r) => r,
            Slot::Resolved(r) => self.record(name, operation, r).await,
            Slot::Fresh => {
                self.shed_if_asked().await;
                // Stored before the child exists, so its outcome always finds the parent.
                self.ensure_stored().await;
                let mut child = Invocation::new(function.clone(), payload);
                child.id = child_id;
                child.context = {
                    let s = self.state.lock();
                    s.checkpoint.context.child(s.checkpoint.execution_id)
                };
                let key = function.name.to_string();
                let predicted = self.shared.estimator.lock().predict(&key);
                let started = self.shared.clock.now();
                let mut call = self.shared.host.invoke(child);
                // A child predicted slow is awaited for the grace period, any other for the
                // threshold: a wait that has outlasted the threshold is a long one, whatever
                // was predicted, and holds no worker any longer.
                let policy = self.shared.policy;
                let patience = if policy.suspends(predicted) {
                    policy.grace
                } else {
                    policy.threshold
                };
                let outcome = match tokio::time::timeout(patience, &mut call).await {
                    Ok(outcome) => {
                        self.shared.decision(&key, predicted, false);
                        outcome
                    }
                    Err(_) => {
                        self.shared.decision(&key, predicted, true);
                        let (execution, at, target) = {
                            let s = self.state.lock();
                            let cp = &s.checkpoint;
                            let at = cp.journal.len() as u32;
                            (cp.execution_id, at, (cp.function.clone(), cp.version))
                        };
                        let shared = self.shared.clone();
                        return self
                            .suspend(PendingDependency::Child(child_id), move || {
                                shared.resume_when_done(
                                    execution, at, target, key, started, child_id, call,
                                );
                            })
                            .await;
                    }
                };
                self.shared.estimator.lock().observe(
                    &key,
                    self.shared.clock.now().saturating_duration_since(started),
                );
                self.record(name, operation, outcome).await
            }
        }
    }

    /// Waits for an event on a topic matching `filter`, durably: the execution suspends at
    /// once and resumes with the event's payload when one is delivered to the engine.
    pub async fn wait_for(&self, name: &str, filter: &str) -> Result<Bytes, FunctionError> {
        let operation = Operation::WaitFor {
            filter: filter.to_owned(),
        };
        match self.next(name)? {
            Slot::Recorded(r) => r,
            Slot::Resolved(r) => self.record(name, operation, r).await,
            Slot::Fresh => {
                self.shared.decision("event", None, true);
                let pending = PendingDependency::Event {
                    filter: filter.to_owned(),
                };
                self.suspend(pending, || ()).await
            }
        }
    }
}

/// A boxed future of a child's outcome.
pub(crate) type ChildCall = BoxFuture<'static, Outcome>;
