//! Suspension under load: the engine sheds low-priority executions while its host is
//! overloaded, and resumes them when the load falls.

use std::time::Instant;

use super::answer::LoadTransition;
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
        for (target, at, id) in shed {
            let wake = fnhub_core::Wake::new(id, at, Ok(bytes::Bytes::new()));
            self.shared.resume_later(&target, wake);
        }
        tracing::info!(
            pressure = p,
            resumed,
            "durable executions: shedding stopped"
        );
        LoadTransition::Resumed(resumed)
    }

    /// Whether the load policy is shedding low-priority executions now.
    pub fn is_shedding(&self) -> bool {
        self.shared
            .shedding
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
