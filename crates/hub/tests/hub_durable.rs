//! Durable executions on edge hubs: suspended on one hub, moved, finished on another.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use fnhub::{
    DurableContext, EdgeHub, EngineError, Event, EventSource, ExecutionId, FunctionName,
    FunctionSpec, durable_fn,
};

fn hub(name: &'static str, reserved: Arc<AtomicU32>) -> EdgeHub {
    hub_on(
        name,
        reserved,
        Arc::new(fnhub::libs::checkpoint::MemoryStore::new()),
    )
}

/// `order` on hub `name` with `store`: a step that reserves (answering the hub's name), a
/// wait for the order's payment, a step that ships; its output is its journal's results.
fn hub_on(
    name: &'static str,
    reserved: Arc<AtomicU32>,
    store: Arc<dyn fnhub::CheckpointStore>,
) -> EdgeHub {
    EdgeHub::builder()
        .name(name)
        .checkpoint_store(store)
        .durable(
            FunctionSpec::in_process(FunctionName::new("order").unwrap())
                .with_output_topic("orders/{1}/done"),
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let reserved = reserved.clone();
                async move {
                    ctx.step("reserve", || async {
                        reserved.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::from(name))
                    })
                    .await?;
                    let filter = format!("payments/{}", String::from_utf8_lossy(&input));
                    let paid = ctx.wait_for("payment", &filter).await?;
                    let shipped = ctx.step("ship", || async { Ok(Bytes::from(name)) }).await?;
                    let journal: Vec<String> = ctx
                        .journal()
                        .iter()
                        .map(|e| String::from_utf8_lossy(e.result.as_ref().unwrap()).into_owned())
                        .collect();
                    assert_eq!(&shipped[..], name.as_bytes());
                    let _ = paid;
                    Ok(Bytes::from(journal.join(",")))
                }
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_suspends_on_one_hub_and_finishes_on_another() {
    let reserved = Arc::new(AtomicU32::new(0));
    let a = hub("hub-a", reserved.clone());
    let b = hub("hub-b", reserved.clone());
    let other = EdgeHub::builder().name("hub-c").build().unwrap();

    let mut invocation = fnhub::Invocation::new("order".parse().unwrap(), "o-1");
    invocation.context.topic = Some("orders/o-1".to_owned());
    let id: ExecutionId = invocation.id.into();
    let mut done_on_a = a.subscribe("orders/+/done", 4).unwrap();
    let mut done_on_b = b.subscribe("orders/+/done", 4).unwrap();
    let reply = a.call(invocation).await.unwrap().outcome.unwrap();
    assert!(reply.is_empty(), "a suspended start has no output yet");

    let bytes = a.export(id).await.unwrap();
    assert!(matches!(
        other.import(&bytes).await,
        Err(EngineError::UnknownFunction(..))
    ));
    assert!(
        a.export(id).await.is_ok(),
        "a refused import leaves the checkpoint on hub a"
    );
    b.import(&bytes).await.unwrap();
    assert!(a.release(id).await.unwrap());

    let done = {
        let b = b.clone();
        tokio::spawn(async move { b.durable_outcome(id).await })
    };
    tokio::task::yield_now().await;
    // Events published on the old hub no longer reach it.
    a.publish(Event::new("payments/o-1", "x", EventSource::Local))
        .unwrap();
    b.publish(Event::new("payments/o-1", "paid", EventSource::Local))
        .unwrap();
    let out = done.await.unwrap().unwrap().unwrap();
    assert_eq!(out, "hub-a,paid,hub-b");
    // The final output is published on hub b, under the topic of the original trigger.
    let published = done_on_b.recv().await.unwrap();
    assert_eq!(
        (published.topic.as_str(), &published.payload[..]),
        ("orders/o-1/done", out.as_ref())
    );
    assert!(
        done_on_a.try_recv().is_none(),
        "nothing was published on hub a"
    );
    assert_eq!(
        reserved.load(Ordering::SeqCst),
        1,
        "the reservation ran once, on hub a"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// How the suspended execution of the test below is woken.
#[derive(Clone, Copy)]
enum Wake {
    Timer,
    Event,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_execution_waits_for_a_worker_like_any_invocation() {
    resumed_execution_queues(Wake::Timer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_woken_by_an_event_waits_for_a_worker_too() {
    resumed_execution_queues(Wake::Event).await;
}

async fn resumed_execution_queues(wake: Wake) {
    use std::time::{Duration, Instant};
    let (release, released) = tokio::sync::watch::channel(false);
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    // One worker: a suspended execution woken (by its timer, or by an event) while the
    // worker is busy must wait in the queue, not run beside it.
    let hub = EdgeHub::builder()
        .workers(1)
        .durable(
            FunctionSpec::in_process(FunctionName::new("nap").unwrap()),
            durable_fn(move |ctx: DurableContext, _input: Bytes| async move {
                match wake {
                    Wake::Timer => ctx.sleep("nap", Duration::from_millis(1500)).await?,
                    Wake::Event => {
                        ctx.wait_for("door", "doors/+/open").await?;
                    }
                }
                ctx.step("wake", || async { Ok(Bytes::from_static(b"awake")) })
                    .await
            }),
        )
        .function(
            FunctionSpec::in_process(FunctionName::new("busy").unwrap())
                .with_timeout(Duration::from_secs(60)),
            fnhub::from_fn(move |_inv: fnhub::Invocation| {
                let mut released = released.clone();
                let _ = started_tx.send(());
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(Bytes::new())
                }
            }),
        )
        .build()
        .unwrap();
    let invocation = fnhub::Invocation::new("nap".parse().unwrap(), "");
    let id: ExecutionId = invocation.id.into();
    let reply = hub.call(invocation).await.unwrap().outcome.unwrap();
    assert!(reply.is_empty(), "the start suspends");

    hub.submit(fnhub::Invocation::new("busy".parse().unwrap(), ""))
        .unwrap();
    started.recv().await.unwrap();
    if let Wake::Event = wake {
        hub.publish(fnhub::Event::new(
            "doors/front/open",
            "",
            fnhub::EventSource::Local,
        ))
        .unwrap();
    }
    // The timer fires or the event arrives; the replay is an invocation of the durable
    // function itself, queued behind the busy worker.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let load = fnhub::LoadProbe::snapshot(&hub);
        if load.functions.get("nap").is_some_and(|f| f.queued == 1) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the resumed execution never queued: {load:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.send(true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), hub.durable_outcome(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&outcome.unwrap()[..], b"awake");
    hub.shutdown().await;
    // The start and the resume, both runs of the function; no function of the hub's own.
    let stats = hub.stats();
    assert_eq!(stats.functions["nap"].invocations, 2);
    assert!(!stats.functions.contains_key(fnhub::RESUME_FUNCTION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_may_run_as_long_as_its_function_may() {
    use std::time::Duration;
    // A durable function with a 10 s timeout whose replay (after a suspending sleep) takes
    // 3.5 s: longer than the 3 s default timeout of an invocation.
    let hub = EdgeHub::builder()
        .suspend_policy(fnhub::SuspendPolicy::with_threshold(Duration::from_millis(
            50,
        )))
        .durable(
            FunctionSpec::in_process(FunctionName::new("slow").unwrap())
                .with_timeout(Duration::from_secs(10)),
            durable_fn(|ctx: DurableContext, _input: Bytes| async move {
                ctx.sleep("nap", Duration::from_millis(200)).await?;
                ctx.step("long", || async {
                    tokio::time::sleep(Duration::from_millis(3500)).await;
                    Ok(Bytes::from_static(b"finished"))
                })
                .await
            }),
        )
        .build()
        .unwrap();
    let invocation = fnhub::Invocation::new("slow".parse().unwrap(), "");
    let id: ExecutionId = invocation.id.into();
    let reply = hub.call(invocation).await.unwrap().outcome.unwrap();
    assert!(reply.is_empty(), "the start suspends");
    let outcome = tokio::time::timeout(Duration::from_secs(30), hub.durable_outcome(id))
        .await
        .expect("the replay never finished")
        .unwrap();
    assert_eq!(&outcome.unwrap()[..], b"finished");
    // (The outcome is delivered before the resumed run's invocation itself completes.)
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while hub
        .stats()
        .functions
        .get("slow")
        .is_none_or(|f| f.invocations < 2)
    {
        assert!(
            std::time::Instant::now() < until,
            "the resumed run never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The start and the resumed run, each an invocation of `slow` with its own timeout.
    let runs = hub.stats().functions["slow"].clone();
    assert_eq!(
        (runs.ok, runs.invocations),
        (2, 2),
        "the resumed run did not time out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_functions_timeout_ends_the_execution_with_a_timeout() {
    use std::time::Duration;
    // Each run of `stuck` may last 500 ms. Its input says where it gets stuck: in its first
    // run, or in the replay after a suspending sleep.
    let hub = EdgeHub::builder()
        .suspend_policy(fnhub::SuspendPolicy::with_threshold(Duration::from_millis(
            50,
        )))
        .durable(
            FunctionSpec::in_process(FunctionName::new("stuck").unwrap())
                .with_timeout(Duration::from_millis(500)),
            durable_fn(|ctx: DurableContext, input: Bytes| async move {
                if &input[..] == b"replay" {
                    ctx.sleep("nap", Duration::from_millis(200)).await?;
                }
                ctx.step("forever", || async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(Bytes::new())
                })
                .await
            }),
        )
        .build()
        .unwrap();
    let is_durable_timeout = |outcome: fnhub::Outcome| {
        let e = outcome.unwrap_err();
        assert_eq!(e.kind, fnhub::ErrorKind::Timeout, "{e}");
        assert_eq!(e.error_type.as_deref(), Some("Durable.Timeout"), "{e}");
    };

    // Stuck in the first run: the caller gets the engine's timeout, and so does anyone
    // waiting for the execution's outcome.
    let invocation = fnhub::Invocation::new("stuck".parse().unwrap(), "first");
    let id: ExecutionId = invocation.id.into();
    let waiting = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.durable_outcome(id).await })
    };
    is_durable_timeout(hub.call(invocation).await.unwrap().outcome);
    is_durable_timeout(waiting.await.unwrap().unwrap());

    // Stuck in a replay: the outcome says so instead of never coming.
    let invocation = fnhub::Invocation::new("stuck".parse().unwrap(), "replay");
    let id: ExecutionId = invocation.id.into();
    let reply = hub.call(invocation).await.unwrap().outcome.unwrap();
    assert!(reply.is_empty(), "the start suspends");
    let outcome = tokio::time::timeout(Duration::from_secs(30), hub.durable_outcome(id))
        .await
        .expect("the replay never ended")
        .unwrap();
    is_durable_timeout(outcome);
    assert!(hub.checkpoint_store().list().await.unwrap().is_empty());
}

/// A durable execution's child is derived like any child: the same trace, principal and
/// priority, one hop deeper, with the execution as its parent and its deadline; and the
/// hub's depth limit stops a durable chain that calls itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_child_inherits_its_parents_context_and_the_depth_limit_holds() {
    use fnhub::{Invocation, Principal, Priority, from_fn};
    let hub = EdgeHub::builder()
        .max_depth(4)
        .function(
            FunctionSpec::in_process(FunctionName::new("probe").unwrap()),
            from_fn(|inv: Invocation| async move {
                let c = &inv.context;
                let seen = serde_json::json!({
                    "trace": format!("{:032x}", c.trace.trace_id()),
                    "principal": c.principal.as_str(),
                    "priority": c.priority.0,
                    "depth": c.depth,
                    "parent": c.parent.map(|p| p.to_string()),
                    "deadline": c.deadline.is_some(),
                });
                Ok(Bytes::from(seen.to_string()))
            }),
        )
        .durable(
            FunctionSpec::in_process(FunctionName::new("parent").unwrap()),
            durable_fn(|ctx: DurableContext, _input: Bytes| async move {
                ctx.invoke("probe", "probe".parse().unwrap(), Bytes::new())
                    .await
            }),
        )
        .build()
        .unwrap();
    let mut call = Invocation::new("parent".parse().unwrap(), "");
    call.context.principal = Principal::new("tenant-a");
    call.context.priority = Priority(200);
    call.context.depth = 1;
    call.context.deadline = Some(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
    let trace = format!("{:032x}", call.context.trace.trace_id());
    let id = call.id;
    let out = hub.call(call).await.unwrap().outcome.unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(seen["trace"], trace);
    assert_eq!(seen["principal"], "tenant-a");
    assert_eq!(
        seen["priority"], 200,
        "priority kept (it was dropped before)"
    );
    assert_eq!(
        seen["depth"], 2,
        "one hop deeper (the depth limit sees durable children)"
    );
    assert_eq!(seen["parent"], ExecutionId::from(id).to_string());
    assert_eq!(seen["deadline"], true);

    // At the limit, the child is refused and the execution ends with the refusal.
    let mut deep = Invocation::new("parent".parse().unwrap(), "");
    deep.context.depth = 4;
    let err = hub.call(deep).await.unwrap().outcome.unwrap_err();
    assert!(err.message.contains("hops deep"), "{err}");
    hub.shutdown().await;
}

/// A hub that stops with an execution suspended in a sleep, and a new hub on the same
/// checkpoint folder: the new one takes it up and finishes it, without running its first
/// step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_started_again_on_its_store_finishes_what_the_last_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let steps = Arc::new(AtomicU32::new(0));
    let build = |steps: Arc<AtomicU32>| {
        let (store, _) = fnhub::libs::checkpoint::DirStore::open(dir.path()).unwrap();
        EdgeHub::builder()
            .checkpoint_store(Arc::new(store))
            .suspend_policy(fnhub::SuspendPolicy::with_threshold(
                std::time::Duration::from_millis(100),
            ))
            .durable(
                FunctionSpec::in_process(FunctionName::new("settle").unwrap()),
                durable_fn(move |ctx: DurableContext, input: Bytes| {
                    let steps = steps.clone();
                    async move {
                        let s = steps.clone();
                        ctx.step("charge", || async move {
                            s.fetch_add(1, Ordering::SeqCst);
                            Ok(Bytes::new())
                        })
                        .await?;
                        ctx.sleep("cool-off", std::time::Duration::from_millis(800))
                            .await?;
                        ctx.step("ship", || async move {
                            steps.fetch_add(10, Ordering::SeqCst);
                            Ok(input)
                        })
                        .await
                    }
                }),
            )
            .build()
            .unwrap()
    };
    let first = build(steps.clone());
    let invocation = fnhub::Invocation::new("settle".parse().unwrap(), "parcel-9");
    let id: ExecutionId = invocation.id.into();
    let reply = first.call(invocation).await.unwrap().outcome.unwrap();
    assert!(reply.is_empty(), "suspended in its sleep");
    first.shutdown().await;
    drop(first);
    assert_eq!(steps.load(Ordering::SeqCst), 1);

    // Built on the same store, the hub takes up the execution by itself.
    let second = build(steps.clone());
    let out = output_of(&second, id).await;
    assert_eq!(out, Bytes::from("parcel-9"));
    assert_eq!(steps.load(Ordering::SeqCst), 11, "charge once, ship once");
    // Asked again, the hub answers its one pass: the sleeping execution waited again,
    // nothing was running to hand back, and nothing runs twice.
    assert_eq!(second.recover_durable().await.unwrap(), 0);
    assert_eq!(steps.load(Ordering::SeqCst), 11);
    second.shutdown().await;
}

/// A hub whose execution is in the middle of a step when it goes (its run never ends), and a
/// new hub built on the same checkpoint folder: the new one takes the execution over by
/// itself, as an invocation of its function on one of its workers, and finishes it from
/// its journal without running the completed step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_built_on_the_store_of_one_that_died_mid_step_carries_the_execution_on() {
    let dir = tempfile::tempdir().unwrap();
    let charged = Arc::new(AtomicU32::new(0));
    // `stuck`: the hub's second step never returns, as if its process died in it.
    let build = |charged: Arc<AtomicU32>, stuck: bool| {
        let (store, _) = fnhub::libs::checkpoint::DirStore::open(dir.path()).unwrap();
        EdgeHub::builder()
            .checkpoint_store(Arc::new(store))
            .durable(
                FunctionSpec::in_process(FunctionName::new("settle").unwrap()),
                durable_fn(move |ctx: DurableContext, input: Bytes| {
                    let charged = charged.clone();
                    async move {
                        ctx.step("charge", || async move {
                            charged.fetch_add(1, Ordering::SeqCst);
                            Ok(Bytes::new())
                        })
                        .await?;
                        ctx.step("ship", || async move {
                            if stuck {
                                std::future::pending::<()>().await;
                            }
                            Ok(input)
                        })
                        .await
                    }
                }),
            )
            .build()
            .unwrap()
    };
    let first = build(charged.clone(), true);
    let invocation = fnhub::Invocation::new("settle".parse().unwrap(), "parcel-7");
    let id: ExecutionId = invocation.id.into();
    let call = tokio::spawn({
        let first = first.clone();
        async move { first.call(invocation).await }
    });
    // The charge is journaled before the second step starts; then the run is stuck.
    let listed = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    for _ in 0..500 {
        if charged.load(Ordering::SeqCst) == 1 && listed(dir.path()) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(charged.load(Ordering::SeqCst), 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !call.is_finished(),
        "the first hub's run is stuck in its second step"
    );

    let second = build(charged.clone(), false);
    let out = output_of(&second, id).await;
    assert_eq!(out, Bytes::from("parcel-7"));
    assert_eq!(
        charged.load(Ordering::SeqCst),
        1,
        "the charge was not repeated"
    );
    assert_eq!(
        second.recover_durable().await.unwrap(),
        1,
        "one execution was handed back to run"
    );
    // The take-over ran as an invocation of settle (counted once it returns, just after
    // the execution's outcome).
    let runs = || {
        second
            .stats()
            .functions
            .get("settle")
            .map(|f| f.invocations)
    };
    for _ in 0..500 {
        if runs() == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(runs(), Some(1), "one run of settle on the second hub");
    call.abort();
    second.shutdown().await;
}

/// The output of durable execution `id`, once the hub has finished it.
async fn output_of(hub: &EdgeHub, id: ExecutionId) -> Bytes {
    tokio::time::timeout(std::time::Duration::from_secs(30), hub.durable_outcome(id))
        .await
        .expect("the hub never finished the execution")
        .expect("an outcome")
        .expect("a successful one")
}

/// A hub stopped with an execution waiting for an event, and a new hub on the same
/// checkpoint folder: the new one matches the event with the wait it took up, and the
/// execution's output is published there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_built_again_on_its_store_takes_up_a_wait_for_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = Arc::new(AtomicU32::new(0));
    let build = |name: &'static str| {
        let (store, _) = fnhub::libs::checkpoint::DirStore::open(dir.path()).unwrap();
        hub_on(name, reserved.clone(), Arc::new(store))
    };
    let first = build("hub-a");
    let mut invocation = fnhub::Invocation::new("order".parse().unwrap(), "o-5");
    invocation.context.topic = Some("orders/o-5".to_owned());
    let id: ExecutionId = invocation.id.into();
    let reply = first.call(invocation).await.unwrap().outcome.unwrap();
    assert!(reply.is_empty(), "it waits for its payment");
    first.shutdown().await;
    drop(first);

    let second = build("hub-b");
    let mut done = second.subscribe("orders/+/done", 4).unwrap();
    // Once taken up (the hub's one pass), the wait is in the table that events meet.
    assert_eq!(second.recover_durable().await.unwrap(), 0);
    second
        .publish(Event::new("payments/o-5", "paid", EventSource::Local))
        .unwrap();
    // Reserved on hub a, paid and shipped on hub b.
    let out = output_of(&second, id).await;
    assert_eq!(out, Bytes::from("hub-a,paid,hub-b"));
    let published = tokio::time::timeout(std::time::Duration::from_secs(10), done.recv())
        .await
        .expect("the output was never published")
        .unwrap();
    assert_eq!(
        (published.topic.as_str(), &published.payload[..]),
        ("orders/o-5/done", out.as_ref())
    );
    assert_eq!(reserved.load(Ordering::SeqCst), 1, "reserved once");
    second.shutdown().await;
}
