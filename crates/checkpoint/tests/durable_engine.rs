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
    Suspension, durable_fn,
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
    let e = engine_on(hub, store.clone(), host.clone());
    (e, store, host)
}

/// An engine for `hub` on `store` and `host`, suspending waits predicted over 50 ms.
fn engine_on(hub: &str, store: Arc<dyn CheckpointStore>, host: Arc<dyn DurableHost>) -> Engine {
    Engine::new(
        hub,
        store,
        host,
        Arc::new(SystemClock),
        SuspendPolicy::with_threshold(Duration::from_millis(50)),
    )
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
async fn a_child_predicted_slow_or_outlasting_the_threshold_suspends_one_in_time_does_not() {
    let (engine, _, host) = engine("hub-a");
    engine.register(name("caller"), Version::FIRST, caller());
    let suspends = |r: &RunResult| {
        matches!(
            r,
            RunResult::Suspended {
                waiting_for: PendingDependency::Child(_),
                ..
            }
        )
    };

    // Unknown child: awaited for the threshold (50 ms); still running then, it suspends
    // the execution, which resumes when the child finishes. Its 150 ms are learned.
    let inv = invocation("caller", "150");
    let id = inv.id.into();
    let r = engine.start(inv, Version::FIRST).await.unwrap();
    assert!(suspends(&r), "{r:?}");
    assert_eq!(engine.outcome(id).await.unwrap().unwrap(), "150");

    // Now predicted at 150 ms > 50 ms: after the 10 ms grace it suspends, and resumes when
    // the child finishes.
    let inv = invocation("caller", "150");
    let id = inv.id.into();
    let r = engine.start(inv, Version::FIRST).await.unwrap();
    assert!(suspends(&r), "{r:?}");
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

/// Registers [`two_steps`] as `batch` on `engine`, its pause gate holding `permits`; the
/// gate and the count of counting steps run.
fn register_batch(
    engine: &Engine,
    permits: usize,
) -> (Arc<tokio::sync::Semaphore>, Arc<AtomicU32>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(permits));
    let ran = Arc::new(AtomicU32::new(0));
    engine.register(
        name("batch"),
        Version::FIRST,
        two_steps(gate.clone(), ran.clone()),
    );
    (gate, ran)
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
    let (gate, ran) = register_batch(&engine, 0);

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

/// The outcome of a wake or take-over that ran the execution to its end.
fn finished(woken: fnhub_checkpoint::durable::Woken) -> Bytes {
    match woken {
        fnhub_checkpoint::durable::Woken::Ran {
            run: RunResult::Completed(outcome),
        } => outcome.unwrap(),
        other => panic!("expected the run to finish, got {other:?}"),
    }
}

/// A host that wakes executions itself (as a cloud runtime does): it records what it was
/// asked to wake and leaves the children running on their own (a child whose payload is
/// `slow` takes 300 ms, any other answers at once). Timers and children only, unless
/// `everything`: events and load too.
#[derive(Default)]
struct WakingHost {
    asked: parking_lot::Mutex<Vec<PendingDependency>>,
    everything: bool,
}

impl DurableHost for WakingHost {
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            if &child.payload[..] == b"slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(child.payload)
        })
    }

    fn arm(&self, suspension: Suspension) -> Result<(), Suspension> {
        self.asked.lock().push(suspension.pending.clone());
        let takes = self.everything
            || matches!(
                suspension.pending,
                PendingDependency::Timer(_) | PendingDependency::Child(_)
            );
        if takes { Ok(()) } else { Err(suspension) }
    }
}

