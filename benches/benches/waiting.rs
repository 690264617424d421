//! What a waiting durable execution costs a hub, in memory held, beside the least a task per
//! waiting execution costs.
//!
//! - Lambda kind: executions of an in-process function declared Lambda-durable that answers
//!   `PENDING` without a checkpoint, so each waits (for its timeout) after one invocation.
//! - Engine kind: executions of a Rust durable function suspended in an hour's sleep, their
//!   checkpoints in the hub's memory store.
//! - Peer: a tokio task per waiting thing, each sleeping a day (what a design with a task
//!   per waiting execution pays at the least, before any state of its own).
//!
//! Bytes held are counted by an instrumented allocator (`stats_alloc`): allocated minus
//! freed, from before the first start until all wait. Not a criterion benchmark: it counts
//! bytes, not time.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench waiting
//! ```

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub::{
    DurableConfig, DurableContext, EdgeHub, FunctionName, FunctionSpec, Invocation, durable_fn,
    from_fn,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Executions (and peer tasks) per measurement.
const N: usize = 10_000;

/// Bytes held now beyond what was held when `region` began.
fn held(region: &Region<'_, System>) -> f64 {
    let change = region.change();
    change.bytes_allocated as f64 - change.bytes_deallocated as f64
}

/// Waits until `done` says so, at most a minute.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never happened");
}

async fn lambda_kind() -> f64 {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let hub = EdgeHub::builder()
        .queue_capacity(N + 16)
        .function(
            FunctionSpec::in_process(FunctionName::new("idle").expect("name")),
            from_fn(move |_inv: Invocation| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(Bytes::from_static(br#"{"Status":"PENDING"}"#)) }
            }),
        )
        .lambda_durable("idle", DurableConfig::default())
        .build()
        .expect("hub");
    // One first, so that what every hub allocates once is not counted.
    hub.start_durable("idle", "{}", None).await.expect("start");
    until("the first invocation", || calls.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let region = Region::new(GLOBAL);
    let mut started = Vec::with_capacity(N);
    for _ in 0..N {
        started.push(hub.start_durable("idle", "{}", None).await.expect("start"));
    }
    until("every invocation", || calls.load(Ordering::SeqCst) == N + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = held(&region) / N as f64;
    drop(started);
    hub.shutdown().await;
    bytes
}

async fn engine_kind() -> f64 {
    let hub = EdgeHub::builder()
        .queue_capacity(N + 16)
        .durable(
            FunctionSpec::in_process(FunctionName::new("nap").expect("name")),
            durable_fn(|ctx: DurableContext, _input: Bytes| async move {
                ctx.sleep("nap", Duration::from_secs(3600)).await?;
                Ok(Bytes::new())
            }),
        )
        .build()
        .expect("hub");
    let start = || hub.call(Invocation::new("nap".parse().expect("ref"), ""));
    start().await.expect("first");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        let reply = start().await.expect("admitted").outcome.expect("suspended");
        assert!(reply.is_empty(), "it suspends");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = held(&region) / N as f64;
    hub.shutdown().await;
    bytes
}

async fn peer() -> f64 {
    let region = Region::new(GLOBAL);
    let tasks: Vec<_> = (0..N)
        .map(|_| tokio::spawn(tokio::time::sleep(Duration::from_secs(86_400))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = held(&region) / N as f64;
    for task in tasks {
        task.abort();
    }
    bytes
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = fnhub_benches::runtime(2);
    let (lambda, engine, task) = rt.block_on(async {
        let task = peer().await;
        let lambda = lambda_kind().await;
        let engine = engine_kind().await;
        (lambda, engine, task)
    });
    println!("waiting: bytes held per waiting execution, {N} of each");
    println!("  lambda execution (PENDING, waiting)     {lambda:>9.0} B");
    println!("  engine execution (suspended in a sleep) {engine:>9.0} B");
    println!("  peer: a tokio task sleeping             {task:>9.0} B");
    println!(
        "  ratios: lambda / task {:.2}x, engine / task {:.2}x",
        lambda / task,
        engine / task
    );
}
