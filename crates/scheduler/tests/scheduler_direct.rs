//! Direct runs (`Scheduler::try_call`): an invocation admitted when a worker is free and
//! nothing waits runs on the task that awaits it. Checked here: it does so only then; no
//! more invocations run at once than there are workers, direct and queued together; work
//! queued while direct runs hold every worker's share still runs; dropping a direct call
//! does not cancel it; it can be cancelled; shutdown waits for it.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionName, FunctionSpec, Invocation, LoadProbe, from_fn};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::Scheduler;
use tokio::sync::Semaphore;

fn name(s: &str) -> FunctionName {
    FunctionName::new(s).unwrap()
}

fn call(f: &str, payload: &'static str) -> Invocation {
    Invocation::new(name(f).into(), Bytes::from_static(payload.as_bytes()))
}

/// Invocations running now, and the most seen at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
}

/// A scheduler with `workers` workers and `gated`, which waits for a permit of the gate
/// (counting how many run at once) and echoes its payload.
fn scheduler(workers: usize) -> (Scheduler, Arc<Semaphore>, Arc<Concurrency>) {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Concurrency::default());
    let (g, c) = (gate.clone(), seen.clone());
    sandbox.register(
        "gated",
        from_fn(move |inv: Invocation| {
            let (gate, seen) = (g.clone(), c.clone());
            async move {
                let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                seen.now.fetch_sub(1, Ordering::SeqCst);
                seen.done.fetch_add(1, Ordering::SeqCst);
                Ok(inv.payload)
            }
        }),
    );
    let s = Scheduler::builder()
        .workers(workers)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("gated"))).unwrap();
    (s, gate, seen)
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_runs_directly_only_while_a_worker_is_free_and_nothing_waits() {
    let (s, gate, seen) = scheduler(2);
    let first = s.try_call(call("gated", "1")).unwrap();
    assert!(
        first.is_direct(),
        "an idle scheduler runs the call directly"
    );
    let first = tokio::spawn(first);
    until("the first call to run", || s.snapshot().running == 1).await;
    let second = s.try_call(call("gated", "2")).unwrap();
    assert!(second.is_direct(), "one worker is still free");
    let second = tokio::spawn(second);
    until("both to run", || s.snapshot().running == 2).await;
    // Both workers' shares are held by direct runs: the next call is queued, and so is
    // the one after it (something waits ahead of it).
    let third = s.try_call(call("gated", "3")).unwrap();
    assert!(!third.is_direct());
    let fourth = s.try_call(call("gated", "4")).unwrap();
    assert!(!fourth.is_direct());
    assert_eq!(s.snapshot().queued, 2);
    gate.add_permits(4);
    let outs: Vec<Bytes> = vec![
        first.await.unwrap().outcome.unwrap(),
        second.await.unwrap().outcome.unwrap(),
        third.await.outcome.unwrap(),
        fourth.await.outcome.unwrap(),
    ];
    assert_eq!(
        outs,
        ["1", "2", "3", "4"].map(|s: &str| Bytes::copy_from_slice(s.as_bytes()))
    );
    assert!(seen.most.load(Ordering::SeqCst) <= 2);
    let load = s.snapshot();
    assert_eq!((load.running, load.queued, load.completed_total), (0, 0, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_queued_runs_together_never_exceed_the_workers() {
    let (s, gate, seen) = scheduler(3);
    let mut calls = Vec::new();
    let mut direct = 0;
    for n in 0..40 {
        let c = s.try_call(call("gated", "x")).unwrap();
        direct += usize::from(c.is_direct());
        calls.push(tokio::spawn(c));
        if n % 4 == 0 {
            // Some finish while others are admitted, so direct and queued runs mix.
            gate.add_permits(1);
            tokio::task::yield_now().await;
        }
    }
    // Tickets from `try_submit` share the same capacity.
    let tickets: Vec<_> = (0..10)
        .map(|_| s.try_submit(call("gated", "y")).unwrap())
        .collect();
    gate.add_permits(1000);
    for c in calls {
        assert!(c.await.unwrap().outcome.is_ok());
    }
    for t in tickets {
        assert!(t.await.outcome.is_ok());
    }
    assert!(direct >= 3, "the first calls ran directly ({direct})");
    assert_eq!(seen.done.load(Ordering::SeqCst), 50);
    assert!(
        seen.most.load(Ordering::SeqCst) <= 3,
        "{} ran at once on 3 workers",
        seen.most.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_behind_a_direct_run_runs_when_it_ends() {
    let (s, gate, _) = scheduler(1);
    let direct = s.try_call(call("gated", "direct")).unwrap();
    assert!(direct.is_direct());
    let direct = tokio::spawn(direct);
    until("the direct run", || s.snapshot().running == 1).await;
    // The only worker's share is held: this waits in the queue, its worker parked.
    let queued = s.try_submit(call("gated", "queued")).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.snapshot().queued, 1);
    gate.add_permits(2);
    assert_eq!(direct.await.unwrap().outcome.unwrap(), "direct");
    let out = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("the queued invocation was stranded");
    assert_eq!(out.outcome.unwrap(), "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_direct_call_still_runs_and_a_direct_run_can_be_cancelled() {
    let (s, gate, seen) = scheduler(2);
    let dropped = s.try_call(call("gated", "dropped")).unwrap();
    assert!(dropped.is_direct());
    // Dropped before it was ever polled: handed to the runtime, it runs to its end.
    drop(dropped);
    until("the dropped call to start", || {
        seen.now.load(Ordering::SeqCst) == 1
    })
    .await;
    gate.add_permits(1);
    until("the dropped call to end", || {
        seen.done.load(Ordering::SeqCst) == 1
    })
    .await;
    until("its share to be given back", || s.snapshot().running == 0).await;
    assert_eq!(s.snapshot().completed_total, 1);

    let cancelled = s.try_call(call("gated", "cancelled")).unwrap();
    assert!(cancelled.is_direct());
    let id = cancelled.id();
    let cancelled = tokio::spawn(cancelled);
    until("the direct run", || s.snapshot().running == 1).await;
    assert!(s.cancel(id));
    let c = cancelled.await.unwrap();
    assert_eq!(c.outcome.unwrap_err().kind, ErrorKind::Cancelled);
    assert_eq!(s.snapshot().running, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_direct_runs() {
    let (s, gate, seen) = scheduler(1);
    let direct = tokio::spawn(s.try_call(call("gated", "last")).unwrap());
    until("the direct run", || s.snapshot().running == 1).await;
    let shutdown = tokio::spawn({
        let s = s.clone();
        async move { s.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the direct run"
    );
    assert!(s.try_call(call("gated", "late")).is_err(), "closed");
    gate.add_permits(1);
    assert_eq!(direct.await.unwrap().outcome.unwrap(), "last");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.done.load(Ordering::SeqCst), 1);
}
