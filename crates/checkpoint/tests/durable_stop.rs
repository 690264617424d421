//! Stopping a durable execution from outside: while it waits, while it runs, after it
//! ended; and listing a function's executions.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub_checkpoint::MemoryStore;
use fnhub_checkpoint::durable::{
    DurableContext, DurableHost, Engine, RunResult, StopResult, SuspendPolicy, durable_fn,
};
use fnhub_core::{
    BoxFuture, CheckpointStore, ErrorKind, Event, EventSource, ExecutionId, FunctionError,
    FunctionName, Invocation, Outcome, SystemClock, Version,
};

/// Runs no children; counts the outcomes delivered to it, each in 5 ms.
#[derive(Default)]
struct Host {
    delivered: AtomicU32,
}

impl DurableHost for Host {
    fn invoke(&self, _: Invocation) -> BoxFuture<'static, Outcome> {
        Box::pin(async { Ok(Bytes::new()) })
    }

    fn completed(
        &self,
        _: &fnhub_checkpoint::durable::Finished,
    ) -> BoxFuture<'static, Result<(), fnhub_checkpoint::durable::DeliveryError>> {
        self.delivered.fetch_add(1, Ordering::SeqCst);
        // Delivering takes a while, as a publish does.
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        })
    }
}

fn name(s: &str) -> FunctionName {
    FunctionName::new(s).unwrap()
}

fn stopping() -> FunctionError {
    FunctionError::new(ErrorKind::Cancelled, "stopped by the operator").with_type("Stopped")
}

/// An engine with three functions: "sleeper" sleeps an hour after a step, "waiter" waits
/// for an event on `acks/#`, "stuck" runs a step that never ends. Each counts its first
/// step's runs in `steps`.
fn engine(store: Arc<MemoryStore>, steps: Arc<AtomicU32>, host: Arc<Host>) -> Engine {
    let engine = Engine::new(
        "hub",
        store,
        host,
        Arc::new(SystemClock),
        SuspendPolicy::with_threshold(Duration::from_millis(50)),
    );
    let counted = move |steps: Arc<AtomicU32>| async move {
        steps.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from_static(b"one"))
    };
    let s = steps.clone();
    engine.register(
        name("sleeper"),
        Version::FIRST,
        durable_fn(move |ctx: DurableContext, _| {
            let s = s.clone();
            async move {
                ctx.step("first", || counted(s)).await?;
                ctx.sleep("an hour", Duration::from_secs(3600)).await?;
                Ok(Bytes::from_static(b"woke"))
            }
        }),
    );
    let s = steps.clone();
    engine.register(
        name("waiter"),
        Version::FIRST,
        durable_fn(move |ctx: DurableContext, _| {
            let s = s.clone();
            async move {
                ctx.step("first", || counted(s)).await?;
                ctx.wait_for("ack", "acks/#").await
            }
        }),
    );
    engine.register(
        name("stuck"),
        Version::FIRST,
        durable_fn(move |ctx: DurableContext, _| {
            let s = steps.clone();
            async move {
                ctx.step("first", || counted(s)).await?;
                ctx.step("forever", std::future::pending).await
            }
        }),
    );
    engine
}

async fn start(engine: &Engine, function: &str) -> (ExecutionId, RunResult) {
    let invocation = Invocation::new(function.parse().unwrap(), "in");
    let id = invocation.id.into();
    (id, engine.start(invocation, Version::FIRST).await.unwrap())
}

