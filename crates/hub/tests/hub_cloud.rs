//! The cloud runtime against a nats-server each test starts: results once per invocation,
//! submissions deduplicated, and a node killed with SIGKILL under load losing nothing.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub::cloud::{CloudClient, CloudConfig, CloudRuntime};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, from_fn};
use futures_util::StreamExt;

/// A `nats-server -js` of the test's own; `None` when it is not installed (a failure under
/// `CI=true`).
fn server() -> Option<fnhub_testkit::NatsServer> {
    fnhub_testkit::NatsServer::start()
}

fn doubling_hub() -> EdgeHub {
    EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("double").unwrap()),
            from_fn(|inv: Invocation| async move {
                let n: u64 = std::str::from_utf8(&inv.payload).unwrap().parse().unwrap();
                Ok(Bytes::from((n * 2).to_string()))
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_give_every_invocation_one_result() {
    let Some(server) = server() else { return };
    let config = CloudConfig::default();
    let a = CloudRuntime::start(server.url(), "a", doubling_hub(), config.clone())
        .await
        .unwrap();
    let b = CloudRuntime::start(server.url(), "b", doubling_hub(), config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(server.url(), &config).await.unwrap();
    // Both nodes registered the function; one nobody runs is refused.
    assert_eq!(client.functions().await.unwrap(), vec!["double".to_owned()]);
    let ghost = Invocation::new("ghost".parse().unwrap(), "1");
    assert!(matches!(
        client.submit(&ghost).await,
        Err(fnhub::cloud::CloudError::UnknownFunction(_))
    ));
    let duplicates = Arc::new(AtomicU64::new(0));
    let mut results = Box::pin(client.results(duplicates.clone()).await.unwrap());

    let mut want = BTreeMap::new();
    for n in 0..200u64 {
        let inv = Invocation::new("double".parse().unwrap(), n.to_string());
        client.submit(&inv).await.unwrap();
        if n % 50 == 0 {
            // The same invocation (same id) submitted again is stored once.
            client.submit(&inv).await.unwrap();
        }
        want.insert(inv.id, (n * 2).to_string());
    }
    let mut got = BTreeMap::new();
    while got.len() < want.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .expect("results stopped coming")
            .unwrap();
        assert!(got.insert(r.id, r.outcome.unwrap()).is_none());
    }
    for (id, output) in &got {
        assert_eq!(&output[..], want[id].as_bytes());
    }
    // Nothing more comes: no invocation ran twice to a second result.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), results.next())
            .await
            .is_err()
    );
    assert_eq!(a.stats().ran + b.stats().ran, 200, "each submission once");
    assert_eq!(duplicates.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hub_hands_invocations_back_instead_of_failing_them() {
    let Some(server) = server() else { return };
    // One worker, a queue of one, and a node that takes 32 at once: most of a burst does
    // not fit, and comes back until it does.
    let hub = EdgeHub::builder()
        .workers(1)
        .queue_capacity(1)
        .function(
            FunctionSpec::in_process(FunctionName::new("slow").unwrap()),
            from_fn(|inv: Invocation| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(inv.payload)
            }),
        )
        .build()
        .unwrap();
    let config = CloudConfig::default().with_in_flight(32);
    let node = CloudRuntime::start(server.url(), "only", hub, config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(server.url(), &config).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..60 {
        let inv = Invocation::new("slow".parse().unwrap(), format!("{n}"));
        ids.push((inv.id, n));
        client.submit(&inv).await.unwrap();
    }
    for (id, n) in ids {
        let result = result_within_30s(&client, id).await;
        assert_eq!(result.outcome.unwrap(), Bytes::from(n.to_string()));
    }
    assert!(node.stats().handed_back > 0, "{:?}", node.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_ack_wait_is_not_delivered_again() {
    let Some(server) = server() else { return };
    // Runs 2.5 s against an ack wait of 1 s: only the node's progress reports keep
    // JetStream from handing the call out again.
    let hub = EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("slow").unwrap())
                .with_timeout(Duration::from_secs(10)),
            from_fn(|inv: Invocation| async move {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Ok(inv.payload)
            }),
        )
        .build()
        .unwrap();
    let config = CloudConfig::default().with_ack_wait(Duration::from_secs(1));
    let node = CloudRuntime::start(server.url(), "only", hub, config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(server.url(), &config).await.unwrap();
    let inv = Invocation::new("slow".parse().unwrap(), "x");
    client.submit(&inv).await.unwrap();
    let result = result_within_30s(&client, inv.id).await;
    assert_eq!(result.outcome.unwrap(), Bytes::from_static(b"x"));
    // Nothing came again after the result either.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = node.stats();
    assert_eq!((stats.ran, stats.redelivered), (1, 0), "{stats:?}");
}

/// Runs the example (built by `cargo test` beside this test) against `server` with
/// `args`: three node processes, one killed with SIGKILL once a third of the results are
/// in. Its JSON summary.
async fn run_example(server: &fnhub_testkit::NatsServer, args: &[&str]) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/cloud_runtime");
    assert!(example.exists(), "{} not built", example.display());
    let mut command = Command::new(example);
    command
        .args(["--nodes", "3", "--json", "--url", server.url()])
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_invocation() {
    let Some(server) = server() else { return };
    let summary = run_example(&server, &["--invocations", "600"]).await;
    assert_eq!(summary["submitted"], 600);
    assert_eq!(summary["results"], 600);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["wrong"], 0);
    let per_node = summary["per_node"].as_object().unwrap();
    let total: u64 = per_node.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 600);
    // The killed node stopped early: the others took the rest.
    assert!(per_node["node-0"].as_u64().unwrap() < 300, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_holding_durable_executions_loses_none() {
    let Some(server) = server() else { return };
    // Each `order` suspends in a sleep and calls a child: the killed node dies holding
    // suspended executions, wakes and replays, which the other two finish.
    let summary = run_example(&server, &["--invocations", "150", "--durable"]).await;
    assert_eq!(summary["workload"], "durable");
    assert_eq!(summary["results"], 150, "{summary}");
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["wrong"], 0);
}

/// The checkpoint store every node of a test shares: the server's object store.
async fn shared_store(url: &str) -> Arc<fnhub::libs::checkpoint::nats::NatsStore> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    Arc::new(
        fnhub::libs::checkpoint::nats::NatsStore::open(&js, "fnhub-test")
            .await
            .unwrap(),
    )
}

/// A hub whose checkpoints live in the server's object store, with a durable `order`: a
/// step, a sleep long enough to suspend, a child `charge` run through the cloud runtime,
/// and a step. `charge` takes 300 ms, past the 200 ms threshold, so an order suspends on
/// it too.
async fn order_hub(url: &str, reserved: Arc<AtomicU64>, shipped: Arc<AtomicU64>) -> EdgeHub {
    use fnhub::{DurableContext, SuspendPolicy, durable_fn};
    EdgeHub::builder()
        .checkpoint_store(shared_store(url).await)
        .suspend_policy(SuspendPolicy::with_threshold(Duration::from_millis(200)))
        .function(
            FunctionSpec::in_process(FunctionName::new("charge").unwrap()),
            from_fn(|inv: Invocation| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let order = String::from_utf8_lossy(&inv.payload).into_owned();
                Ok(Bytes::from(format!("charged {order}")))
            }),
        )
        .durable(
            FunctionSpec::in_process(FunctionName::new("order").unwrap()),
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let (reserved, shipped) = (reserved.clone(), shipped.clone());
                async move {
                    ctx.step("reserve", || async move {
                        reserved.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    ctx.sleep("cool-off", Duration::from_secs(1)).await?;
                    let charged = ctx
                        .invoke("charge", "charge".parse().unwrap(), input)
                        .await?;
                    ctx.step("ship", || async move {
                        shipped.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    Ok(Bytes::from(format!(
                        "{} shipped",
                        String::from_utf8_lossy(&charged)
                    )))
                }
            }),
        )
        .build()
        .unwrap()
}

/// The result of invocation `id` (waiting up to 30 s).
async fn result_within_30s(
    client: &CloudClient,
    id: fnhub::InvocationId,
) -> fnhub::cloud::CloudResult {
    tokio::time::timeout(Duration::from_secs(30), client.result_of(id))
        .await
        .expect("no result")
        .unwrap()
}

/// Waits (up to 30 s) until `hub`'s store holds no checkpoint: a finished execution's goes
/// just after its result.
async fn checkpoints_gone(hub: &EdgeHub) {
    for _ in 0..300 {
        if within("a list", hub.checkpoint_store().list())
            .await
            .unwrap()
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("checkpoints were left in the store");
}

/// `f`, or a panic naming `what` if it takes over 20 s (instead of a test that never ends).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("stuck: {what}"))
}

/// Waits (up to 30 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_executions_resume_on_another_node() {
    let Some(server) = server() else { return };
    let url = server.url().to_owned();
    // A short ack wait, so that wakes node A had taken come back soon after it goes.
    let config = CloudConfig::default().with_ack_wait(Duration::from_secs(3));
    let (reserved, shipped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Node A starts four orders; each suspends in its sleep, and A goes away.
    let hub_a = order_hub(&url, reserved.clone(), shipped.clone()).await;
    let a = CloudRuntime::start(&url, "node-a", hub_a.clone(), config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(&url, &config).await.unwrap();
    let mut orders = BTreeMap::new();
    for n in 0..4 {
        let inv = Invocation::new("order".parse().unwrap(), format!("order-{n}"));
        within("submit", client.submit(&inv)).await.unwrap();
        orders.insert(inv.id, format!("charged order-{n} shipped"));
    }
    until("node A to suspend the four orders", || {
        a.stats().suspended == 4
    })
    .await;
    // The four checkpoints are in the object store, none finished.
    assert_eq!(
        within("list A", hub_a.checkpoint_store().list())
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(reserved.load(Ordering::SeqCst), 4);
    drop(a);
    drop(hub_a);

    // Node B takes the wakes when they are due, runs the children through the work
    // stream, and finishes every order: each step ran once, each caller gets one result.
    let hub_b = within("hub b", order_hub(&url, reserved.clone(), shipped.clone())).await;
    let b = within(
        "start b",
        CloudRuntime::start(&url, "node-b", hub_b.clone(), config.clone()),
    )
    .await
    .unwrap();
    for (id, want) in &orders {
        let result = result_within_30s(&client, *id).await;
        assert_eq!(result.node, "node-b");
        assert_eq!(result.outcome.unwrap(), Bytes::from(want.clone()));
    }
    assert_eq!(reserved.load(Ordering::SeqCst), 4);
    assert_eq!(shipped.load(Ordering::SeqCst), 4);
    assert!(b.stats().resumed >= 4, "{:?}", b.stats());
    checkpoints_gone(&hub_b).await;
    // The replays ran on the hub's workers, as invocations of `order` itself (B started
    // none): the wake subject is the wire's, not a function of the hub's.
    until("B's replays to count as invocations of order", || {
        hub_b
            .stats()
            .functions
            .get("order")
            .is_some_and(|f| f.invocations >= 4)
    })
    .await;
    assert!(!hub_b.stats().functions.contains_key(fnhub::RESUME_FUNCTION));

    // A new order, submitted to B: it suspends on its sleep and on its child (which outlasts
    // the threshold), and the node that runs the child wakes the parent with its outcome.
    let suspended_before = b.stats().suspended;
    let inv = Invocation::new("order".parse().unwrap(), "order-9");
    within("submit", client.submit(&inv)).await.unwrap();
    let result = result_within_30s(&client, inv.id).await;
    assert_eq!(
        result.outcome.unwrap(),
        Bytes::from_static(b"charged order-9 shipped")
    );
    // Suspended twice: on its sleep and on its child.
    assert_eq!(b.stats().suspended - suspended_before, 2, "{:?}", b.stats());
    assert_eq!(shipped.load(Ordering::SeqCst), 5);
    assert_eq!(reserved.load(Ordering::SeqCst), 5);
}

/// A hub on the server's object store with a durable `pay`: a step that counts, then a
/// wait for `orders/{input}/paid`, whose payload it returns.
async fn payment_hub(url: &str, opened: Arc<AtomicU64>) -> EdgeHub {
    use fnhub::{DurableContext, durable_fn};
    EdgeHub::builder()
        .checkpoint_store(shared_store(url).await)
        .durable(
            FunctionSpec::in_process(FunctionName::new("pay").unwrap()),
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let opened = opened.clone();
                async move {
                    ctx.step("open", || async move {
                        opened.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    let order = String::from_utf8_lossy(&input).into_owned();
                    let paid = ctx
                        .wait_for("paid", &format!("orders/{order}/paid"))
                        .await?;
                    Ok(Bytes::from(format!(
                        "order {order}: {}",
                        String::from_utf8_lossy(&paid)
                    )))
                }
            }),
        )
        .build()
        .unwrap()
}

/// Node A of a test of payments: its config (a 3 s ack wait), its hub, the node, and a
/// client of the deployment.
async fn payment_node_a(
    url: &str,
    opened: &Arc<AtomicU64>,
) -> (CloudConfig, EdgeHub, CloudRuntime, CloudClient) {
    let config = CloudConfig::default().with_ack_wait(Duration::from_secs(3));
    let hub = payment_hub(url, opened.clone()).await;
    let node = CloudRuntime::start(url, "node-a", hub.clone(), config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(url, &config).await.unwrap();
    (config, hub, node, client)
}

/// How many event waits the deployment holds.
async fn waits(url: &str) -> usize {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let kv = js.get_key_value("FNHUB_default_WAITS").await.unwrap();
    kv.keys().await.unwrap().count().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wake_executions_that_wait_for_them_on_any_node() {
    let Some(server) = server() else { return };
    let url = server.url().to_owned();
    let opened = Arc::new(AtomicU64::new(0));

    // Node A starts two payments; each waits for its event, and A goes away.
    let (config, hub_a, a, client) = payment_node_a(&url, &opened).await;
    let mut ids = Vec::new();
    for order in ["1", "2"] {
        let inv = Invocation::new("pay".parse().unwrap(), order);
        client.submit(&inv).await.unwrap();
        ids.push(inv.id);
    }
    until("node A to suspend both payments", || {
        a.stats().suspended == 2
    })
    .await;
    assert_eq!(waits(&url).await, 2);
    drop(a);
    drop(hub_a);

    // Node B, started afterwards, learns the waits from the bucket.
    let hub_b = payment_hub(&url, opened.clone()).await;
    let b = CloudRuntime::start(&url, "node-b", hub_b.clone(), config.clone())
        .await
        .unwrap();
    for bad in ["orders/+/paid", "orders/\r\nFnhub-Wake: x/paid", ""] {
        assert!(
            matches!(
                client.publish(bad, "bad").await,
                Err(fnhub::cloud::CloudError::InvalidTopic(_))
            ),
            "{bad:?} was accepted"
        );
    }
    // An event nobody waits for wakes nobody; the next one, sent to the deployment, wakes
    // order 1 (had the first woken it, its result would say so).
    client.publish("orders/9/paid", "nobody").await.unwrap();
    client.publish("orders/1/paid", "card").await.unwrap();
    let result = result_within_30s(&client, ids[0]).await;
    assert_eq!(result.node, "node-b");
    assert_eq!(
        result.outcome.unwrap(),
        Bytes::from_static(b"order 1: card")
    );

    // An event published on a node's hub wakes order 2 as well.
    hub_b
        .publish(fnhub::Event::new(
            "orders/2/paid",
            "cash",
            fnhub::EventSource::Local,
        ))
        .unwrap();
    let result = result_within_30s(&client, ids[1]).await;
    assert_eq!(
        result.outcome.unwrap(),
        Bytes::from_static(b"order 2: cash")
    );

    // A payment started on node B's hub itself (not through the work stream) has its wait
    // recorded too, and an event sent to the deployment finishes it; its result goes to
    // the results stream like the others.
    let local = Invocation::new("pay".parse().unwrap(), "3");
    let completion = hub_b.call(local.clone()).await.unwrap();
    assert_eq!(completion.outcome.unwrap(), Bytes::new(), "it suspended");
    let mut recorded = 0;
    for _ in 0..100 {
        recorded = waits(&url).await;
        if recorded == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded, 1, "the local wait is recorded");
    client.publish("orders/3/paid", "voucher").await.unwrap();
    let result = result_within_30s(&client, local.id).await;
    assert_eq!(
        result.outcome.unwrap(),
        Bytes::from_static(b"order 3: voucher")
    );

    // Each step ran once; the met waits and the checkpoints are gone.
    assert_eq!(opened.load(Ordering::SeqCst), 3);
    // (The result goes out before the node counts the resume.)
    until("node B to count the resumes", || b.stats().resumed == 3).await;
    assert_eq!(waits(&url).await, 0);
    checkpoints_gone(&hub_b).await;
}

/// A hub with a durable `batch` of two steps, the first counting, under `policy`, its
/// checkpoints in the server's object store.
async fn batch_hub(url: &str, policy: fnhub::LoadPolicy, ran: Arc<AtomicU64>) -> EdgeHub {
    use fnhub::{DurableContext, durable_fn};
    EdgeHub::builder()
        .checkpoint_store(shared_store(url).await)
        .load_policy(policy)
        .durable(
            FunctionSpec::in_process(FunctionName::new("batch").unwrap()),
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let ran = ran.clone();
                async move {
                    ctx.step("one", || async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    ctx.step("two", || async move {
                        Ok(Bytes::from(format!(
                            "done {}",
                            String::from_utf8_lossy(&input)
                        )))
                    })
                    .await
                }
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_sheds_load_hands_executions_to_one_that_does_not() {
    let Some(server) = server() else { return };
    let url = server.url().to_owned();
    let config = CloudConfig::default();
    let ran = Arc::new(AtomicU64::new(0));

    // Node A sheds low-priority executions from the start (any pressure at all, at once).
    let mut shedding = fnhub::LoadPolicy::default();
    shedding.threshold = 0.0;
    shedding.window = Duration::ZERO;
    let hub_a = batch_hub(&url, shedding, ran.clone()).await;
    until("node A to shed", || hub_a.is_shedding()).await;
    let a = CloudRuntime::start(&url, "node-a", hub_a.clone(), config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(&url, &config).await.unwrap();
    let mut batches = BTreeMap::new();
    for n in 0..3 {
        let mut inv = Invocation::new("batch".parse().unwrap(), n.to_string());
        inv.context.priority = fnhub::Priority::LOW;
        client.submit(&inv).await.unwrap();
        batches.insert(inv.id, format!("done {n}"));
    }
    // A stops each before its first step, and keeps handing their wakes back.
    until(
        "node A to shed the three batches and hand them back",
        || {
            let s = a.stats();
            s.suspended == 3 && s.handed_back >= 3
        },
    )
    .await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    // Node B, under no pressure, runs them.
    let hub_b = batch_hub(&url, fnhub::LoadPolicy::default(), ran.clone()).await;
    let b = CloudRuntime::start(&url, "node-b", hub_b.clone(), config.clone())
        .await
        .unwrap();
    for (id, want) in &batches {
        let result = result_within_30s(&client, *id).await;
        assert_eq!(result.node, "node-b");
        assert_eq!(result.outcome.unwrap(), Bytes::from(want.clone()));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    // (The result goes out before the node counts the resume.)
    until("node B to count three resumes", || b.stats().resumed == 3).await;
    assert_eq!(a.stats().resumed, 0, "{:?}", a.stats());
    checkpoints_gone(&hub_b).await;
}

/// `method path` on the front door at `addr`, plain HTTP/1.1: the status and the body.
#[cfg(feature = "http")]
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or_default())
    })
    .await
    .unwrap()
}

/// An execution that waits on one node is listed, read and stopped through another node's
/// front door (the store is the deployment's): the caller's result is the stop's error,
/// and the event it waited for, when it comes, wakes nothing.
#[cfg(feature = "http")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_waiting_on_one_node_is_stopped_from_another() {
    let Some(server) = server() else { return };
    let url = server.url().to_owned();
    let opened = Arc::new(AtomicU64::new(0));
    let (config, hub_a, a, client) = payment_node_a(&url, &opened).await;
    let inv = Invocation::new("pay".parse().unwrap(), "7");
    client.submit(&inv).await.unwrap();
    until("node A to suspend the payment", || a.stats().suspended == 1).await;

    let hub_b = payment_hub(&url, opened.clone()).await;
    let b = CloudRuntime::start(&url, "node-b", hub_b.clone(), config.clone())
        .await
        .unwrap();
    let door = fnhub::http::serve(
        &hub_b,
        "127.0.0.1:0".parse().unwrap(),
        fnhub::http::HttpConfig::unauthenticated_loopback(),
    )
    .await
    .unwrap();
    let addr = door.local_addr();
    let (status, listed) = http(addr, "GET", "/2025-12-01/functions/pay/durable-executions").await;
    assert_eq!(status, 200, "{listed}");
    let executions = listed["DurableExecutions"].as_array().unwrap();
    assert_eq!(executions.len(), 1, "{listed}");
    assert_eq!(executions[0]["Status"], "RUNNING");
    assert_eq!(
        executions[0]["DurableExecutionName"],
        inv.id.to_string(),
        "named by the invocation that started it"
    );
    let arn = executions[0]["DurableExecutionArn"].as_str().unwrap();
    let path = format!(
        "/2025-12-01/durable-executions/{}",
        arn.replace(':', "%3A").replace('/', "%2F")
    );
    let (status, history) = http(addr, "GET", &format!("{path}/history")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["Events"].as_array().unwrap().len(), 4, "{history}");

    let (status, stopped) = http(addr, "POST", &format!("{path}/stop")).await;
    assert_eq!(status, 200, "{stopped}");
    let result = result_within_30s(&client, inv.id).await;
    let error = result.outcome.unwrap_err();
    assert_eq!(error.error_type.as_deref(), Some("Stopped"), "{error:?}");
    checkpoints_gone(&hub_b).await;
    let (status, _) = http(addr, "POST", &format!("{path}/stop")).await;
    assert_eq!(status, 409, "it has ended");

    // The payment comes after all: its wake finds no execution, and nothing runs again.
    client.publish("orders/7/paid", "late").await.unwrap();
    for _ in 0..300 {
        if waits(&url).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waits(&url).await, 0, "the payment met the wait");
    // Its wake, sent when the wait was met, finds the execution ended.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.stats().resumed + b.stats().resumed, 0);
    assert_eq!(opened.load(Ordering::SeqCst), 1, "its first step ran once");
    assert!(
        within("a list", hub_a.checkpoint_store().list())
            .await
            .unwrap()
            .is_empty()
    );
    door.shutdown().await;
}
