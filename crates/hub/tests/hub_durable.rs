//! Durable executions on edge hubs: suspended on one hub, moved, finished on another.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use fnhub::{
    DurableContext, EdgeHub, EngineError, Event, EventSource, ExecutionId, FunctionName,
    FunctionSpec, durable_fn,
};

fn hub(name: &'static str, reserved: Arc<AtomicU32>) -> EdgeHub {
    EdgeHub::builder()
        .name(name)
        .durable(
            FunctionSpec::in_process(FunctionName::new("order").unwrap()),
            durable_fn(move |ctx: DurableContext, input: Bytes| {
                let reserved = reserved.clone();
                async move {
                    ctx.step("reserve", || async {
                        reserved.fetch_add(1, Ordering::SeqCst);
                        Ok(Bytes::from(name))
                    })
                    .await?;
                    let filter = format!("payments/{}", String::from_utf8_lossy(&input));
                    let paid = ctx.wait_for("payment", &filter).await?;
                    let shipped = ctx.step("ship", || async { Ok(Bytes::from(name)) }).await?;
                    let journal: Vec<String> = ctx
                        .journal()
                        .iter()
                        .map(|e| String::from_utf8_lossy(e.result.as_ref().unwrap()).into_owned())
                        .collect();
                    assert_eq!(&shipped[..], name.as_bytes());
                    let _ = paid;
                    Ok(Bytes::from(journal.join(",")))
                }
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_suspends_on_one_hub_and_finishes_on_another() {
    let reserved = Arc::new(AtomicU32::new(0));
    let a = hub("hub-a", reserved.clone());
    let b = hub("hub-b", reserved.clone());
    let other = EdgeHub::builder().name("hub-c").build().unwrap();

    let reply = a
        .invoke("order".parse().unwrap(), "o-1")
        .await
        .unwrap()
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["suspended"], true);
    let id: ExecutionId = reply["execution"].as_str().unwrap().parse().unwrap();

    let bytes = a.export(id).await.unwrap();
    assert!(matches!(
        other.import(&bytes).await,
        Err(EngineError::UnknownFunction(..))
    ));
    assert!(
        a.export(id).await.is_ok(),
        "a refused import leaves the checkpoint on hub a"
    );
    b.import(&bytes).await.unwrap();
    assert!(a.release(id).await.unwrap());

    let done = {
        let b = b.clone();
        tokio::spawn(async move { b.durable_outcome(id).await })
    };
    tokio::task::yield_now().await;
    // Events published on the old hub no longer reach it.
    a.publish(Event::new("payments/o-1", "x", EventSource::Local))
        .unwrap();
    b.publish(Event::new("payments/o-1", "paid", EventSource::Local))
        .unwrap();
    let out = done.await.unwrap().unwrap().unwrap();
    assert_eq!(out, "hub-a,paid,hub-b");
    assert_eq!(
        reserved.load(Ordering::SeqCst),
        1,
        "the reservation ran once, on hub a"
    );
    a.shutdown().await;
    b.shutdown().await;
}
