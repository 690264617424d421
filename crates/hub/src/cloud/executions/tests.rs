//! The executions bucket against a real nats-server: fencing and the sweep.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::cloud::{CloudConfig, CloudRuntime};
use crate::{DurableConfig, FunctionName, FunctionSpec, from_fn};

/// Node `a` of the default deployment, whose hub has one durable function `f`.
async fn node_a(server: &fnhub_testkit::NatsServer) -> (EdgeHub, CloudRuntime) {
    let hub = EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("f").unwrap()),
            from_fn(|_| async { Ok(Bytes::new()) }),
        )
        .lambda_durable("f", DurableConfig::default())
        .build()
        .unwrap();
    let node = CloudRuntime::start(server.url(), "a", hub.clone(), CloudConfig::default())
        .await
        .unwrap();
    (hub, node)
}

/// A node whose execution another node claimed (as when it was cut off long enough to
/// be taken for gone) has its next write refused, and lets the execution go; the
/// claim stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_execution_was_claimed_lets_it_go() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let (hub, _node) = node_a(&server).await;
    // Started, not driven: only its writes matter here.
    let (id, _, _) = hub.dex().start("f", 1, "{}".into(), None).unwrap();
    assert!(hub.dex().flushed().await);
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = js.get_key_value("FNHUB_default_EXECUTIONS").await.unwrap();
    let entry = kv.entry(saved_key(&id)).await.unwrap().unwrap();
    let mut saved: Saved = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(saved.node, "a");
    assert_eq!(
        kv.get(running_key(&id)).await.unwrap().as_deref(),
        Some(&b"a"[..])
    );

    // Node b claims it.
    saved.node = "b".into();
    let claimed = Bytes::from(serde_json::to_vec(&saved).unwrap());
    kv.update(saved_key(&id), claimed, entry.revision)
        .await
        .unwrap();

    // A's next change is refused: A lets the execution go, b's claim stands.
    hub.dex().with(&id, |_, _| ((), true));
    assert!(hub.dex().flushed().await);
    assert!(hub.dex().snapshot(&id).is_none(), "a still runs it");
    let now: Saved =
        serde_json::from_slice(&kv.get(saved_key(&id)).await.unwrap().unwrap()).unwrap();
    assert_eq!(now.node, "b");
}

/// The finished executions of a node that is gone are removed once past their
/// retention, with their names; a live node's, and one still retained, are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_executions_of_gone_nodes_go_after_their_retention() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let (hub, node) = node_a(&server).await;
    let (id, _, _) = hub.dex().start("f", 1, "{}".into(), None).unwrap();
    let template = hub.dex().snapshot(&id).unwrap();
    let js = async_nats::jetstream::new(node.client.clone());
    let kv = js.get_key_value("FNHUB_default_EXECUTIONS").await.unwrap();
    // Three finished executions: of a gone node past retention, of a gone node still
    // retained, of the live node `a` past retention.
    let put = |n: u8, node: &str, end_ms: u64| {
        let mut exec = template.clone();
        exec.id = format!("{n:032x}");
        exec.name = format!("name-{n}");
        exec.finish(crate::dex::ExecStatus::Succeeded, end_ms);
        exec.retention_ms = 1_000;
        let saved = Saved {
            node: node.into(),
            exec,
        };
        (
            saved_key(&format!("{n:032x}")),
            Bytes::from(serde_json::to_vec(&saved).unwrap()),
        )
    };
    let now = 1_000_000;
    for (key, value) in [put(1, "gone", 1), put(2, "gone", now - 10), put(3, "a", 1)] {
        kv.put(key, value).await.unwrap();
    }
    kv.put(name_key("f", "name-1"), Bytes::from_static(b"{}"))
        .await
        .unwrap();

    // A handle on the same buckets as node `a`'s.
    let executions = Executions::start(
        &hub,
        kv.clone(),
        js.get_key_value("FNHUB_default_NODES").await.unwrap(),
        node.client.clone(),
        Arc::new(Names::new("default").unwrap()),
        "a".into(),
    )
    .0;
    assert_eq!(executions.sweep_orphans(now).await, 1);
    assert!(
        kv.get(saved_key(&format!("{:032x}", 1)))
            .await
            .unwrap()
            .is_none()
    );
    assert!(kv.get(name_key("f", "name-1")).await.unwrap().is_none());
    for n in [2u8, 3] {
        assert!(
            kv.get(saved_key(&format!("{n:032x}")))
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// A checkpoint store whose listing waits until it is let go: a hub built on it takes up
/// its executions only then.
struct Gated {
    inner: Arc<fnhub_checkpoint::MemoryStore>,
    open: tokio::sync::watch::Receiver<bool>,
}

impl fnhub_core::CheckpointStore for Gated {
    fn save<'a>(
        &'a self,
        cp: &'a fnhub_core::Checkpoint,
    ) -> fnhub_core::BoxFuture<'a, Result<(), fnhub_core::StoreError>> {
        self.inner.save(cp)
    }
    fn load(
        &self,
        id: fnhub_core::ExecutionId,
    ) -> fnhub_core::BoxFuture<'_, Result<Option<fnhub_core::Checkpoint>, fnhub_core::StoreError>>
    {
        self.inner.load(id)
    }
    fn remove(
        &self,
        id: fnhub_core::ExecutionId,
    ) -> fnhub_core::BoxFuture<'_, Result<bool, fnhub_core::StoreError>> {
        self.inner.remove(id)
    }
    fn list(
        &self,
    ) -> fnhub_core::BoxFuture<'_, Result<Vec<fnhub_core::ExecutionId>, fnhub_core::StoreError>>
    {
        let mut open = self.open.clone();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            self.inner.list().await
        })
    }
}

