//! The scheduler: admission, the queue, and the workers that run invocations.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use fnhub_core::{
    Alias, Clock, ErrorKind, FunctionError, FunctionName, FunctionSpec, Invocation, InvocationId,
    LoadProbe, LoadSnapshot, PrepareError, Sandbox, Version,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::placement::HostInfo;
use crate::policy::ReservationPolicy;
use crate::pool::{Pool, Start};
use crate::queue::{Job, Queue, Refusal};
use crate::registry::{DeployError, Registry};

mod builder;
mod ticket;
mod worker;

pub use builder::SchedulerBuilder;
use ticket::NoObserver;
pub use ticket::{BuildError, Call, Completion, Observer, SubmitError, Ticket};
use worker::{Ended, complete, maintain};

/// Per-worker cancellation signal: `cancel` is notified with the sequence number of the job
/// to cancel in `cancel_seq`, so a late signal never cancels the next job.
#[derive(Default)]
struct WorkerSlot {
    cancel: Notify,
    cancel_seq: AtomicU64,
}

struct Inner {
    host: HostInfo,
    /// Processor utilisation for the load snapshot.
    cpu: crate::CpuMeter,
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
    /// Signalled (to every waiter) when room may have appeared: a job left the queue or an
    /// invocation ended. See [`Scheduler::room`].
    room: Notify,
    /// [`Room`] futures alive: the hot path signals `room` only when some exist.
    room_waiters: AtomicUsize,
    closed: AtomicBool,
    /// The workers' and the maintenance task's handles, taken by the first shutdown.
    handles: Mutex<Vec<JoinHandle<()>>>,
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
/// workers, in environments from its sandboxes kept warm per function version. A caller
/// that awaits its invocation at once ([`Scheduler::try_call`]) runs it itself when a
/// worker is free and nothing waits, in that worker's stead: the workers bound how many
/// invocations run at once either way.
///
/// Queue order: higher [`Priority`](fnhub_core::Priority) first, then the earlier deadline,
/// then arrival. An invocation whose deadline passes while it waits completes with
/// [`ErrorKind::DeadlineExceeded`] without running.
///
/// Cheap to clone: clones are handles to the same scheduler. Dropping the last clone
/// closes it: queued work still runs to completion on the runtime, but nothing waits for
/// it. Call [`Scheduler::shutdown`] to wait. A [`WeakScheduler`] refers to it without
/// keeping it open, for the parts of a host that the scheduler itself reaches (an
/// [`Observer`], a sandbox whose guests call back).
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
    /// Closes the scheduler when the last owning clone goes; `None` for a handle upgraded
    /// from a [`WeakScheduler`], which does not keep the scheduler open.
    _owner: Option<Arc<Owner>>,
}

/// Closes the scheduler on drop.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        close(&self.0);
    }
}

/// Resolves the next time room may have appeared in a [`Scheduler`], or it closed: see
/// [`Scheduler::room`].
pub struct Room<'a> {
    notified: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
    waiters: &'a AtomicUsize,
}

impl std::fmt::Debug for Room<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").finish_non_exhaustive()
    }
}

impl std::future::Future for Room<'_> {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.notified.as_mut().poll(cx)
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Signals [`Room`] futures, if any is alive: room may have appeared.
fn signal_room(inner: &Inner) {
    if inner.room_waiters.load(Ordering::SeqCst) > 0 {
        inner.room.notify_waiters();
    }
}

/// How an invocation is admitted: with a ticket, without one, as a child (deferred under
/// load), or for a caller that awaits it at once (run directly when it may run now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Ticket,
    Detached,
    Child,
    Call,
}

/// An admitted invocation: queued (with the receiver of its completion unless detached),
/// or started as a direct run on worker-share `index`.
enum Admitted {
    Queued {
        id: InvocationId,
        function: FunctionName,
        version: Version,
        rx: Option<oneshot::Receiver<Completion>>,
    },
    Direct {
        id: InvocationId,
        index: usize,
        job: Job,
    },
}

impl Admitted {
    fn id(&self) -> InvocationId {
        match self {
            Admitted::Queued { id, .. } | Admitted::Direct { id, .. } => *id,
        }
    }

