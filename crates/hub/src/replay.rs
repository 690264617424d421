//! Replays an invocation trace in the format of the Azure Functions 2019 dataset through a
//! live [`EdgeHub`] on a [`ManualClock`], to see what a reservation policy does in the
//! running hub (its scheduler, its pool and its maintenance pass) beside what the
//! [simulator](fnhub_scheduler::policy::sim) predicts for the same trace.
//!
//! The replay keeps to the simulator's model, so that the two can be compared figure for
//! figure:
//! - each function of the trace is deployed with the trace's memory;
//! - minute `t`'s invocations are admitted at its start and wait in the queue while a
//!   holder invocation keeps the hub's one worker until the manual clock has moved to
//!   minute `t + 1`; they then run, taking no time, so a function goes idle at the start of
//!   minute `t + 1` and one environment serves its busy minute;
//! - the maintenance pass runs ten times a minute, the first at the minute's start before
//!   its arrivals; wasted memory is counted in those 6-second steps.
//!
//! What differs is what the hub measures rather than what the trace says: the run time a
//! forecasting policy is told is the hub's measurement (none here), and the number of
//! environments such a policy pre-warms is the pool's, which the simulator does not model.
//!
//! Environments come from a sandbox of the replay's own: they do no work and report when
//! they are loaded and stopped. Wasted memory counts an environment's memory for every minute
//! it was loaded through while its function had no work.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fnhub::libs::scheduler::policy::{HybridHistogram, sim::Trace};
//! let trace = Trace::load("../shared/traces/200_inv.csv".as_ref())?;
//! let live = fnhub::replay::replay(&trace, Box::new(HybridHistogram::default())).await?;
//! println!("{}: {:.2}% cold, {:.1} GB-min wasted", live.policy, live.cold_start_pct, live.wasted_gb_minutes);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use fnhub_core::{
    BoxFuture, Environment, FunctionError, FunctionName, FunctionRef, FunctionSpec, Invocation,
    IsolationReport, ManualClock, Outcome, PrepareError, Runtime, Sandbox,
};
use fnhub_scheduler::policy::ReservationPolicy;
use fnhub_scheduler::policy::sim::Trace;
use fnhub_scheduler::{Completion, Start, SubmitError};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::{EdgeHub, HubError};

/// The program of the functions the replay deploys: only the replay's sandbox runs it.
const COMMAND: &str = "fnhub-trace-replay";
const MINUTE: Duration = Duration::from_secs(60);
/// Maintenance passes in each minute of the trace, the first at its start: an idle
/// environment stops within 6 s of its keep-alive's end.
const PASSES_PER_MINUTE: u32 = 10;
/// The index of the function that holds the hub's worker through each minute.
const HOLDER: usize = usize::MAX;

/// What a policy did in the live hub over a trace.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The policy.
    pub policy: &'static str,
    /// Invocations replayed.
    pub invocations: u64,
    /// Of those, cold starts (as the hub reported them in each completion).
    pub cold_starts: u64,
    /// Cold starts as a percentage of invocations.
    pub cold_start_pct: f64,
    /// Memory held by loaded environments of idle functions, in GB-minutes.
    pub wasted_gb_minutes: f64,
    /// Environments the sandbox loaded (cold starts and pre-warms).
    pub environments_loaded: u64,
    /// Per function, in trace order: (invocations, cold starts, wasted GB-minutes).
    pub per_function: Vec<(u64, u64, f64)>,
}

/// A replay could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The hub could not be built, or refused a function of the trace.
    #[error("the replay's hub could not start")]
    Hub(#[from] HubError),
    /// The hub refused an invocation.
    #[error("minute {minute}: the hub refused an invocation of function {function}: {reason}")]
    Refused {
        /// The minute of the trace, from 0.
        minute: usize,
        /// The function's index in the trace.
        function: usize,
        /// Why.
        reason: String,
    },
    /// An invocation failed.
    #[error("minute {minute}: an invocation of function {function} failed: {error}")]
    Failed {
        /// The minute of the trace, from 0.
        minute: usize,
        /// The function's index in the trace.
        function: usize,
        /// The function's error.
        error: FunctionError,
    },
}

