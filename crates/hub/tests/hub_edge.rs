//! The edge hub end to end: events in, functions run, outputs out; failures, overload,
//! loops and shutdown.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fnhub::{
    EdgeHub, ErrorKind, Event, EventSource, Flow, FunctionError, FunctionName, FunctionSpec,
    HubError, Invocation, SubmitError, TraceParent, from_fn,
};
use tokio::sync::Semaphore;

fn name(s: &str) -> FunctionName {
    FunctionName::new(s).unwrap()
}

fn reading(device: &str, value: &str) -> Event {
    Event::new(
        format!("sensors/{device}/temperature"),
        value.to_owned(),
        EventSource::Device(device.to_owned()),
    )
}

fn parse(inv: &Invocation) -> Result<f64, FunctionError> {
    std::str::from_utf8(&inv.payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FunctionError::handled("not a number").with_type("BadReading"))
}

#[tokio::test]
async fn events_flow_through_functions_to_subscribers_with_their_trace() {
    let hub = EdgeHub::builder()
        .function(
            FunctionSpec::in_process(name("celsius")).with_output_topic("celsius/{1}"),
            from_fn(|inv: Invocation| async move {
                let f = parse(&inv)?;
                Ok(format!("{:.1}", (f - 32.0) / 1.8).into())
            }),
        )
        .flow(Flow::parse("device:*", "sensors/+/temperature", "function:celsius").unwrap())
        .build()
        .unwrap();
    let mut out = hub.subscribe("celsius/+", 8).unwrap();
    let mut raw = hub.subscribe("sensors/#", 8).unwrap();

    let trace = TraceParent::new_root();
    let report = hub.publish(reading("d7", "212").with_trace(trace)).unwrap();
    assert_eq!((report.invocations, report.delivered), (1, 1));
    assert!(report.rejected.is_empty());

    let e = out.recv().await.unwrap();
    assert_eq!(e.topic, "celsius/d7");
    assert_eq!(&e.payload[..], b"100.0");
    assert_eq!(e.source, EventSource::Function(name("celsius")));
    let out_trace = e.headers.trace().expect("outputs carry trace context");
    assert_eq!(out_trace.trace_id(), trace.trace_id(), "same trace");
    assert_ne!(out_trace.parent_id(), trace.parent_id(), "new span");
    assert_eq!(e.headers.depth(), 1);
    assert_eq!(raw.recv().await.unwrap().topic, "sensors/d7/temperature");

    // A bad reading is a handled error and publishes nothing.
    hub.publish(reading("d7", "hot")).unwrap();
    hub.shutdown().await;
    assert!(out.try_recv().is_none());
    let stats = hub.stats();
    assert_eq!(stats.events_in, 2);
    assert_eq!(stats.events_out, 1);
    assert_eq!(stats.functions["celsius"].invocations, 2);
    assert_eq!(stats.outcomes["ok"], 1);
    assert_eq!(stats.outcomes["handled"], 1);
}

#[tokio::test]
async fn panicking_and_slow_functions_get_their_kinds_and_the_hub_keeps_serving() {
    let hub = EdgeHub::builder()
        .function(
            FunctionSpec::in_process(name("panics")),
            from_fn(|_| async { panic!("driver bug") }),
        )
        .function(
            FunctionSpec::in_process(name("sleeps")).with_timeout(Duration::from_millis(30)),
            from_fn(|_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok("late".into())
            }),
        )
        .function(
            FunctionSpec::in_process(name("echo")),
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        )
        .build()
        .unwrap();
    for _ in 0..3 {
        let crashed = hub.invoke("panics".parse().unwrap(), "x").await.unwrap();
        assert_eq!(crashed.unwrap_err().kind, ErrorKind::Crashed);
        let timed_out = hub.invoke("sleeps".parse().unwrap(), "x").await.unwrap();
        assert_eq!(timed_out.unwrap_err().kind, ErrorKind::Timeout);
        let ok = hub
            .invoke("echo".parse().unwrap(), "still here")
            .await
            .unwrap();
        assert_eq!(ok.unwrap(), "still here");
    }
    hub.shutdown().await;
    let stats = hub.stats();
    assert_eq!(
        (
            stats.outcomes["crashed"],
            stats.outcomes["timeout"],
            stats.outcomes["ok"]
        ),
        (3, 3, 3)
    );
}

