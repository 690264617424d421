//! The admission queue.
//!
//! Three layers, from the outside in:
//!
//! 1. **Priority classes**: a higher [`Priority`] is always served first.
//! 2. **Fair share between principals** inside a class, by stride scheduling: each
//!    backlogged principal has a *pass*; the one with the lowest pass is served and its pass
//!    grows by `STRIDE_ONE / weight`. A principal that becomes backlogged resumes at its own
//!    pass or the class's virtual time (the pass last served), whichever is later: idle time
//!    earns no credit, and leaving does not forgive what it was served ahead. Between two
//!    services of a backlogged principal `i`, any other principal `j` is served at most
//!    `⌊w_j / w_i⌋ + 1` times ([`fairness_bound`]).
//! 3. **Earliest deadline first** inside one principal's share, then arrival order.
//!
//! Jobs of a function at its `max_concurrency` are parked when popped and put back when one
//! of its invocations finishes, so they wait without blocking other functions.

mod fair;
mod order;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fnhub_core::{FunctionLoad, FunctionName, Invocation, InvocationId, Principal};
use tokio::sync::oneshot;

use fair::Class;
pub(crate) use fair::Limits;
pub use fair::fairness_bound;

use crate::Completion;
use crate::deployed::Deployed;

/// One admitted invocation waiting for a worker.
pub(crate) struct Job {
    pub(crate) seq: u64,
    /// Boxed: a job moves through admission, the queue's slab and a worker, and a
    /// pointer moves cheaper than the 300-byte invocation.
    pub(crate) invocation: Box<Invocation>,
    pub(crate) spec: Arc<Deployed>,
    pub(crate) admitted_at: Instant,
    pub(crate) reply: Option<oneshot::Sender<Completion>>,
}

/// Why a job that may not run yet is held back.
enum Held {
    /// Its function runs as many as its concurrency limit allows: parked.
    AtLimit,
    /// No worker of its reservation and no unreserved one is free.
    NoWorker,
}

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Full,
    FunctionLimit,
    TenantLimit,
}

/// Where a queued job sits: the heaps hold these small keys, the jobs stay put in the
/// queue's slab, so reordering a heap moves 32 bytes rather than a whole job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) deadline: Option<SystemTime>,
    pub(crate) seq: u64,
    pub(crate) slot: u32,
}

/// Per-function state, in a vector indexed by [`Deployed::slot`].
#[derive(Default)]
struct FunctionState {
    name: Option<FunctionName>,
    queued: usize,
    running: u32,
    parked: VecDeque<Job>,
    completed: u64,
    cold: u64,
    /// Moving average of queue wait, in nanoseconds (weight 1/8 per completion).
    wait_ns: u64,
    /// Moving average of run time, in nanoseconds (weight 1/8 per completion).
    run_ns: u64,
    /// Admissions in the current busy period.
    arrivals: u32,
    /// When the function last went idle (nothing queued or running).
    idle_since: Option<Instant>,
    /// The idle time that ended the current busy period's start.
    idle_before: Option<Duration>,
    /// Workers reserved for this function.
    reserved: u32,
}

/// A function ended a busy period: what a reservation policy is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BusyPeriod {
    pub(crate) arrivals: u32,
    pub(crate) mean_run: Duration,
    pub(crate) idle_before: Option<Duration>,
}

/// Admitted jobs: bounded overall, per function and per principal.
pub(crate) struct Queue {
    /// One class per priority value, kept even when empty so a class that drains and
    /// refills costs no allocation.
    classes: Box<[Class]>,
    /// Bit `p` is set when class `p` has work.
    nonempty: [u64; 4],
    len: usize,
    next_seq: u64,
    functions: Vec<FunctionState>,
    queued_by_tenant: crate::FastMap<Principal, usize>,
    /// What each worker runs, then each direct run (see [`Queue::start_direct`]): the
    /// invocation and the job's sequence number.
    running_jobs: Vec<Option<(InvocationId, u64)>>,
    /// The scheduler's workers: the most invocations that run at once.
    workers: u32,
    /// Indices of `running_jobs` past the workers' own that no direct run holds.
    free_direct: Vec<usize>,
    /// Queued jobs, by the slot their [`Key`] names.
    slab: Vec<Option<Job>>,
    /// Deferred children: (latest safe start, sequence, slab slot), earliest first.
    deferred: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    /// Workers reserved across all functions.
    reserved_total: u32,
    /// Invocations running beyond their function's reservation (on unreserved workers).
    unreserved_running: u32,
    /// Jobs held back because every unreserved worker is taken.
    waiting_for_capacity: VecDeque<Job>,
    free: Vec<u32>,
    limits: Limits,
}