#[tokio::test]
async fn an_execution_that_waits_is_stopped_and_never_runs_again() {
    let store = Arc::new(MemoryStore::new());
    let steps = Arc::new(AtomicU32::new(0));
    let host = Arc::new(Host::default());
    let engine = engine(store.clone(), steps.clone(), host.clone());
    let (sleeping, run) = start(&engine, "sleeper").await;
    assert!(matches!(run, RunResult::Suspended { .. }), "{run:?}");
    let (waiting, run) = start(&engine, "waiter").await;
    assert!(matches!(run, RunResult::Suspended { .. }), "{run:?}");
    assert!(engine.is_waiting_for_events());

    // Both are in the store, listed under their functions.
    let listed = engine
        .executions_of(&name("sleeper"), |_| false)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|c| c.execution_id).collect::<Vec<_>>(),
        [sleeping]
    );

    let outcome = tokio::spawn({
        let engine = engine.clone();
        async move { engine.outcome(sleeping).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        engine.stop(sleeping, stopping()).await.unwrap(),
        StopResult::Stopped
    );
    assert_eq!(outcome.await.unwrap().unwrap(), Err(stopping()));
    assert!(store.load(sleeping).await.unwrap().is_none());
    // Its timer, when it fires, finds it ended: the replay does not run.
    let woken = engine.wake(sleeping, 2, Ok(Bytes::new())).await.unwrap();
    assert!(
        matches!(woken, fnhub_checkpoint::durable::Woken::Finished),
        "{woken:?}"
    );
    // A second stop says how it ended; the ended one is remembered with its function.
    assert_eq!(
        engine.stop(sleeping, stopping()).await.unwrap(),
        StopResult::Ended(Box::new(Err(stopping())))
    );
    let ended = engine.ended_of(&name("sleeper"));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].execution, sleeping);
    assert!(ended[0].ended >= ended[0].started);

    // The event wait is taken out: an event that comes later wakes nothing.
    assert_eq!(
        engine.stop(waiting, stopping()).await.unwrap(),
        StopResult::Stopped
    );
    assert!(!engine.is_waiting_for_events());
    assert_eq!(
        engine
            .deliver(&Event::new("acks/1", "late", EventSource::Local))
            .await,
        0
    );
    assert_eq!(steps.load(Ordering::SeqCst), 2, "no step ran again");
    assert_eq!(
        host.delivered.load(Ordering::SeqCst),
        2,
        "each outcome delivered once"
    );
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(
        engine
            .stop(ExecutionId::random(), stopping())
            .await
            .unwrap(),
        StopResult::Unknown
    );
}

#[tokio::test]
async fn a_running_execution_stops_at_once_with_the_reason() {
    let store = Arc::new(MemoryStore::new());
    let steps = Arc::new(AtomicU32::new(0));
    let host = Arc::new(Host::default());
    let engine = engine(store.clone(), steps.clone(), host.clone());
    let invocation = Invocation::new("stuck".parse().unwrap(), "in");
    let id: ExecutionId = invocation.id.into();
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.start(invocation, Version::FIRST).await }
    });
    // Its first step is in the store: it now runs the step that never ends.
    while store
        .load(id)
        .await
        .unwrap()
        .is_none_or(|c| c.journal.is_empty())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        engine.stop(id, stopping()).await.unwrap(),
        StopResult::Stopped
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&ended, RunResult::Completed(Err(e)) if *e == stopping()),
        "{ended:?}"
    );
    assert!(store.load(id).await.unwrap().is_none());
    assert_eq!(engine.outcome(id).await.unwrap(), Err(stopping()));
    assert_eq!(host.delivered.load(Ordering::SeqCst), 1, "delivered once");
    // A take-over (as after a node died) finds it ended.
    let taken = engine.take_over(id).await.unwrap();
    assert!(
        matches!(taken, fnhub_checkpoint::durable::Woken::Finished),
        "{taken:?}"
    );
    assert_eq!(steps.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_wait_for_an_event_is_answered_from_outside_once() {
    let store = Arc::new(MemoryStore::new());
    let steps = Arc::new(AtomicU32::new(0));
    let host = Arc::new(Host::default());
    let engine = engine(store.clone(), steps.clone(), host.clone());
    let (waiting, _) = start(&engine, "waiter").await;
    let (sleeping, _) = start(&engine, "sleeper").await;
    // Not where it waits, or not a wait for an event: refused.
    assert!(!engine.send(waiting, 0, Ok(Bytes::new())).await.unwrap());
    assert!(!engine.send(sleeping, 1, Ok(Bytes::new())).await.unwrap());
    assert!(
        !engine
            .send(ExecutionId::random(), 1, Ok(Bytes::new()))
            .await
            .unwrap()
    );
    let outcome = tokio::spawn({
        let engine = engine.clone();
        async move { engine.outcome(waiting).await }
    });
    assert!(
        engine
            .send(waiting, 1, Ok(Bytes::from_static(b"by hand")))
            .await
            .unwrap()
    );
    assert!(!engine.is_waiting_for_events(), "its wait is taken out");
    assert!(
        !engine.send(waiting, 1, Ok(Bytes::new())).await.unwrap(),
        "answered once"
    );
    assert_eq!(outcome.await.unwrap().unwrap().unwrap(), "by hand");
    // An event that comes later wakes nothing.
    assert_eq!(
        engine
            .deliver(&Event::new("acks/1", "late", EventSource::Local))
            .await,
        0
    );
    assert_eq!(steps.load(Ordering::SeqCst), 2);
}
