//! The cloud runtime beside raw JetStream, in the same run:
//!
//! - `cloud_runtime_2_nodes`: a client submits invocations of a no-op function into the work
//!   stream, two `CloudRuntime` nodes (in this process, each with its own hub) run them and
//!   publish results, and the client reads every result back.
//! - `raw_jetstream`: the same number of messages published into a work-queue stream
//!   (waiting for each publish acknowledgement, as `submit` does), pulled by one consumer
//!   and acknowledged.
//! - `raw_jetstream_with_results`: the same, with the work ours does per invocation: each
//!   pulled message gets a result published into a stream of results (with a message id,
//!   waiting for its acknowledgement) before it is acknowledged, and the results are read
//!   back through a core subscription.
//! - `cloud_runtime_2_nodes_one_call` beside `raw_jetstream_one`: one call at a time (as
//!   the front door makes them), one message at a time.
//!
//! Each iteration moves a batch; the figure is time per invocation. Target: at least 0.8×
//! raw JetStream's rate. Then the same pair on a three-server JetStream cluster (group
//! `cloud_cluster`), with every stream at three replicas, the deployment's and the peer's.
//! Needs `nats-server` installed; the benchmark starts its own servers.
//!
//! ```text
//! cargo bench -p fnhub-benches --features nats --bench cloud
//! ```

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::cloud::{CloudConfig, CloudRuntime};

#[path = "common/cloud_pair.rs"]
mod cloud_pair;
use cloud_pair::{client, noop_hub, on_leader, raw_peer, side_by_side};

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
    let (nodes, ours, raw) = rt.block_on(async {
        // A cluster elects its JetStream leader a moment after its servers listen.
        let mut first = Err(None);
        for _ in 0..150 {
            match CloudRuntime::start(&url, "a", noop_hub(16), config.clone()).await {
                Ok(node) => {
                    first = Ok(node);
                    break;
                }
                Err(e) => first = Err(Some(e)),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let nodes = (
            first.unwrap_or_else(|e| panic!("node a did not start: {e:?}")),
            CloudRuntime::start(&url, "b", noop_hub(16), config.clone())
                .await
                .expect("node b"),
        );
        (
            nodes,
            client(&url, &config).await,
            raw_peer(&url, replicas).await,
        )
    });
    // On a cluster the peer's time depends on whether its connection landed on its
    // stream's leader (benches/README.md).
    if replicas > 1 {
        let on = rt.block_on(on_leader(&raw.0, "RAW"));
        println!(
            "PLACEMENT raw_jetstream {}",
            if on {
                "on its stream's leader"
            } else {
                "on another server"
            }
        );
    }
    side_by_side(c, &rt, group, "cloud_runtime_2_nodes", ours, raw);
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