/// Two engines on one store, both with `flow`: step, long sleep, child (given the input),
/// step.
fn waking_pair() -> (Engine, Engine, Arc<WakingHost>, Arc<AtomicU32>) {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let host = Arc::new(WakingHost::default());
    let steps = Arc::new(AtomicU32::new(0));
    let make = |hub: &str| {
        let e = engine_on(hub, store.clone(), host.clone());
        let steps = steps.clone();
        e.register(
            name("flow"),
            Version::FIRST,
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let steps = steps.clone();
                async move {
                    let s = steps.clone();
                    ctx.step("one", || async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    ctx.sleep("nap", Duration::from_secs(3600)).await?;
                    let child = ctx.invoke("child", "child".parse().unwrap(), input).await?;
                    ctx.step("two", || async move {
                        steps.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    Ok(child)
                }
            }),
        );
        e
    };
    (make("node-a"), make("node-b"), host, steps)
}

#[tokio::test]
async fn a_host_that_wakes_executions_resumes_them_on_another_engine() {
    use fnhub_checkpoint::durable::Woken;
    let (a, b, host, steps) = waking_pair();

    // First execution: the timer is woken on engine B; the child answers at once, inline.
    let inv = invocation("flow", "fast");
    let id: fnhub_core::ExecutionId = inv.id.into();
    let again = inv.clone();
    let at = match a.start(inv, Version::FIRST).await.unwrap() {
        RunResult::Suspended {
            waiting_for: PendingDependency::Timer(_),
            at,
            ..
        } => at,
        other => panic!("expected a timer suspension, got {other:?}"),
    };
    assert_eq!(at, 1, "the sleep is the journal's second operation");
    assert_eq!(host.asked.lock().len(), 1);
    // Delivered again (its node died before acknowledging): no step runs twice, and the
    // host is asked again to wake it.
    match a.start(again, Version::FIRST).await.unwrap() {
        RunResult::Suspended { at: again_at, .. } => assert_eq!(again_at, at),
        other => panic!("a second start should find it suspended: {other:?}"),
    }
    assert_eq!(host.asked.lock().len(), 2);
    assert_eq!(steps.load(Ordering::SeqCst), 1);
    // A wake for an operation it has not reached finds it suspended before it.
    assert!(matches!(
        b.wake(id, at + 1, Ok(Bytes::new())).await.unwrap(),
        Woken::Running
    ));
    // Taking it over leaves a suspended execution waiting.
    assert!(matches!(
        b.take_over(id).await.unwrap(),
        Woken::Waiting {
            waiting_for: PendingDependency::Timer(_),
            at: 1
        }
    ));
    assert_eq!(
        finished(b.wake(id, at, Ok(Bytes::new())).await.unwrap()),
        Bytes::from_static(b"fast")
    );
    assert_eq!(steps.load(Ordering::SeqCst), 2);
    // The same wake again, on either engine: finished, and nothing runs.
    for engine in [&a, &b] {
        assert!(matches!(
            engine.wake(id, at, Ok(Bytes::new())).await.unwrap(),
            Woken::Finished
        ));
    }
    assert_eq!(steps.load(Ordering::SeqCst), 2);

    // Second execution: the child outlasts the threshold (300 ms > 50 ms), so the run
    // suspends on it, and engine B does not keep waiting for the local call.
    let inv = invocation("flow", "slow");
    let id: fnhub_core::ExecutionId = inv.id.into();
    let RunResult::Suspended { at, .. } = a.start(inv, Version::FIRST).await.unwrap() else {
        panic!("expected a timer suspension");
    };
    let child_at = match b.wake(id, at, Ok(Bytes::new())).await.unwrap() {
        Woken::Ran {
            run:
                RunResult::Suspended {
                    waiting_for: PendingDependency::Child(_),
                    at,
                    ..
                },
            ..
        } => at,
        other => panic!("expected a child suspension, got {other:?}"),
    };
    assert_eq!(child_at, 2);
    assert!(matches!(
        host.asked.lock().last(),
        Some(PendingDependency::Child(_))
    ));
    // The local call (300 ms) ends unheard: the execution stays suspended, and the old
    // timer's wake, delivered again, says on what.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        a.wake(id, at, Ok(Bytes::new())).await.unwrap(),
        Woken::Waiting {
            waiting_for: PendingDependency::Child(_),
            at: 2
        }
    ));
    // The child's outcome, as its runner (anywhere) reports it, finishes the execution.
    assert_eq!(
        finished(
            a.wake(id, child_at, Ok(Bytes::from_static(b"from afar")))
                .await
                .unwrap()
        ),
        Bytes::from_static(b"from afar")
    );
    assert_eq!(steps.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_run_that_died_with_its_node_is_taken_over_from_its_journal() {
    use fnhub_checkpoint::durable::Woken;
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let (first, second) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    // The second step hangs the first time: the node running it "dies" there.
    let hang = Arc::new(AtomicBool::new(true));
    let make = |hub: &str| {
        let e = Engine::new(
            hub,
            store.clone(),
            Arc::new(WakingHost::default()),
            Arc::new(SystemClock),
            SuspendPolicy::default(),
        );
        let (first, second, hang) = (first.clone(), second.clone(), hang.clone());
        e.register(
            name("flow"),
            Version::FIRST,
            durable_fn(move |ctx: DurableContext, _input: Bytes| {
                let (first, second, hang) = (first.clone(), second.clone(), hang.clone());
                async move {
                    ctx.step("one", || async move {
                        first.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::from_static(b"1"))
                    })
                    .await?;
                    ctx.step("two", || async move {
                        if hang.swap(false, Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        second.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::from_static(b"2"))
                    })
                    .await
                }
            }),
        );
        e
    };
    let (a, b) = (make("node-a"), make("node-b"));
    let inv = invocation("flow", "");
    let id: fnhub_core::ExecutionId = inv.id.into();
    let run = tokio::spawn({
        let a = a.clone();
        async move { a.start(inv, Version::FIRST).await }
    });
    while first.load(Ordering::SeqCst) == 0 || store.load(id).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.abort();
    // Node A is gone; its first step is in the store. Node B continues from there.
    assert_eq!(
        finished(b.take_over(id).await.unwrap()),
        Bytes::from_static(b"2")
    );
    assert_eq!(
        first.load(Ordering::SeqCst),
        1,
        "the journaled step is not run again"
    );
    assert_eq!(second.load(Ordering::SeqCst), 1);
    assert!(matches!(b.take_over(id).await.unwrap(), Woken::Finished));
}

