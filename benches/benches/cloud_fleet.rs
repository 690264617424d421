//! A hundred cloud runtime nodes on one `nats-server`, for the limits the `fnhub::cloud`
//! docs give for a large deployment: what it costs to start them, what they send while
//! idle, and their end-to-end rate beside raw JetStream's, in the same run.
//!
//! - `fleet_100_nodes`: a client submits invocations of a no-op function, 100 nodes (in
//!   this process, each with its own hub and its own NATS connection) share them through
//!   one consumer, and the client reads every result back.
//! - `raw_jetstream`: the same number of messages published into a work-queue stream,
//!   pulled by one consumer and acknowledged.
//!
//! It also prints `FLEET` lines: the time to start the nodes, and the messages per second
//! the idle fleet sends and receives (pull requests and heartbeats), counted by a
//! subscriber to every subject.
//!
//! ```text
//! cargo bench -p fnhub-benches --features nats --bench cloud_fleet
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::cloud::{CloudClient, CloudConfig, CloudRuntime};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, from_fn};
use futures_util::StreamExt;
use tokio::sync::Mutex;

const NODES: usize = 100;

fn noop_hub() -> EdgeHub {
    EdgeHub::builder()
        .workers(2)
        .function(
            FunctionSpec::in_process(FunctionName::new("noop").expect("name")),
            from_fn(|_inv: Invocation| async move { Ok(Bytes::from_static(b"{}")) }),
        )
        .build()
        .expect("hub")
}

fn bench(c: &mut Criterion) {
    let rt = fnhub_benches::runtime(2);
    let server = fnhub_testkit::NatsServer::start()
        .expect("nats-server is needed: apt-get install nats-server");
    let url = server.url().to_owned();
    let config = CloudConfig::default().with_in_flight(16);
    let (nodes, client, results, raw) = rt.block_on(async {
        let started = Instant::now();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let node = CloudRuntime::start(&url, format!("n{i}"), noop_hub(), config.clone())
                .await
                .expect("node");
            nodes.push(node);
        }
        println!(
            "FLEET start {NODES} nodes: {:.2} s ({:.1} ms a node)",
            started.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64() * 1000.0 / NODES as f64
        );
        // What the idle fleet says: every message on every subject, for five seconds.
        let watcher = async_nats::connect(&url).await.expect("connect");
        let mut all = watcher.subscribe(">").await.expect("subscribe");
        let seen = Arc::new(AtomicU64::new(0));
        let counting = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while all.next().await.is_some() {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        counting.abort();
        let rate = seen.load(Ordering::Relaxed) as f64 / 5.0;
        println!(
            "FLEET idle {NODES} nodes: {rate:.0} messages/s on all subjects ({:.2} a node)",
            rate / NODES as f64
        );
        let client = Arc::new(CloudClient::connect(&url, &config).await.expect("client"));
        let results = client
            .results(Arc::new(AtomicU64::new(0)))
            .await
            .expect("results");
        let js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
        let stream = js
            .get_or_create_stream(stream::Config {
                name: "RAW".into(),
                subjects: vec!["raw.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .expect("stream");
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                "raw",
                consumer::pull::Config {
                    durable_name: Some("raw".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        let messages = consumer.messages().await.expect("messages");
        (
            nodes,
            client,
            Arc::new(Mutex::new(Box::pin(results))),
            (js, Arc::new(Mutex::new(messages))),
        )
    });

    let mut g = c.benchmark_group("cloud_fleet");
    g.sample_size(10);
    g.bench_function("fleet_100_nodes", |b| {
        b.to_async(&rt).iter_custom(|n| {
            let (client, results) = (client.clone(), results.clone());
            async move {
                let mut results = results.lock().await;
                let started = Instant::now();
                let submit = tokio::spawn(async move {
                    for _ in 0..n {
                        let inv = Invocation::new("noop".parse().expect("name"), "{}");
                        client.submit(&inv).await.expect("submit");
                    }
                });
                for _ in 0..n {
                    tokio::time::timeout(Duration::from_secs(60), results.next())
                        .await
                        .expect("a result was lost")
                        .expect("results ended");
                }
                submit.await.expect("submitter");
                started.elapsed()
            }
        })
    });
    g.bench_function("raw_jetstream", |b| {
        b.to_async(&rt).iter_custom(|n| {
            let (js, messages) = (raw.0.clone(), raw.1.clone());
            async move {
                let mut messages = messages.lock().await;
                let started = Instant::now();
                let publish = tokio::spawn(async move {
                    for i in 0..n {
                        js.publish(format!("raw.{i}"), Bytes::from_static(b"{}"))
                            .await
                            .expect("publish")
                            .await
                            .expect("stored");
                    }
                });
                for _ in 0..n {
                    let m = tokio::time::timeout(Duration::from_secs(60), messages.next())
                        .await
                        .expect("a message was lost")
                        .expect("stream ended")
                        .expect("message");
                    m.ack().await.expect("ack");
                }
                publish.await.expect("publisher");
                started.elapsed()
            }
        })
    });
    g.finish();
    fnhub_benches::print_ratio("cloud_fleet", "fleet_100_nodes", "raw_jetstream");
    let ran: Vec<u64> = nodes.iter().map(|n| n.stats().ran).collect();
    let busy = ran.iter().filter(|r| **r > 0).count();
    println!(
        "FLEET spread: {busy} of {NODES} nodes ran work; most {} , least {}",
        ran.iter().max().copied().unwrap_or(0),
        ran.iter().min().copied().unwrap_or(0)
    );
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(2), Duration::from_secs(8))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
