//! Checkpoints in a JetStream object store, against a nats-server the test starts: a
//! checkpoint saved through one connection loads whole through another (another node),
//! and a damaged object is reported as corrupt, never returned.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod common;

use async_nats::jetstream;
use bytes::Bytes;
use fnhub_checkpoint::nats::{DEFAULT_BUCKET, NatsStore};
use fnhub_core::{Checkpoint, CheckpointStore, ExecutionId, StoreError};

/// Checkpoint `n`, with 300 kB of state: larger than one object-store chunk
/// (128 KiB), so it is written in pieces.
fn checkpoint(n: u32) -> Checkpoint {
    common::checkpoint(n, 300_000)
}

async fn store(url: &str) -> (jetstream::Context, NatsStore) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let store = NatsStore::open(&js, DEFAULT_BUCKET).await.unwrap();
    (js, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_move_between_nodes_whole() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let (_, node_a) = store(server.url()).await;
    let (js_b, node_b) = store(server.url()).await;

    for n in 0..3 {
        node_a.save(&checkpoint(n)).await.unwrap();
    }
    let mut newer = checkpoint(1);
    newer.state = Some(Bytes::from_static(b"newer"));
    node_a.save(&newer).await.unwrap();

    // Another node reads what the first saved.
    // (Compared with `==`: a mismatch would print 300 KB.)
    let loaded = node_b.load(checkpoint(0).execution_id).await.unwrap();
    assert!(loaded == Some(checkpoint(0)), "checkpoint 0 differs");
    let loaded = node_b.load(newer.execution_id).await.unwrap();
    assert!(loaded == Some(newer), "the newer checkpoint 1 differs");
    let mut ids = node_b.list().await.unwrap();
    ids.sort();
    assert_eq!(ids.len(), 3);

    assert!(node_b.remove(checkpoint(2).execution_id).await.unwrap());
    assert!(!node_b.remove(checkpoint(2).execution_id).await.unwrap());
    assert_eq!(node_a.load(checkpoint(2).execution_id).await.unwrap(), None);
    assert_eq!(node_a.list().await.unwrap().len(), 2);

    // Garbage under a checkpoint's name is corrupt, not a checkpoint.
    let bucket = js_b.get_object_store(DEFAULT_BUCKET).await.unwrap();
    let id = ExecutionId::from_u128(999);
    bucket
        .put(id.to_string().as_str(), &mut &b"not a checkpoint"[..])
        .await
        .unwrap();
    assert!(matches!(
        node_a.load(id).await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// A list taken while other checkpoints are saved and removed ends, and holds every
/// checkpoint that stayed (the object store's own list could wait forever for a message
/// that a removal had rolled up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_taken_while_checkpoints_come_and_go_ends_and_holds_what_stays() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let (_, lister) = store(server.url()).await;
    let (_, churner) = store(server.url()).await;
    let stays: Vec<Checkpoint> = (0..5).map(|n| common::checkpoint(n, 64)).collect();
    for cp in &stays {
        lister.save(cp).await.unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cp = common::checkpoint(n, 64);
                churner.save(&cp).await.unwrap();
                churner.remove(cp.execution_id).await.unwrap();
                n += 1;
            }
            n - 100
        }
    });
    for _ in 0..40 {
        let ids = tokio::time::timeout(std::time::Duration::from_secs(20), lister.list())
            .await
            .expect("a list taken while checkpoints are removed never ended")
            .unwrap();
        for cp in &stays {
            assert!(ids.contains(&cp.execution_id), "{ids:?}");
        }
        // Only the staying five, and at most the one checkpoint being churned.
        assert!(ids.len() <= stays.len() + 1, "{ids:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churned = churn.await.unwrap();
    assert!(churned > 0, "nothing was saved and removed while listing");
}
