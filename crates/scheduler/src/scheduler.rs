//! The scheduler: admission, the queue, and the workers that run invocations.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fnhub_core::{
    Alias, Clock, ErrorKind, FunctionError, FunctionName, FunctionSpec, Invocation,
    InvocationContext, InvocationId, LoadProbe, LoadSnapshot, Outcome, Principal, Sandbox,
    SystemClock, Version,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::deployed::Deployed;
use crate::placement::HostInfo;
use crate::policy::{FixedKeepAlive, ReservationPolicy};
use crate::pool::{Pool, Start};
use crate::queue::{Job, Limits, Queue, Refusal};
use crate::registry::{DeployError, Registry};

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
/// Hooks run on the scheduler's own tasks: keep them short and never block.
pub trait Observer: Send + Sync + 'static {
    /// An invocation was admitted.
    fn on_admitted(&self, _invocation: &Invocation, _spec: &FunctionSpec) {}
    /// A submission was rejected.
    fn on_rejected(&self, _error: &SubmitError) {}
    /// An admitted invocation ended, before its [`Ticket`] resolves.
    fn on_completed(&self, _completion: &Completion, _spec: &FunctionSpec) {}
}

struct NoObserver;
impl Observer for NoObserver {}

/// Resolves to the [`Completion`] of an admitted invocation.
///
/// Dropping it does not cancel the invocation: it still runs, and its completion still
/// reaches the [`Observer`].
#[derive(Debug)]
pub struct Ticket {
    id: InvocationId,
    function: FunctionName,
    version: Version,
    rx: oneshot::Receiver<Completion>,
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

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    affinity_wait: Duration,
    host: Option<HostInfo>,
    policy: Box<dyn ReservationPolicy>,
    maintenance_interval: Duration,
    workers: usize,
    queue_capacity: usize,
    per_function_queue: Option<usize>,
    per_tenant_queue: Option<usize>,
    weights: HashMap<Principal, u32>,
    tenant_limits: HashMap<Principal, usize>,
    max_idle_per_version: Option<usize>,
    sandboxes: Vec<Arc<dyn Sandbox>>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}

impl SchedulerBuilder {
    /// Number of workers: invocations that run at once. Default 16. Each is a tokio task;
    /// an idle one costs a few hundred bytes.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Invocations that may wait for a worker; one more is rejected with
    /// [`SubmitError::Full`]. Default 1024. Memory grows with the payloads held.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Most invocations of one function that may wait at once; one more is rejected with
    /// [`SubmitError::FunctionLimit`]. Default: the queue capacity (no separate limit).
    pub fn function_queue_limit(mut self, limit: usize) -> Self {
        self.per_function_queue = Some(limit);
        self
    }

    /// Most invocations of one principal that may wait at once; one more is rejected with
    /// [`SubmitError::TenantLimit`]. Default: the queue capacity (no separate limit).
    pub fn tenant_queue_limit(mut self, limit: usize) -> Self {
        self.per_tenant_queue = Some(limit);
        self
    }

    /// Gives `principal` its own queue limit instead of
    /// [`tenant_queue_limit`](Self::tenant_queue_limit).
    pub fn tenant_queue_limit_for(mut self, principal: Principal, limit: usize) -> Self {
        self.tenant_limits.insert(principal, limit);
        self
    }

    /// Gives `principal` `weight` shares of the workers within a priority class when several
    /// principals are backlogged. Default 1; 0 counts as 1. A principal of weight 3 is served
    /// about three times as often as one of weight 1.
    pub fn tenant_weight(mut self, principal: Principal, weight: u32) -> Self {
        self.weights.insert(principal, weight);
        self
    }

