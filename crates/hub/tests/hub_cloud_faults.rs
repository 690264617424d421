//! The cloud runtime under faults: garbage and lying headers in the work stream, an unknown
//! deployment, a node that lacks a function, a `nats-server` killed and restarted, and a
//! three-server JetStream cluster that loses a server mid-workload. Against real
//! `nats-server`s each test starts on free loopback ports.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use fnhub::cloud::{CloudClient, CloudConfig, CloudError, CloudRuntime, wire};
use fnhub::{EdgeHub, ErrorKind, FunctionName, FunctionSpec, Invocation, from_fn};
use futures_util::StreamExt;

/// A hub with `double` and a durable `order` (a step, a 1 s sleep that suspends it, a
/// child call of `double`, a step), keeping checkpoints in the object store `bucket` at
/// `replicas` copies. `steps` counts the steps that ran. `Err` while the servers cannot yet
/// make the store (a cluster that has not formed refuses replicas).
async fn durable_hub(
    urls: &str,
    replicas: usize,
    steps: Arc<AtomicU64>,
) -> Result<EdgeHub, String> {
    use fnhub::{DurableContext, SuspendPolicy, durable_fn};
    let servers: Vec<&str> = urls.split(',').collect();
    let client = async_nats::connect(servers)
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    // Debug: the backend's own error, not only "backend failed".
    let store = fnhub::libs::checkpoint::nats::NatsStore::open_replicated(&js, "orders", replicas)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(EdgeHub::builder()
        .checkpoint_store(Arc::new(store))
        .suspend_policy(SuspendPolicy::with_threshold(Duration::from_millis(200)))
        .function(
            FunctionSpec::in_process(FunctionName::new("double").unwrap()),
            from_fn(|inv: Invocation| async move {
                let n: u64 = std::str::from_utf8(&inv.payload).unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Bytes::from((n * 2).to_string()))
            }),
        )
        .durable(
            FunctionSpec::in_process(FunctionName::new("order").unwrap()),
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let steps = steps.clone();
                async move {
                    let s = steps.clone();
                    ctx.step("reserve", || async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    ctx.sleep("settle", Duration::from_secs(1)).await?;
                    let doubled = ctx
                        .invoke("double", "double".parse().unwrap(), input)
                        .await?;
                    ctx.step("ship", || async move {
                        steps.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::new())
                    })
                    .await?;
                    Ok(doubled)
                }
            }),
        )
        .build()
        .unwrap())
}

