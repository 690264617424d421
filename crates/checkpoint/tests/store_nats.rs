//! Checkpoints in a JetStream object store, against a nats-server the test starts: a
//! checkpoint saved through one connection loads whole through another (another node),
//! and a damaged object is reported as corrupt, never returned.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use bytes::Bytes;
use fnhub_checkpoint::nats::{DEFAULT_BUCKET, NatsStore};
use fnhub_core::{Checkpoint, CheckpointStore, ExecutionId, FunctionName, StoreError, Version};

struct Server(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `nats-server -js` on a free port and its URL; `None` when it is not installed (a
/// failure under `CI=true`).
fn server() -> Option<(Server, String)> {
    let Some(program) = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is required under CI"
        );
        eprintln!("skipping: nats-server is not installed");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(program)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Server(child, dir), format!("nats://127.0.0.1:{port}")))
}

fn checkpoint(n: u32) -> Checkpoint {
    let mut c = Checkpoint::new(
        ExecutionId::from_u128(u128::from(n) + 1),
        FunctionName::new("f").unwrap(),
        Version::FIRST,
        Bytes::from(format!("input {n}")),
        "hub-a",
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_400_000),
    );
    // Larger than one object-store chunk (128 KiB), so it is written in pieces.
    c.state = Some(Bytes::from(vec![n as u8; 300_000]));
    c.context.trace = fnhub_core::TraceParent::from_parts(7, 7, 1).unwrap();
    c
}

async fn store(url: &str) -> (jetstream::Context, NatsStore) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let store = NatsStore::open(&js, DEFAULT_BUCKET).await.unwrap();
    (js, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_move_between_nodes_whole() {
    let Some((_server, url)) = server() else {
        return;
    };
    let (_, node_a) = store(&url).await;
    let (js_b, node_b) = store(&url).await;

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
