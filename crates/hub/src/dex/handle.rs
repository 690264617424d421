//! Lambda durable executions from Rust: [`EdgeHub::start_durable`] starts one (as `Invoke`
//! of a durable function does at the front door) and [`DurableExecution::outcome`] waits
//! for its end.

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionError, FunctionRef, Outcome};
use tokio::sync::watch;

use super::{Dex, ExecStatus};
use crate::EdgeHub;

/// Why a durable execution could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableStartError {
    /// No such function, or it is not durable.
    #[error("{0} is not a deployed durable function")]
    NotDurable(String),
    /// An execution of that name was started with another input
    /// (`DurableExecutionAlreadyStartedException`).
    #[error("an execution named {0:?} was already started with another input")]
    AlreadyStarted(String),
    /// The name or input is not acceptable (`InvalidParameterValueException`).
    #[error("{0}")]
    Invalid(String),
    /// The execution could not be written to the hub's checkpoint store (or its cloud
    /// runtime's copy) in time; it may still start.
    #[error("the execution could not be stored in time")]
    Unsaved,
}

/// A started (or found) durable execution.
pub struct DurableExecution {
    /// Its ARN (`…:function:{name}:{version}/durable-execution/{execution name}/{id}`).
    pub arn: String,
    /// Whether this call started it (false: the name found one with the same input).
    pub started: bool,
    id: String,
    dex: Arc<Dex>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for DurableExecution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableExecution")
            .field("arn", &self.arn)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl DurableExecution {
    /// Waits until the execution ends: its result, or why it has none (the error type and
    /// message it failed with; `TIMED_OUT` and `STOPPED` as `Timeout` and `Cancelled`).
    pub async fn outcome(mut self) -> Outcome {
        let _ = self.done.wait_for(|d| *d).await;
        // Answered once its end is stored, so that no hub started again runs it anew.
        let _ = self.dex.flushed().await;
        let Some(exec) = self.dex.snapshot(&self.id) else {
            return Err(FunctionError::new(
                ErrorKind::Cancelled,
                "the execution was deleted",
            ));
        };
        let error = exec.error.unwrap_or_default();
        let message = error.error_message.unwrap_or_default();
        let kind = match exec.status {
            ExecStatus::Succeeded => return Ok(Bytes::from(exec.result.unwrap_or_default())),
            ExecStatus::TimedOut => ErrorKind::Timeout,
            ExecStatus::Stopped => ErrorKind::Cancelled,
            _ => ErrorKind::Unhandled,
        };
        let mut e = FunctionError::new(kind, message);
        e.error_type = error.error_type;
        Err(e.with_stack_trace(error.stack_trace.unwrap_or_default()))
    }
}

impl EdgeHub {
    /// Starts an execution of the Lambda durable function `function` (a name, `name:N`
    /// or `name:alias`; see [`EdgeHubBuilder::lambda_durable`](crate::EdgeHubBuilder::lambda_durable))
    /// with `input` (JSON), named `name` (a fresh name if `None`): what `Invoke` of it does at
    /// the front door. A name already started with the same input finds that execution.
    /// Resolves once the execution is stored, when the hub has a checkpoint store.
    pub async fn start_durable(
        &self,
        function: &str,
        input: impl Into<String>,
        name: Option<String>,
    ) -> Result<DurableExecution, DurableStartError> {
        let not_durable = || DurableStartError::NotDurable(function.to_owned());
        let target: FunctionRef = function.parse().map_err(|_| not_durable())?;
        let spec = self.resolve(&target).ok_or_else(not_durable)?;
        let dex = self.dex().clone();
        dex.ready().await;
        let (id, started, done) =
            dex.start(spec.name.as_str(), spec.version.get(), input.into(), name)?;
        if started {
            dex.kick(&id);
        }
        let arn = dex.snapshot(&id).map(|e| e.arn).ok_or_else(not_durable)?;
        if !dex.flushed().await {
            return Err(DurableStartError::Unsaved);
        }
        Ok(DurableExecution {
            arn,
            started,
            id,
            dex,
            done,
        })
    }
}
