//! Suspension under load: the engine sheds low-priority executions while its host is
//! overloaded, and resumes them when the load falls.

use std::time::Instant;

use fnhub_core::ExecutionId;

use super::answer::{EngineError, LoadTransition, RunResult};
use super::engine::Engine;

impl Engine {
    /// Sets the load policy (see [`LoadPolicy`](super::LoadPolicy)).
    pub fn set_load_policy(&self, policy: super::LoadPolicy) {
        *self.shared.load_policy.lock() = policy;
    }

    /// Feeds a load snapshot taken at `now` to the load policy: starts shedding when the
    /// pressure has stayed high for the window, stops (resuming every shed execution, each
    /// replay run where the host says) when it falls below the resume level. A hub calls this periodically with its scheduler's
    /// [`LoadProbe`](fnhub_core::LoadProbe); tests call it with made-up snapshots.
    pub async fn check_load(
        &self,
        snapshot: &fnhub_core::LoadSnapshot,
        now: Instant,
    ) -> LoadTransition {
        use std::sync::atomic::Ordering;
        let policy = *self.shared.load_policy.lock();
        let p = super::pressure(snapshot);
        let shedding = self.shared.shedding.load(Ordering::Acquire);
        if p >= policy.threshold {
            let since = *self.shared.pressure_since.lock().get_or_insert(now);
            if !shedding && now.saturating_duration_since(since) >= policy.window {
                self.shared.shedding.store(true, Ordering::Release);
                tracing::info!(
                    pressure = p,
                    "durable executions: shedding low-priority work"
                );
                return LoadTransition::Shedding;
            }
            return LoadTransition::None;
        }
        *self.shared.pressure_since.lock() = None;
        if !shedding || p >= policy.resume_below {
            return LoadTransition::None;
        }
        self.shared.shedding.store(false, Ordering::Release);
        let shed: Vec<_> = std::mem::take(&mut *self.shared.shed.lock());
        let resumed = shed.len();
        for (id, target) in shed {
            let engine = self.clone();
            self.shared.host.run_resumed(
                id,
                &target.0,
                target.1,
                Box::pin(async move {
                    if let Err(e) = engine.continue_run(id).await {
                        tracing::warn!(execution = %id, error = %e, "could not resume shed execution");
                    }
                }),
            );
        }
        tracing::info!(
            pressure = p,
            resumed,
            "durable executions: shedding stopped"
        );
        LoadTransition::Resumed(resumed)
    }

    /// Runs a stored execution again from its journal, with nothing to hand it.
    pub(super) async fn continue_run(&self, id: ExecutionId) -> Result<RunResult, EngineError> {
        let mut checkpoint = self
            .shared
            .store
            .load(id)
            .await?
            .ok_or(EngineError::UnknownExecution(id))?;
        checkpoint.pending = None;
        self.drive(checkpoint, true).await
    }

    /// Whether the load policy is shedding low-priority executions now.
    pub fn is_shedding(&self) -> bool {
        self.shared
            .shedding
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
