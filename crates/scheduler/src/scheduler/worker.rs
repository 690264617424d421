//! The workers: each takes the next job, runs it in an environment from the pool and
//! completes it; and the maintenance pass that evicts and pre-warms.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use fnhub_core::{ErrorKind, FunctionError, InvocationContext, InvocationId, Outcome};
use tokio::sync::oneshot;

use super::{Completion, Inner};
use crate::deployed::Deployed;
use crate::pool::Start;
use crate::queue::Job;

/// Takes the next job for worker `index`, waiting for one; `None` once closed and drained.
pub(super) async fn next_job(inner: &Inner, index: usize) -> Option<Job> {
    // The next job for this worker, if one is ready: counted as running under the queue
    // lock (a job is always either queued or running), and its queue slot signalled free.
    let take = || {
        let mut queue = inner.queue.lock();
        let now = queue.has_deferred().then(|| inner.clock.now());
        let job = queue.pop(index, now)?;
        inner.running.fetch_add(1, Ordering::Relaxed);
        drop(queue);
        super::signal_room(inner);
        Some(job)
    };
    // Fast path: work is waiting, no need to register for a wake-up.
    if let Some(job) = take() {
        return Some(job);
    }
    loop {
        let notified = inner.work.notified();
        tokio::pin!(notified);
        // Registered before looking, so a close between the look and the wait is not missed.
        notified.as_mut().enable();
        if let Some(job) = take() {
            return Some(job);
        }
        // Checked under the lock, so no admission slips in between (close takes it too).
        if inner.closed.load(Ordering::Acquire) && inner.queue.lock().len() == 0 {
            return None;
        }
        notified.await;
    }
}

pub(super) async fn worker(inner: Arc<Inner>, index: usize) {
    while let Some(mut job) = next_job(&inner, index).await {
        let reply = job.reply.take();
        let completion = run(&inner, index, job).await;
        // No longer counted as running before its caller hears of it: a caller that has
        // every answer it waited for sees a load without them.
        inner.running.fetch_sub(1, Ordering::Relaxed);
        if let Some(reply) = reply {
            // The caller may have dropped its ticket; that is fine.
            let _ = reply.send(completion);
        }
        // Its function's and tenant's share is free again, and `idle` may hold now.
        super::signal_room(&inner);
    }
}

pub(super) async fn maintenance(inner: Arc<Inner>, interval: Duration) {
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

pub(super) async fn maintain(inner: &Inner) {
    export_load(inner);
    let work = inner.pool.maintain(inner.clock.now());
    inner.evictions.increment(work.evicted.len() as u64);
    for env in work.evicted {
        env.shutdown().await;
    }
    for deployed in work.released {
        if let Some(sandbox) = inner.pool.sandbox_for(&deployed.spec) {
            sandbox.release(&deployed.spec);
        }
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
pub(super) struct Ended {
    pub(super) id: InvocationId,
    pub(super) context: InvocationContext,
    pub(super) outcome: Outcome,
    pub(super) start: Start,
    pub(super) admitted_at: Instant,
    pub(super) taken_at: Instant,
    pub(super) done_at: Instant,
}

/// Runs `job` (taken by worker `index`, or a direct run's) and records how it ended; its
/// completion, for the caller (the job's reply channel is not used).
pub(super) async fn run(inner: &Inner, index: usize, job: Job) -> Completion {
    let Job {
        seq,
        invocation,
        spec,
        admitted_at,
        reply: _,
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
                let mut call = env.env().invoke(*invocation);
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
            let environments = policy.environments(spec.slot);
            inner
                .pool
                .went_idle(spec.clone(), windows, environments, now);
        }
        unparked
    };
    if unparked {
        inner.work.notify_one();
    }
    record(
        inner,
        &spec,
        Ended {
            id,
            context,
            outcome,
            start,
            admitted_at,
            taken_at,
            done_at: now,
        },
    )
}

/// A direct run (see [`Scheduler::try_call`](super::Scheduler::try_call)): `job` runs on
/// the task that polls this, with the capacity `admit` counted for it, which it gives back
/// at the end. Work it held back waits in the queue's accounting, which puts it back and
/// wakes a worker when the run finishes (as for a worker's run).
pub(super) async fn run_direct(inner: Arc<Inner>, index: usize, job: Job) -> Completion {
    let completion = run(&inner, index, job).await;
    inner.running.fetch_sub(1, Ordering::Relaxed);
    super::signal_room(&inner);
    completion
}

/// Records a finished job and hands its completion to the observer and the caller.
pub(super) fn complete(
    inner: &Inner,
    spec: &Deployed,
    f: Ended,
    reply: Option<oneshot::Sender<Completion>>,
) {
    let completion = record(inner, spec, f);
    if let Some(reply) = reply {
        // The caller may have dropped its ticket; that is fine.
        let _ = reply.send(completion);
    }
}

/// Records a finished job (counters, metrics, the observer); its completion.
fn record(inner: &Inner, spec: &Deployed, f: Ended) -> Completion {
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
    completion
}
