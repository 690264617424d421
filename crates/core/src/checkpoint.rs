//! Checkpoints of durable executions, as plain data. The byte format belongs to
//! `fnhub-checkpoint`.

use std::time::SystemTime;

use bytes::Bytes;

use crate::ids::{ExecutionId, InvocationId};
use crate::invocation::InvocationContext;
use crate::name::{FunctionName, FunctionRef, Version};
use crate::outcome::FunctionError;

/// The kind of a completed operation in a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Operation {
    /// A named step whose work ran once.
    Step,
    /// A child invocation that was awaited.
    Invoke {
        /// The child's invocation id.
        child: InvocationId,
        /// What it called.
        function: FunctionRef,
    },
    /// A timer.
    Sleep,
    /// An event that was waited for.
    WaitFor {
        /// The topic filter waited on.
        filter: String,
    },
}

/// One completed operation and its recorded result. On replay the result is returned
/// without running the operation again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct JournalEntry {
    /// Position in the journal, from 0.
    pub seq: u32,
    /// The name the function gave the operation.
    pub name: String,
    /// What it was.
    pub operation: Operation,
    /// What it returned.
    pub result: Result<Bytes, FunctionError>,
}

impl JournalEntry {
    /// An entry at `seq`.
    pub fn new(
        seq: u32,
        name: impl Into<String>,
        operation: Operation,
        result: Result<Bytes, FunctionError>,
    ) -> JournalEntry {
        JournalEntry {
            seq,
            name: name.into(),
            operation,
            result,
        }
    }
}

/// What a suspended execution is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum PendingDependency {
    /// The result of a child invocation.
    Child(InvocationId),
    /// A point in time.
    Timer(SystemTime),
    /// An event on a topic matching `filter`.
    Event {
        /// The topic filter.
        filter: String,
    },
    /// Nothing: it was suspended to relieve load, and resumes when the pressure drops.
    Load,
}

/// An order to continue a suspended durable execution: what it waited for at journal
/// position `at` has come. It is what a resume is, wherever it comes from (a timer that
/// fired, a child that finished, an event, load that fell, a cloud runtime's wake, a hub
/// taking up its store after a restart), and it travels to the execution's function as
/// [`Invocation::wake`](crate::Invocation::wake), so that a resumed run is an ordinary
/// invocation of that function.
///
/// A wake is idempotent: only an execution suspended at `at` runs, so a second wake for the
/// same operation (a timer here and a wake from elsewhere) finds it moved on and does
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wake {
    /// The execution.
    pub execution: ExecutionId,
    /// The journal position of the operation whose result has come.
    pub at: u32,
    /// That result: a child's outcome, an event's payload, empty for a timer. Not used for
    /// an execution shed under load, which runs on from `at`.
    pub result: crate::Outcome,
    /// Also continue the execution from its journal if it is found neither suspended nor
    /// running here: its run died with the process or node that drove it.
    pub take_over: bool,
}

impl Wake {
    /// A wake of `execution` at journal position `at` with `result`.
    pub fn new(execution: ExecutionId, at: u32, result: crate::Outcome) -> Wake {
        Wake {
            execution,
            at,
            result,
            take_over: false,
        }
    }

    /// The same wake, also taking over an execution whose run died (see
    /// [`Wake::take_over`]).
    pub fn taking_over(mut self) -> Wake {
        self.take_over = true;
        self
    }
}

/// The state of one durable execution, enough to resume it anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Checkpoint {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The function.
    pub function: FunctionName,
    /// The exact version it started on; it resumes only on the same version.
    pub version: Version,
    /// The original input.
    pub input: Bytes,
    /// The context it was invoked with (trace, principal, deadline...).
    pub context: InvocationContext,
    /// Completed operations, in order.
    pub journal: Vec<JournalEntry>,
    /// State the function chose to save, if any.
    pub state: Option<Bytes>,
    /// What it waits for, if suspended.
    pub pending: Option<PendingDependency>,
    /// The result of the pending dependency once it has arrived, kept until the replay
    /// reaches the operation that waited and records it in the journal.
    pub resolution: Option<Result<Bytes, FunctionError>>,
    /// The hub that started it.
    pub origin_hub: String,
    /// When the execution started.
    pub created_at: SystemTime,
    /// When this checkpoint was taken.
    pub updated_at: SystemTime,
}

impl Checkpoint {
    /// A checkpoint with an empty journal, taken at `now`.
    pub fn new(
        execution_id: ExecutionId,
        function: FunctionName,
        version: Version,
        input: Bytes,
        origin_hub: impl Into<String>,
        now: SystemTime,
    ) -> Checkpoint {
        Checkpoint {
            execution_id,
            function,
            version,
            input,
            context: InvocationContext::default(),
            journal: Vec::new(),
            state: None,
            pending: None,
            resolution: None,
            origin_hub: origin_hub.into(),
            created_at: now,
            updated_at: now,
        }
    }
}
