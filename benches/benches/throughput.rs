//! Many no-op invocations through the scheduler and the in-process sandbox, beside
//! `tokio::spawn` + oneshot of the same closure, on the same runtime (2 worker threads) with
//! the same number of calls in flight (256). Criterion runs well over a million calls per
//! path. After the timing, a counting allocator measures heap allocations per call on both
//! paths.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench throughput
//! ```

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::sandbox::InProcessSandbox;
use fnhub::libs::scheduler::{Scheduler, Ticket};
use fnhub::{Function, FunctionName, FunctionRef, FunctionSpec, Invocation, from_fn};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const GROUP: &str = "noop_throughput";
const OURS: &str = "scheduler_in_process";
const PEER: &str = "tokio_spawn_oneshot";
const IN_FLIGHT: u64 = 256;
const THREADS: usize = 2;

fn noop() -> impl Function + Clone {
    from_fn(|inv: Invocation| async move { Ok(inv.payload) })
}

struct Setup {
    rt: Runtime,
    scheduler: Scheduler,
    target: FunctionRef,
}

fn setup() -> Setup {
    let rt = fnhub_benches::runtime(THREADS);
    let name = FunctionName::new("noop").expect("name");
    let scheduler = rt.block_on(async {
        let sandbox = InProcessSandbox::new();
        sandbox.register("noop", noop());
        let s = Scheduler::builder()
            .workers(THREADS)
            .queue_capacity(IN_FLIGHT as usize)
            .sandbox(Arc::new(sandbox))
            .build()
            .expect("scheduler");
        s.deploy(FunctionSpec::in_process(name.clone()))
            .expect("deploy");
        s
    });
    Setup {
        rt,
        scheduler,
        target: FunctionRef::latest(name),
    }
}

/// `n` calls through the scheduler, `IN_FLIGHT` at a time.
async fn ours(s: &Scheduler, target: &FunctionRef, n: u64, tickets: &mut Vec<Ticket>) {
    let mut done = 0;
    while done < n {
        let batch = IN_FLIGHT.min(n - done);
        for _ in 0..batch {
            let inv = Invocation::new(target.clone(), Bytes::new());
            tickets.push(s.try_submit(inv).expect("admitted"));
        }
        for t in tickets.drain(..) {
            t.await.outcome.expect("ok");
        }
        done += batch;
    }
}

type Pending = oneshot::Receiver<fnhub::Outcome>;

/// `n` calls of the same closure by `tokio::spawn` + oneshot, `IN_FLIGHT` at a time.
async fn peer<F: Function + Clone>(
    f: &F,
    target: &FunctionRef,
    n: u64,
    pending: &mut Vec<Pending>,
) {
    let mut done = 0;
    while done < n {
        let batch = IN_FLIGHT.min(n - done);
        for _ in 0..batch {
            let (tx, rx) = oneshot::channel();
            let f = f.clone();
            let inv = Invocation::new(target.clone(), Bytes::new());
            tokio::spawn(async move {
                let _ = tx.send(f.call(inv).await);
            });
            pending.push(rx);
        }
        for rx in pending.drain(..) {
            rx.await.expect("sent").expect("ok");
        }
        done += batch;
    }
}

fn bench(c: &mut Criterion) {
    let Setup {
        rt,
        scheduler,
        target,
    } = setup();
    let f = noop();
    let mut g = c.benchmark_group(GROUP);
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function(OURS, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut tickets = Vec::with_capacity(IN_FLIGHT as usize);
                let start = Instant::now();
                ours(&scheduler, &target, iters, &mut tickets).await;
                start.elapsed()
            })
        })
    });
    g.bench_function(PEER, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut pending = Vec::with_capacity(IN_FLIGHT as usize);
                let start = Instant::now();
                peer(&f, &target, iters, &mut pending).await;
                start.elapsed()
            })
        })
    });
    g.finish();
    fnhub_benches::print_ratio(GROUP, OURS, PEER);

    // Allocations per call, counted over 100 000 calls of each path after a warm-up.
    const N: u64 = 100_000;
    let (ours_allocs, peer_allocs) = rt.block_on(async {
        let mut tickets = Vec::with_capacity(IN_FLIGHT as usize);
        let mut pending = Vec::with_capacity(IN_FLIGHT as usize);
        ours(&scheduler, &target, N, &mut tickets).await;
        peer(&f, &target, N, &mut pending).await;
        let region = Region::new(GLOBAL);
        ours(&scheduler, &target, N, &mut tickets).await;
        let a = region.change().allocations;
        let region = Region::new(GLOBAL);
        peer(&f, &target, N, &mut pending).await;
        let b = region.change().allocations;
        (a, b)
    });
    let (a, b) = (ours_allocs as f64 / N as f64, peer_allocs as f64 / N as f64);
    println!(
        "ALLOCS {GROUP}: {OURS} {a:.2} per call / {PEER} {b:.2} per call = {:.2}x",
        a / b
    );
    rt.block_on(scheduler.shutdown());
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(4)).sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