#[tokio::test]
async fn a_full_queue_hands_invocations_back() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let hub = EdgeHub::builder()
        .workers(1)
        .queue_capacity(1)
        .function(
            FunctionSpec::in_process(name("gated")).with_timeout(Duration::from_secs(30)),
            from_fn(move |inv: Invocation| {
                let g = g.clone();
                async move {
                    g.acquire().await.unwrap().forget();
                    Ok(inv.payload)
                }
            }),
        )
        .flow(Flow::parse("any", "in", "function:gated").unwrap())
        .build()
        .unwrap();
    let running = tokio::spawn({
        let hub = hub.clone();
        async move { hub.invoke("gated".parse().unwrap(), "first").await }
    });
    while fnhub::LoadProbe::snapshot(&hub).running == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let queued = hub
        .publish(Event::new("in", "second", EventSource::Local))
        .unwrap();
    assert_eq!(queued.invocations, 1);

    let mut report = hub
        .publish(Event::new("in", "third", EventSource::Local))
        .unwrap();
    assert_eq!(report.invocations, 0);
    let back = report.rejected.pop().expect("handed back");
    assert!(matches!(back, SubmitError::Full(_)));
    let back = back.into_invocation();
    assert_eq!(&back.payload[..], b"third");
    assert_eq!(back.context.topic.as_deref(), Some("in"));

    match hub.invoke("gated".parse().unwrap(), "fourth").await {
        Err(SubmitError::Full(inv)) => assert_eq!(&inv.payload[..], b"fourth"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(hub.stats().rejected, 2);
    gate.add_permits(10);
    assert_eq!(running.await.unwrap().unwrap().unwrap(), "first");
    hub.shutdown().await;
    assert_eq!(hub.stats().functions["gated"].invocations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_every_accepted_invocation_an_outcome() {
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let hub = EdgeHub::builder()
        .workers(3)
        .queue_capacity(5_000)
        .function(
            FunctionSpec::in_process(name("work")),
            from_fn(move |inv: Invocation| {
                let counter = counter.clone();
                async move {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(inv.payload)
                }
            }),
        )
        .flow(Flow::parse("any", "jobs/+", "function:work").unwrap())
        .build()
        .unwrap();
    let mut accepted = 0;
    for i in 0..2_000 {
        let r = hub
            .publish(Event::new(
                format!("jobs/{}", i % 7),
                "x",
                EventSource::Local,
            ))
            .unwrap();
        accepted += r.invocations;
    }
    let direct = tokio::spawn({
        let hub = hub.clone();
        async move { hub.invoke("work".parse().unwrap(), "direct").await }
    });
    tokio::task::yield_now().await;
    hub.shutdown().await;
    let direct = direct.await.unwrap();
    let direct_accepted = usize::from(direct.is_ok());
    if let Err(e) = &direct {
        assert!(matches!(e, SubmitError::ShuttingDown(_)), "{e}");
    }
    let stats = hub.stats();
    assert_eq!(accepted, 2_000);
    assert_eq!(ran.load(Ordering::SeqCst), accepted + direct_accepted);
    assert_eq!(
        stats.functions["work"].invocations as usize,
        accepted + direct_accepted
    );
    assert_eq!(stats.outcomes["ok"] as usize, accepted + direct_accepted);

    let late = hub
        .publish(Event::new("jobs/1", "late", EventSource::Local))
        .unwrap();
    assert!(matches!(
        late.rejected.as_slice(),
        [SubmitError::ShuttingDown(_)]
    ));
}

#[tokio::test]
async fn a_function_that_triggers_itself_stops_at_the_depth_limit() {
    let hub = EdgeHub::builder()
        .max_depth(5)
        .function(
            FunctionSpec::in_process(name("echo")).with_output_topic("ping"),
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        )
        .flow(Flow::parse("any", "ping", "function:echo").unwrap())
        .build()
        .unwrap();
    let mut pings = hub.subscribe("ping", 64).unwrap();
    hub.publish(Event::new("ping", "x", EventSource::Local))
        .unwrap();
    let mut depths = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), pings.recv()).await {
        depths.push(e.headers.depth());
    }
    assert_eq!(depths, [0, 1, 2, 3, 4, 5]);
    hub.shutdown().await;
    let stats = hub.stats();
    assert_eq!(stats.functions["echo"].invocations, 6);
    assert_eq!(stats.events_refused, 1, "the output at depth 6 is refused");
}

#[tokio::test]
async fn misconfiguration_is_refused_at_build() {
    let err = EdgeHub::builder()
        .flow(Flow::parse("any", "x", "function:ghost").unwrap())
        .build()
        .unwrap_err();
    assert!(matches!(err, HubError::UnknownFlowTarget { .. }), "{err}");

    let err = EdgeHub::builder()
        .deploy(FunctionSpec::in_process(name("unregistered")))
        .build()
        .unwrap_err();
    assert!(matches!(err, HubError::NoHandler { .. }), "{err}");

    let wasm = FunctionSpec::new(
        name("w"),
        fnhub::Runtime::Wasm {
            module: "m.wat".into(),
            export: "handle".into(),
        },
    );
    let err = EdgeHub::builder()
        .function(
            wasm.clone(),
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, HubError::NotInProcess(_)), "{err}");
    // Without the wasm sandbox nothing can run it; with it, the missing module is found
    // when an environment is prepared.
    #[cfg(not(feature = "wasm"))]
    {
        let err = EdgeHub::builder().deploy(wasm).build().unwrap_err();
        assert!(err.to_string().contains("deployed"), "{err}");
    }
    #[cfg(feature = "wasm")]
    {
        let hub = EdgeHub::builder().deploy(wasm).build().unwrap();
        let err = hub
            .invoke("w".parse().unwrap(), "")
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, fnhub::ErrorKind::Rejected, "{err}");
        hub.shutdown().await;
    }

    let hub = EdgeHub::builder().build().unwrap();
    let bad = Event::new("a/#", "x", EventSource::Local);
    assert!(hub.publish(bad).is_err());
    assert!(hub.subscribe("a/b#", 1).is_err());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_outputs_of_admitted_work_flow_to_the_end() {
    let hub = EdgeHub::builder()
        .workers(2)
        .function(
            FunctionSpec::in_process(name("first")).with_output_topic("stage/2"),
            from_fn(|inv: Invocation| async move {
                tokio::time::sleep(Duration::from_micros(100)).await;
                Ok(inv.payload)
            }),
        )
        .function(
            FunctionSpec::in_process(name("second")).with_output_topic("stage/3"),
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        )
        .function(
            FunctionSpec::in_process(name("third")),
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        )
        .flow(Flow::parse("any", "stage/1", "function:first").unwrap())
        .flow(Flow::parse("any", "stage/2", "function:second").unwrap())
        .flow(Flow::parse("any", "stage/3", "function:third").unwrap())
        .build()
        .unwrap();
    for i in 0..300 {
        let r = hub
            .publish(Event::new("stage/1", i.to_string(), EventSource::Local))
            .unwrap();
        assert_eq!(r.invocations, 1);
    }
    hub.shutdown().await;
    let stats = hub.stats();
    for f in ["first", "second", "third"] {
        assert_eq!(stats.functions[f].invocations, 300, "{f}");
    }
    assert_eq!(stats.rejected, 0, "no output of admitted work was refused");

    // After shutdown began, outside work is refused and handed back.
    let late = hub
        .publish(Event::new("stage/1", "late", EventSource::Local))
        .unwrap();
    assert!(matches!(
        late.rejected.as_slice(),
        [SubmitError::ShuttingDown(_)]
    ));
    assert!(matches!(
        hub.invoke("third".parse().unwrap(), "late").await,
        Err(SubmitError::ShuttingDown(_))
    ));
}

