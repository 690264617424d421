//! The directory store: saves, loads, reopening, leftovers, corruption, group commit.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bytes::Bytes;
use fnhub_checkpoint::DirStore;
use fnhub_core::{Checkpoint, CheckpointStore, StoreError};

/// Checkpoint `n`.
fn checkpoint(n: u32) -> Checkpoint {
    common::checkpoint(n, 1000)
}

#[tokio::test]
async fn saves_survive_reopening_and_leftovers_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, report) = DirStore::open(dir.path()).unwrap();
        assert_eq!(report.checkpoints, 0);
        for n in 0..5 {
            store.save(&checkpoint(n)).await.unwrap();
        }
        let mut updated = checkpoint(2);
        updated.state = Some(Bytes::from_static(b"newer"));
        store.save(&updated).await.unwrap();
        assert!(store.remove(checkpoint(4).execution_id).await.unwrap());
        assert!(!store.remove(checkpoint(4).execution_id).await.unwrap());
    }
    // An interrupted save leaves a temporary file behind.
    std::fs::write(dir.path().join(".tmp-leftover-1"), b"half a checkpoint").unwrap();
    let (store, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.checkpoints, 4);
    assert_eq!(report.leftovers_removed, 1);
    assert!(!dir.path().join(".tmp-leftover-1").exists());
    assert_eq!(store.list().await.unwrap().len(), 4);
    let loaded = store
        .load(checkpoint(2).execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.state, Some(Bytes::from_static(b"newer")));
    assert_eq!(
        store.load(checkpoint(0).execution_id).await.unwrap(),
        Some(checkpoint(0))
    );
    assert_eq!(store.load(checkpoint(4).execution_id).await.unwrap(), None);
}

