//! The durable `Event` queue beside its peers, in the same run:
//!
//! - `durable_submit`: `EdgeHub::submit_event` with an event log (the invocation appended
//!   and synced before it is accepted, then admitted; its end recorded after it ran), for a
//!   no-op native function;
//! - `raw_append_fsync`: the floor of any durable queue: appending the same number of
//!   bytes to a file and `fdatasync`, one per call;
//! - `memory_submit`: `EdgeHub::submit` (the queue in memory only), for scale.
//!
//! Each is measured one call at a time (latency), and 64 calls at once: 64 concurrent
//! `submit_event`s, where the log's group commit shares syncs among them, against 64
//! appends each with its own sync (what a queue without group commit pays).
//!
//! ```text
//! cargo bench -p fnhub-benches --bench events
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, from_fn};

const PAYLOAD: &[u8] = br#"{"device":"dev-1","temperature":21.5}"#;

fn scratch() -> tempfile::TempDir {
    let base = fnhub_benches::criterion_dir();
    std::fs::create_dir_all(&base).expect("dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

fn hub(log: Option<&Path>) -> EdgeHub {
    let mut b = EdgeHub::builder().queue_capacity(100_000).function(
        FunctionSpec::in_process(FunctionName::new("noop").expect("name")),
        from_fn(|_inv: Invocation| async move { Ok(Bytes::new()) }),
    );
    if let Some(dir) = log {
        b = b.event_log(dir);
    }
    b.build().expect("hub")
}

fn invocation() -> Invocation {
    Invocation::new("noop".parse().expect("ref"), Bytes::from_static(PAYLOAD))
}

fn bench(c: &mut Criterion) {
    let rt = fnhub_benches::runtime(2);
    let dir = scratch();
    let durable = rt.block_on(async { hub(Some(&dir.path().join("events"))) });
    let memory = rt.block_on(async { hub(None) });
    let raw = Arc::new(raw_file(dir.path()));
    // An accepted record: the payload and about 150 bytes of id, names and trace.
    let record = vec![7u8; PAYLOAD.len() + 150];

    for (batch, group) in [
        (1usize, "event_accept_one"),
        (64, "event_accept_64_at_once"),
    ] {
        let mut g = c.benchmark_group(group);
        g.bench_function("durable_submit", |b| {
            b.to_async(&rt).iter(|| async {
                if batch == 1 {
                    durable.submit_event(invocation()).await.expect("accepted");
                    return;
                }
                let calls: Vec<_> = (0..batch)
                    .map(|_| {
                        let hub = durable.clone();
                        tokio::spawn(async move { hub.submit_event(invocation()).await })
                    })
                    .collect();
                for call in calls {
                    call.await.expect("task").expect("accepted");
                }
            })
        });
        g.bench_function("raw_append_fsync", |b| {
            b.iter(|| {
                for _ in 0..batch {
                    let mut f = raw.lock().expect("file");
                    f.write_all(&record).expect("write");
                    f.sync_data().expect("sync");
                }
            })
        });
        g.bench_function("memory_submit", |b| {
            b.to_async(&rt).iter(|| async {
                for _ in 0..batch {
                    // Faster than the workers: wait for room when the queue is full.
                    let mut inv = invocation();
                    while let Err(fnhub::SubmitError::Full(back)) = memory.submit(inv) {
                        inv = back;
                        tokio::task::yield_now().await;
                    }
                }
            })
        });
        g.finish();
        fnhub_benches::print_ratio(group, "durable_submit", "raw_append_fsync");
    }
    rt.block_on(async {
        durable.shutdown().await;
        memory.shutdown().await;
    });
}

fn raw_file(dir: &Path) -> std::sync::Mutex<std::fs::File> {
    std::sync::Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("raw.log"))
            .expect("file"),
    )
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(3)).sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
