//! What the cloud benchmarks share: a client reading every result, raw JetStream as the
//! peer, and the two measured side by side in one group.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use criterion::Criterion;
use fnhub::cloud::{CloudClient, CloudConfig, CloudResult};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, from_fn};
use futures_util::{Stream, StreamExt};
use tokio::sync::Mutex;

/// The message ids of the peer's results.
static RESULT_IDS: AtomicU64 = AtomicU64::new(0);

type Results = Arc<Mutex<Pin<Box<dyn Stream<Item = CloudResult> + Send>>>>;
type RawMessages = Arc<Mutex<consumer::pull::Stream>>;

/// A hub with one no-op function, `noop`, on `workers` workers.
pub(crate) fn noop_hub(workers: usize) -> EdgeHub {
    EdgeHub::builder()
        .workers(workers)
        .function(
            FunctionSpec::in_process(FunctionName::new("noop").expect("name")),
            from_fn(|_inv: Invocation| async move { Ok(Bytes::from_static(b"{}")) }),
        )
        .build()
        .expect("hub")
}

/// The client of the deployment at `url` and every result it will see.
pub(crate) async fn client(url: &str, config: &CloudConfig) -> (Arc<CloudClient>, Results) {
    let client = Arc::new(CloudClient::connect(url, config).await.expect("client"));
    let results = client
        .results(Arc::new(AtomicU64::new(0)))
        .await
        .expect("results");
    let results: Pin<Box<dyn Stream<Item = CloudResult> + Send>> = Box::pin(results);
    (client, Arc::new(Mutex::new(results)))
}

/// The peer: a work-queue stream of its own at `replicas` copies, and one pull consumer.
pub(crate) async fn raw_peer(url: &str, replicas: usize) -> (jetstream::Context, RawMessages) {
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
    js.get_or_create_stream(stream::Config {
        name: "RAWRES".into(),
        subjects: vec!["rawres.>".into()],
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .expect("results stream");
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
    (js, Arc::new(Mutex::new(messages)))
}

/// Whether the connection of `js` is on the server that leads `stream` (always, off a
/// cluster): on a cluster a stored publish from another server crosses a route twice.
#[allow(dead_code)] // `cloud_fleet` runs on one server
pub(crate) async fn on_leader(js: &jetstream::Context, stream: &str) -> bool {
    let mut stream = js.get_stream(stream).await.expect("stream");
    let info = stream.info().await.expect("stream info");
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .is_none_or(|leader| leader == js.client().server_info().server_name)
}

/// Group `group`: `ours` (no-op invocations submitted one after another, every result
/// read back) beside `raw_jetstream` (as many messages published, pulled and acknowledged)
/// and `raw_jetstream_with_results` (the same, each message handing back a stored result
/// before its acknowledgement, as ours does), and `{ours}_one_call` (one call at a time,
/// as the front door makes them) beside `raw_jetstream_one` (one message at a time), then
/// their ratios.
pub(crate) fn side_by_side(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    ours: &str,
    (client, results): (Arc<CloudClient>, Results),
    (js, messages): (jetstream::Context, RawMessages),
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.bench_function(ours, |b| {
        b.to_async(rt).iter_custom(|n| {
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
        b.to_async(rt).iter_custom(|n| {
            let (js, messages) = (js.clone(), messages.clone());
            async move {
                let mut messages = messages.lock().await;
                let started = Instant::now();
                let publish = publish_all(js, n);
                for _ in 0..n {
                    let m = next_raw(&mut messages).await;
                    m.ack().await.expect("ack");
                }
                publish.await.expect("publisher");
                started.elapsed()
            }
        })
    });
    // Raw JetStream doing ours' work per invocation: each message pulled, a result
    // published for it into a stream of results (stored, with a message id) and only then
    // acknowledged; the results read back through a core subscription.
    g.bench_function("raw_jetstream_with_results", |b| {
        b.to_async(rt).iter_custom(|n| {
            let (js, messages) = (js.clone(), messages.clone());
            async move {
                let mut messages = messages.lock().await;
                let mut results = js.client().subscribe("rawres.>").await.expect("subscribe");
                let started = Instant::now();
                let publish = publish_all(js.clone(), n);
                let worker = js.clone();
                let work = async move {
                    for i in 0..n {
                        let m = next_raw(&mut messages).await;
                        let mut headers = async_nats::HeaderMap::new();
                        // Unique over the whole run, so that no result is dropped as a
                        // duplicate (which the server would not store).
                        let unique = RESULT_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        headers.insert("Nats-Msg-Id", format!("r{unique}").as_str());
                        worker
                            .publish_with_headers(format!("rawres.{i}"), headers, m.payload.clone())
                            .await
                            .expect("result")
                            .await
                            .expect("result stored");
                        m.ack().await.expect("ack");
                    }
                };
                let read = async move {
                    for _ in 0..n {
                        tokio::time::timeout(Duration::from_secs(60), results.next())
                            .await
                            .expect("a result was lost")
                            .expect("results ended");
                    }
                };
                tokio::join!(work, read);
                publish.await.expect("publisher");
                started.elapsed()
            }
        })
    });
    // One at a time: the latency of a call (submitted, run, its result back) beside one
    // message published, delivered and acknowledged.
    let one = format!("{ours}_one_call");
    g.bench_function(&one, |b| {
        b.to_async(rt).iter_custom(|n| {
            let client = client.clone();
            async move {
                let started = Instant::now();
                for _ in 0..n {
                    let inv = Invocation::new("noop".parse().expect("name"), "{}");
                    client
                        .call(&inv, Duration::from_secs(60))
                        .await
                        .expect("a call failed");
                }
                started.elapsed()
            }
        })
    });
    g.bench_function("raw_jetstream_one", |b| {
        b.to_async(rt).iter_custom(|n| {
            let (js, messages) = (js.clone(), messages.clone());
            async move {
                let mut messages = messages.lock().await;
                let started = Instant::now();
                for i in 0..n {
                    publish_raw(&js, i).await;
                    let m = next_raw(&mut messages).await;
                    m.ack().await.expect("ack");
                }
                started.elapsed()
            }
        })
    });
    g.finish();
    fnhub_benches::print_ratio(group, ours, "raw_jetstream");
    fnhub_benches::print_ratio(group, &one, "raw_jetstream_one");
    fnhub_benches::print_ratio(group, ours, "raw_jetstream_with_results");
}

/// Publishes message `i` of the peer, waiting until it is stored.
async fn publish_raw(js: &jetstream::Context, i: u64) {
    js.publish(format!("raw.{i}"), Bytes::from_static(b"{}"))
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// Publishes `n` messages of the peer one after another, on a task of their own.
fn publish_all(js: jetstream::Context, n: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            publish_raw(&js, i).await;
        }
    })
}

/// The peer's next message (within a minute).
async fn next_raw(messages: &mut consumer::pull::Stream) -> jetstream::Message {
    tokio::time::timeout(Duration::from_secs(60), messages.next())
        .await
        .expect("a message was lost")
        .expect("stream ended")
        .expect("message")
}
