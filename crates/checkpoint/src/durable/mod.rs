//! Durable execution: functions whose progress survives suspension, migration and crashes.
//!
//! A [`DurableFunction`] runs with a [`DurableContext`]. Each operation it performs
//! through the context — [`step`](DurableContext::step), [`invoke`](DurableContext::invoke)
//! of a child, [`sleep`](DurableContext::sleep), [`wait_for`](DurableContext::wait_for) an
//! event — is journaled in the execution's [`Checkpoint`](fnhub_core::Checkpoint), durable
//! in the [`CheckpointStore`](fnhub_core::CheckpointStore) before the call returns. When the
//! function would wait long (a sleep or a child predicted to take longer than the
//! [`SuspendPolicy`] threshold, or any event), the [`Engine`] saves the checkpoint and drops
//! the run, freeing its worker; when the dependency arrives it runs the function again from
//! the start, and the journal answers every completed operation without running it again.

mod answer;
mod context;
mod engine;
mod estimator;
mod load;
mod migrate;
mod stop;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{BoxFuture, ExecutionId, Invocation, InvocationId, Outcome, Wake};

pub use answer::{Ended, EngineError, Finished, LoadTransition, RunResult, Woken};
pub use context::DurableContext;
pub use engine::Engine;
pub use stop::StopResult;

/// The id of the child that the operation at journal position `at` of `parent` invokes:
/// deterministic, so a replay names the same child (and a child submitted twice is one
/// invocation).
pub fn child_id(parent: ExecutionId, at: u32) -> InvocationId {
    InvocationId::from_u128(parent.as_u128() ^ ((u128::from(at) + 1) << 96))
}

/// The journal position of the operation of `parent` that invoked `child`, if `child` is
/// one of its children (the inverse of [`child_id`]).
pub fn child_position(parent: ExecutionId, child: InvocationId) -> Option<u32> {
    let delta = parent.as_u128() ^ child.as_u128();
    if delta & ((1u128 << 96) - 1) != 0 {
        return None;
    }
    u32::try_from(delta >> 96).ok()?.checked_sub(1)
}

/// When an execution suspends instead of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuspendPolicy {
    /// Waits predicted to be longer than this suspend; so do waits for a child that last
    /// longer than this, whatever was predicted. Default 1 s.
    pub threshold: Duration,
    /// How long a child predicted to be slow is still awaited before suspending: one that
    /// finishes faster than predicted causes no suspension. Default 10 ms.
    pub grace: Duration,
}

impl Default for SuspendPolicy {
    fn default() -> Self {
        SuspendPolicy {
            threshold: Duration::from_secs(1),
            grace: Duration::from_millis(10),
        }
    }
}

impl SuspendPolicy {
    /// A policy with `threshold` and the default grace.
    pub fn with_threshold(threshold: Duration) -> SuspendPolicy {
        SuspendPolicy {
            threshold,
            ..SuspendPolicy::default()
        }
    }

    /// Whether a wait predicted to take `predicted` suspends (an unknown one does not).
    pub fn suspends(&self, predicted: Option<Duration>) -> bool {
        predicted.is_some_and(|p| p > self.threshold)
    }
}

/// When to suspend executions to relieve load: when the load probe's pressure (the larger of
/// queue fill, worker utilisation and CPU utilisation) stays at or above `threshold` for
/// `window`, executions of priority at most `max_priority` suspend at their next operation;
/// when it falls below `resume_below`, they resume.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LoadPolicy {
    /// Pressure that starts shedding, 0.0 to 1.0. Default 0.9.
    pub threshold: f32,
    /// Pressure below which shedding stops. Default 0.7.
    pub resume_below: f32,
    /// How long the pressure must last before shedding starts. Default 5 s.
    pub window: Duration,
    /// Executions at this priority or lower are shed. Default `Priority::LOW`.
    pub max_priority: fnhub_core::Priority,
}

impl Default for LoadPolicy {
    fn default() -> Self {
        LoadPolicy {
            threshold: 0.9,
            resume_below: 0.7,
            window: Duration::from_secs(5),
            max_priority: fnhub_core::Priority::LOW,
        }
    }
}

