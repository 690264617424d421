//! A no-op invocation through `EdgeHub::invoke` (and through the bare scheduler) beside its
//! peer: `tokio::spawn` of the same closure with a oneshot for the result, in the same run.
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

const GROUP: &str = "invoke_noop";

fn noop() -> impl Function + Clone {
    from_fn(|inv: Invocation| async move { Ok(inv.payload) })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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

    let mut group = c.benchmark_group(GROUP);
    group.bench_function("edge_hub_invoke", |b| {
        b.to_async(&rt).iter(|| async {
            hub.invoke(target.clone(), Bytes::new())
                .await
                .expect("admitted")
                .expect("ok")
        })
    });
    group.bench_function("scheduler_try_submit", |b| {
        b.to_async(&rt).iter(|| async {
            let inv = Invocation::new(target.clone(), Bytes::new());
            scheduler
                .try_submit(inv)
                .expect("admitted")
                .await
                .outcome
                .expect("ok")
        })
    });
    group.bench_function("tokio_spawn_oneshot", |b| {
        b.to_async(&rt).iter(|| async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let f = peer.clone();
            let inv = Invocation::new(target.clone(), Bytes::new());
            tokio::spawn(async move {
                let _ = tx.send(f.call(inv).await);
            });
            rx.await.expect("sent").expect("ok")
        })
    });
    group.finish();
    rt.block_on(async {
        hub.shutdown().await;
        scheduler.shutdown().await;
    });

    fnhub_benches::print_ratio(GROUP, "edge_hub_invoke", "tokio_spawn_oneshot");
    fnhub_benches::print_ratio(GROUP, "scheduler_try_submit", "tokio_spawn_oneshot");
}

fn config() -> Criterion {
    Criterion::default()
        .output_directory(&fnhub_benches::criterion_dir())
        .sample_size(50)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
