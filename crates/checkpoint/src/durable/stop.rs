//! Reaching an execution from outside it: stopping it, answering what it waits for, and
//! reading the executions of a function — what an operator needs (the hub serves them as
//! Lambda's `StopDurableExecution`, `SendDurableExecutionCallback*`, `GetDurableExecution`
//! and `ListDurableExecutionsByFunction`).

use fnhub_core::{Checkpoint, ExecutionId, FunctionError, FunctionName};

use super::answer::{Ended, EngineError, Finished};
use super::context::Stop;
use super::engine::{Engine, RunningGuard};

/// What [`Engine::stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopResult {
    /// It ended with the reason given: its outcome went to its host and to whoever waits,
    /// and its checkpoint is gone.
    Stopped,
    /// It had ended before, with this outcome (or in the same moment, on its own).
    Ended(Box<fnhub_core::Outcome>),
    /// No execution of this id is known here: none in the store, none ended lately.
    Unknown,
}

impl Engine {
    /// Stops `execution`, which ends with `reason` as its outcome, delivered like any
    /// outcome ([`DurableHost::completed`](super::DurableHost::completed), then
    /// [`Engine::outcome`]). One that waits (a timer, a child, an event, lower load) is
    /// taken out of its wait; one running here stops at once (its run is dropped where it
    /// is: the operation in flight is abandoned, a child it invoked runs on). A wake that
    /// comes for it later finds it finished.
    ///
    /// On a store shared with other engines (a cloud runtime's), an execution that runs on
    /// another engine is refused with [`EngineError::NotSuspended`]: stop it while it waits.
    pub async fn stop(
        &self,
        execution: ExecutionId,
        reason: FunctionError,
    ) -> Result<StopResult, EngineError> {
        // Three times at most: a run asked to stop may suspend, or end, in the same moment.
        for _ in 0..3 {
            let run = self.shared.running.lock().get(&execution).cloned();
            match run {
                // Running here: its run is told to stop, and ends with `reason`.
                Some(Some(state)) => {
                    let told = state.lock().stop.take();
                    if let Some(told) = told {
                        let _ = told.send(Stop::Stopped(reason.clone()));
                    }
                    self.run_ends(execution).await;
                    match self.shared.finished_of(execution) {
                        Some(done) if done.outcome.as_ref().err() == Some(&reason) => {
                            return Ok(StopResult::Stopped);
                        }
                        Some(done) => return Ok(StopResult::Ended(Box::new(done.outcome))),
                        // It suspended in the same moment: stop it as it waits.
                        None => continue,
                    }
                }
                // Another stop holds it: once that is done, look again.
                Some(None) => {
                    self.run_ends(execution).await;
                    continue;
                }
                None => {}
            }
            {
                let mut running = self.shared.running.lock();
                if running.contains_key(&execution) {
                    // A run began just now.
                    continue;
                }
                running.insert(execution, None);
            }
            let claimed = RunningGuard::new(&self.shared, execution);
            let Some(checkpoint) = self.shared.store.load(execution).await? else {
                drop(claimed);
                return Ok(match self.shared.finished_of(execution) {
                    Some(done) => StopResult::Ended(Box::new(done.outcome)),
                    None => StopResult::Unknown,
                });
            };
            if checkpoint.pending.is_none() && self.shared.store.is_shared() {
                // Not waiting, not running here: another engine runs it.
                return Err(EngineError::NotSuspended(execution));
            }
            let finished = Finished {
                execution,
                function: checkpoint.function.clone(),
                version: checkpoint.version,
                context: checkpoint.context.clone(),
                outcome: Err(reason),
                resumed: true,
            };
            self.conclude(finished, checkpoint.created_at, || None)
                .await?;
            // Once it has ended (an outcome the host could not take leaves it waiting).
            self.shared.forget_waits(execution);
            drop(claimed);
            return Ok(StopResult::Stopped);
        }
        Err(EngineError::NotSuspended(execution))
    }

