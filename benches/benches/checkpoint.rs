//! Checkpoint format and store, each beside its peer in the same run:
//! - save + load of a 1 MiB checkpoint with `DirStore` vs raw `write` + `fdatasync` + read
//!   of the same bytes (and vs the floor: overwriting them in place);
//! - 64 overlapping saves with group commit vs one fsync per save;
//! - encode/decode vs plain postcard of the same struct.
//!
//! The files live under `$CARGO_TARGET_DIR` (a real disk), not `/tmp`.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench checkpoint
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::checkpoint::{DirStore, decode, encode};
use fnhub::{Checkpoint, CheckpointStore, ExecutionId, FunctionName, Version};

fn checkpoint(id: u128, state: usize, seed: u64) -> Checkpoint {
    let mut c = Checkpoint::new(
        ExecutionId::from_u128(id),
        FunctionName::new("bench").expect("name"),
        Version::FIRST,
        Bytes::from_static(b"input"),
        "hub",
        SystemTime::UNIX_EPOCH,
    );
    // Incompressible state: the worst case for the format (LZ4 is tried and skipped).
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..state)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    c.state = Some(Bytes::from(bytes));
    c
}

fn scratch() -> tempfile::TempDir {
    let base = fnhub_benches::criterion_dir().join("scratch");
    fs::create_dir_all(&base).expect("scratch dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// The peer of a save + load: write the bytes to `name`, fdatasync, read back. With
/// `truncate`, the file is truncated and rewritten, as a plain program would. Without it,
/// the same bytes are overwritten in place (no block is allocated again): the cheapest
/// durable write there is, and not crash-safe on its own (a torn write loses the old bytes
/// too), so it is the floor that `DirStore`'s slots approach.
fn raw_save_load(dir: &Path, name: &str, truncate: bool, bytes: &[u8]) {
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(&path)
        .expect("open");
    f.write_all(bytes).expect("write");
    f.sync_data().expect("fdatasync");
    let back = fs::read(&path).expect("read");
    assert_eq!(back.len(), bytes.len());
}

/// The peer of group commit: each save on its own, as durable as DirStore's (temporary
/// file, fdatasync, rename, directory fsync).
fn one_fsync_per_save(dir: &Path, saves: &[Bytes]) {
    for (i, bytes) in saves.iter().enumerate() {
        let temp = dir.join(format!(".tmp-{i}"));
        let mut f = File::create(&temp).expect("create");
        f.write_all(bytes).expect("write");
        f.sync_data().expect("fdatasync");
        fs::rename(&temp, dir.join(format!("{i}.bin"))).expect("rename");
        File::open(dir).expect("dir").sync_all().expect("dir fsync");
    }
}

fn bench(c: &mut Criterion) {
    let rt = fnhub_benches::runtime(2);

    // 1. Save + load of 1 MiB.
    let big = checkpoint(1, 1 << 20, 7);
    let big_bytes = encode(&big).expect("encode");
    let dir = scratch();
    let (store, _) = DirStore::open(dir.path()).expect("store");
    let raw_dir = scratch();
    let mut g = c.benchmark_group("checkpoint_1mib_save_load");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("dirstore", |b| {
        b.to_async(&rt).iter(|| async {
            store.save(&big).await.expect("save");
            store
                .load(big.execution_id)
                .await
                .expect("load")
                .expect("present")
        })
    });
    g.bench_function("raw_write_fdatasync_read", |b| {
        b.iter(|| raw_save_load(raw_dir.path(), "raw.bin", true, &big_bytes))
    });
    g.bench_function("raw_overwrite_fdatasync_read", |b| {
        b.iter(|| raw_save_load(raw_dir.path(), "inplace.bin", false, &big_bytes))
    });
    g.finish();
    fnhub_benches::print_ratio(
        "checkpoint_1mib_save_load",
        "dirstore",
        "raw_write_fdatasync_read",
    );
    fnhub_benches::print_ratio(
        "checkpoint_1mib_save_load",
        "dirstore",
        "raw_overwrite_fdatasync_read",
    );

    // 2. 64 overlapping saves of 4 KiB: group commit vs one fsync each.
    let small: Vec<Checkpoint> = (0..64)
        .map(|i| checkpoint(100 + i, 4096, i as u64))
        .collect();
    let small_bytes: Vec<Bytes> = small.iter().map(|c| encode(c).expect("encode")).collect();
    let store = Arc::new(store);
    let peer_dir = scratch();
    let mut g = c.benchmark_group("checkpoint_64_saves");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("dirstore_group_commit", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            let small = small.clone();
            async move {
                let tasks: Vec<_> = small
                    .into_iter()
                    .map(|c| {
                        let store = store.clone();
                        tokio::spawn(async move { store.save(&c).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("join").expect("save");
                }
            }
        })
    });
    g.bench_function("one_fsync_per_save", |b| {
        b.iter(|| one_fsync_per_save(peer_dir.path(), &small_bytes))
    });
    g.finish();
    fnhub_benches::print_ratio(
        "checkpoint_64_saves",
        "dirstore_group_commit",
        "one_fsync_per_save",
    );

    // 3. Encode and decode of a 64 KiB checkpoint vs plain postcard of the core struct.
    let mid = checkpoint(2, 64 * 1024, 3);
    let mid_bytes = encode(&mid).expect("encode");
    let plain = postcard::to_stdvec(&mid).expect("postcard");
    let mut g = c.benchmark_group("checkpoint_64kib_codec");
    g.bench_function("fnhub_encode", |b| b.iter(|| encode(&mid).expect("encode")));
    g.bench_function("postcard_encode", |b| {
        b.iter(|| postcard::to_stdvec(&mid).expect("postcard"))
    });
    g.bench_function("fnhub_decode", |b| {
        b.iter(|| decode(&mid_bytes).expect("decode"))
    });
    g.bench_function("postcard_decode", |b| {
        b.iter(|| postcard::from_bytes::<Checkpoint>(&plain).expect("postcard"))
    });
    g.finish();
    fnhub_benches::print_ratio("checkpoint_64kib_codec", "fnhub_encode", "postcard_encode");
    fnhub_benches::print_ratio("checkpoint_64kib_codec", "fnhub_decode", "postcard_decode");
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