    /// The ticket of a queued invocation admitted with one.
    fn ticket(self) -> Result<Ticket, SubmitError> {
        match self {
            Admitted::Queued {
                id,
                function,
                version,
                rx: Some(rx),
            } => Ok(Ticket {
                id,
                function,
                version,
                rx,
            }),
            // Not reached: only `Admit::Call` starts direct runs, only `Detached` has no
            // receiver, and neither asks for a ticket.
            _ => unreachable!("a ticket asked of an admission without one"),
        }
    }
}

/// A handle to a [`Scheduler`] that neither keeps it open nor keeps it in memory: see
/// [`Scheduler::downgrade`] and [`SchedulerBuilder::observer_with`].
#[derive(Clone)]
pub struct WeakScheduler {
    inner: Weak<Inner>,
}

impl std::fmt::Debug for WeakScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakScheduler").finish_non_exhaustive()
    }
}

impl WeakScheduler {
    /// The scheduler, while its workers or an owning handle keep it; the handle returned
    /// does not keep it open (see [`Scheduler`]).
    pub fn upgrade(&self) -> Option<Scheduler> {
        self.inner.upgrade().map(|inner| Scheduler {
            inner,
            _owner: None,
        })
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("load", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// The most workers a scheduler runs (each is a task and a slot): more is refused at
    /// build with [`BuildError::Invalid`].
    pub const MAX_WORKERS: usize = 4096;
    /// The largest queue a scheduler keeps; more is refused at build.
    pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

    /// A builder with the defaults.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::default()
    }

    /// A handle that does not keep the scheduler open; see [`WeakScheduler`].
    pub fn downgrade(&self) -> WeakScheduler {
        WeakScheduler {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Adds a sandbox backend after the build, after those already there (the first that
    /// supports a spec runs it). For a backend that needs the scheduler itself, such as one
    /// whose guests call back into it through a [`WeakScheduler`].
    pub fn add_sandbox(&self, sandbox: Arc<dyn Sandbox>) {
        self.inner.pool.add_sandbox(sandbox);
    }

    /// A future that resolves the next time room may have appeared: a job left the queue
    /// for a worker or was cancelled, or an invocation ended (freeing its function's and
    /// its tenant's share), or the scheduler closed. Made before a refused submission is
    /// retried, it misses no such moment in between:
    ///
    /// ```no_run
    /// # async fn f(scheduler: fnhub_scheduler::Scheduler, invocation: fnhub_core::Invocation) {
    /// use fnhub_scheduler::SubmitError;
    /// let mut invocation = invocation;
    /// loop {
    ///     let room = scheduler.room();
    ///     match scheduler.try_submit_detached(invocation) {
    ///         Err(SubmitError::Full(back)) => {
    ///             invocation = back;
    ///             room.await;
    ///         }
    ///         _ => break,
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// This is readiness in the manner of tower's `poll_ready`: no polling loop, no timer.
    pub fn room(&self) -> Room<'_> {
        // The `Notified` sees every signal from its creation on; the count, raised after,
        // tells the workers someone listens. A worker that frees room after a refused
        // caller looked also reads the count after the caller raised it (both SeqCst, the
        // look and the freeing ordered by the queue's lock), so it signals.
        let notified = Box::pin(self.inner.room.notified());
        self.inner.room_waiters.fetch_add(1, Ordering::SeqCst);
        Room {
            notified,
            waiters: &self.inner.room_waiters,
        }
    }

    /// Resolves once nothing is queued or running (at once if so now), or the scheduler has
    /// closed and drained. Invocations admitted by a completion (an output's flows) are
    /// admitted before the one that caused them stops running, so an idle scheduler has
    /// no such work left to admit.
    pub async fn idle(&self) {
        loop {
            let changed = self.room();
            // Read together under the queue lock, which a job holds while it moves from
            // queued to running (without building a whole load snapshot).
            let idle = {
                let queue = self.inner.queue.lock();
                queue.len() == 0 && self.inner.running.load(Ordering::Relaxed) == 0
            };
            if idle {
                return;
            }
            changed.await;
        }
    }

    /// Deploys one version of a function. Deploying the same spec again is a no-op;
    /// a different spec under a deployed version is refused (versions are immutable).
    ///
    /// A spec whose placement the host cannot satisfy (CPU features, labels) is refused
    /// with [`DeployError::Placement`] naming what is missing.
    pub fn deploy(&self, spec: FunctionSpec) -> Result<Arc<FunctionSpec>, DeployError> {
        self.deploy_as(spec, false)
    }

    /// Deploys `spec` *staged*: it runs when its exact version is named (so it can be
    /// [`prewarm`](Self::prewarm)ed), while unqualified calls keep going to the version
    /// before it, until [`promote`](Self::promote). A function with no version yet gets
    /// it as its latest at once.
    pub fn deploy_staged(&self, spec: FunctionSpec) -> Result<Arc<FunctionSpec>, DeployError> {
        self.deploy_as(spec, true)
    }

    /// Lets a staged version take unqualified calls (the latest, if it is the newest), and
    /// retires the versions nothing resolves to any more.
    pub fn promote(&self, name: &FunctionName, version: fnhub_core::Version) {
        self.inner.registry.write().promote(name, version);
        self.retire_old_versions(name);
    }

    /// Forgets a staged version that will not be promoted (it could not start).
    pub fn withdraw(&self, name: &FunctionName, version: fnhub_core::Version) {
        let mut registry = self.inner.registry.write();
        let exact = fnhub_core::FunctionRef::version(name.clone(), version);
        if let Some(deployed) = registry.resolve(&exact, 0) {
            registry.undeploy(&deployed);
        }
        drop(registry);
        self.retire_old_versions(name);
    }

    fn deploy_as(
        &self,
        spec: FunctionSpec,
        staged: bool,
    ) -> Result<Arc<FunctionSpec>, DeployError> {
        self.check_host(&spec)?;
        let name = spec.name.clone();
        let mut registry = self.inner.registry.write();
        // Staged only when new: deploying the spec of a live version again changes nothing.
        let exact = fnhub_core::FunctionRef::version(name.clone(), spec.version);
        let stage = staged && registry.has_latest(&name) && registry.resolve(&exact, 0).is_none();
        // Reservations are checked once the version has its slot; a refusal undoes it.
        let deployed = registry.deploy(spec)?;
        if stage {
            registry.stage(&deployed.name, deployed.version);
        }
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

    /// The aliases of `function`, by name.
    pub fn aliases(&self, function: &FunctionName) -> Vec<fnhub_core::Alias> {
        self.inner.registry.read().aliases(function)
    }

    /// Starts one environment of `function` now and keeps it warm for the next call; the
    /// error it fails with otherwise (an import error, a missing program or folder, a
    /// profile its sandbox cannot enforce). What a hub checks its functions with at start.
    pub async fn prewarm(&self, function: &fnhub_core::FunctionRef) -> Result<(), PrepareError> {
        let deployed = self
            .inner
            .registry
            .read()
            .resolve(function, 0)
            .ok_or_else(|| {
                PrepareError::Start(format!("{} is not deployed", function.name).into())
            })?;
        self.inner.pool.prewarm(&deployed).await?;
        self.inner.prewarms.increment(1);
        Ok(())
    }

    /// Every deployed spec.
    pub fn deployed(&self) -> Vec<Arc<FunctionSpec>> {
        self.inner.registry.read().specs().cloned().collect()
    }

    /// Admits `invocation`, or hands it back inside the error. The [`Ticket`] resolves to
    /// its completion.
    pub fn try_submit(&self, invocation: Invocation) -> Result<Ticket, SubmitError> {
        self.admit(invocation, Admit::Ticket)?.ticket()
    }

    /// Admits `invocation` for a caller that awaits its completion at once, or hands it
    /// back inside the error. When nothing is queued, a worker is free and the function
    /// may run now, the invocation does not wait for a worker: it runs on the task that
    /// polls the [`Call`] (a *direct run*, which holds the free worker's share of the
    /// capacity until it ends, so no more invocations run at once than there are
    /// workers). Otherwise it is queued as by [`try_submit`](Self::try_submit).
    ///
    /// Either way it is admitted, ordered, counted, observed and cancellable as any other,
    /// and dropping the `Call` does not cancel it: a direct run not yet finished is
    /// handed to the runtime to finish. Await the `Call` at once: a direct run makes no
    /// progress until it is polled.
    pub fn try_call(&self, invocation: Invocation) -> Result<Call, SubmitError> {
        Ok(match self.admit(invocation, Admit::Call)? {
            Admitted::Direct { id, index, job } => Call::direct(
                id,
                Box::pin(worker::run_direct(self.inner.clone(), index, job)),
            ),
            queued => Call::queued(queued.ticket()?),
        })
    }

    /// Admits `invocation` without a ticket: its completion reaches only the
    /// [`Observer`]. Cheaper than [`Scheduler::try_submit`] for fire-and-forget events.
    pub fn try_submit_detached(&self, invocation: Invocation) -> Result<InvocationId, SubmitError> {
        Ok(self.admit(invocation, Admit::Detached)?.id())
    }

    /// Admits `child`, an invocation made by a running one: its context is the parent's
    /// [`InvocationContext::child`](fnhub_core::InvocationContext::child) (trace, principal,
    /// priority, deadline, depth and parent inherited in that one place).
    ///
    /// Under load — every worker busy — a child with a deadline is deferred: it yields to
    /// other work, but from its latest safe start (deadline minus its function's predicted
    /// run time: the moving average, or the timeout before the first run) it goes ahead of
    /// everything, so it starts then or as soon as a worker frees up. Idle capacity takes
    /// deferred children at once.
    pub fn try_submit_child(&self, child: Invocation) -> Result<Ticket, SubmitError> {
        self.admit(child, Admit::Child)?.ticket()
    }

    /// Admits `invocation` as `how` says: queued, or (for [`Admit::Call`], when it may
    /// run now) started as a direct run, counted as running (see [`Queue::start_direct`]).
    fn admit(&self, invocation: Invocation, how: Admit) -> Result<Admitted, SubmitError> {
        let inner = &*self.inner;
        let child = how == Admit::Child;
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
            let id = invocation.id;
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
            let mut job = Job {
                seq,
                invocation: Box::new(invocation),
                spec,
                admitted_at: now,
                reply: None,
            };
            if how == Admit::Call
                && latest_start.is_none()
                && inner.running.load(Ordering::Relaxed) < inner.workers
                && let Some((index, was_idle)) = queue.start_direct(&job)
            {
                inner.running.fetch_add(1, Ordering::Relaxed);
                drop(queue);
                if was_idle {
                    inner.pool.busy(slot);
                }
                return Ok(Admitted::Direct { id, index, job });
            }
            let (function, version) = (job.spec.name.clone(), job.spec.version);
            let rx = (how != Admit::Detached).then(|| {
                let (tx, rx) = oneshot::channel();
                job.reply = Some(tx);
                rx
            });
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
            Ok(Admitted::Queued {
                id,
                function,
                version,
                rx,
            })
        })();
        match &result {
            Ok(admitted) => {
                inner.admitted.fetch_add(1, Ordering::Relaxed);
                if let Admitted::Queued { .. } = admitted {
                    inner.work.notify_one();
                }
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
                Ended {
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
            signal_room(inner);
        }
        true
    }

    /// Stops admitting, runs every admitted invocation to completion, stops the workers and
    /// shuts down the warm environments. Every invocation admitted before the call gets its
    /// completion. Calling it again waits for nothing more.
    pub async fn shutdown(&self) {
        close(&self.inner);
        let handles: Vec<_> = std::mem::take(&mut *self.inner.handles.lock());
        for handle in handles {
            // A worker only ends by returning; a panic inside a function is caught lower down.
            let _ = handle.await;
        }
        // Direct runs end on their callers' tasks.
        loop {
            let room = self.room();
            if self.inner.running.load(Ordering::Relaxed) == 0 {
                break;
            }
            room.await;
        }
        self.inner.pool.drain().await;
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
        s.cpu_utilization = inner.cpu.utilisation();
        s
    }
}

/// Stops admission and wakes every worker and waiter.
fn close(inner: &Inner) {
    // Set under the queue lock so no admission is in flight past the check.
    let _queue = inner.queue.lock();
    inner.closed.store(true, Ordering::Release);
    inner.work.notify_waiters();
    inner.closing.notify_waiters();
    inner.room.notify_waiters();
}
