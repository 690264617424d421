//! Building a [`Scheduler`]: its settings, and the start of its workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use fnhub_core::{Clock, Principal, Sandbox, SystemClock};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::worker::{maintenance, worker};
use super::{BuildError, Inner, NoObserver, Observer, Owner, Scheduler, WeakScheduler, WorkerSlot};
use crate::placement::HostInfo;
use crate::policy::{FixedKeepAlive, ReservationPolicy};
use crate::pool::Pool;
use crate::queue::{Limits, Queue};
use crate::registry::Registry;

/// Where the observer comes from: given, or made from a handle to the scheduler itself.
pub(super) enum ObserverSource {
    Given(Arc<dyn Observer>),
    Made(Box<dyn FnOnce(WeakScheduler) -> Arc<dyn Observer> + Send>),
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    affinity_wait: Duration,
    host: Option<HostInfo>,
    cpu: Option<crate::CpuMeter>,
    policy: Box<dyn ReservationPolicy>,
    maintenance_interval: Duration,
    workers: usize,
    queue_capacity: usize,
    per_function_queue: Option<usize>,
    per_tenant_queue: Option<usize>,
    weights: crate::FastMap<Principal, u32>,
    tenant_limits: crate::FastMap<Principal, usize>,
    max_idle_per_version: Option<usize>,
    max_warm_mb: u64,
    sandboxes: Vec<Arc<dyn Sandbox>>,
    clock: Arc<dyn Clock>,
    observer: ObserverSource,
}

impl Default for SchedulerBuilder {
    fn default() -> SchedulerBuilder {
        SchedulerBuilder {
            affinity_wait: Duration::from_millis(10),
            host: None,
            cpu: None,
            policy: Box::new(FixedKeepAlive::default()),
            maintenance_interval: Duration::from_secs(1),
            workers: 16,
            queue_capacity: 1024,
            per_function_queue: None,
            per_tenant_queue: None,
            weights: crate::FastMap::default(),
            tenant_limits: crate::FastMap::default(),
            max_idle_per_version: None,
            max_warm_mb: u64::MAX,
            sandboxes: Vec::new(),
            clock: Arc::new(SystemClock),
            observer: ObserverSource::Given(Arc::new(NoObserver)),
        }
    }
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
    /// [`SubmitError::Full`](super::SubmitError::Full). Default 1024. Memory grows with the payloads held.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Most invocations of one function that may wait at once; one more is rejected with
    /// [`SubmitError::FunctionLimit`](super::SubmitError::FunctionLimit). Default: the queue capacity (no separate limit).
    pub fn function_queue_limit(mut self, limit: usize) -> Self {
        self.per_function_queue = Some(limit);
        self
    }

    /// Most invocations of one principal that may wait at once; one more is rejected with
    /// [`SubmitError::TenantLimit`](super::SubmitError::TenantLimit). Default: the queue capacity (no separate limit).
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

    /// Where [`LoadSnapshot::cpu_utilization`](fnhub_core::LoadSnapshot) comes from.
    /// Default: [`CpuMeter::detect`](crate::CpuMeter::detect), the process's cgroup or the
    /// machine.
    pub fn cpu_meter(mut self, meter: crate::CpuMeter) -> Self {
        self.cpu = Some(meter);
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

    /// The most memory, by the functions' `memory_mb`, that pre-warms bring the idle
    /// environments of idle functions to, with what the sandboxes hold warm outside
    /// environments ([`Sandbox::warm_bytes`](fnhub_core::Sandbox::warm_bytes): templates). A pre-warm loads as many environments as the
    /// reservation policy forecasts (see
    /// [`ReservationPolicy::environments`](crate::policy::ReservationPolicy::environments))
    /// while this holds. Default: no bound.
    pub fn max_warm_mb(mut self, mb: u64) -> Self {
        self.max_warm_mb = mb;
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
        self.observer = ObserverSource::Given(observer);
        self
    }

    /// Hooks made at build from a [`WeakScheduler`] to the scheduler being built: for an
    /// observer that submits work of its own (a hub admitting the invocations a function's
    /// output triggers). The weak handle neither keeps the scheduler open nor makes a
    /// reference cycle through the observer.
    pub fn observer_with(
        mut self,
        make: impl FnOnce(WeakScheduler) -> Arc<dyn Observer> + Send + 'static,
    ) -> Self {
        self.observer = ObserverSource::Made(Box::new(make));
        self
    }

    /// Starts the workers on the current tokio runtime.
    pub fn build(self) -> Result<Scheduler, BuildError> {
        if self.workers == 0 || self.workers > Scheduler::MAX_WORKERS {
            return Err(BuildError::Invalid("workers must be 1 to 4096"));
        }
        if self.queue_capacity == 0 || self.queue_capacity > Scheduler::MAX_QUEUE_CAPACITY {
            return Err(BuildError::Invalid("queue_capacity must be 1 to 1048576"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let limits = Limits {
            capacity: self.queue_capacity,
            per_function: self.per_function_queue.unwrap_or(self.queue_capacity),
            per_tenant: self.per_tenant_queue.unwrap_or(self.queue_capacity),
            weights: self.weights,
            tenant_limits: self.tenant_limits,
        };
        let mut observer = Some(self.observer);
        let inner = Arc::new_cyclic(|weak| Inner {
            host: self.host.unwrap_or_else(HostInfo::detect),
            cpu: self.cpu.unwrap_or_else(crate::CpuMeter::detect),
            deferred_children: metrics::counter!("fnhub_children_deferred_total"),
            policy: Mutex::new(self.policy),
            prewarms: metrics::counter!("fnhub_prewarms_total"),
            evictions: metrics::counter!("fnhub_evictions_total"),
            queued_seconds: metrics::histogram!("fnhub_invocation_queued_seconds"),
            run_seconds: metrics::histogram!("fnhub_invocation_run_seconds"),
            registry: RwLock::new(Registry::default()),
            queue: Mutex::new(Queue::new(limits, self.workers)),
            // The workers' own, then those of direct runs (`Scheduler::try_call`).
            slots: (0..2 * self.workers)
                .map(|_| WorkerSlot::default())
                .collect(),
            work: Notify::new(),
            closing: Notify::new(),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            handles: Mutex::new(Vec::new()),
            pool: Pool::new(
                self.sandboxes,
                self.max_idle_per_version.unwrap_or(self.workers),
                self.max_warm_mb,
                self.affinity_wait,
            ),
            clock: self.clock,
            observer: match observer.take() {
                Some(ObserverSource::Given(o)) => o,
                Some(ObserverSource::Made(make)) => make(WeakScheduler {
                    inner: weak.clone(),
                }),
                None => Arc::new(NoObserver),
            },
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
        *inner.handles.lock() = handles;
        Ok(Scheduler {
            _owner: Some(Arc::new(Owner(inner.clone()))),
            inner,
        })
    }
}
