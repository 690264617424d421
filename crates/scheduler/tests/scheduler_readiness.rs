//! Readiness and handles: `room()` resolves when room appears and not before, `idle()` when
//! the scheduler has drained, a weak handle neither keeps the scheduler open nor outlives
//! it, an observer made from one can submit, and a sandbox added after the build runs
//! functions.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fnhub_core::{FunctionName, FunctionSpec, Invocation, LoadProbe, from_fn};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::{Completion, Observer, Scheduler, SubmitError, WeakScheduler};
use tokio::sync::Semaphore;

fn call(function: &str) -> Invocation {
    Invocation::new(function.parse().unwrap(), "")
}

/// One worker, a queue of one, and "gated", which waits for a permit of the gate.
fn full_rig() -> (Scheduler, Arc<Semaphore>) {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    sandbox.register(
        "gated",
        from_fn(move |inv: Invocation| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok(inv.payload)
            }
        }),
    );
    let s = Scheduler::builder()
        .workers(1)
        .queue_capacity(1)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(
        FunctionName::new("gated").unwrap(),
    ))
    .unwrap();
    (s, gate)
}

/// Waits (bounded) until `n` invocations run.
async fn running(s: &Scheduler, n: usize) {
    for _ in 0..2000 {
        if s.snapshot().running == n {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never {n} running: {:?}", s.snapshot());
}

#[tokio::test]
async fn room_resolves_when_a_full_queue_moves_and_not_before() {
    let (s, gate) = full_rig();
    let first = s.try_submit(call("gated")).unwrap();
    running(&s, 1).await;
    let second = s.try_submit(call("gated")).unwrap(); // fills the queue of one
    let room = s.room();
    let refused = s.try_submit_detached(call("gated")).unwrap_err();
    assert!(matches!(refused, SubmitError::Full(_)), "{refused}");
    // Nothing has moved: room stays pending.
    let mut room = Box::pin(room);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut room)
            .await
            .is_err(),
        "room resolved while the queue was still full"
    );
    // The running one ends, the queued one starts: room appears, and the refused
    // invocation is admitted on the retry.
    gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), room)
        .await
        .expect("room after a completion");
    let third = s.try_submit(refused.into_invocation()).unwrap();
    gate.add_permits(2);
    for t in [first, second, third] {
        t.await.outcome.unwrap();
    }
    s.shutdown().await;
}

#[tokio::test]
async fn idle_waits_for_queued_and_running_work() {
    let (s, gate) = full_rig();
    // Idle at once when there is nothing.
    tokio::time::timeout(Duration::from_secs(1), s.idle())
        .await
        .unwrap();
    let a = s.try_submit(call("gated")).unwrap();
    running(&s, 1).await;
    let b = s.try_submit(call("gated")).unwrap();
    let mut idle = Box::pin(s.idle());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut idle)
            .await
            .is_err()
    );
    gate.add_permits(1);
    // One still queued or running: not idle yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut idle)
            .await
            .is_err()
    );
    gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .unwrap();
    let load = s.snapshot();
    assert_eq!((load.queued, load.running), (0, 0));
    a.await.outcome.unwrap();
    b.await.outcome.unwrap();
    s.shutdown().await;
}

#[tokio::test]
async fn a_weak_handle_neither_keeps_it_open_nor_outlives_it() {
    let (s, _gate) = full_rig();
    let weak = s.downgrade();
    let upgraded = weak.upgrade().unwrap();
    let clone = s.clone();
    drop(s);
    // A clone still owns it: open.
    assert!(!upgraded.is_closed());
    drop(clone);
    // The last owner is gone: closed, even though an upgraded handle is held.
    assert!(upgraded.is_closed());
    assert!(matches!(
        upgraded.try_submit_detached(call("gated")),
        Err(SubmitError::ShuttingDown(_))
    ));
    drop(upgraded);
    // Once its workers have ended, nothing keeps it in memory.
    for _ in 0..1000 {
        if weak.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the scheduler outlived its owners and its workers");
}

/// Submits a follow-up of every completion of "first" through the weak handle it was made
/// with.
struct Chain {
    scheduler: WeakScheduler,
    followed: Arc<AtomicUsize>,
}

impl Observer for Chain {
    fn on_completed(&self, c: &Completion, _spec: &FunctionSpec) {
        if c.function.as_str() == "first"
            && let Some(s) = self.scheduler.upgrade()
        {
            s.try_submit_detached(call("second")).unwrap();
            self.followed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn an_observer_made_from_a_weak_handle_submits_and_a_late_sandbox_runs() {
    let followed = Arc::new(AtomicUsize::new(0));
    let f = followed.clone();
    // No sandbox at build: the in-process one is added afterwards, as a backend that
    // needs the scheduler itself would be.
    let s = Scheduler::builder()
        .workers(2)
        .observer_with(move |scheduler| {
            Arc::new(Chain {
                scheduler,
                followed: f,
            })
        })
        .build()
        .unwrap();
    let first = FunctionSpec::in_process(FunctionName::new("first").unwrap());
    assert!(
        s.deploy(first.clone()).is_err(),
        "no sandbox runs it before one is added"
    );
    let sandbox = InProcessSandbox::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    sandbox.register(
        "first",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    sandbox.register(
        "second",
        from_fn(move |inv: Invocation| {
            r.fetch_add(1, Ordering::Relaxed);
            async move { Ok(inv.payload) }
        }),
    );
    s.add_sandbox(Arc::new(sandbox));
    s.deploy(first).unwrap();
    s.deploy(FunctionSpec::in_process(
        FunctionName::new("second").unwrap(),
    ))
    .unwrap();
    s.try_submit(call("first")).unwrap().await.outcome.unwrap();
    // The follow-up was admitted before "first" stopped counting as running, so idle
    // means it ran too.
    s.idle().await;
    assert_eq!(followed.load(Ordering::Relaxed), 1);
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    s.shutdown().await;
}
