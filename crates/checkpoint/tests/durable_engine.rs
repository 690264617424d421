//! Durable execution: journaled steps, suspension on predicted blocking, resumption by
//! replay, events, migration between engines, restore hooks.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub_checkpoint::MemoryStore;
use fnhub_checkpoint::durable::{
    DurableContext, DurableFunction, DurableHost, Engine, EngineError, RunResult, SuspendPolicy,
    durable_fn,
};
use fnhub_core::{
    BoxFuture, CheckpointStore, ErrorKind, Event, EventSource, FunctionName, Invocation, Outcome,
    PendingDependency, SystemClock, Version,
};

/// Children: "slow" sleeps for the duration in its payload (ms), "echo" answers at once.
struct Host {
    calls: AtomicU32,
}

impl DurableHost for Host {
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if child.function.name.as_str() == "slow" {
                let ms: u64 = std::str::from_utf8(&child.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok(child.payload)
        })
    }
}

fn engine(hub: &str) -> (Engine, Arc<MemoryStore>, Arc<Host>) {
    let store = Arc::new(MemoryStore::new());
    let host = Arc::new(Host {
        calls: AtomicU32::new(0),
    });
    let e = Engine::new(
        hub,
        store.clone(),
        host.clone(),
        Arc::new(SystemClock),
        SuspendPolicy::with_threshold(Duration::from_millis(50)),
    );
    (e, store, host)
}

fn name(s: &str) -> FunctionName {
    FunctionName::new(s).unwrap()
}

fn invocation(f: &str, input: &str) -> Invocation {
    Invocation::new(f.parse().unwrap(), input.to_owned())
}

#[tokio::test]
async fn steps_run_once_across_a_suspending_sleep() {
    let (engine, store, _) = engine("hub-a");
    let (before, after) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (b, a) = (before.clone(), after.clone());
    engine.register(
        name("flow"),
        Version::FIRST,
        durable_fn(move |ctx: DurableContext, input: Bytes| {
            let (b, a) = (b.clone(), a.clone());
            async move {
                let first = ctx
                    .step("before", || async {
                        b.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::from_static(b"1"))
                    })
                    .await?;
                ctx.sleep("nap", Duration::from_millis(200)).await?;
                let second = ctx
                    .step("after", || async {
                        a.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::from_static(b"2"))
                    })
                    .await?;
                Ok(Bytes::from([&input[..], &first[..], &second[..]].concat()))
            }
        }),
    );
    let inv = invocation("flow", "x");
    let id = inv.id.into();
    let waiter = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.outcome(id).await })
    };
    tokio::task::yield_now().await;
    match engine.start(inv, Version::FIRST).await.unwrap() {
        RunResult::Suspended {
            waiting_for: PendingDependency::Timer(_),
            ..
        } => {}
        other => panic!("expected a timer suspension, got {other:?}"),
    }
    let saved = store.load(id).await.unwrap().unwrap();
    assert_eq!(
        saved.journal.len(),
        1,
        "the first step is durable before the suspension"
    );
    assert_eq!(waiter.await.unwrap().unwrap().unwrap(), "x12");
    assert_eq!(
        (before.load(Ordering::SeqCst), after.load(Ordering::SeqCst)),
        (1, 1)
    );
    assert!(
        store.is_empty(),
        "a completed execution leaves no checkpoint"
    );
}

/// Calls the "slow" child with the given milliseconds and returns its output.
fn caller() -> impl DurableFunction {
    durable_fn(|ctx: DurableContext, input: Bytes| async move {
        ctx.invoke("child", "slow".parse().unwrap(), input).await
    })
}