/// Sidecars on a backend that cannot start them are refused at deploy (fail closed), at
/// build and at run time alike.
#[tokio::test]
async fn sidecars_on_an_in_process_function_are_refused_at_deploy() {
    let with_sidecar = FunctionSpec::in_process(name("echo"))
        .with_sidecar(fnhub::SidecarSpec::new("helper", vec!["true".into()]));
    let echo = from_fn(|inv: Invocation| async move { Ok(inv.payload) });
    let err = EdgeHub::builder()
        .function(with_sidecar.clone(), echo.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            HubError::SidecarsUnsupported {
                runtime: "in_process",
                ..
            }
        ),
        "{err}"
    );
    let hub = EdgeHub::builder()
        .function(FunctionSpec::in_process(name("echo")), echo)
        .build()
        .unwrap();
    let err = hub
        .deploy(with_sidecar.with_version(fnhub::Version::new(2).unwrap()))
        .unwrap_err();
    assert!(matches!(err, HubError::SidecarsUnsupported { .. }), "{err}");
    hub.shutdown().await;
}

/// A weak handle does not keep a hub alive, and a dropped hub refuses what comes later.
#[tokio::test]
async fn a_weak_hub_does_not_keep_the_hub_alive() {
    let hub = EdgeHub::builder()
        .function(
            FunctionSpec::in_process(name("echo")),
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        )
        .build()
        .unwrap();
    let weak = hub.downgrade();
    let clone = weak.upgrade().unwrap();
    assert_eq!(
        clone.invoke("echo".parse().unwrap(), "x").await.unwrap(),
        Ok("x".into())
    );
    drop(clone);
    drop(hub);
    assert!(weak.upgrade().is_none());
}