/// The pressure a load snapshot shows: the largest of queue fill, worker utilisation and
/// CPU utilisation.
pub fn pressure(s: &fnhub_core::LoadSnapshot) -> f32 {
    s.queue_pressure()
        .max(s.utilisation())
        .max(s.cpu_utilization.unwrap_or(0.0))
}

/// What the engine needs from its hub: running child invocations, and matching topics.
pub trait DurableHost: Send + Sync + 'static {
    /// Runs a child invocation; the future resolves to its outcome.
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome>;

    /// Whether an event on `topic` satisfies a [`wait_for`](DurableContext::wait_for) on
    /// `filter`. Default: equality (the hub plugs in MQTT filter matching).
    fn matches(&self, filter: &str, topic: &str) -> bool {
        filter == topic
    }

    /// Runs the replay of a resumed execution of `function` at `version` (after its timer
    /// fired, its child finished, an event came, or load dropped): `wake` says which
    /// execution and with what. A hub runs it as an invocation of the function itself
    /// carrying the wake ([`Invocation::resuming`]), on one of its workers, so that
    /// admission, limits, load and stats see a resumed run like any other run of that
    /// function, and the function's handler calls [`Engine::run_wake`]. `Err` hands the wake
    /// back, and the engine runs it on a task of its own: the default, and what a hub does
    /// when it is full.
    fn run_resumed(
        &self,
        function: &fnhub_core::FunctionName,
        version: fnhub_core::Version,
        wake: Wake,
    ) -> Result<(), Wake> {
        let _ = (function, version);
        Err(wake)
    }

    /// The wake strategy: `suspension` has just been saved (the execution waits for a
    /// timer, a child, an event or lower load); `Ok` means the host sees to it that the
    /// execution is woken when that comes — [`DurableHost::run_resumed`] here, or
    /// [`Engine::wake`](crate::durable::Engine::wake) on whichever engine shares the
    /// store — and `Err` hands it back, for the engine to wake it here: a task that sleeps
    /// until the timer, its table of event waits, its list of executions shed under load,
    /// a task that awaits the child. The default hands everything back.
    ///
    /// A hub arms timers in its one table of timers and hands the rest back; a hub that
    /// serves a cloud runtime takes everything, and the cloud runtime wakes the execution
    /// on any node. A start delivered again for an execution that is already suspended
    /// asks again (a host that wakes executions elsewhere may have lost the first).
    fn arm(&self, suspension: Suspension) -> Result<(), Suspension> {
        Err(suspension)
    }

    /// How long one run (the first, or a replay) of `function` at `version` may last; past
    /// it the run stops and the execution ends with a `Timeout` error (type
    /// `Durable.Timeout`), delivered like any outcome. The journal's completed operations
    /// stay done; the one in flight is abandoned. Default: no limit.
    fn run_timeout(
        &self,
        function: &fnhub_core::FunctionName,
        version: fnhub_core::Version,
    ) -> Option<std::time::Duration> {
        let _ = (function, version);
        None
    }

    /// Called when an execution finishes, before its checkpoint is removed: the one place
    /// its outcome goes, besides the callers waiting in [`Engine::outcome`]. A host
    /// delivers it here (a cloud runtime publishes the caller's result, a hub publishes a
    /// resumed execution's output): if its process dies between the two, the checkpoint is
    /// still there and the execution runs again from its journal to the same outcome, so
    /// the outcome is delivered at least once rather than lost. An error keeps the
    /// checkpoint, and the run ends with [`EngineError::Delivery`]. Default: nothing to do.
    fn completed(&self, finished: &Finished) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let _ = finished;
        Box::pin(std::future::ready(Ok(())))
    }
}

/// An execution that has just suspended, as its host is asked to wake it
/// ([`DurableHost::arm`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Suspension {
    /// The execution.
    pub execution: ExecutionId,
    /// The function it runs, and the exact version: where its replay goes.
    pub function: fnhub_core::FunctionName,
    /// The version.
    pub version: fnhub_core::Version,
    /// The journal position of the operation that waits.
    pub at: u32,
    /// What it waits for.
    pub pending: fnhub_core::PendingDependency,
}

