//! The durable engine beside a bare tokio task, in the same run:
//!
//! - `durable_run_one_step`: an execution of a Rust durable function with one step, from
//!   start to outcome, its checkpoints in a memory store (the journal, the outcome's
//!   delivery, the checkpoint's removal), beside `tokio::spawn` of the same work, awaited;
//! - `durable_stop_waiting`: an execution started and suspended in an hour's sleep, then
//!   stopped (`Engine::stop`: its wait taken out, its outcome delivered, its checkpoint
//!   removed), beside a tokio task that sleeps an hour, aborted and awaited.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench durable_engine
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::checkpoint::MemoryStore;
use fnhub::libs::checkpoint::durable::{
    DurableContext, DurableHost, Engine, RunResult, StopResult, SuspendPolicy, durable_fn,
};
use fnhub::libs::core::{
    BoxFuture, ErrorKind, FunctionError, FunctionName, Invocation, Outcome, SystemClock, Version,
};

struct NoChildren;

impl DurableHost for NoChildren {
    fn invoke(&self, _: Invocation) -> BoxFuture<'static, Outcome> {
        Box::pin(async { Ok(Bytes::new()) })
    }
}

/// The work of the one step: a few bytes made.
async fn work() -> Result<Bytes, FunctionError> {
    Ok(Bytes::from_static(b"done"))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = rt.block_on(async {
        Engine::new(
            "bench",
            Arc::new(MemoryStore::new()),
            Arc::new(NoChildren),
            Arc::new(SystemClock),
            SuspendPolicy::default(),
        )
    });
    engine.register(
        FunctionName::new("one").expect("name"),
        Version::FIRST,
        durable_fn(|ctx: DurableContext, _| async move { ctx.step("work", work).await }),
    );
    engine.register(
        FunctionName::new("sleeper").expect("name"),
        Version::FIRST,
        durable_fn(|ctx: DurableContext, _| async move {
            ctx.sleep("an hour", Duration::from_secs(3600)).await?;
            Ok(Bytes::new())
        }),
    );

    let group = "durable_run_one_step";
    let mut g = c.benchmark_group(group);
    g.bench_function("engine_start", |b| {
        b.to_async(&rt).iter(|| async {
            let inv = Invocation::new("one".parse().expect("ref"), Bytes::new());
            match engine.start(inv, Version::FIRST).await.expect("run") {
                RunResult::Completed(Ok(out)) => assert_eq!(out, "done"),
                other => panic!("{other:?}"),
            }
        })
    });
    g.bench_function("tokio_spawn", |b| {
        b.to_async(&rt).iter(|| async {
            let out = tokio::spawn(work()).await.expect("task").expect("ok");
            assert_eq!(out, "done");
        })
    });
    g.finish();
    fnhub_benches::print_ratio(group, "engine_start", "tokio_spawn");

    let group = "durable_stop_waiting";
    let reason = FunctionError::new(ErrorKind::Cancelled, "stopped");
    let mut g = c.benchmark_group(group);
    g.bench_function("engine_start_then_stop", |b| {
        b.to_async(&rt).iter(|| async {
            let inv = Invocation::new("sleeper".parse().expect("ref"), Bytes::new());
            let id = inv.id.into();
            let run = engine.start(inv, Version::FIRST).await.expect("run");
            assert!(matches!(run, RunResult::Suspended { .. }), "{run:?}");
            let stopped = engine.stop(id, reason.clone()).await.expect("stop");
            assert_eq!(stopped, StopResult::Stopped);
        })
    });
    g.bench_function("tokio_spawn_then_abort", |b| {
        b.to_async(&rt).iter(|| async {
            let task = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
            tokio::task::yield_now().await;
            task.abort();
            assert!(task.await.is_err_and(|e| e.is_cancelled()));
        })
    });
    g.finish();
    fnhub_benches::print_ratio(group, "engine_start_then_stop", "tokio_spawn_then_abort");
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(3)).sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
