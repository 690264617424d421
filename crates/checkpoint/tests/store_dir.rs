//! The directory store: saves, loads, reopening, leftovers, corruption, group commit.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fnhub_checkpoint::DirStore;
use fnhub_core::{Checkpoint, CheckpointStore, ExecutionId, FunctionName, StoreError, Version};

fn checkpoint(n: u32) -> Checkpoint {
    let mut c = Checkpoint::new(
        ExecutionId::from_u128(u128::from(n) + 1),
        FunctionName::new("f").unwrap(),
        Version::FIRST,
        Bytes::from(format!("input {n}")),
        "hub-a",
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_400_000),
    );
    c.state = Some(Bytes::from(vec![n as u8; 1000]));
    c.context.trace = fnhub_core::TraceParent::from_parts(7, 7, 1).unwrap();
    c
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