    /// Answers the wait for an event of `execution` at journal position `at` with `result`
    /// from outside, as if the event had come (an operator's callback): its wait is taken
    /// out, and the wake goes where the host runs replays. `false` when it does not wait
    /// for an event there (it never did, or the wait was answered already, by an event or
    /// an earlier call). On a store shared with other engines, where the host keeps the
    /// waits (a cloud runtime), a second answer may pass this check, and its wake then
    /// does nothing ([`Engine::wake`] runs one replay per operation).
    pub async fn send(
        &self,
        execution: ExecutionId,
        at: u32,
        result: fnhub_core::Outcome,
    ) -> Result<bool, EngineError> {
        let Some(checkpoint) = self.shared.store.load(execution).await? else {
            return Ok(false);
        };
        let waits_here = matches!(
            checkpoint.pending,
            Some(fnhub_core::PendingDependency::Event { .. })
        ) && checkpoint.journal.len() == at as usize;
        if !waits_here {
            return Ok(false);
        }
        let taken = {
            let mut waiting = self.shared.waiting.lock();
            let before = waiting.len();
            waiting.retain(|w| !(w.execution == execution && w.at == at));
            self.shared.mark_waiting(&waiting);
            waiting.len() != before
        };
        if !taken && !self.shared.store.is_shared() {
            // Kept here, and no longer in the table: answered already.
            return Ok(false);
        }
        let target = (checkpoint.function, checkpoint.version);
        self.shared
            .resume_later(&target, fnhub_core::Wake::new(execution, at, result));
        Ok(true)
    }

    /// The checkpoints of `function`'s executions in the store, each one running or
    /// waiting (one that ended is no longer there: see [`Engine::ended`]), oldest first.
    /// `others` leaves out checkpoints that are not the engine's (a hub keeps its Lambda
    /// durable executions in the same store). One that cannot be read is left out.
    pub async fn executions_of(
        &self,
        function: &FunctionName,
        others: impl Fn(&Checkpoint) -> bool,
    ) -> Result<Vec<Checkpoint>, EngineError> {
        let mut found = Vec::new();
        for id in self.shared.store.list().await? {
            match self.shared.store.load(id).await {
                Ok(Some(c)) if c.function == *function && !others(&c) => found.push(c),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(execution = %id, %error, "a checkpoint that cannot be read is not listed");
                }
            }
        }
        found.sort_by_key(|c| (c.created_at, c.execution_id));
        Ok(found)
    }

    /// How `execution` ended, if it is among the latest
    /// [`Engine::REMEMBERED_OUTCOMES`] to end on this engine.
    pub fn ended(&self, execution: ExecutionId) -> Option<Ended> {
        self.shared.finished_of(execution)
    }

    /// The executions of `function` that ended lately on this engine, oldest first.
    pub fn ended_of(&self, function: &FunctionName) -> Vec<Ended> {
        self.shared
            .finished
            .lock()
            .iter()
            .filter(|f| f.function == *function)
            .cloned()
            .collect()
    }

    /// Forgets `execution`, which ended here: [`Engine::ended`] and [`Engine::outcome`] no
    /// longer know it. Whether it was remembered.
    pub fn forget(&self, execution: ExecutionId) -> bool {
        let mut ended = self.shared.finished.lock();
        let before = ended.len();
        ended.retain(|f| f.execution != execution);
        ended.len() != before
    }

    /// Whether version `version` of `function` is registered here. Asked on every call at
    /// a hub's front door, so it looks without making a key (a name is an allocation).
    pub fn registered(&self, function: &FunctionName, version: fnhub_core::Version) -> bool {
        self.shared
            .functions
            .read()
            .keys()
            .any(|(name, v)| *v == version && name == function)
    }

    /// Whether some version of `function` is registered here.
    pub fn runs(&self, function: &FunctionName) -> bool {
        self.shared
            .functions
            .read()
            .keys()
            .any(|(name, _)| name == function)
    }
}
