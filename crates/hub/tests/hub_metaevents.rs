//! Metaevent rules on a running hub: a queue that stays deep publishes an event, errors
//! invoke a function, and a rule fed by its own firing fires once per cooldown.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use fnhub::{
    EdgeHub, FunctionError, FunctionName, FunctionSpec, Invocation, MetaAction, MetaRule, from_fn,
};
use tokio::sync::{mpsc, watch};

fn name(n: &str) -> FunctionName {
    FunctionName::new(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_publish_invoke_and_do_not_storm() {
    let (release, released) = watch::channel(false);
    let (paged_tx, mut paged) = mpsc::unbounded_channel::<serde_json::Value>();
    let hub = EdgeHub::builder()
        .workers(2)
        .function(
            FunctionSpec::in_process(name("slow")).with_timeout(Duration::from_secs(60)),
            from_fn(move |_inv: Invocation| {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(Bytes::new())
                }
            }),
        )
        .function(
            FunctionSpec::in_process(name("boom")),
            from_fn(|_inv: Invocation| async move { Err(FunctionError::handled("bad reading")) }),
        )
        .function(
            FunctionSpec::in_process(name("pager")),
            from_fn(move |inv: Invocation| {
                let _ = paged_tx.send(serde_json::from_slice(&inv.payload).unwrap());
                async move { Ok(Bytes::new()) }
            }),
        )
        .build()
        .unwrap();
    fnhub::Metaevents::new(vec![
        MetaRule::parse(
            "backlog",
            "queue_depth(slow) > 2 for 0s",
            MetaAction::Publish("alerts/meta".into()),
        )
        .unwrap(),
        MetaRule::parse(
            "failing",
            "errors(boom) >= 1 over 1m",
            MetaAction::Invoke("pager".parse().unwrap()),
        )
        .unwrap(),
        // Fed by its own firing: every page is an invocation of the pager.
        MetaRule::parse(
            "paging",
            "invocations(pager) >= 1 over 1m",
            MetaAction::Invoke("pager".parse().unwrap()),
        )
        .unwrap(),
    ])
    .every(Duration::from_millis(10))
    .attach(&hub);
    let mut alerts = hub.subscribe("alerts/meta", 16).unwrap();

    // Two run, four wait: the backlog rule fires once.
    for _ in 0..6 {
        hub.submit(Invocation::new("slow".parse().unwrap(), ""))
            .unwrap();
    }
    let alert = tokio::time::timeout(Duration::from_secs(30), alerts.recv())
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&alert.payload).unwrap();
    assert_eq!(body["rule"], "backlog");
    assert!(body["value"].as_f64().unwrap() > 2.0, "{body}");
    // Let the backlog drain, so that what follows gets workers.
    release.send(true).unwrap();

    // A failure pages; the page sets off the paging rule once, and only once.
    let out = hub.invoke("boom".parse().unwrap(), "").await.unwrap();
    assert!(out.is_err());
    let first = tokio::time::timeout(Duration::from_secs(30), paged.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["rule"], "failing");
    let second = tokio::time::timeout(Duration::from_secs(30), paged.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second["rule"], "paging");
    // Many ticks later (10 ms each), still the same two pages and one alert: each rule is
    // quiet for its one-minute cooldown although it still holds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        paged.try_recv().is_err(),
        "a rule fired twice within its cooldown"
    );
    assert!(alerts.try_recv().is_none(), "the backlog alert repeated");

    hub.shutdown().await;
}

/// Busy child processes (one per core, outside the hub) load the processor; a rule on the
/// `cpu` the scheduler measures fires. Its event carries the utilisation read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_rule_fires_when_busy_processes_load_the_processor() {
    let hub = EdgeHub::builder().build().unwrap();
    fnhub::Metaevents::new(vec![
        MetaRule::parse(
            "hot",
            "cpu > 0.8 for 1s",
            MetaAction::Publish("alerts/cpu".into()),
        )
        .unwrap(),
    ])
    .every(Duration::from_millis(300))
    .attach(&hub);
    let mut alerts = hub.subscribe("alerts/cpu", 4).unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    struct Busy(Vec<std::process::Child>);
    impl Drop for Busy {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let busy = Busy(
        (0..cores)
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let alert = tokio::time::timeout(Duration::from_secs(30), alerts.recv())
        .await
        .expect("the cpu rule never fired under load")
        .unwrap();
    drop(busy);
    let body: serde_json::Value = serde_json::from_slice(&alert.payload).unwrap();
    assert_eq!(body["rule"], "hot");
    let value = body["value"].as_f64().unwrap();
    assert!(value > 0.8 && value <= 1.0, "{body}");
    hub.shutdown().await;
}
