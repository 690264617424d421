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

use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::cloud::{CloudConfig, CloudRuntime};
use futures_util::StreamExt;

#[path = "common/cloud_pair.rs"]
mod cloud_pair;
use cloud_pair::{client, noop_hub, raw_peer, side_by_side};

const NODES: usize = 100;

fn bench(c: &mut Criterion) {
    let rt = fnhub_benches::runtime(2);
    let server = fnhub_testkit::NatsServer::start()
        .expect("nats-server is needed: apt-get install nats-server");
    let url = server.url().to_owned();
    let config = CloudConfig::default().with_in_flight(16);
    let (nodes, ours, raw) = rt.block_on(async {
        let started = Instant::now();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let node = CloudRuntime::start(&url, format!("n{i}"), noop_hub(2), config.clone())
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
        (nodes, client(&url, &config).await, raw_peer(&url, 1).await)
    });
    side_by_side(c, &rt, "cloud_fleet", "fleet_100_nodes", ours, raw);
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
