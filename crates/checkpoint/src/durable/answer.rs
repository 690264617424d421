//! What the engine answers: how a run ended, what a wake did, an execution that finished,
//! and why an operation failed.

use fnhub_core::{ExecutionId, FunctionName, Outcome, PendingDependency, Version};

use crate::format::{self, DecodeError};
use fnhub_core::StoreError;

/// How a run of a durable execution ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunResult {
    /// The function returned: its outcome. The checkpoint is removed.
    Completed(Outcome),
    /// The execution is suspended, its checkpoint saved; it resumes when `waiting_for`
    /// arrives.
    Suspended {
        /// The execution.
        execution: ExecutionId,
        /// What it waits for.
        waiting_for: PendingDependency,
        /// The position in its journal of the operation that waits: what
        /// [`Engine::wake`](super::Engine::wake) is called with when it is met.
        at: u32,
    },
}

/// What [`Engine::wake`](super::Engine::wake) did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Woken {
    /// The execution ran again from its journal.
    Ran {
        /// How the run ended.
        run: RunResult,
    },
    /// It is suspended on a later operation than the one woken (the wake is old): what it
    /// waits for now, at which position. A host may ask for that wake again.
    Waiting {
        /// What it waits for.
        waiting_for: PendingDependency,
        /// The position of the operation that waits.
        at: u32,
    },
    /// It is not suspended: it runs (here or elsewhere) up to the operation, or past it.
    /// Whoever runs it sees the operation's result itself — or, if that run died with its
    /// node, [`Engine::take_over`](super::Engine::take_over) continues it.
    Running,
    /// No checkpoint: the execution finished.
    Finished,
}

/// A durable execution that finished, as told to its host
/// ([`DurableHost::completed`](super::DurableHost::completed)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Finished {
    /// The execution.
    pub execution: ExecutionId,
    /// Its function.
    pub function: FunctionName,
    /// The exact version it ran on.
    pub version: Version,
    /// The context it was started with (trace, topic, depth...).
    pub context: fnhub_core::InvocationContext,
    /// Its outcome.
    pub outcome: Outcome,
    /// Whether it finished in a resumed run (after a suspension, import or recovery) rather
    /// than in the run that started it.
    pub resumed: bool,
}

/// An execution that ended, as the engine remembers it for a while
/// ([`Engine::ended`](super::Engine::ended)): its outcome, not its journal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Ended {
    /// The execution.
    pub execution: ExecutionId,
    /// Its function.
    pub function: FunctionName,
    /// The exact version it ran on.
    pub version: Version,
    /// Its outcome.
    pub outcome: Outcome,
    /// When it started.
    pub started: std::time::SystemTime,
    /// When it ended.
    pub ended: std::time::SystemTime,
}

/// What a load check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadTransition {
    /// Nothing changed.
    None,
    /// Shedding started: low-priority executions suspend at their next operation.
    Shedding,
    /// Shedding stopped; this many shed executions resumed.
    Resumed(usize),
}

/// A durable execution could not be started, resumed, exported or imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No durable function is registered under this name and version.
    #[error("no durable function {0} version {1} is registered here")]
    UnknownFunction(FunctionName, Version),
    /// No checkpoint of this execution is stored here.
    #[error("execution {0} is not stored here")]
    UnknownExecution(ExecutionId),
    /// The execution is not suspended (it is running, or waits for nothing).
    #[error("execution {0} is not suspended")]
    NotSuspended(ExecutionId),
    /// The execution waits for a child running on this hub, so it cannot move.
    #[error("execution {0} waits for a child running here and cannot move")]
    Pinned(ExecutionId),
    /// The checkpoint store failed.
    #[error("checkpoint store failed")]
    Store(#[from] StoreError),
    /// Imported bytes are not a checkpoint this build reads (garbage, or a newer format).
    #[error("cannot import the checkpoint")]
    Decode(#[from] DecodeError),
    /// The checkpoint could not be encoded for export.
    #[error("cannot export the checkpoint")]
    Encode(#[from] format::EncodeError),
    /// The host could not deliver the outcome of a finished execution (see
    /// [`DurableHost::completed`](super::DurableHost::completed)); the checkpoint is kept.
    #[error("the outcome could not be delivered: {0}")]
    Delivery(#[source] super::DeliveryError),
    /// The run was cut short by its host (a timeout, a cancelled call) before it ended;
    /// the checkpoint is kept, and the execution continues from its journal when it is
    /// woken or taken over.
    #[error("the run was cut short: {0}")]
    Interrupted(String),
}