impl Queue {
    pub(crate) fn new(limits: Limits, workers: usize) -> Queue {
        Queue {
            classes: (0..256).map(|_| Class::default()).collect(),
            nonempty: [0; 4],
            len: 0,
            next_seq: 0,
            functions: Vec::new(),
            queued_by_tenant: crate::FastMap::default(),
            running_jobs: vec![None; 2 * workers],
            workers: u32::try_from(workers).unwrap_or(u32::MAX),
            free_direct: (workers..2 * workers).rev().collect(),
            slab: Vec::new(),
            deferred: BinaryHeap::new(),
            reserved_total: 0,
            unreserved_running: 0,
            waiting_for_capacity: VecDeque::new(),
            free: Vec::new(),
            limits,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.limits.capacity
    }

    fn function(&mut self, d: &Deployed) -> &mut FunctionState {
        if self.functions.len() <= d.slot {
            self.functions
                .resize_with(d.slot + 1, FunctionState::default);
        }
        let f = &mut self.functions[d.slot];
        if f.name.is_none() {
            f.name = Some(d.name.clone());
        }
        f
    }

    /// Whether a job of `spec` for `principal` would be admitted now.
    pub(crate) fn check(&self, spec: &Deployed, principal: &Principal) -> Result<(), Refusal> {
        if self.len >= self.limits.capacity {
            return Err(Refusal::Full);
        }
        let by_fn = self.functions.get(spec.slot).map_or(0, |f| f.queued);
        if by_fn >= self.limits.per_function {
            return Err(Refusal::FunctionLimit);
        }
        let by_tenant = self.queued_by_tenant.get(principal).copied().unwrap_or(0);
        if by_tenant >= self.limits.tenant_limit(principal) {
            return Err(Refusal::TenantLimit);
        }
        Ok(())
    }

    /// The sequence number the next job gets.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Adds a job that passed [`Queue::check`] under the same lock; returns whether its
    /// function was idle until now.
    pub(crate) fn push(&mut self, job: Job) -> bool {
        let was_idle = self.account(&job);
        self.insert(job);
        was_idle
    }

    /// Counts a newly admitted job; returns whether its function was idle until now.
    fn account(&mut self, job: &Job) -> bool {
        let was_idle = self.is_idle(&job.spec);
        self.arrived(job, was_idle);
        self.function(&job.spec).queued += 1;
        let principal = &job.invocation.context.principal;
        match self.queued_by_tenant.get_mut(principal) {
            Some(n) => *n += 1,
            None => {
                self.queued_by_tenant.insert(principal.clone(), 1);
            }
        }
        self.len += 1;
        was_idle
    }

    /// Whether `spec`'s function has nothing queued or running.
    fn is_idle(&mut self, spec: &Deployed) -> bool {
        let f = self.function(spec);
        f.queued == 0 && f.running == 0
    }

    /// Counts the arrival of `job` in its function's busy period, which it starts when the
    /// function `was_idle` until it came.
    fn arrived(&mut self, job: &Job, was_idle: bool) {
        let now = job.admitted_at;
        let f = self.function(&job.spec);
        if was_idle {
            f.idle_before = f.idle_since.map(|t| now.saturating_duration_since(t));
        }
        f.arrivals = f.arrivals.saturating_add(1);
    }

    /// Counts a job of `spec` as running if it may run now: its function under its
    /// concurrency limit, and a worker of its reservation or an unreserved one free.
    /// Otherwise, which of the two holds it back.
    fn start_running(&mut self, spec: &Deployed) -> Result<(), Held> {
        let unreserved_free = self.unreserved_running + self.reserved_total < self.workers;
        let max = spec.resources.max_concurrency;
        let f = self.function(spec);
        if max.is_some_and(|max| f.running >= max) {
            return Err(Held::AtLimit);
        }
        let within_reservation = f.running < f.reserved;
        if !within_reservation && !unreserved_free {
            return Err(Held::NoWorker);
        }
        f.running += 1;
        if !within_reservation {
            self.unreserved_running += 1;
        }
        Ok(())
    }

    /// Puts a job in the slab; returns its slot.
    fn store(&mut self, job: Job) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(job);
                slot
            }
            None => {
                self.slab.push(Some(job));
                // The queue is bounded far below u32::MAX.
                (self.slab.len() - 1) as u32
            }
        }
    }

    fn insert(&mut self, job: Job) {
        let p = usize::from(job.invocation.context.priority.0);
        let principal = job.invocation.context.principal.clone();
        let key = Key {
            deadline: job.invocation.context.deadline,
            seq: job.seq,
            slot: 0,
        };
        let slot = self.store(job);
        self.classes[p].push(&principal, Key { slot, ..key });
        self.nonempty[p / 64] |= 1 << (p % 64);
    }

    fn take(&mut self, slot: u32) -> Option<Job> {
        let job = self.slab.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some(job)
    }

    /// The highest priority with work.
    fn top_class(&self) -> Option<usize> {
        (0..4).rev().find_map(|w| {
            let bits = self.nonempty[w];
            (bits != 0).then(|| w * 64 + 63 - bits.leading_zeros() as usize)
        })
    }

    fn mark_if_empty(&mut self, p: usize) {
        if self.classes[p].is_empty() {
            self.nonempty[p / 64] &= !(1 << (p % 64));
        }
    }

    /// The next job that may run now, on `worker`; jobs of functions at their concurrency
    /// limit are parked on the way. The job counts as running until [`Queue::finished`].
    pub(crate) fn pop(&mut self, worker: usize, now: Option<Instant>) -> Option<Job> {
        loop {
            // A deferred child whose latest safe start has come goes first; otherwise the
            // classes; deferred children fill capacity nothing else wants.
            let urgent = match (self.deferred.peek(), now) {
                (Some(Reverse((latest, _, _))), Some(now)) => *latest <= now,
                _ => false,
            };
            let slot = if urgent {
                self.deferred.pop().map(|Reverse((_, _, slot))| slot)
            } else if let Some(p) = self.top_class() {
                let key = self.classes[p].pop(&self.limits);
                self.mark_if_empty(p);
                match key {
                    Some(k) => Some(k.slot),
                    None => continue,
                }
            } else {
                Some(self.deferred.pop()?.0.2)
            };
            let Some(job) = slot.and_then(|slot| self.take(slot)) else {
                continue;
            };
            match self.start_running(&job.spec) {
                Ok(()) => {}
                Err(Held::AtLimit) => {
                    self.function(&job.spec).parked.push_back(job);
                    continue;
                }
                Err(Held::NoWorker) => {
                    self.waiting_for_capacity.push_back(job);
                    continue;
                }
            }
            if let Some(slot) = self.running_jobs.get_mut(worker) {
                *slot = Some((job.invocation.id, job.seq));
            }
            self.forget(&job);
            return Some(job);
        }
    }

    /// Starts `job` at once as a *direct run* (on the task of the caller that awaits it),
    /// when nothing is queued ahead of it and it may run now: its function is under its
    /// concurrency limit, and a worker of its reservation or an unreserved one is free.
    /// The caller has checked that fewer invocations run than there are workers. The job
    /// counts as running, as one [`Queue::pop`] returns, until [`Queue::finished`] with
    /// the index returned; also returned: whether its function was idle until now.
    /// `None` leaves the job to be queued.
    pub(crate) fn start_direct(&mut self, job: &Job) -> Option<(usize, bool)> {
        if self.len != 0 || self.free_direct.is_empty() {
            return None;
        }
        // Idle until this arrival: read before the job counts as running.
        let was_idle = self.is_idle(&job.spec);
        self.start_running(&job.spec).ok()?;
        self.arrived(job, was_idle);
        let index = self.free_direct.pop()?;
        self.running_jobs[index] = Some((job.invocation.id, job.seq));
        Some((index, was_idle))
    }

    /// Whether deferred children wait (so [`Queue::pop`] needs the time).
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The predicted run time of `spec`'s function: its moving average, or its timeout
    /// before it has run.
    pub(crate) fn predicted_run(&self, spec: &Deployed) -> Duration {
        match self.functions.get(spec.slot) {
            Some(f) if f.completed > 0 => Duration::from_nanos(f.run_ns),
            _ => spec.resources.timeout,
        }
    }

    /// Adds a child that passed [`Queue::check`], to run when capacity frees up and no
    /// later than `latest_start`. Returns whether its function was idle until now.
    pub(crate) fn push_deferred(&mut self, job: Job, latest_start: Instant) -> bool {
        let seq = job.seq;
        let was_idle = self.account(&job);
        let slot = self.store(job);
        self.deferred.push(Reverse((latest_start, seq, slot)));
        was_idle
    }

    fn forget(&mut self, job: &Job) {
        if let Some(f) = self.functions.get_mut(job.spec.slot) {
            f.queued -= 1;
        }
        let principal = &job.invocation.context.principal;
        if let Some(n) = self.queued_by_tenant.get_mut(principal) {
            *n -= 1;
            if *n == 0 {
                self.queued_by_tenant.remove(principal);
            }
        }
        self.len -= 1;
    }

    /// The job `worker` popped, of function `spec`, finished at `now` after waiting `waited`
    /// in the queue and running `ran`. Returns whether a parked job was put back, and the
    /// busy period that ended if the function is now idle.
    pub(crate) fn finished(
        &mut self,
        worker: usize,
        spec: &Deployed,
        cold: bool,
        waited: Duration,
        ran: Duration,
        now: Instant,
    ) -> (bool, Option<BusyPeriod>) {
        if let Some(slot) = self.running_jobs.get_mut(worker) {
            *slot = None;
            if worker >= self.workers as usize {
                self.free_direct.push(worker);
            }
        }
        let f = self.function(spec);
        let was_unreserved = f.running > f.reserved;
        f.running = f.running.saturating_sub(1);
        f.completed += 1;
        f.cold += u64::from(cold);
        let ewma = |old: u64, new: Duration, first: bool| {
            let new = u64::try_from(new.as_nanos()).unwrap_or(u64::MAX);
            if first { new } else { old - old / 8 + new / 8 }
        };
        f.wait_ns = ewma(f.wait_ns, waited, f.completed == 1);
        f.run_ns = ewma(f.run_ns, ran, f.completed == 1);
        let idle = if f.running == 0 && f.queued == 0 {
            f.idle_since = Some(now);
            let period = BusyPeriod {
                arrivals: std::mem::take(&mut f.arrivals),
                mean_run: Duration::from_nanos(f.run_ns),
                idle_before: f.idle_before.take(),
            };
            Some(period)
        } else {
            None
        };
        let mut unparked = match f.parked.pop_front() {
            Some(job) => {
                self.insert(job);
                true
            }
            None => false,
        };
        if was_unreserved {
            self.unreserved_running = self.unreserved_running.saturating_sub(1);
            if let Some(job) = self.waiting_for_capacity.pop_front() {
                self.insert(job);
                unparked = true;
            }
        }
        (unparked, idle)
    }

    /// Sets the workers reserved for the function in `spec`'s slot. Refused (returning the
    /// total that would result) when no unreserved worker would be left.
    pub(crate) fn reserve(&mut self, spec: &Deployed) -> Result<(), u32> {
        let want = spec.resources.reserved_concurrency.unwrap_or(0);
        let workers = self.workers;
        let current = self.functions.get(spec.slot).map_or(0, |f| f.reserved);
        let total = self.reserved_total - current + want;
        if want > 0 && total >= workers {
            return Err(total);
        }
        self.reserved_total = total;
        self.function(spec).reserved = want;
        Ok(())
    }

    /// Frees the workers reserved for the function in `slot` (it was undeployed).
    pub(crate) fn release(&mut self, slot: usize) {
        if let Some(f) = self.functions.get_mut(slot) {
            self.reserved_total -= f.reserved;
            f.reserved = 0;
        }
    }

    /// Removes a queued (or parked) job. Cancellation is rare: it scans.
    pub(crate) fn cancel(&mut self, id: InvocationId) -> Option<Job> {
        let mut found = None;
        let queued = self.slab.iter().enumerate().find_map(|(slot, j)| {
            let j = j.as_ref().filter(|j| j.invocation.id == id)?;
            let ctx = &j.invocation.context;
            Some((
                slot as u32,
                usize::from(ctx.priority.0),
                ctx.principal.clone(),
            ))
        });
        if let Some((slot, p, principal)) = queued {
            let before = self.deferred.len();
            self.deferred.retain(|Reverse((_, _, s))| *s != slot);
            if self.deferred.len() != before {
                found = self.take(slot);
            } else if self.classes[p].remove_slot(&principal, slot) {
                found = self.take(slot);
                self.mark_if_empty(p);
            }
        }
        if found.is_none()
            && let Some(at) = self
                .waiting_for_capacity
                .iter()
                .position(|j| j.invocation.id == id)
        {
            found = self.waiting_for_capacity.remove(at);
        }
        if found.is_none() {
            for f in &mut self.functions {
                if let Some(at) = f.parked.iter().position(|j| j.invocation.id == id) {
                    found = f.parked.remove(at);
                    break;
                }
            }
        }
        let job = found?;
        self.forget(&job);
        Some(job)
    }

    /// The worker running `id` and the job's sequence number, if it is running.
    pub(crate) fn running_job(&self, id: InvocationId) -> Option<(usize, u64)> {
        self.running_jobs
            .iter()
            .enumerate()
            .find_map(|(w, r)| r.filter(|(i, _)| *i == id).map(|(_, seq)| (w, seq)))
    }

    /// Per-function load, for snapshots.
    pub(crate) fn function_loads(&self) -> BTreeMap<String, FunctionLoad> {
        self.functions
            .iter()
            .filter_map(|f| {
                let name = f.name.as_ref()?;
                let mut l = FunctionLoad::default();
                l.queued = f.queued;
                l.running = f.running as usize;
                l.completed_total = f.completed;
                l.cold_starts_total = f.cold;
                l.mean_wait = Duration::from_nanos(f.wait_ns);
                Some((name.to_string(), l))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