#[tokio::test]
async fn corrupt_files_are_refused_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = DirStore::open(dir.path()).unwrap();
    let c = checkpoint(1);
    store.save(&c).await.unwrap();
    let path = dir.path().join(format!("{}.ckpt", c.execution_id));
    let good = std::fs::read(&path).unwrap();

    // A flipped bit in the payload.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        store.load(c.execution_id).await,
        Err(StoreError::Corrupt { .. })
    ));

    // A torn (short) file is reported when the store is opened, and refused on load.
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let (reopened, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.corrupt, vec![path.clone()]);
    assert_eq!(report.checkpoints, 0);
    assert!(matches!(
        reopened.load(c.execution_id).await,
        Err(StoreError::Corrupt { .. })
    ));

    // A file holding another execution's checkpoint.
    let other = fnhub_checkpoint::encode(&checkpoint(2)).unwrap();
    std::fs::write(&path, &other).unwrap();
    assert!(matches!(
        reopened.load(c.execution_id).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = DirStore::open(dir.path()).unwrap();
    let store = std::sync::Arc::new(store);
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.save(&checkpoint(n)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(
        store.commits() < 200,
        "200 overlapping saves took {} commits",
        store.commits()
    );
    for n in 0..200 {
        let c = store
            .load(checkpoint(n).execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.input, checkpoint(n).input);
    }
}

/// A slot file's header as `DirStore` writes it: magic, CRC32C of the envelope's header
/// (less its own CRC) and the sequence number, sequence number.
fn slot_header(seq: u64, envelope: &[u8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(b"FNSL");
    let crc = crc32c::crc32c_append(crc32c::crc32c(&envelope[..24]), &seq.to_le_bytes());
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

fn with_state(n: u32, state: &str) -> Checkpoint {
    let mut c = checkpoint(n);
    c.state = Some(Bytes::from(state.to_owned()));
    c
}

#[tokio::test]
async fn updates_alternate_between_two_slots_in_place() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = DirStore::open(dir.path()).unwrap();
    let id = checkpoint(1).execution_id;
    let first = dir.path().join(format!("{id}.ckpt"));
    let second = dir.path().join(format!("{id}.ckpt.1"));
    store.save(&with_state(1, "v1")).await.unwrap();
    assert!(first.exists() && !second.exists());
    store.save(&with_state(1, "v2")).await.unwrap();
    assert!(second.exists());
    let inodes = (
        std::fs::metadata(&first).unwrap().ino(),
        std::fs::metadata(&second).unwrap().ino(),
    );
    // From now on, saves overwrite the two files in turn: no new file, no rename.
    for v in 3..=6 {
        store.save(&with_state(1, &format!("v{v}"))).await.unwrap();
        let loaded = store.load(id).await.unwrap().unwrap();
        assert_eq!(loaded.state, Some(Bytes::from(format!("v{v}"))));
    }
    assert_eq!(
        (
            std::fs::metadata(&first).unwrap().ino(),
            std::fs::metadata(&second).unwrap().ino(),
        ),
        inodes
    );
    // A shorter checkpoint over a longer one: the old tail is ignored.
    let mut short = with_state(1, "s");
    short.input = Bytes::new();
    store.save(&short).await.unwrap();
    assert_eq!(store.load(id).await.unwrap().unwrap(), short);
    drop(store);
    let (reopened, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.interrupted_overwrites, 0);
    assert_eq!(reopened.load(id).await.unwrap().unwrap(), short);
    assert!(reopened.remove(id).await.unwrap());
    assert!(!first.exists() && !second.exists());
    assert_eq!(reopened.load(id).await.unwrap(), None);
}

#[tokio::test]
async fn a_torn_overwrite_leaves_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let id = checkpoint(1).execution_id;
    {
        let (store, _) = DirStore::open(dir.path()).unwrap();
        store.save(&with_state(1, "v1")).await.unwrap(); // first slot
        store.save(&with_state(1, "v2")).await.unwrap(); // second slot
    }
    // A crash in the middle of the next save, which overwrites the first slot: its header
    // (a newer sequence number) is written, and only half of the checkpoint.
    let first = dir.path().join(format!("{id}.ckpt"));
    let old_first = std::fs::read(&first).unwrap();
    let v3 = fnhub_checkpoint::encode(&with_state(1, "v3")).unwrap();
    let mut torn = slot_header(3, &v3).to_vec();
    torn.extend_from_slice(&v3[..v3.len() / 2]);
    torn.resize(torn.len().max(old_first.len()), 0);
    std::fs::write(&first, &torn).unwrap();
    let (store, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.interrupted_overwrites, 1);
    assert!(report.corrupt.is_empty());
    assert_eq!(
        store.load(id).await.unwrap().unwrap().state,
        Some(Bytes::from_static(b"v2"))
    );
    drop(store);

    // Cut earlier still: the new header over the old checkpoint, whole and valid on its
    // own. The header's checksum binds the number to what follows, so this is torn too.
    let mut stale = slot_header(3, &v3).to_vec();
    stale.extend_from_slice(&old_first[16..]);
    std::fs::write(&first, &stale).unwrap();
    let (store, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.interrupted_overwrites, 1);
    assert_eq!(
        store.load(id).await.unwrap().unwrap().state,
        Some(Bytes::from_static(b"v2"))
    );

    // The next save goes to the torn slot, never over the good one.
    store.save(&with_state(1, "v4")).await.unwrap();
    drop(store);
    let (store, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.interrupted_overwrites, 0);
    assert_eq!(
        store.load(id).await.unwrap().unwrap().state,
        Some(Bytes::from_static(b"v4"))
    );
}

#[tokio::test]
async fn files_of_the_earlier_layout_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_state(1, "old");
    // The envelope alone, as the store wrote it before it had slots.
    std::fs::write(
        dir.path().join(format!("{}.ckpt", c.execution_id)),
        fnhub_checkpoint::encode(&c).unwrap(),
    )
    .unwrap();
    let (store, report) = DirStore::open(dir.path()).unwrap();
    assert_eq!(report.checkpoints, 1);
    assert_eq!(store.load(c.execution_id).await.unwrap().unwrap(), c);
    store.save(&with_state(1, "new")).await.unwrap();
    drop(store);
    let (store, _) = DirStore::open(dir.path()).unwrap();
    assert_eq!(
        store.load(c.execution_id).await.unwrap().unwrap().state,
        Some(Bytes::from_static(b"new"))
    );
}