#[tokio::test]
async fn a_child_predicted_slow_suspends_one_that_is_fast_does_not() {
    let (engine, _, host) = engine("hub-a");
    engine.register(name("caller"), Version::FIRST, caller());

    // Unknown child: waited for inline, and its 150 ms are learned.
    let r = engine
        .start(invocation("caller", "150"), Version::FIRST)
        .await
        .unwrap();
    assert!(
        matches!(r, RunResult::Completed(Ok(ref b)) if b == "150"),
        "{r:?}"
    );

    // Now predicted at 150 ms > 50 ms: after the 10 ms grace it suspends, and resumes when
    // the child finishes.
    let inv = invocation("caller", "150");
    let id = inv.id.into();
    let r = engine.start(inv, Version::FIRST).await.unwrap();
    assert!(
        matches!(
            r,
            RunResult::Suspended {
                waiting_for: PendingDependency::Child(_),
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(engine.outcome(id).await.unwrap().unwrap(), "150");

    // Predicted slow, but this time it answers within the grace: no suspension.
    let r = engine
        .start(invocation("caller", "0"), Version::FIRST)
        .await
        .unwrap();
    assert!(
        matches!(r, RunResult::Completed(Ok(ref b)) if b == "0"),
        "{r:?}"
    );
    assert_eq!(host.calls.load(Ordering::SeqCst), 3, "no child ran twice");
}

fn waiter() -> impl DurableFunction {
    durable_fn(|ctx: DurableContext, _input: Bytes| async move {
        let setup = ctx
            .step("setup", || async { Ok(Bytes::from_static(b"ready:")) })
            .await?;
        let ack = ctx.wait_for("ack", "acks/1").await?;
        Ok(Bytes::from([&setup[..], &ack[..]].concat()))
    })
}

#[tokio::test]
async fn an_event_resumes_the_execution_waiting_for_it() {
    let (engine, _, _) = engine("hub-a");
    engine.register(name("waiter"), Version::FIRST, waiter());
    let inv = invocation("waiter", "");
    let id = inv.id.into();
    let r = engine.start(inv, Version::FIRST).await.unwrap();
    assert!(matches!(
        r,
        RunResult::Suspended {
            waiting_for: PendingDependency::Event { .. },
            ..
        }
    ));
    let other = Event::new("acks/2", "no", EventSource::Local);
    assert_eq!(engine.deliver(&other).await, 0);
    let done = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.outcome(id).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        engine
            .deliver(&Event::new("acks/1", "yes", EventSource::Local))
            .await,
        1
    );
    assert_eq!(done.await.unwrap().unwrap().unwrap(), "ready:yes");
    assert!(matches!(
        engine.resume(id, Ok(Bytes::new())).await,
        Err(EngineError::UnknownExecution(_))
    ));
}

#[tokio::test]
async fn a_replay_that_takes_another_path_is_an_error() {
    let (engine, _, _) = engine("hub-a");
    let flip = Arc::new(AtomicBool::new(false));
    let f = flip.clone();
    engine.register(
        name("fickle"),
        Version::FIRST,
        durable_fn(move |ctx: DurableContext, _| {
            let f = f.clone();
            async move {
                let step = if f.load(Ordering::SeqCst) { "b" } else { "a" };
                ctx.step(step, || async { Ok(Bytes::new()) }).await?;
                ctx.wait_for("go", "go").await
            }
        }),
    );
    let inv = invocation("fickle", "");
    let id = inv.id.into();
    engine.start(inv, Version::FIRST).await.unwrap();
    flip.store(true, Ordering::SeqCst);
    match engine.resume(id, Ok(Bytes::new())).await.unwrap() {
        RunResult::Completed(Err(e)) => {
            assert_eq!(e.kind, ErrorKind::Unhandled);
            assert_eq!(e.error_type.as_deref(), Some("NonDeterministicReplay"));
        }
        other => panic!("{other:?}"),
    }
}

/// Counts restores.
struct Restorable {
    restores: Arc<AtomicU32>,
}

impl DurableFunction for Restorable {
    async fn run(&self, ctx: DurableContext, _: Bytes) -> Outcome {
        ctx.step("one", || async { Ok(Bytes::new()) }).await?;
        ctx.wait_for("go", "go").await
    }

    fn on_restore(&self, _: &DurableContext) -> impl Future<Output = ()> + Send {
        self.restores.fetch_add(1, Ordering::SeqCst);
        async {}
    }
}

use std::future::Future;

#[tokio::test]
async fn an_execution_moves_to_another_hub_and_finishes_there() {
    let (a, store_a, _) = engine("hub-a");
    let (b, store_b, _) = engine("hub-b");
    let (c, _, _) = engine("hub-c"); // without the function
    let restores = Arc::new(AtomicU32::new(0));
    for e in [&a, &b] {
        e.register(
            name("mover"),
            Version::FIRST,
            Restorable {
                restores: restores.clone(),
            },
        );
    }
    let inv = invocation("mover", "");
    let id = inv.id.into();
    a.start(inv, Version::FIRST).await.unwrap();
    let bytes = a.export(id).await.unwrap();

    // Refused imports leave the checkpoint where it was.
    assert!(matches!(
        c.import(&bytes).await,
        Err(EngineError::UnknownFunction(..))
    ));
    let mut newer = bytes.to_vec();
    newer[4] = 2;
    let crc = crc32c::crc32c(&newer[0..24]);
    newer[24..28].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        b.import(&newer).await,
        Err(EngineError::Decode(_))
    ));
    assert!(store_a.load(id).await.unwrap().is_some());

    assert_eq!(b.import(&bytes).await.unwrap(), id);
    assert!(a.release(id).await.unwrap());
    assert_eq!(
        a.deliver(&Event::new("go", "a", EventSource::Local)).await,
        0,
        "released"
    );
    let done = {
        let b = b.clone();
        tokio::spawn(async move { b.outcome(id).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        b.deliver(&Event::new("go", "on b", EventSource::Local))
            .await,
        1
    );
    assert_eq!(done.await.unwrap().unwrap().unwrap(), "on b");
    assert_eq!(
        restores.load(Ordering::SeqCst),
        1,
        "restored once, on hub b"
    );
    assert!(store_b.is_empty());
}

/// Two steps with a gate between them, so the test can raise the load mid-run.
fn two_steps(gate: Arc<tokio::sync::Semaphore>, ran: Arc<AtomicU32>) -> impl DurableFunction {
    durable_fn(move |ctx: DurableContext, _input: Bytes| {
        let (gate, ran) = (gate.clone(), ran.clone());
        async move {
            ctx.step("first", || async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::new())
            })
            .await?;
            ctx.step("pause", || async {
                gate.acquire().await.unwrap().forget();
                Ok(Bytes::new())
            })
            .await?;
            ctx.step("last", || async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from_static(b"done"))
            })
            .await
        }
    })
}