/// One MQTT bridge per hub: a second is refused (no broker needed to see it).
#[cfg(feature = "mqtt")]
#[tokio::test]
async fn a_hub_takes_one_bridge() {
    let hub = EdgeHub::builder().build().unwrap();
    let port = fnhub_testkit::free_port();
    let config = || fnhub::MqttConfig::new("127.0.0.1", port, "hub-one");
    fnhub::Bridge::new(config()).attach(&hub).unwrap();
    assert!(hub.mqtt_stats().is_some());
    assert!(matches!(
        fnhub::Bridge::new(config()).attach(&hub),
        Err(HubError::BridgeAttached)
    ));
    hub.shutdown().await;
    assert!(hub.mqtt_stats().is_none(), "the bridge stops with the hub");
}

/// A new version deployed warm under steady load: calls keep going to the old version
/// until the new one has an environment, then move; none fails and none starts cold. A
/// version that cannot start is withdrawn and the old one keeps the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_deployed_warm_takes_traffic_without_a_cold_start() {
    use fnhub::{Start, Version};
    let hub = EdgeHub::builder()
        .workers(4)
        .function(
            FunctionSpec::in_process(FunctionName::new("f").unwrap()),
            from_fn(|_inv: Invocation| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(bytes::Bytes::from_static(b"ok"))
            }),
        )
        .build()
        .unwrap();
    // Warm v1 first, so that steady load meets no cold start of its own.
    hub.invoke("f".parse().unwrap(), "").await.unwrap().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (hub, stop) = (hub.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let c = hub
                    .call(Invocation::new("f".parse().unwrap(), ""))
                    .await
                    .unwrap();
                seen.push((c.version.get(), c.start, c.outcome.is_ok()));
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v2 = FunctionSpec::in_process(FunctionName::new("f").unwrap())
        .with_version(Version::new(2).unwrap());
    hub.deploy_warm(v2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = load.await.unwrap();
    assert!(seen.iter().all(|(_, _, ok)| *ok), "a call failed");
    assert!(
        seen.iter().any(|(v, _, _)| *v == 1),
        "no call before the deploy"
    );
    assert!(seen.iter().any(|(v, _, _)| *v == 2), "traffic never moved");
    let cold: Vec<_> = seen.iter().filter(|(_, s, _)| *s == Start::Cold).collect();
    assert!(cold.is_empty(), "cold starts under the deploy: {cold:?}");
    // Once moved, it stays: no call of v1 after the first of v2.
    let first_v2 = seen.iter().position(|(v, _, _)| *v == 2).unwrap();
    assert!(seen[first_v2..].iter().all(|(v, _, _)| *v == 2));

    // A version whose environment cannot start (no such process) is withdrawn.
    let broken = FunctionSpec::new(
        FunctionName::new("f").unwrap(),
        fnhub::Runtime::Process {
            command: vec!["/nonexistent/program".into()],
            workdir: None,
            handler: None,
        },
    )
    .with_version(Version::new(3).unwrap());
    let e = hub.deploy_warm(broken).await.unwrap_err();
    assert!(matches!(e, fnhub::HubError::WarmFailed { .. }), "{e}");
    let c = hub
        .call(Invocation::new("f".parse().unwrap(), ""))
        .await
        .unwrap();
    assert_eq!(c.version.get(), 2, "the old version keeps the traffic");
    hub.shutdown().await;
}
