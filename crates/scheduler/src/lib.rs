//! Admission, queueing and worker pools for fnhub.
//!
//! A [`Scheduler`] admits [`Invocation`](fnhub_core::Invocation)s into a queue bounded
//! overall, per function and per principal — a refused submit hands the invocation back
//! inside a [`SubmitError`] naming the reason — and runs them on a fixed set of workers in
//! environments prepared by its [`Sandbox`](fnhub_core::Sandbox)es.
//!
//! - **Order**: strict priority classes; inside a class, weighted fair share between
//!   principals (stride scheduling, with the bound of [`fairness_bound`]); inside a
//!   principal's share, earliest deadline first, then arrival. An invocation whose deadline
//!   passes while queued completes with `DeadlineExceeded` without running.
//! - **Limits**: a function's `max_concurrency` holds its extra invocations back without
//!   blocking other functions; its `reserved_concurrency` sets workers aside for it that
//!   other functions cannot use; [`Scheduler::cancel`] cancels a queued or running
//!   invocation.
//! - **Warm environments** per function version (a version fixes the capability profile),
//!   each serving up to the function's `concurrency` invocations at once, each invocation
//!   accounted as a cold or warm [`Start`]; **affinity** keys return to the environment that last served them; a
//!   new version takes over while old ones drain ([`Scheduler::deploy`], aliases split by
//!   weight); **placement** refuses at deploy what the [`HostInfo`] cannot satisfy.
//! - **Reservation policies** ([`policy`]) decide keep-alive and pre-warm per function; the
//!   maintenance pass applies them. [`policy::sim`] replays Azure traces under a policy.
//! - **Children** ([`Scheduler::try_submit_child`], with the context of
//!   [`InvocationContext::child`](fnhub_core::InvocationContext::child)) inherit the parent's
//!   deadline, trace, principal, priority and depth and, under load, wait for spare capacity
//!   until their latest safe start.
//! - **Readiness**: [`Scheduler::room`] resolves when room may have appeared and
//!   [`Scheduler::idle`] when nothing is queued or running, so a caller that was refused
//!   waits for the moment to retry instead of polling.
//! - [`Scheduler::shutdown`] stops admitting and runs every admitted invocation to
//!   completion. The scheduler is a [`LoadProbe`](fnhub_core::LoadProbe).
//!
//! Not built yet: worker classes other than the host's own (placement checks this host
//! only).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use fnhub_core::{from_fn, FunctionName, FunctionSpec, Invocation};
//! use fnhub_sandbox::InProcessSandbox;
//! use fnhub_scheduler::Scheduler;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = InProcessSandbox::new();
//! sandbox.register("double", from_fn(|inv: Invocation| async move {
//!     let n: i64 = std::str::from_utf8(&inv.payload).unwrap_or("0").parse().unwrap_or(0);
//!     Ok((n * 2).to_string().into())
//! }));
//! let scheduler = Scheduler::builder().workers(4).sandbox(Arc::new(sandbox)).build()?;
//! scheduler.deploy(FunctionSpec::in_process(FunctionName::new("double")?))?;
//!
//! let ticket = scheduler.try_submit(Invocation::new("double".parse()?, "21"))?;
//! let completion = ticket.await;
//! assert_eq!(&completion.outcome?[..], b"42");
//! scheduler.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the `metrics` facade: `fnhub_invocations_total` (labels `function`, `version`,
//! `outcome`, `start`), `fnhub_submit_rejected_total` (`reason`), histograms
//! `fnhub_invocation_queued_seconds` and `fnhub_invocation_run_seconds`,
//! `fnhub_prewarms_total`, `fnhub_evictions_total`, `fnhub_children_deferred_total`. Handles
//! are registered when the scheduler is built and when a function is deployed, so
//! completions record without allocating: install the recorder before that. Each
//! maintenance pass also sets gauges: `fnhub_queue_depth`, `fnhub_running`,
//! `fnhub_workers`, and per function `fnhub_function_queued`, `fnhub_function_running`,
//! `fnhub_function_mean_wait_seconds`.
//!
//! # Cargo features
//!
//! None.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cpu;

/// The maps on the invocation path: hashed with foldhash (seeded per map), not SipHash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

mod deployed;
mod placement;
pub mod policy;
mod pool;
mod queue;
mod registry;
mod scheduler;

pub use cpu::CpuMeter;
pub use placement::HostInfo;
pub use pool::Start;
pub use queue::fairness_bound;
pub use registry::DeployError;
pub use scheduler::{
    BuildError, Call, Completion, Observer, Room, Scheduler, SchedulerBuilder, SubmitError, Ticket,
    WeakScheduler,
};
