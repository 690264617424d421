//! Per-flow overflow policies when the hub is full: drop the flow's oldest waiting
//! invocation, or wait (in order) for room, dropping what waits too long.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use fnhub::{
    EdgeHub, Event, EventSource, Flow, FunctionName, FunctionSpec, Invocation, Overflow, from_fn,
};
use tokio::sync::{mpsc, watch};

/// A hub with one worker and a queue of two, whose `job` function reports each payload it
/// starts and then waits to be released; flow `jobs/+` → `job` with `overflow`.
fn hub(
    overflow: Overflow,
) -> (
    EdgeHub,
    watch::Sender<bool>,
    mpsc::UnboundedReceiver<String>,
) {
    let (release, released) = watch::channel(false);
    let (started_tx, started) = mpsc::unbounded_channel();
    let hub = EdgeHub::builder()
        .workers(1)
        .queue_capacity(2)
        .function(
            FunctionSpec::in_process(FunctionName::new("job").unwrap())
                .with_timeout(Duration::from_secs(60)),
            from_fn(move |inv: Invocation| {
                let _ = started_tx.send(String::from_utf8(inv.payload.to_vec()).unwrap());
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(Bytes::new())
                }
            }),
        )
        .flow(
            Flow::parse("device:*", "jobs/+", "function:job")
                .unwrap()
                .with_overflow(overflow),
        )
        .build()
        .unwrap();
    (hub, release, started)
}

fn publish(hub: &EdgeHub, n: u32) -> fnhub::PublishReport {
    hub.publish(Event::new(
        "jobs/a",
        n.to_string(),
        EventSource::Device("d".into()),
    ))
    .unwrap()
}

async fn next(started: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), started.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_cancels_the_flows_oldest_waiting_invocation() {
    let (hub, release, mut started) = hub(Overflow::DropOldest);
    assert_eq!(publish(&hub, 0).invocations, 1);
    assert_eq!(next(&mut started).await, "0");
    // 1 and 2 fill the queue; 3 and 4 each push the oldest waiting one out.
    for n in 1..=4 {
        let report = publish(&hub, n);
        assert_eq!(report.invocations, 1, "{n}: {report:?}");
        assert!(report.rejected.is_empty());
    }
    release.send(true).unwrap();
    assert_eq!(next(&mut started).await, "3");
    assert_eq!(next(&mut started).await, "4");
    hub.shutdown().await;
    let stats = hub.stats();
    assert_eq!(stats.overflow_dropped, 2);
    assert_eq!(stats.outcomes.get("cancelled"), Some(&2));
    assert_eq!(stats.outcomes.get("ok"), Some(&3));
    assert!(started.try_recv().is_err(), "1 and 2 must not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_holds_invocations_in_order_until_there_is_room() {
    let (hub, release, mut started) = hub(Overflow::Wait(Duration::from_secs(60)));
    publish(&hub, 0);
    assert_eq!(next(&mut started).await, "0");
    let mut waiting = 0;
    for n in 1..10 {
        let report = publish(&hub, n);
        assert!(report.rejected.is_empty(), "{report:?}");
        waiting += report.waiting;
    }
    // 1 and 2 in the queue, 3 to 9 held by the flow.
    assert_eq!(waiting, 7);
    release.send(true).unwrap();
    for n in 1..10 {
        assert_eq!(next(&mut started).await, n.to_string(), "order kept");
    }
    hub.shutdown().await;
    assert_eq!(hub.stats().overflow_dropped, 0);
    assert_eq!(hub.stats().outcomes.get("ok"), Some(&10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waits_past_its_flows_timeout_is_dropped_and_counted() {
    let (hub, release, mut started) = hub(Overflow::Wait(Duration::from_millis(50)));
    publish(&hub, 0);
    assert_eq!(next(&mut started).await, "0");
    publish(&hub, 1);
    publish(&hub, 2);
    assert_eq!(publish(&hub, 3).waiting, 1);
    // The queue stays full until release, so 3 can only time out.
    let until = Instant::now() + Duration::from_secs(30);
    while hub.stats().overflow_dropped == 0 {
        assert!(Instant::now() < until, "3 was never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.send(true).unwrap();
    assert_eq!(next(&mut started).await, "1");
    assert_eq!(next(&mut started).await, "2");
    hub.shutdown().await;
    assert_eq!(hub.stats().overflow_dropped, 1);
    assert!(started.try_recv().is_err(), "3 must not run");
}