impl Suspension {
    /// The wake that carries the result of what it waits for (empty for a timer).
    pub fn wake(&self, result: Outcome) -> Wake {
        Wake::new(self.execution, self.at, result)
    }
}

/// Why a host could not deliver a finished execution's outcome: the source error (a
/// publish that failed, a store that refused), kept whole for the caller to inspect.
pub type DeliveryError = Box<dyn std::error::Error + Send + Sync>;

/// A function whose progress is durable.
pub trait DurableFunction: Send + Sync + 'static {
    /// Runs (or replays) the execution.
    fn run(&self, ctx: DurableContext, input: Bytes) -> impl Future<Output = Outcome> + Send;

    /// Runs before a restored execution replays (after a suspension, a migration or a
    /// crash): refresh credentials, reseed randomness, reopen connections. Default: nothing.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use bytes::Bytes;
    /// use fnhub_checkpoint::durable::{DurableContext, DurableFunction};
    /// use fnhub_core::Outcome;
    ///
    /// /// Signs requests with a token that may have expired while the execution slept.
    /// struct Uploader {
    ///     token: AtomicU64,
    /// }
    ///
    /// impl DurableFunction for Uploader {
    ///     async fn run(&self, ctx: DurableContext, input: Bytes) -> Outcome {
    ///         let token = self.token.load(Ordering::SeqCst);
    ///         ctx.step("upload", || async move {
    ///             Ok(Bytes::from(format!("uploaded {} bytes with token {token}", input.len())))
    ///         })
    ///         .await
    ///     }
    ///
    ///     async fn on_restore(&self, ctx: &DurableContext) {
    ///         // A fresh token for the resumed run (a real one would call the identity service).
    ///         let fresh = ctx.execution_id().as_u128() as u64 ^ 0x5eed;
    ///         self.token.store(fresh, Ordering::SeqCst);
    ///     }
    /// }
    /// ```
    fn on_restore(&self, _ctx: &DurableContext) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A [`DurableFunction`] from an async closure; see [`durable_fn`].
#[derive(Debug, Clone)]
pub struct DurableFn<F>(F);

/// Makes a [`DurableFunction`] from an async closure taking the context and the input.
pub fn durable_fn<F, Fut>(f: F) -> DurableFn<F>
where
    F: Fn(DurableContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    DurableFn(f)
}

impl<F, Fut> DurableFunction for DurableFn<F>
where
    F: Fn(DurableContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn run(&self, ctx: DurableContext, input: Bytes) -> impl Future<Output = Outcome> + Send {
        (self.0)(ctx, input)
    }
}

/// The object-safe form the engine stores.
pub(crate) trait DynDurable: Send + Sync + 'static {
    fn run_boxed(&self, ctx: DurableContext, input: Bytes) -> BoxFuture<'_, Outcome>;
    fn on_restore_boxed<'a>(&'a self, ctx: &'a DurableContext) -> BoxFuture<'a, ()>;
}

pub(crate) struct Typed<F>(pub(crate) F);

impl<F: DurableFunction> DynDurable for Typed<F> {
    fn run_boxed(&self, ctx: DurableContext, input: Bytes) -> BoxFuture<'_, Outcome> {
        Box::pin(self.0.run(ctx, input))
    }

    fn on_restore_boxed<'a>(&'a self, ctx: &'a DurableContext) -> BoxFuture<'a, ()> {
        Box::pin(self.0.on_restore(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_round_trip_to_their_position() {
        let parent = ExecutionId::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        for at in [0, 1, 7, 1000, u32::MAX - 1] {
            let child = child_id(parent, at);
            assert_ne!(child.as_u128(), parent.as_u128());
            assert_eq!(child_position(parent, child), Some(at));
        }
        // Not a child: the low bits differ, or it is the parent itself.
        let stranger = InvocationId::from_u128(parent.as_u128() ^ 1);
        assert_eq!(child_position(parent, stranger), None);
        assert_eq!(
            child_position(parent, InvocationId::from_u128(parent.as_u128())),
            None
        );
    }
}
