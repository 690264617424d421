//! The cloud runtime beside raw JetStream, in the same run:
//!
//! - `cloud_runtime_2_nodes`: a client submits invocations of a no-op function into the work
//!   stream, two `CloudRuntime` nodes (in this process, each with its own hub) run them and
//!   publish results, and the client reads every result back.
//! - `raw_jetstream`: the same number of messages published into a work-queue stream
//!   (waiting for each publish acknowledgement, as `submit` does), pulled by one consumer
//!   and acknowledged.
//!
//! Each iteration moves a batch; the figure is time per invocation. Target: at least 0.8×
//! raw JetStream's rate. Then the same pair on a three-server JetStream cluster (group
//! `cloud_cluster`), with every stream at three replicas, the deployment's and the peer's.
//! Needs `nats-server` installed; the benchmark starts its own servers.
//!
//! ```text
//! cargo bench -p fnhub-benches --features nats --bench cloud
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::cloud::{CloudClient, CloudConfig, CloudRuntime};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, from_fn};
use futures_util::StreamExt;
use tokio::sync::Mutex;

fn noop_hub() -> EdgeHub {
    EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("noop").expect("name")),
            from_fn(|_inv: Invocation| async move { Ok(Bytes::from_static(b"{}")) }),
        )
        .build()
        .expect("hub")
}

fn bench(c: &mut Criterion) {
    let server = fnhub_testkit::NatsServer::start()
        .expect("nats-server is needed: apt-get install nats-server");
    pair(c, "cloud", server.url(), 1);
    drop(server);
    let cluster = fnhub_testkit::NatsCluster::start(3)
        .expect("nats-server is needed: apt-get install nats-server");
    pair(c, "cloud_cluster", &cluster.urls(), 3);
}

/// The cloud runtime (two nodes) and raw JetStream on the servers at `url`, with streams of
/// `replicas` copies, as benchmark group `group`.
fn pair(c: &mut Criterion, group: &str, url: &str, replicas: usize) {
    let rt = fnhub_benches::runtime(2);
    let url = url.to_owned();
    let config = CloudConfig::default().with_replicas(replicas);
    let (nodes, client, results, raw) = rt.block_on(async {
        // A cluster elects its JetStream leader a moment after its servers listen.
        let mut first = None;
        for _ in 0..150 {
            if let Ok(node) = CloudRuntime::start(&url, "a", noop_hub(), config.clone()).await {
                first = Some(node);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let nodes = (
            first.expect("node a"),
            CloudRuntime::start(&url, "b", noop_hub(), config.clone())
                .await
                .expect("node b"),
        );
        let client = Arc::new(CloudClient::connect(&url, &config).await.expect("client"));
        let results = client
            .results(Arc::new(AtomicU64::new(0)))
            .await
            .expect("results");
        // The peer: a work-queue stream of its own, one pull consumer.
        let servers: Vec<&str> = url.split(',').collect();
        let js = jetstream::new(async_nats::connect(servers).await.expect("connect"));
        let stream = js
            .get_or_create_stream(stream::Config {
                name: "RAW".into(),
                subjects: vec!["raw.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: replicas,
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

    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function("cloud_runtime_2_nodes", |b| {
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
    fnhub_benches::print_ratio(group, "cloud_runtime_2_nodes", "raw_jetstream");
    println!(
        "NODES ran {} + {}",
        nodes.0.stats().ran,
        nodes.1.stats().ran
    );
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(2), Duration::from_secs(8))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
