//! Load snapshots read by policies.

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
}

impl LoadSnapshot {
    /// Queue fill, 0.0 (empty) to 1.0 (full).
    pub fn queue_pressure(&self) -> f32 {
        if self.queue_capacity == 0 {
            return 0.0;
        }
        self.queued as f32 / self.queue_capacity as f32
    }
}

/// Gives load snapshots to policies (suspension on load, metaevents, autoscaling).
pub trait LoadProbe: Send + Sync + 'static {
    /// The load now.
    fn snapshot(&self) -> LoadSnapshot;
}
