//! A no-op invocation through `EdgeHub::invoke` (and through the bare scheduler) beside its
//! peer, `tokio::spawn` of the same closure with a oneshot for the result, in the same run.
//!
//! Two groups: on a current-thread runtime (our CPU cost per call, no thread hops) and on a
//! two-worker multi-thread runtime (what an application sees; cross-thread wake-ups
//! dominate and the figures are noisier).
//!
//! ```text
//! cargo bench -p fnhub-benches --bench invoke
//! ```

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::sandbox::InProcessSandbox;
use fnhub::libs::scheduler::Scheduler;
use fnhub::{EdgeHub, Function, FunctionName, FunctionRef, FunctionSpec, Invocation, from_fn};
use tokio::runtime::Runtime;

const OURS: &str = "edge_hub_invoke";
const SCHEDULER: &str = "scheduler_try_submit";
const PEER: &str = "tokio_spawn_oneshot";

fn noop() -> impl Function + Clone {
    from_fn(|inv: Invocation| async move { Ok(inv.payload) })
}

fn group(c: &mut Criterion, group_name: &str, rt: &Runtime) {
    let name = FunctionName::new("noop").expect("name");
    let target = FunctionRef::latest(name.clone());
    let hub = rt.block_on(async {
        EdgeHub::builder()
            .function(FunctionSpec::in_process(name.clone()), noop())
            .build()
            .expect("hub")
    });
    let scheduler = rt.block_on(async {
        let sandbox = InProcessSandbox::new();
        sandbox.register("noop", noop());
        let s = Scheduler::builder()
            .sandbox(Arc::new(sandbox))
            .build()
            .expect("scheduler");
        s.deploy(FunctionSpec::in_process(name.clone()))
            .expect("deploy");
        s
    });
    let peer = noop();

    let mut g = c.benchmark_group(group_name);
    g.bench_function(OURS, |b| {
        b.to_async(rt).iter(|| async {
            hub.invoke(target.clone(), Bytes::new())
                .await
                .expect("admitted")
                .expect("ok")
        })
    });
    g.bench_function(SCHEDULER, |b| {
        b.to_async(rt).iter(|| async {
            let inv = Invocation::new(target.clone(), Bytes::new());
            scheduler
                .try_submit(inv)
                .expect("admitted")
                .await
                .outcome
                .expect("ok")
        })
    });
    g.bench_function(PEER, |b| {
        b.to_async(rt).iter(|| async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let f = peer.clone();
            let inv = Invocation::new(target.clone(), Bytes::new());
            tokio::spawn(async move {
                let _ = tx.send(f.call(inv).await);
            });
            rx.await.expect("sent").expect("ok")
        })
    });
    g.finish();
    rt.block_on(async {
        hub.shutdown().await;
        scheduler.shutdown().await;
    });
    fnhub_benches::print_ratio(group_name, OURS, PEER);
    fnhub_benches::print_ratio(group_name, SCHEDULER, PEER);
}

fn bench(c: &mut Criterion) {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    group(c, "invoke_noop_current_thread", &current);
    let multi = fnhub_benches::runtime(2);
    group(c, "invoke_noop_multi_thread", &multi);
}

fn config() -> Criterion {
    fnhub_benches::criterion(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3),
    )
    .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