fn load(queued: usize) -> fnhub_core::LoadSnapshot {
    let mut s = fnhub_core::LoadSnapshot::default();
    s.queued = queued;
    s.queue_capacity = 100;
    s
}

#[tokio::test]
async fn under_sustained_load_low_priority_executions_wait_at_their_next_operation() {
    use fnhub_checkpoint::durable::{LoadPolicy, LoadTransition};
    let (engine, _, _) = engine("hub-a");
    let mut policy = LoadPolicy::default();
    policy.window = Duration::from_secs(5);
    engine.set_load_policy(policy);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ran = Arc::new(AtomicU32::new(0));
    engine.register(
        name("batch"),
        Version::FIRST,
        two_steps(gate.clone(), ran.clone()),
    );

    let t0 = std::time::Instant::now();
    // High pressure, but not for the whole window yet: nothing is shed.
    assert_eq!(engine.check_load(&load(95), t0).await, LoadTransition::None);

    let mut low = invocation("batch", "");
    low.context.priority = fnhub_core::Priority::LOW;
    let low_id = low.id.into();
    let mut high = invocation("batch", "");
    high.context.priority = fnhub_core::Priority::HIGH;
    let (e1, e2) = (engine.clone(), engine.clone());
    let low_run = tokio::spawn(async move { e1.start(low, Version::FIRST).await });
    let high_run = tokio::spawn(async move { e2.start(high, Version::FIRST).await });

    // The pressure has lasted the window: shedding starts; then both finish their pause
    // (wherever they are now: the permits wait for them).
    assert_eq!(
        engine
            .check_load(&load(95), t0 + Duration::from_secs(6))
            .await,
        LoadTransition::Shedding
    );
    gate.add_permits(2);
    match low_run.await.unwrap().unwrap() {
        RunResult::Suspended {
            waiting_for: PendingDependency::Load,
            ..
        } => {}
        other => panic!("the low-priority run should wait: {other:?}"),
    }
    match high_run.await.unwrap().unwrap() {
        RunResult::Completed(Ok(out)) => assert_eq!(out, "done"),
        other => panic!("the high-priority run goes on: {other:?}"),
    }

    // Still loaded above the resume level: nothing resumes.
    assert_eq!(
        engine
            .check_load(&load(80), t0 + Duration::from_secs(7))
            .await,
        LoadTransition::None
    );
    let done = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.outcome(low_id).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        engine
            .check_load(&load(10), t0 + Duration::from_secs(8))
            .await,
        LoadTransition::Resumed(1)
    );
    assert_eq!(done.await.unwrap().unwrap().unwrap(), "done");
    // Two executions, two steps each that count: the shed one did not redo its first step.
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}