/// A hub with `name`, which multiplies its number by `factor` after `pause`.
fn hub(name: &str, factor: u64, pause: Duration) -> EdgeHub {
    EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new(name).unwrap()),
            from_fn(move |inv: Invocation| async move {
                let n: u64 = std::str::from_utf8(&inv.payload).unwrap().parse().unwrap();
                tokio::time::sleep(pause).await;
                Ok(Bytes::from((n * factor).to_string()))
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_lies_and_unknown_deployments_are_refused_and_counted() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let config = CloudConfig::default();
    let node = CloudRuntime::start(
        server.url(),
        "a",
        hub("double", 2, Duration::ZERO),
        config.clone(),
    )
    .await
    .unwrap();
    let client = CloudClient::connect(server.url(), &config).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let subject = "fnhub.default.work.double";
    let send = |headers: HeaderMap, payload: &'static str| {
        let js = js.clone();
        async move {
            js.publish_with_headers(subject, headers, Bytes::from(payload))
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // No headers at all: nothing to answer, refused.
    send(HeaderMap::new(), "\u{0}\u{1}garbage").await;
    // Headers that lie: each gets a Rejected result naming the header.
    let lying = |key: &'static str, value: &str| {
        let id = fnhub::InvocationId::random();
        let mut h = HeaderMap::new();
        h.insert(wire::INVOCATION, id.to_string().as_str());
        h.insert(wire::FUNCTION, "double");
        h.insert(key, value);
        (id, h)
    };
    let far = lying(wire::DEADLINE, "99999999999999");
    let deep = lying(wire::DEPTH, "100000");
    let bad_priority = lying(wire::PRIORITY, "high");
    for (_, h) in [&far, &deep, &bad_priority] {
        send(h.clone(), "1").await;
    }
    for ((id, _), header) in [
        (&far, wire::DEADLINE),
        (&deep, wire::DEPTH),
        (&bad_priority, wire::PRIORITY),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(30), client.result_of(*id))
            .await
            .unwrap()
            .unwrap();
        let e = r.outcome.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
        assert!(e.message.contains(header), "{header}: {e}");
    }
    // A deadline already past is no lie: the call ends as DeadlineExceeded.
    let (past, h) = lying(wire::DEADLINE, "1000");
    send(h, "1").await;
    let r = client.result_of(past).await.unwrap();
    assert_eq!(r.outcome.unwrap_err().kind, ErrorKind::DeadlineExceeded);
    // The node is unharmed, and counted the four it refused.
    let ok = client
        .call(
            &Invocation::new("double".parse().unwrap(), "21"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(ok.outcome.unwrap(), Bytes::from("42"));
    assert_eq!(ok.node, "a");
    assert_eq!(ok.version, Some(1));
    assert_eq!(node.stats().refused, 4, "{:?}", node.stats());
    // A deployment no node serves, and a name that cannot be one.
    let unknown = CloudClient::connect(server.url(), &config.clone().with_deployment("nope")).await;
    assert!(matches!(unknown, Err(CloudError::UnknownDeployment(d)) if d == "nope"));
    let invalid = CloudClient::connect(server.url(), &config.clone().with_deployment("a.b")).await;
    assert!(matches!(invalid, Err(CloudError::InvalidDeployment(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_apart_and_a_node_leaves_what_it_lacks() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let prod = CloudConfig::default().with_deployment("prod");
    let test = CloudConfig::default().with_deployment("test");
    let a = CloudRuntime::start(
        server.url(),
        "a",
        hub("double", 2, Duration::ZERO),
        prod.clone(),
    )
    .await
    .unwrap();
    let b = CloudRuntime::start(
        server.url(),
        "b",
        hub("triple", 3, Duration::ZERO),
        prod.clone(),
    )
    .await
    .unwrap();
    // A node of another deployment with the same function never sees prod's work.
    let other = CloudRuntime::start(
        server.url(),
        "other",
        hub("triple", 3, Duration::ZERO),
        test,
    )
    .await
    .unwrap();
    let client = CloudClient::connect(server.url(), &prod).await.unwrap();
    for n in 0..20u64 {
        let r = client
            .call(
                &Invocation::new("triple".parse().unwrap(), n.to_string()),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome.unwrap(), Bytes::from((n * 3).to_string()));
        assert_eq!(r.node, "b");
    }
    // A, without `triple`, neither took its work nor refused it.
    assert_eq!(a.stats().ran, 0, "{:?}", a.stats());
    assert_eq!(a.stats().refused, 0);
    assert_eq!(other.stats().ran, 0, "{:?}", other.stats());
    assert_eq!(b.stats().ran, 20);
}

/// Submits `count` calls of `double` (16 at a time) through `client`, each waiting for its
/// result; the results by input. `midway` runs once a third are back.
async fn workload(
    client: Arc<CloudClient>,
    count: u64,
    midway: impl FnOnce() + Send + 'static,
) -> BTreeMap<u64, Bytes> {
    let done = Arc::new(AtomicU64::new(0));
    let midway = Arc::new(parking_lot::Mutex::new(Some(midway)));
    let results = futures_util::stream::iter(0..count)
        .map(|n| {
            let (client, done, midway) = (client.clone(), done.clone(), midway.clone());
            async move {
                let inv = Invocation::new("double".parse().unwrap(), n.to_string());
                let r = client.call(&inv, Duration::from_secs(120)).await;
                if done.fetch_add(1, Ordering::SeqCst) + 1 == count / 3
                    && let Some(f) = midway.lock().take()
                {
                    f();
                }
                (n, r.map(|r| r.outcome))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut out = BTreeMap::new();
    for (n, r) in results {
        let outcome = r.unwrap_or_else(|e| panic!("call {n}: {e}"));
        out.insert(n, outcome.unwrap_or_else(|e| panic!("call {n}: {e}")));
    }
    out
}

/// Every result in the result stream, by invocation: a second one would be a duplicate.
async fn results_in_stream(client: &CloudClient, count: u64) -> (u64, u64) {
    // A consumer on a cluster that just took a server back can stall before its first
    // delivery (once for over 15 s): a stalled read starts over on a new consumer, three
    // times at most. Only a result that is not in the stream fails every one.
    let mut last = (0, 0);
    for attempt in 1..=3 {
        last = read_results(client, count).await;
        if last.0 == count {
            break;
        }
        eprintln!("results read: {} of {count} on attempt {attempt}", last.0);
    }
    last
}

/// One read of the results stream through a new consumer: how many results, and how many
/// of those were duplicates.
async fn read_results(client: &CloudClient, count: u64) -> (u64, u64) {
    let duplicates = Arc::new(AtomicU64::new(0));
    // A cluster that just took a server back may time out a consumer's creation.
    let mut tries = 0;
    let results = loop {
        match client.results(duplicates.clone()).await {
            Ok(r) => break r,
            Err(e) if tries < 30 => {
                tries += 1;
                eprintln!("results consumer: {e}; again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("no results consumer: {e}"),
        }
    };
    let mut results = Box::pin(results);
    let mut seen = 0;
    // Patient: a consumer on a cluster that took a server back can pause for seconds
    // between deliveries (once 2 s was not enough, and a result that was there read as
    // missing).
    while seen < count {
        match tokio::time::timeout(Duration::from_secs(15), results.next()).await {
            Ok(Some(_)) => seen += 1,
            _ => break,
        }
    }
    (seen, duplicates.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nats_server_loses_no_call_and_answers_each_once() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let url = server.url().to_owned();
    let server = Arc::new(parking_lot::Mutex::new(server));
    let config = CloudConfig::default().with_ack_wait(Duration::from_secs(2));
    let pause = Duration::from_millis(20);
    let _a = CloudRuntime::start(&url, "a", hub("double", 2, pause), config.clone())
        .await
        .unwrap();
    let _b = CloudRuntime::start(&url, "b", hub("double", 2, pause), config.clone())
        .await
        .unwrap();
    let client = Arc::new(CloudClient::connect(&url, &config).await.unwrap());
    let count = 300;
    let restart = {
        let server = server.clone();
        move || {
            std::thread::spawn(move || server.lock().restart(Duration::from_millis(500)));
        }
    };
    let results = workload(client.clone(), count, restart).await;
    assert_eq!(results.len() as u64, count, "calls lost");
    for (n, out) in &results {
        assert_eq!(out, &Bytes::from((n * 2).to_string()));
    }
    let (seen, duplicates) = results_in_stream(&client, count).await;
    assert_eq!((seen, duplicates), (count, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_server_cluster_loses_a_server_and_nothing_else() {
    cluster_loses_a_server(0).await;
}

/// The same with ten durable executions suspended when the server dies. It failed 3 runs
/// in 4 while checkpoints were read by direct gets (a replica catching up answered "no
/// checkpoint", read as finished), 1 in 16 once read from the stream's leader, and 1 in 24
/// on 2026-12-04: in that run a wake met a leader, just after server 1 came back, with no
/// checkpoint for a suspended execution, and was acknowledged as if the execution had
/// finished; its caller was never answered. Since then a wake that finds no checkpoint is
/// acknowledged only once the execution's result is stored, and otherwise comes again (the
/// test above shows such a wake carrying the execution on once its checkpoint is back).
/// That did not cure this one: 1 run in 11 on 2026-12-04 (night), on nats-server 2.9.10
/// (Debian's), failed with every order's wake finding no checkpoint for over a minute (540
/// wakes counted in `NodeStats::wakes_without_checkpoint`, none resumed): the stream's
/// leader had lost the checkpoints of all ten, not merely not caught up, which no rule of
/// ours can mend. On nats-server 2.10.26 it passed 33 runs in 34 (the other failed
/// before the workload: "no suitable peers for placement" for 20 s; CI met the same for
/// 60 s on 2026-12-05. Two ways to it were found since, and the testkit now closes both:
/// a cluster whose JetStream meta group was elected with two of its three servers and
/// stayed so (1 fresh cluster in 30 here), which `NatsCluster::start` now replaces; and
/// two test clusters that shared a name merging through a route port that changed hands
/// (made on purpose by hand), so each cluster now has a name of its own), so the tests
/// run that server (`.ci/run` sets
/// `FNHUB_NATS_SERVER`) and this test runs with the others. Run it alone with `cargo test -p fnhub --features nats --test
/// hub_cloud_faults durable_executions -- --nocapture` and `RUST_LOG=fnhub=debug`: the
/// `wake` and `ran` lines trace each execution, and "no checkpoint, and no result stored"
/// marks that case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_executions_carry_on_when_a_cluster_server_dies() {
    cluster_loses_a_server(10).await;
}

/// The case the cluster test above once met, made on purpose on one server: a durable
/// execution's checkpoint is out of sight (as on a replica that has not caught up) when
/// its wake comes. The wake is not taken for the execution's end: it comes again each
/// second, no result is published meanwhile, and once the checkpoint is back the execution
/// carries on from it (its first step not run again) to its one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_that_finds_no_checkpoint_comes_again_until_it_is_back() {
    use fnhub::CheckpointStore;
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let config = CloudConfig::default().with_ack_wait(Duration::from_secs(2));
    let steps = Arc::new(AtomicU64::new(0));
    let hub = durable_hub(server.url(), 1, steps.clone()).await.unwrap();
    let node = CloudRuntime::start(server.url(), "a", hub, config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(server.url(), &config).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let store = fnhub::libs::checkpoint::nats::NatsStore::open(&js, "orders")
        .await
        .unwrap();
    let inv = Invocation::new("order".parse().unwrap(), "21");
    let execution = fnhub::ExecutionId::from(inv.id);
    client.submit(&inv).await.unwrap();
    // Suspended in its 1 s sleep; its checkpoint taken out of the store.
    let checkpoint = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if node.stats().suspended >= 1
                && let Some(c) = store.load(execution).await.unwrap()
            {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the order never suspended");
    assert!(store.remove(execution).await.unwrap());
    // Its wake comes (after the sleep), finds nothing, and comes again.
    tokio::time::timeout(Duration::from_secs(20), async {
        while node.stats().wakes_without_checkpoint < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the wake did not come again");
    let early = tokio::time::timeout(Duration::from_millis(200), client.result_of(inv.id)).await;
    assert!(early.is_err(), "a result without a checkpoint: {early:?}");
    assert_eq!(steps.load(Ordering::SeqCst), 1);
    // The checkpoint is back: the next wake carries the execution on from it.
    store.save(&checkpoint).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), client.result_of(inv.id))
        .await
        .expect("the execution did not carry on")
        .unwrap();
    assert_eq!(result.outcome.unwrap(), Bytes::from("42"));
    assert_eq!(steps.load(Ordering::SeqCst), 2, "reserve once, ship once");
    assert_eq!(node.stats().duplicates_suppressed, 0);
}

/// Two nodes on a three-server cluster (replicas 3) run 300 calls and `orders` durable
/// executions; server 1 is SIGKILLed a third of the way in and restarted 2 s later. Every
/// call and order gets its one right result.
async fn cluster_loses_a_server(order_count: u64) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(cluster) = fnhub_testkit::NatsCluster::start(3) else {
        return;
    };
    let urls = cluster.urls();
    let cluster = Arc::new(parking_lot::Mutex::new(cluster));
    let config = CloudConfig::default()
        .with_ack_wait(Duration::from_secs(2))
        .with_replicas(3);
    let steps = Arc::new(AtomicU64::new(0));
    // The cluster elects its JetStream leader a moment after the servers listen.
    let mut first = Err(None);
    let setup = std::time::Instant::now();
    while setup.elapsed() < Duration::from_secs(60) {
        let hub = match tokio::time::timeout(
            Duration::from_secs(5),
            durable_hub(&urls, 3, steps.clone()),
        )
        .await
        {
            Ok(Ok(hub)) => hub,
            Ok(Err(e)) => {
                eprintln!("the cluster cannot make the store yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => continue,
        };
        match CloudRuntime::start(&urls, "a", hub, config.clone()).await {
            Ok(node) => {
                first = Ok(node);
                break;
            }
            Err(e) => {
                first = Err(Some(e));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _a = first.unwrap_or_else(|e| panic!("the cluster never took the deployment: {e:?}"));
    let _b = CloudRuntime::start(
        &urls,
        "b",
        durable_hub(&urls, 3, steps.clone()).await.unwrap(),
        config.clone(),
    )
    .await
    .unwrap();
    let client = Arc::new(CloudClient::connect(&urls, &config).await.unwrap());
    // Ten durable orders, each suspended in its sleep (its checkpoint in the replicated
    // object store) when the server dies.
    let mut orders = BTreeMap::new();
    for n in 0..order_count {
        let inv = Invocation::new("order".parse().unwrap(), n.to_string());
        client.submit(&inv).await.unwrap();
        orders.insert(inv.id, n * 2);
    }
    let count = 300;
    // Server 1 is killed with SIGKILL a third of the way in, and comes back 2 s later.
    let kill = {
        let cluster = cluster.clone();
        move || {
            std::thread::spawn(move || {
                cluster.lock().kill(1);
                std::thread::sleep(Duration::from_secs(2));
                cluster.lock().restart(1);
            });
        }
    };
    let results = workload(client.clone(), count, kill).await;
    assert_eq!(results.len() as u64, count, "calls lost");
    for (n, out) in &results {
        assert_eq!(out, &Bytes::from((n * 2).to_string()));
    }
    // The orders carried on: each finished once, each step ran once.
    for (id, want) in &orders {
        let r = tokio::time::timeout(Duration::from_secs(60), client.result_of(*id))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "order {id} never finished: steps {}, node a {:?}, node b {:?}",
                    steps.load(Ordering::SeqCst),
                    _a.stats(),
                    _b.stats()
                )
            })
            .unwrap();
        assert_eq!(r.outcome.unwrap(), Bytes::from(want.to_string()));
    }
    // Two steps an order. A step whose checkpoint save met the dead server may run again
    // (at least once per step); a checkpointed one never does.
    let ran = steps.load(Ordering::SeqCst);
    let least = 2 * order_count;
    assert!(
        (least..=least + 2).contains(&ran),
        "{ran} steps ran for {order_count} orders of 2"
    );
    let (seen, duplicates) = results_in_stream(&client, count + order_count).await;
    assert_eq!((seen, duplicates), (count + order_count, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_key_keeps_to_its_node_while_it_lives() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let config = CloudConfig::default().with_ack_wait(Duration::from_secs(2));
    let mut nodes = BTreeMap::new();
    for name in ["a", "b"] {
        let node = CloudRuntime::start(
            server.url(),
            name,
            hub("double", 2, Duration::ZERO),
            config.clone(),
        )
        .await
        .unwrap();
        nodes.insert(name.to_owned(), node);
    }
    let client = CloudClient::connect(server.url(), &config).await.unwrap();
    let call = |n: u64, key: Option<&str>| {
        let mut inv = Invocation::new("double".parse().unwrap(), n.to_string());
        inv.context.affinity_key = key.map(str::to_owned);
        let client = &client;
        async move {
            let r = client.call(&inv, Duration::from_secs(30)).await.unwrap();
            assert_eq!(r.outcome.unwrap(), Bytes::from((n * 2).to_string()));
            r.node
        }
    };
    // Calls without a key go to both nodes.
    let mut spread = std::collections::BTreeSet::new();
    for n in 0..40 {
        spread.insert(call(n, None).await);
    }
    assert_eq!(spread.len(), 2, "both nodes take shared work: {spread:?}");
    // With a key: wherever the first call ran, every later one runs too.
    let first = call(0, Some("cart-7")).await;
    for n in 1..30 {
        assert_eq!(
            call(n, Some("cart-7")).await,
            first,
            "call {n} left its node"
        );
    }
    // That node goes, and the client still thinks it lives (it asked under a second
    // ago): the next call goes to its subject, and the other node takes it from there.
    drop(nodes.remove(&first));
    let other = nodes.keys().next().unwrap().clone();
    assert_eq!(call(100, Some("cart-7")).await, other);
    // From then on the key keeps to the node that answered it.
    for n in 101..110 {
        assert_eq!(call(n, Some("cart-7")).await, other);
    }
}
