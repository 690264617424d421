//! Load snapshots read by policies.

use std::collections::BTreeMap;
use std::time::Duration;

/// Load of one function in a [`LoadSnapshot`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct FunctionLoad {
    /// Invocations waiting (including those held back by a concurrency limit).
    pub queued: usize,
    /// Invocations running now.
    pub running: usize,
    /// Invocations completed since start.
    pub completed_total: u64,
    /// Of those, how many needed a new environment.
    pub cold_starts_total: u64,
    /// Moving average of the time from admission to a worker taking the invocation.
    pub mean_wait: Duration,
}

/// A point-in-time view of a runtime's load.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LoadSnapshot {
    /// Invocations admitted and waiting for a worker.
    pub queued: usize,
    /// Most invocations that may wait.
    pub queue_capacity: usize,
    /// Invocations running now.
    pub running: usize,
    /// Workers (slots that run invocations).
    pub workers: usize,
    /// Invocations admitted since start.
    pub admitted_total: u64,
    /// Submissions rejected since start.
    pub rejected_total: u64,
    /// Invocations completed since start (any outcome).
    pub completed_total: u64,
    /// Fraction of CPU in use, 0.0 to 1.0 per core, when measured.
    pub cpu_utilization: Option<f32>,
    /// Per function, by name.
    pub functions: BTreeMap<String, FunctionLoad>,
}

impl LoadSnapshot {
    /// Queue fill, 0.0 (empty) to 1.0 (full).
    pub fn queue_pressure(&self) -> f32 {
        if self.queue_capacity == 0 {
            return 0.0;
        }
        self.queued as f32 / self.queue_capacity as f32
    }

    /// Busy workers, 0.0 (idle) to 1.0 (all busy).
    pub fn utilisation(&self) -> f32 {
        if self.workers == 0 {
            return 0.0;
        }
        self.running as f32 / self.workers as f32
    }
}

/// Gives load snapshots to policies (suspension on load, metaevents, autoscaling).
pub trait LoadProbe: Send + Sync + 'static {
    /// The load now.
    fn snapshot(&self) -> LoadSnapshot;
}
