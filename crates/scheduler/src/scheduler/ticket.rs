//! What admission answers: the refusal that hands an invocation back, the ticket that
//! resolves to its completion, and the observer that sees both.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use fnhub_core::{
    ErrorKind, FunctionError, FunctionName, FunctionSpec, Invocation, InvocationContext,
    InvocationId, Outcome, Version,
};
use tokio::sync::oneshot;

use crate::pool::Start;

/// A submission was not admitted. The invocation is handed back untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue is at capacity.
    #[error("queue full; invocation {} of {} not admitted", .0.id, .0.function)]
    Full(Invocation),
    /// The function has as many invocations queued as one function may.
    #[error("function queue limit reached; invocation {} of {} not admitted", .0.id, .0.function)]
    FunctionLimit(Invocation),
    /// The principal has as many invocations queued as it may.
    #[error("tenant {} is at its queue limit; invocation {} of {} not admitted", .0.context.principal, .0.id, .0.function)]
    TenantLimit(Invocation),
    /// The scheduler is shutting down and admits nothing new.
    #[error("shutting down; invocation {} of {} not admitted", .0.id, .0.function)]
    ShuttingDown(Invocation),
    /// No deployed function, version or alias matches the reference.
    #[error("no deployed function matches {}", .0.function)]
    UnknownFunction(Invocation),
}

impl SubmitError {
    /// The invocation that was not admitted.
    pub fn into_invocation(self) -> Invocation {
        match self {
            SubmitError::Full(i)
            | SubmitError::FunctionLimit(i)
            | SubmitError::TenantLimit(i)
            | SubmitError::ShuttingDown(i)
            | SubmitError::UnknownFunction(i) => i,
        }
    }

    /// The invocation that was not admitted.
    pub fn invocation(&self) -> &Invocation {
        match self {
            SubmitError::Full(i)
            | SubmitError::FunctionLimit(i)
            | SubmitError::TenantLimit(i)
            | SubmitError::ShuttingDown(i)
            | SubmitError::UnknownFunction(i) => i,
        }
    }

    /// A stable snake_case name of the reason, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitError::Full(_) => "full",
            SubmitError::FunctionLimit(_) => "function_limit",
            SubmitError::TenantLimit(_) => "tenant_limit",
            SubmitError::ShuttingDown(_) => "shutting_down",
            SubmitError::UnknownFunction(_) => "unknown_function",
        }
    }
}

/// The scheduler could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` was called outside a tokio runtime; the workers need one.
    #[error("no tokio runtime: build the scheduler from inside one")]
    NoRuntime,
    /// A setting is out of range.
    #[error("invalid scheduler setting: {0}")]
    Invalid(&'static str),
}

/// How one admitted invocation ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Completion {
    /// The invocation.
    pub id: InvocationId,
    /// The function that ran.
    pub function: FunctionName,
    /// The exact version it was resolved to at admission.
    pub version: Version,
    /// The context it was invoked with (trace, topic, depth, principal...).
    pub context: InvocationContext,
    /// Its result.
    pub outcome: Outcome,
    /// Cold or warm start.
    pub start: Start,
    /// Time from admission to a worker taking it.
    pub queued: Duration,
    /// Time the worker spent on it (environment start included on a cold start).
    pub ran: Duration,
}

/// Hooks called by the scheduler. Every method has a no-op default.
///
/// Hooks run on the scheduler's own tasks, or on the caller's for a direct run
/// ([`Scheduler::try_call`](super::Scheduler::try_call)): keep them short and never block.
pub trait Observer: Send + Sync + 'static {
    /// An invocation was admitted.
    fn on_admitted(&self, _invocation: &Invocation, _spec: &FunctionSpec) {}
    /// A submission was rejected.
    fn on_rejected(&self, _error: &SubmitError) {}
    /// An admitted invocation ended, before its [`Ticket`] resolves.
    fn on_completed(&self, _completion: &Completion, _spec: &FunctionSpec) {}
}

pub(super) struct NoObserver;
impl Observer for NoObserver {}

/// Resolves to the [`Completion`] of an admitted invocation.
///
/// Dropping it does not cancel the invocation: it still runs, and its completion still
/// reaches the [`Observer`].
#[derive(Debug)]
pub struct Ticket {
    pub(super) id: InvocationId,
    pub(super) function: FunctionName,
    pub(super) version: Version,
    pub(super) rx: oneshot::Receiver<Completion>,
}

impl Ticket {
    /// The invocation's id.
    pub fn id(&self) -> InvocationId {
        self.id
    }
}

impl Future for Ticket {
    type Output = Completion;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(c)) => Poll::Ready(c),
            // The worker task was torn down (its runtime shut down) before it finished.
            Poll::Ready(Err(_)) => Poll::Ready(Completion {
                id: self.id,
                function: self.function.clone(),
                version: self.version,
                context: InvocationContext::default(),
                outcome: Err(FunctionError::new(
                    ErrorKind::Cancelled,
                    "the scheduler stopped before the invocation completed",
                )),
                start: Start::NotStarted,
                queued: Duration::ZERO,
                ran: Duration::ZERO,
            }),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The future of a direct run: the invocation running on the task that polls it.
type DirectRun = Pin<Box<dyn Future<Output = Completion> + Send>>;

/// Resolves to the [`Completion`] of an invocation admitted by
/// [`Scheduler::try_call`](super::Scheduler::try_call): queued for a worker, or run
/// directly by the task that polls it.
///
/// Dropping it does not cancel the invocation: a queued one still runs, and a direct run
/// not yet finished is handed to the tokio runtime to finish (outside a runtime it stops
/// where it is, as a worker does when its runtime shuts down).
pub struct Call {
    id: InvocationId,
    state: CallState,
}

enum CallState {
    Queued(Ticket),
    /// `None` once it has finished.
    Direct(Option<DirectRun>),
}

impl Call {
    pub(super) fn queued(ticket: Ticket) -> Call {
        Call {
            id: ticket.id,
            state: CallState::Queued(ticket),
        }
    }

    pub(super) fn direct(id: InvocationId, run: DirectRun) -> Call {
        Call {
            id,
            state: CallState::Direct(Some(run)),
        }
    }

    /// The invocation's id.
    pub fn id(&self) -> InvocationId {
        self.id
    }

    /// Whether it runs directly on the task that polls it, rather than on a worker.
    pub fn is_direct(&self) -> bool {
        matches!(self.state, CallState::Direct(_))
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.id)
            .field("direct", &self.is_direct())
            .finish()
    }
}

impl Future for Call {
    type Output = Completion;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        match &mut self.state {
            CallState::Queued(ticket) => Pin::new(ticket).poll(cx),
            CallState::Direct(run) => {
                let Some(future) = run.as_mut() else {
                    // Polled after it finished: as a oneshot whose sender is gone.
                    return Poll::Pending;
                };
                let done = future.as_mut().poll(cx);
                if done.is_ready() {
                    *run = None;
                }
                done
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let CallState::Direct(run) = &mut self.state
            && let Some(run) = run.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(run);
        }
    }
}