    /// How long idle environments are kept and when they are pre-warmed. Default
    /// [`FixedKeepAlive`] of 10 minutes. The policy hears of each function's busy periods
    /// (arrivals, run time, the idle time before) when the function goes idle, and its
    /// decision is applied by the maintenance pass.
    pub fn reservation_policy(mut self, policy: Box<dyn ReservationPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// How long an invocation with an affinity key waits for the environment that last
    /// served its key when that one is busy, before taking any other. Default 10 ms; the
    /// wait holds a worker.
    pub fn affinity_wait(mut self, wait: Duration) -> Self {
        self.affinity_wait = wait;
        self
    }

    /// What this scheduler's host offers to placement requirements. Default:
    /// [`HostInfo::detect`] (CPU features of this machine, no labels).
    pub fn host(mut self, host: HostInfo) -> Self {
        self.host = Some(host);
        self
    }

    /// How often the maintenance pass evicts and pre-warms environments. Default 1 s;
    /// `Duration::ZERO` turns the background pass off (call [`Scheduler::maintain`]
    /// yourself, as tests on a manual clock do).
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// Idle environments kept warm per function version. Default: the number of workers.
    /// Each holds whatever its backend holds (a process, a wasm instance).
    pub fn max_idle_per_version(mut self, max: usize) -> Self {
        self.max_idle_per_version = Some(max);
        self
    }

    /// Adds a sandbox. A function runs in the first one that supports its runtime kind.
    pub fn sandbox(mut self, sandbox: Arc<dyn Sandbox>) -> Self {
        self.sandboxes.push(sandbox);
        self
    }

    /// The clock for queue and run times. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Hooks called on admission, rejection and completion. Default: none.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Starts the workers on the current tokio runtime.
    pub fn build(self) -> Result<Scheduler, BuildError> {
        if self.workers == 0 {
            return Err(BuildError::Invalid("workers must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(BuildError::Invalid("queue_capacity must be at least 1"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let limits = Limits {
            capacity: self.queue_capacity,
            per_function: self.per_function_queue.unwrap_or(self.queue_capacity),
            per_tenant: self.per_tenant_queue.unwrap_or(self.queue_capacity),
            weights: self.weights,
            tenant_limits: self.tenant_limits,
        };
        let inner = Arc::new(Inner {
            host: self.host.unwrap_or_else(HostInfo::detect),
            deferred_children: metrics::counter!("fnhub_children_deferred_total"),
            policy: Mutex::new(self.policy),
            prewarms: metrics::counter!("fnhub_prewarms_total"),
            evictions: metrics::counter!("fnhub_evictions_total"),
            queued_seconds: metrics::histogram!("fnhub_invocation_queued_seconds"),
            run_seconds: metrics::histogram!("fnhub_invocation_run_seconds"),
            registry: RwLock::new(Registry::default()),
            queue: Mutex::new(Queue::new(limits, self.workers)),
            slots: (0..self.workers).map(|_| WorkerSlot::default()).collect(),
            work: Notify::new(),
            closing: Notify::new(),
            closed: AtomicBool::new(false),
            pool: Pool::new(
                self.sandboxes,
                self.max_idle_per_version.unwrap_or(self.workers),
                self.affinity_wait,
            ),
            clock: self.clock,
            observer: self.observer,
            workers: self.workers,
            running: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        });
        let mut handles: Vec<_> = (0..self.workers)
            .map(|index| runtime.spawn(worker(inner.clone(), index)))
            .collect();
        if !self.maintenance_interval.is_zero() {
            let interval = self.maintenance_interval;
            handles.push(runtime.spawn(maintenance(inner.clone(), interval)));
        }
        Ok(Scheduler {
            inner,
            handles: Mutex::new(handles),
        })
    }
}

/// Per-worker cancellation signal: `cancel` is notified with the sequence number of the job
/// to cancel in `cancel_seq`, so a late signal never cancels the next job.
#[derive(Default)]
struct WorkerSlot {
    cancel: Notify,
    cancel_seq: AtomicU64,
}

struct Inner {
    host: HostInfo,
    deferred_children: metrics::Counter,
    policy: Mutex<Box<dyn ReservationPolicy>>,
    prewarms: metrics::Counter,
    evictions: metrics::Counter,
    queued_seconds: metrics::Histogram,
    run_seconds: metrics::Histogram,
    registry: RwLock<Registry>,
    queue: Mutex<Queue>,
    slots: Vec<WorkerSlot>,
    /// Signalled when a job is queued or the scheduler closes.
    work: Notify,
    /// Signalled when the scheduler closes.
    closing: Notify,
    closed: AtomicBool,
    pool: Pool,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
    workers: usize,
    running: AtomicUsize,
    admitted: AtomicU64,
    rejected: AtomicU64,
    completed: AtomicU64,
}

/// Admits invocations into a bounded priority queue and runs them on a fixed set of
/// workers, in environments from its sandboxes kept warm per function version.
///
/// Queue order: higher [`Priority`](fnhub_core::Priority) first, then the earlier deadline,
/// then arrival. An invocation whose deadline passes while it waits completes with
/// [`ErrorKind::DeadlineExceeded`] without running.
///
/// Dropping the scheduler closes it: queued work still runs to completion on the runtime,
/// but nothing waits for it. Call [`Scheduler::shutdown`] to wait.
pub struct Scheduler {
    inner: Arc<Inner>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("load", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A builder with the defaults.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder {
            affinity_wait: Duration::from_millis(10),
            host: None,
            policy: Box::new(FixedKeepAlive::default()),
            maintenance_interval: Duration::from_secs(1),
            workers: 16,
            queue_capacity: 1024,
            per_function_queue: None,
            per_tenant_queue: None,
            weights: HashMap::new(),
            tenant_limits: HashMap::new(),
            max_idle_per_version: None,
            sandboxes: Vec::new(),
            clock: Arc::new(SystemClock),
            observer: Arc::new(NoObserver),
        }
    }

    /// Deploys one version of a function. Deploying the same spec again is a no-op;
    /// a different spec under a deployed version is refused (versions are immutable).
    ///
    /// A spec whose placement the host cannot satisfy (CPU features, labels) is refused
    /// with [`DeployError::Placement`] naming what is missing.
    pub fn deploy(&self, spec: FunctionSpec) -> Result<Arc<FunctionSpec>, DeployError> {
        self.check_host(&spec)?;
        let name = spec.name.clone();
        let mut registry = self.inner.registry.write();
        // Reservations are checked once the version has its slot; a refusal undoes it.
        let deployed = registry.deploy(spec)?;
        if let Err(total) = self.inner.queue.lock().reserve(&deployed) {
            registry.undeploy(&deployed);
            return Err(DeployError::ReservationExceeded {
                name,
                total,
                workers: self.inner.workers,
            });
        }
        drop(registry);
        self.retire_old_versions(&deployed.name);
        Ok(deployed.spec.clone())
    }

    /// Whether `spec` would deploy: placement, a sandbox for its runtime, a valid spec, and
    /// no other spec under its version. Changes nothing.
    pub fn check_deploy(&self, spec: &FunctionSpec) -> Result<(), DeployError> {
        self.check_host(spec)?;
        self.inner.registry.read().check(spec)
    }

    /// What this host must offer `spec`: its placement, and a sandbox for its runtime.
    fn check_host(&self, spec: &FunctionSpec) -> Result<(), DeployError> {
        let missing = self.inner.host.missing(&spec.placement);
        if !missing.is_empty() {
            return Err(DeployError::Placement {
                name: spec.name.clone(),
                missing,
            });
        }
        if self.inner.pool.sandbox_for(spec).is_none() {
            return Err(DeployError::NoSandbox {
                runtime: spec.runtime.kind(),
                name: spec.name.clone(),
            });
        }
        Ok(())
    }

    /// Removes every version of `function`: new invocations find no such function, those
    /// admitted already run to completion, its idle environments are shut down and its
    /// reserved workers freed. Whether it was deployed.
    pub fn undeploy(&self, function: &FunctionName) -> bool {
        let Some(slot) = self.inner.registry.write().remove_all(function) else {
            return false;
        };
        self.inner.queue.lock().release(slot);
        self.retire_old_versions(function);
        true
    }

    /// Creates or moves an alias of `function`.
    pub fn set_alias(&self, function: &FunctionName, alias: Alias) -> Result<(), DeployError> {
        self.inner.registry.write().set_alias(function, alias)?;
        self.retire_old_versions(function);
        Ok(())
    }

    /// After a deploy or an alias change, versions that neither `$LATEST` nor an alias
    /// points at drain: their idle environments stop now, busy ones when they finish.
    fn retire_old_versions(&self, function: &FunctionName) {
        let Some((slot, live)) = self.inner.registry.read().live_versions(function) else {
            return;
        };
        let stopped = self.inner.pool.retire(slot, live);
        if !stopped.is_empty() {
            self.inner.evictions.increment(stopped.len() as u64);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                for env in stopped {
                    rt.spawn(env.shutdown());
                }
            }
        }
    }

    /// The spec `function` resolves to now: the newest version, the exact one, or one of an
    /// alias's targets (for a weighted alias, the first). `None` when nothing matches.
    pub fn resolve(&self, function: &fnhub_core::FunctionRef) -> Option<Arc<FunctionSpec>> {
        self.inner
            .registry
            .read()
            .resolve(function, 0)
            .map(|d| d.spec.clone())
    }

    /// Every deployed spec.
    pub fn deployed(&self) -> Vec<Arc<FunctionSpec>> {
        self.inner.registry.read().specs().cloned().collect()
    }

    /// Admits `invocation`, or hands it back inside the error. The [`Ticket`] resolves to
    /// its completion.
    pub fn try_submit(&self, invocation: Invocation) -> Result<Ticket, SubmitError> {
        let (tx, rx) = oneshot::channel();
        let (id, function, version) = self.admit(invocation, Some(tx), false)?;
        Ok(Ticket {
            id,
            function,
            version,
            rx,
        })
    }

    /// Admits `invocation` without a ticket: its completion reaches only the
    /// [`Observer`]. Cheaper than [`Scheduler::try_submit`] for fire-and-forget events.
    pub fn try_submit_detached(&self, invocation: Invocation) -> Result<InvocationId, SubmitError> {
        self.admit(invocation, None, false).map(|(id, _, _)| id)
    }

    /// Admits `child` as a child of the running invocation `parent`.
    ///
    /// The child inherits the parent's trace (as a new span), tracestate, principal and
    /// priority, is one level deeper, records the parent as its `parent`, and gets the
    /// parent's deadline when that is sooner than its own. Under load — every worker busy
    /// — a child with a deadline is deferred: it yields to other work, but from its latest
    /// safe start (deadline minus its function's predicted run time: the moving average,
    /// or the timeout before the first run) it goes ahead of everything, so it starts then
    /// or as soon as a worker frees up. Idle capacity takes deferred children at once.
    pub fn try_submit_child(
        &self,
        parent: &Invocation,
        mut child: Invocation,
    ) -> Result<Ticket, SubmitError> {
        let (p, c) = (&parent.context, &mut child.context);
        c.deadline = match (c.deadline, p.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        c.parent = Some(parent.id.into());
        c.trace = p.trace.child();
        c.tracestate.clone_from(&p.tracestate);
        c.principal = p.principal.clone();
        c.priority = p.priority;
        c.depth = p.depth.saturating_add(1);
        let (tx, rx) = oneshot::channel();
        let (id, function, version) = self.admit(child, Some(tx), true)?;
        Ok(Ticket {
            id,
            function,
            version,
            rx,
        })
    }

    fn admit(
        &self,
        invocation: Invocation,
        reply: Option<oneshot::Sender<Completion>>,
        child: bool,
    ) -> Result<(InvocationId, FunctionName, Version), SubmitError> {
        let inner = &*self.inner;
        let result = (|| {
            if inner.closed.load(Ordering::Acquire) {
                return Err(SubmitError::ShuttingDown(invocation));
            }
            // The alias roll: the low bits of the id are random.
            let roll = invocation.id.as_u128() as u64;
            let Some(spec) = inner.registry.read().resolve(&invocation.function, roll) else {
                return Err(SubmitError::UnknownFunction(invocation));
            };
            let mut queue = inner.queue.lock();
            // Checked under the queue lock, so shutdown cannot slip between check and push.
            if inner.closed.load(Ordering::Acquire) {
                return Err(SubmitError::ShuttingDown(invocation));
            }
            if let Err(refusal) = queue.check(&spec, &invocation.context.principal) {
                return Err(match refusal {
                    Refusal::Full => SubmitError::Full(invocation),
                    Refusal::FunctionLimit => SubmitError::FunctionLimit(invocation),
                    Refusal::TenantLimit => SubmitError::TenantLimit(invocation),
                });
            }
            inner.observer.on_admitted(&invocation, &spec);
            let ids = (invocation.id, spec.name.clone(), spec.version);
            let seq = queue.next_seq();
            let slot = spec.slot;
            let now = inner.clock.now();
            // A child under load waits for spare capacity until its latest safe start.
            let latest_start = if child && inner.running.load(Ordering::Relaxed) >= inner.workers {
                invocation.context.deadline.and_then(|deadline| {
                    let left = deadline.duration_since(inner.clock.system_time()).ok()?;
                    let slack = left.checked_sub(queue.predicted_run(&spec))?;
                    Some(now + slack)
                })
            } else {
                None
            };
            let job = Job {
                seq,
                invocation,
                spec,
                admitted_at: now,
                reply,
            };
            let was_idle = match latest_start {
                Some(latest) => {
                    inner.deferred_children.increment(1);
                    queue.push_deferred(job, latest)
                }
                None => queue.push(job),
            };
            if was_idle {
                inner.pool.busy(slot);
            }
            Ok(ids)
        })();
        match &result {
            Ok(_) => {
                inner.admitted.fetch_add(1, Ordering::Relaxed);
                inner.work.notify_one();
            }
            Err(e) => {
                inner.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("fnhub_submit_rejected_total", "reason" => e.reason())
                    .increment(1); // a static key: no allocation
                inner.observer.on_rejected(e);
            }
        }
        result
    }

    /// Applies the reservation policy's decisions now: shuts down environments outside their
    /// function's windows and pre-warms one for each function whose pre-warm point has
    /// come. The scheduler runs this every maintenance interval.
    pub async fn maintain(&self) {
        maintain(&self.inner).await;
    }

    /// Cancels an admitted invocation. A queued one completes at once with
    /// [`ErrorKind::Cancelled`] without running; a running one is stopped (its environment
    /// future is dropped) and completes with `Cancelled`. Returns `false` when the id is
    /// neither queued nor running (unknown, or already completed).
    pub fn cancel(&self, id: InvocationId) -> bool {
        self.cancel_where(id, true)
    }

    /// Cancels an invocation only if it is still waiting for a worker: it completes at once
    /// with [`ErrorKind::Cancelled`]. Returns `false` when it runs already, or is unknown
    /// or completed.
    pub fn cancel_queued(&self, id: InvocationId) -> bool {
        self.cancel_where(id, false)
    }

    fn cancel_where(&self, id: InvocationId, running_too: bool) -> bool {
        let inner = &*self.inner;
        let queued = {
            let mut queue = inner.queue.lock();
            match queue.cancel(id) {
                Some(job) => Some(job),
                None => {
                    if !running_too {
                        return false;
                    }
                    let Some((worker, seq)) = queue.running_job(id) else {
                        return false;
                    };
                    let slot = &inner.slots[worker];
                    slot.cancel_seq.store(seq, Ordering::Release);
                    slot.cancel.notify_one();
                    return true;
                }
            }
        };
        if let Some(job) = queued {
            let now = inner.clock.now();
            let Job {
                invocation,
                spec,
                admitted_at,
                reply,
                ..
            } = job;
            let error = FunctionError::new(ErrorKind::Cancelled, "cancelled while queued");
            complete(
                inner,
                &spec,
                Finished {
                    id: invocation.id,
                    context: invocation.context,
                    outcome: Err(error),
                    start: Start::NotStarted,
                    admitted_at,
                    taken_at: now,
                    done_at: now,
                },
                reply,
            );
        }
        true
    }

    /// Stops admitting, runs every admitted invocation to completion, stops the workers and
    /// shuts down the warm environments. Every invocation admitted before the call gets its
    /// completion. Calling it again waits for nothing more.
    pub async fn shutdown(&self) {
        self.close();
        let handles: Vec<_> = std::mem::take(&mut *self.handles.lock());
        for handle in handles {
            // A worker only ends by returning; a panic inside a function is caught lower down.
            let _ = handle.await;
        }
        self.inner.pool.drain().await;
    }

    fn close(&self) {
        // Set under the queue lock so no admission is in flight past the check.
        let _queue = self.inner.queue.lock();
        self.inner.closed.store(true, Ordering::Release);
        self.inner.work.notify_waiters();
        self.inner.closing.notify_waiters();
    }

    /// Whether [`Scheduler::shutdown`] has begun.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Idle environments kept warm now.
    pub fn idle_environments(&self) -> usize {
        self.inner.pool.idle_count()
    }
}

impl LoadProbe for Scheduler {
    fn snapshot(&self) -> LoadSnapshot {
        let inner = &*self.inner;
        // Read together under the queue lock, which a job holds while it moves from queued
        // to running: the pair never shows a job in neither.
        let (queued, queue_capacity, functions, running) = {
            let q = inner.queue.lock();
            let running = inner.running.load(Ordering::Relaxed);
            (q.len(), q.capacity(), q.function_loads(), running)
        };
        let mut s = LoadSnapshot::default();
        s.queued = queued;
        s.queue_capacity = queue_capacity;
        s.running = running;
        s.workers = inner.workers;
        s.admitted_total = inner.admitted.load(Ordering::Relaxed);
        s.rejected_total = inner.rejected.load(Ordering::Relaxed);
        s.completed_total = inner.completed.load(Ordering::Relaxed);
        s.functions = functions;
        s
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the next job for worker `index`, waiting for one; `None` once closed and drained.
async fn next_job(inner: &Inner, index: usize) -> Option<Job> {
    let now = |queue: &Queue| queue.has_deferred().then(|| inner.clock.now());
    // Fast path: work is waiting, no need to register for a wake-up.
    {
        let mut queue = inner.queue.lock();
        let now = now(&queue);
        if let Some(job) = queue.pop(index, now) {
            // Counted under the queue lock: a job is always either queued or running.
            inner.running.fetch_add(1, Ordering::Relaxed);
            return Some(job);
        }
    }
    loop {
        let notified = inner.work.notified();
        tokio::pin!(notified);
        // Registered before looking, so a close between the look and the wait is not missed.
        notified.as_mut().enable();
        {
            let mut queue = inner.queue.lock();
            let now = now(&queue);
            if let Some(job) = queue.pop(index, now) {
                inner.running.fetch_add(1, Ordering::Relaxed);
                return Some(job);
            }
            if inner.closed.load(Ordering::Acquire) && queue.len() == 0 {
                return None;
            }
        }
        notified.await;
    }
}

async fn worker(inner: Arc<Inner>, index: usize) {
    while let Some(job) = next_job(&inner, index).await {
        run(&inner, index, job).await;
        inner.running.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn maintenance(inner: Arc<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closing = inner.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            _ = ticker.tick() => maintain(&inner).await,
            () = closing => return,
        }
    }
}

async fn maintain(inner: &Inner) {
    export_load(inner);
    let work = inner.pool.maintain(inner.clock.now());
    inner.evictions.increment(work.evicted.len() as u64);
    for env in work.evicted {
        env.shutdown().await;
    }
    for deployed in work.prewarm {
        match inner.pool.prewarm(&deployed).await {
            Ok(()) => inner.prewarms.increment(1),
            Err(error) => {
                tracing::warn!(function = %deployed.name, %error, "pre-warm failed");
            }
        }
    }
}

/// Publishes the load snapshot through the `metrics` facade as gauges.
fn export_load(inner: &Inner) {
    let (queued, functions) = {
        let q = inner.queue.lock();
        (q.len(), q.function_loads())
    };
    metrics::gauge!("fnhub_queue_depth").set(queued as f64);
    metrics::gauge!("fnhub_running").set(inner.running.load(Ordering::Relaxed) as f64);
    metrics::gauge!("fnhub_workers").set(inner.workers as f64);
    for (name, f) in functions {
        metrics::gauge!("fnhub_function_queued", "function" => name.clone()).set(f.queued as f64);
        metrics::gauge!("fnhub_function_running", "function" => name.clone()).set(f.running as f64);
        metrics::gauge!("fnhub_function_mean_wait_seconds", "function" => name)
            .set(f.mean_wait.as_secs_f64());
    }
}

/// How one job ended, before it becomes a [`Completion`].
struct Finished {
    id: InvocationId,
    context: InvocationContext,
    outcome: Outcome,
    start: Start,
    admitted_at: Instant,
    taken_at: Instant,
    done_at: Instant,
}

async fn run(inner: &Inner, index: usize, job: Job) {
    let Job {
        seq,
        invocation,
        spec,
        admitted_at,
        reply,
    } = job;
    let taken_at = inner.clock.now();
    let id = invocation.id;
    let context = invocation.context.clone();
    let expired = invocation
        .context
        .deadline
        .is_some_and(|d| d <= inner.clock.system_time());
    let (outcome, start) = if expired {
        let error = FunctionError::new(
            ErrorKind::DeadlineExceeded,
            "the deadline passed while the invocation was queued",
        );
        (Err(error), Start::NotStarted)
    } else {
        let key = invocation.context.affinity_key.clone();
        match inner.pool.checkout(&spec, key.as_deref()).await {
            Ok((env, start)) => {
                let slot = &inner.slots[index];
                let mut call = env.env().invoke(invocation);
                // Most calls finish on their first poll; only a call that waits needs to
                // listen for cancellation (which registers with the worker's `Notify`).
                let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
                let outcome = if let Poll::Ready(outcome) = first {
                    outcome
                } else {
                    loop {
                        tokio::select! {
                            biased;
                            outcome = &mut call => break outcome,
                            () = slot.cancel.notified() => {
                                // A signal meant for an earlier job is ignored.
                                if slot.cancel_seq.load(Ordering::Acquire) == seq {
                                    break Err(FunctionError::new(
                                        ErrorKind::Cancelled,
                                        "cancelled while running",
                                    ));
                                }
                            }
                        }
                    }
                };
                drop(call);
                inner.pool.checkin(&spec, env, key.as_deref());
                (outcome, start)
            }
            Err(error) => {
                tracing::warn!(function = %spec.name, version = %spec.version, %error, "environment failed to start");
                let error = match error {
                    fnhub_core::PrepareError::Init(error) => error,
                    other => FunctionError::new(ErrorKind::Rejected, other.to_string())
                        .with_type("EnvironmentStartFailed"),
                };
                (Err(error), Start::NotStarted)
            }
        }
    };
    let now = inner.clock.now();
    let unparked = {
        let mut queue = inner.queue.lock();
        let (unparked, ended) = queue.finished(
            index,
            &spec,
            start == Start::Cold,
            taken_at.saturating_duration_since(admitted_at),
            now.saturating_duration_since(taken_at),
            now,
        );
        // Rare (only when the function goes idle), and under the queue lock so that an
        // admission cannot slip between the decision and the plan.
        if let Some(period) = ended {
            let mut policy = inner.policy.lock();
            policy.record(
                spec.slot,
                now,
                period.arrivals,
                period.mean_run,
                period.idle_before,
            );
            let windows = policy.decide(spec.slot, now);
            inner.pool.went_idle(spec.clone(), windows, now);
        }
        unparked
    };
    if unparked {
        inner.work.notify_one();
    }
    complete(
        inner,
        &spec,
        Finished {
            id,
            context,
            outcome,
            start,
            admitted_at,
            taken_at,
            done_at: now,
        },
        reply,
    );
}

/// Records a finished job and hands its completion to the observer and the caller.
fn complete(
    inner: &Inner,
    spec: &Deployed,
    f: Finished,
    reply: Option<oneshot::Sender<Completion>>,
) {
    let done_at = f.done_at;
    let completion = Completion {
        id: f.id,
        function: spec.name.clone(),
        version: spec.version,
        context: f.context,
        outcome: f.outcome,
        start: f.start,
        queued: f.taken_at.saturating_duration_since(f.admitted_at),
        ran: done_at.saturating_duration_since(f.taken_at),
    };
    inner.completed.fetch_add(1, Ordering::Relaxed);
    spec.metrics
        .completed(&completion.outcome, completion.start);
    inner.queued_seconds.record(completion.queued.as_secs_f64());
    inner.run_seconds.record(completion.ran.as_secs_f64());
    inner.observer.on_completed(&completion, &spec.spec);
    if let Some(reply) = reply {
        // The caller may have dropped its ticket; that is fine.
        let _ = reply.send(completion);
    }
}