#[tokio::test]
async fn a_host_wakes_events_and_load_on_another_engine() {
    use fnhub_checkpoint::durable::{LoadPolicy, LoadTransition};
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let host = Arc::new(WakingHost {
        everything: true,
        ..WakingHost::default()
    });
    let (gate, ran) = (
        Arc::new(tokio::sync::Semaphore::new(100)),
        Arc::new(AtomicU32::new(0)),
    );
    let make = |hub: &str| {
        let e = engine_on(hub, store.clone(), host.clone());
        e.register(
            name("batch"),
            Version::FIRST,
            two_steps(gate.clone(), ran.clone()),
        );
        e.register(
            name("waiter"),
            Version::FIRST,
            durable_fn(|ctx: DurableContext, _input: Bytes| async move {
                ctx.wait_for("paid", "orders/+/paid").await
            }),
        );
        e
    };
    let (a, b) = (make("node-a"), make("node-b"));

    // Engine A sheds at once; its low-priority run stops before its first step, and the
    // host (not A) is asked to resume it.
    let mut policy = LoadPolicy::default();
    policy.window = Duration::ZERO;
    a.set_load_policy(policy);
    let t0 = std::time::Instant::now();
    assert_eq!(a.check_load(&load(95), t0).await, LoadTransition::Shedding);
    assert!(a.is_shedding() && !b.is_shedding());
    let mut low = invocation("batch", "");
    low.context.priority = fnhub_core::Priority::LOW;
    let id: fnhub_core::ExecutionId = low.id.into();
    let at = match a.start(low, Version::FIRST).await.unwrap() {
        RunResult::Suspended {
            waiting_for: PendingDependency::Load,
            at,
            ..
        } => at,
        other => panic!("expected a load suspension, got {other:?}"),
    };
    assert_eq!(at, 0);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // When pressure drops, A has nothing of its own to resume: the host has it.
    assert_eq!(
        a.check_load(&load(0), t0 + Duration::from_secs(1)).await,
        LoadTransition::Resumed(0)
    );
    // B runs it from where it stopped: the step it stopped before runs (it is not handed
    // the wake's payload as its result).
    assert_eq!(
        finished(
            b.wake(id, at, Ok(Bytes::from_static(b"ignored")))
                .await
                .unwrap()
        ),
        "done"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 2);

    // An event wait: the host is asked, the engine keeps no waiting list of its own, and a
    // wake with the event's payload finishes it on the other engine.
    let inv = invocation("waiter", "");
    let id: fnhub_core::ExecutionId = inv.id.into();
    let at = match b.start(inv, Version::FIRST).await.unwrap() {
        RunResult::Suspended {
            waiting_for: PendingDependency::Event { filter },
            at,
            ..
        } => {
            assert_eq!(filter, "orders/+/paid");
            at
        }
        other => panic!("expected an event suspension, got {other:?}"),
    };
    assert!(!b.is_waiting_for_events());
    assert_eq!(
        finished(
            a.wake(id, at, Ok(Bytes::from_static(b"paid!")))
                .await
                .unwrap()
        ),
        "paid!"
    )
}

#[tokio::test]
async fn a_run_whose_future_is_dropped_can_be_taken_over() {
    let (engine, _, _) = engine("hub-a");
    let (gate, ran) = register_batch(&engine, 0);
    let inv = invocation("batch", "");
    let id: fnhub_core::ExecutionId = inv.id.into();
    // The run is cut in its pause, as a hub cuts an invocation at its timeout.
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        engine.start(inv, Version::FIRST),
    )
    .await;
    assert!(cut.is_err(), "the run should still be in its pause");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // It no longer counts as running: it continues from its journal.
    gate.add_permits(1);
    assert_eq!(finished(engine.take_over(id).await.unwrap()), "done");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "the first step is not run again"
    );
}

/// A host that limits each run of `batch` to 200 ms.
struct LimitingHost;

impl DurableHost for LimitingHost {
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome> {
        Box::pin(async move { Ok(child.payload) })
    }

    fn run_timeout(&self, function: &FunctionName, _version: Version) -> Option<Duration> {
        (function.as_str() == "batch").then_some(Duration::from_millis(200))
    }
}

#[tokio::test]
async fn a_run_past_its_timeout_ends_the_execution_with_a_timeout() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine_on("hub-a", store.clone(), Arc::new(LimitingHost));
    let (_gate, ran) = register_batch(&engine, 0);
    let inv = invocation("batch", "");
    let id: fnhub_core::ExecutionId = inv.id.into();
    let outcome = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.outcome(id).await })
    };
    // The pause never ends: the run stops at 200 ms, and the execution is over.
    match engine.start(inv, Version::FIRST).await.unwrap() {
        RunResult::Completed(Err(e)) => {
            assert_eq!(e.kind, fnhub_core::ErrorKind::Timeout, "{e}");
            assert_eq!(e.error_type.as_deref(), Some("Durable.Timeout"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let delivered = outcome.await.unwrap().unwrap().unwrap_err();
    assert_eq!(delivered.kind, fnhub_core::ErrorKind::Timeout);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the first step ran, the last did not"
    );
    assert!(
        store.list().await.unwrap().is_empty(),
        "the checkpoint is gone"
    );
}