/// Replays `trace` under `policy` in a new hub on a manual clock, on the current tokio
/// runtime.
pub async fn replay(
    trace: &Trace,
    policy: Box<dyn ReservationPolicy>,
) -> Result<ReplayReport, ReplayError> {
    let name = policy.name();
    let clock = ManualClock::new();
    let sandbox = Arc::new(ReplaySandbox::new(trace));
    let busiest_minute = (0..trace.minutes)
        .map(|m| {
            trace
                .functions
                .iter()
                .map(|f| f.per_minute[m] as usize)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    // One worker: the minute's holder occupies it until the minute ends, so the minute's
    // invocations wait in the queue (which the policy does not see) and run, taking no
    // time, at its end.
    let mut builder = EdgeHub::builder()
        .name("trace-replay")
        .clock(Arc::new(clock.clone()))
        .reservation_policy(policy)
        .maintenance_interval(Duration::ZERO)
        .workers(1)
        .queue_capacity(busiest_minute + 2)
        .python_templates(false)
        .sandbox(sandbox.clone())
        .deploy(spec(HOLDER, 128.0));
    for (index, f) in trace.functions.iter().enumerate() {
        builder = builder.deploy(spec(index, f.memory_mb));
    }
    let hub = builder.build()?;

    let functions = trace.functions.len();
    let mut per_function = vec![(0u64, 0u64, 0.0f64); functions];
    // Loaded environments after the last maintenance pass: id -> (function, MB).
    let mut before: HashMap<u64, (usize, u32)> = HashMap::new();
    let step = MINUTE / PASSES_PER_MINUTE;
    let step_gb_minutes = step.as_secs_f64() / 60.0 / 1024.0;
    // A maintenance pass, then the memory of the environments loaded through the whole step
    // that just ended while their function had no work (`busy`: which functions had work in
    // that step's minute) is wasted.
    let mut pass = async |busy: &[bool], per_function: &mut [(u64, u64, f64)]| {
        hub.maintain().await;
        let loaded = sandbox.loaded();
        for (id, &(f, mb)) in &loaded {
            if f != HOLDER && before.contains_key(id) && !busy[f] {
                per_function[f].2 += f64::from(mb) * step_gb_minutes;
            }
        }
        before = loaded;
    };
    let mut busy = vec![false; functions];
    for minute in 0..=trace.minutes {
        pass(&busy, &mut per_function).await;
        if minute == trace.minutes {
            break;
        }
        for (b, f) in busy.iter_mut().zip(&trace.functions) {
            *b = f.per_minute[minute] > 0;
        }
        let payload = || minute.to_string().into_bytes();
        // The holder takes the worker first; the minute's invocations are then admitted at
        // its start (a call's first poll admits it).
        let minutes = &sandbox.minutes;
        let held = minutes.held_changed.notified();
        tokio::pin!(held);
        held.as_mut().enable();
        let holder = hub.call(Invocation::new(
            FunctionRef::from(function_name(HOLDER)),
            payload(),
        ));
        let mut calls: Vec<Call<'_>> = vec![Call::Pending(HOLDER, Box::pin(holder))];
        admit(&mut calls).await;
        if minutes.held.load(Ordering::SeqCst) <= minute as u64 {
            held.await;
        }
        for (index, f) in trace.functions.iter().enumerate() {
            for _ in 0..f.per_minute[minute] {
                let invocation =
                    Invocation::new(FunctionRef::from(function_name(index)), payload());
                calls.push(Call::Pending(index, Box::pin(hub.call(invocation))));
            }
        }
        admit(&mut calls).await;
        // The minute passes with the pool's maintenance, as it does in a running hub.
        for _ in 1..PASSES_PER_MINUTE {
            clock.advance(step);
            pass(&busy, &mut per_function).await;
        }
        clock.advance(MINUTE - step * (PASSES_PER_MINUTE - 1));
        minutes.release.send_replace(minute as u64 + 1);
        for call in calls {
            let (function, result) = call.finish().await;
            let error = match result {
                Ok(completion) => match completion.outcome {
                    Ok(_) if function == HOLDER => continue,
                    Ok(_) => {
                        per_function[function].0 += 1;
                        per_function[function].1 += u64::from(completion.start == Start::Cold);
                        continue;
                    }
                    Err(error) => ReplayError::Failed {
                        minute,
                        function,
                        error,
                    },
                },
                Err(refused) => ReplayError::Refused {
                    minute,
                    function,
                    reason: refused.to_string(),
                },
            };
            hub.shutdown().await;
            return Err(error);
        }
    }
    hub.shutdown().await;

    let invocations: u64 = per_function.iter().map(|f| f.0).sum();
    let cold_starts: u64 = per_function.iter().map(|f| f.1).sum();
    Ok(ReplayReport {
        policy: name,
        invocations,
        cold_starts,
        cold_start_pct: if invocations == 0 {
            0.0
        } else {
            100.0 * cold_starts as f64 / invocations as f64
        },
        wasted_gb_minutes: per_function.iter().map(|f| f.2).sum(),
        environments_loaded: sandbox.loads.load(Ordering::SeqCst) as u64,
        per_function,
    })
}

type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Completion, SubmitError>> + Send + 'a>>;

/// One invocation of the replay: admitted on its first poll, then awaited.
enum Call<'a> {
    Pending(usize, CallFuture<'a>),
    Ready(usize, Box<Result<Completion, SubmitError>>),
}

impl Call<'_> {
    fn poll_once(&mut self, cx: &mut std::task::Context<'_>) {
        if let Call::Pending(function, future) = self
            && let Poll::Ready(result) = future.as_mut().poll(cx)
        {
            *self = Call::Ready(*function, Box::new(result));
        }
    }

    async fn finish(self) -> (usize, Result<Completion, SubmitError>) {
        match self {
            Call::Pending(function, future) => (function, future.await),
            Call::Ready(function, result) => (function, *result),
        }
    }
}

/// Polls every call once: each is admitted.
async fn admit(calls: &mut [Call<'_>]) {
    std::future::poll_fn(|cx| {
        for call in calls.iter_mut() {
            call.poll_once(cx);
        }
        Poll::Ready(())
    })
    .await;
}

fn function_name(index: usize) -> FunctionName {
    let name = if index == HOLDER {
        "trace-minute".to_owned()
    } else {
        format!("trace-{index}")
    };
    FunctionName::new(&name).expect("a valid function name")
}

fn spec(index: usize, memory_mb: f64) -> FunctionSpec {
    let mut spec = FunctionSpec::new(
        function_name(index),
        Runtime::Process {
            command: vec![COMMAND.to_owned()],
            workdir: None,
            handler: None,
        },
    )
    .with_memory_mb(memory_mb.round().clamp(1.0, f64::from(u32::MAX)) as u32)
    // The manual clock moves a minute at a time: longer than any minute, so that no
    // deadline passes while the replay waits on it.
    .with_timeout(Duration::from_secs(900));
    spec.resources.max_concurrency = Some(1);
    spec
}

/// Where the replay driver and the environments meet each minute.
struct Minutes {
    /// Minutes whose holder has started: the holder of minute `m` makes it `m + 1`.
    held: AtomicU64,
    held_changed: Notify,
    /// Minutes over: an invocation of minute `m` finishes once this exceeds `m`.
    release: watch::Sender<u64>,
}

/// Runs the replay's functions: environments that do no work, each recorded while loaded.
struct ReplaySandbox {
    /// Function names to their index in the trace.
    index: HashMap<FunctionName, usize>,
    /// Loaded environments: id -> (function, MB).
    envs: Arc<Mutex<HashMap<u64, (usize, u32)>>>,
    next: AtomicUsize,
    loads: AtomicUsize,
    minutes: Arc<Minutes>,
}

impl ReplaySandbox {
    fn new(trace: &Trace) -> ReplaySandbox {
        ReplaySandbox {
            index: (0..trace.functions.len())
                .chain([HOLDER])
                .map(|i| (function_name(i), i))
                .collect(),
            envs: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicUsize::new(1),
            loads: AtomicUsize::new(0),
            minutes: Arc::new(Minutes {
                held: AtomicU64::new(0),
                held_changed: Notify::new(),
                release: watch::Sender::new(0),
            }),
        }
    }

    fn loaded(&self) -> HashMap<u64, (usize, u32)> {
        self.envs.lock().clone()
    }
}

impl Sandbox for ReplaySandbox {
    fn name(&self) -> &'static str {
        "trace_replay"
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        matches!(&spec.runtime, Runtime::Process { command, .. } if command.len() == 1 && command[0] == COMMAND)
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>> {
        Box::pin(async move {
            let function = *self.index.get(&spec.name).ok_or_else(|| {
                PrepareError::Start(format!("{} is not a function of the trace", spec.name).into())
            })?;
            let id = self.next.fetch_add(1, Ordering::SeqCst) as u64;
            self.loads.fetch_add(1, Ordering::SeqCst);
            self.envs
                .lock()
                .insert(id, (function, spec.resources.memory_mb));
            Ok(Box::new(ReplayEnv {
                id,
                envs: self.envs.clone(),
                minutes: self.minutes.clone(),
                holds: function == HOLDER,
                isolation: IsolationReport::new("trace_replay", Vec::new(), Vec::new()),
            }) as Box<dyn Environment>)
        })
    }
}

/// One loaded environment of the replay: the holder's invocation waits for its minute to
/// end; the trace's return at once.
struct ReplayEnv {
    id: u64,
    envs: Arc<Mutex<HashMap<u64, (usize, u32)>>>,
    minutes: Arc<Minutes>,
    /// Whether this is the holder's environment.
    holds: bool,
    isolation: IsolationReport,
}

impl Environment for ReplayEnv {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let minute: u64 = std::str::from_utf8(&invocation.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    FunctionError::new(
                        fnhub_core::ErrorKind::Handled,
                        "a replay invocation carries its minute",
                    )
                })?;
            if self.holds {
                let mut release = self.minutes.release.subscribe();
                self.minutes.held.store(minute + 1, Ordering::SeqCst);
                self.minutes.held_changed.notify_waiters();
                // The sender lives in the sandbox, which outlives its environments.
                let _ = release.wait_for(|&over| over > minute).await;
            }
            Ok(bytes::Bytes::new())
        })
    }

    fn isolation(&self) -> &IsolationReport {
        &self.isolation
    }
}

impl Drop for ReplayEnv {
    /// Stopped (shut down, or dropped by the pool): no longer loaded.
    fn drop(&mut self) {
        self.envs.lock().remove(&self.id);
    }
}