/// A node started again under its name, on its checkpoint store, after another (live)
/// node took up one of its executions, lets that one go without invoking its function
/// again and leaves the claim standing, and drives its other one; also when the store
/// gives up what it holds only after the node has begun to start (the claim waits for the
/// hub to take its executions up, and their drivers wait for the claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_again_lets_go_of_what_another_node_took_up() {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        return;
    };
    let store = Arc::new(fnhub_checkpoint::MemoryStore::new());
    // Every payload `f` is invoked with (a durable invocation names its execution's ARN).
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let hub_on = |store: Arc<dyn fnhub_core::CheckpointStore>| {
        let seen = seen.clone();
        EdgeHub::builder()
            .name("a")
            .hold_lambda_drivers()
            .function(
                FunctionSpec::in_process(FunctionName::new("f").unwrap()),
                from_fn(move |inv: fnhub_core::Invocation| {
                    seen.lock()
                        .push(String::from_utf8_lossy(&inv.payload).into_owned());
                    async { Ok(Bytes::new()) }
                }),
            )
            .lambda_durable("f", DurableConfig::default())
            .checkpoint_store(store)
            .build()
            .unwrap()
    };
    // Node a starts two executions (not driven: only where they are kept matters), and
    // goes.
    let first = hub_on(store.clone());
    let node = CloudRuntime::start(server.url(), "a", first.clone(), CloudConfig::default())
        .await
        .unwrap();
    let (id, _, _) = first.dex().start("f", 1, "{}".into(), None).unwrap();
    let (mine, _, _) = first.dex().start("f", 1, "{}".into(), None).unwrap();
    assert!(first.dex().flushed().await);
    drop(node);
    drop(first);

    // Node b, alive, claims the first in the bucket.
    let other = EdgeHub::builder().name("b").build().unwrap();
    let _b = CloudRuntime::start(server.url(), "b", other, CloudConfig::default())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = js.get_key_value("FNHUB_default_EXECUTIONS").await.unwrap();
    let entry = kv.entry(saved_key(&id)).await.unwrap().unwrap();
    let mut saved: Saved = serde_json::from_slice(&entry.value).unwrap();
    saved.node = "b".into();
    kv.update(
        saved_key(&id),
        Bytes::from(serde_json::to_vec(&saved).unwrap()),
        entry.revision,
    )
    .await
    .unwrap();

    // Node a again, on its store, which holds the execution back for a moment.
    let (open, gate) = tokio::sync::watch::channel(false);
    let again = hub_on(Arc::new(Gated {
        inner: store.clone(),
        open: gate,
    }));
    let (url, hub) = (server.url().to_owned(), again.clone());
    let start =
        tokio::spawn(
            async move { CloudRuntime::start(&url, "a", hub, CloudConfig::default()).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    open.send_replace(true);
    let _node = start.await.unwrap().unwrap();
    assert!(
        again.dex().snapshot(&id).is_none(),
        "a took up an execution b runs now"
    );
    let now: Saved =
        serde_json::from_slice(&kv.get(saved_key(&id)).await.unwrap().unwrap()).unwrap();
    assert_eq!(now.node, "b");
    // Its own execution is driven again: `f` is invoked for it, never for b's.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.lock().iter().any(|p| p.contains(&mine)) {
        assert!(
            std::time::Instant::now() < until,
            "a's own execution was not driven"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !seen.lock().iter().any(|p| p.contains(&id)),
        "f was invoked for the execution b runs now"
    );
}
