//! WebAssembly functions on an `EdgeHub`: events in, outputs out, and the hub's own services
//! (publish, invoke, key-value store, shadows) reached from a guest.
#![cfg(feature = "wasm")]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fnhub::{
    EdgeHub, ErrorKind, Event, EventSource, Flow, FunctionName, FunctionSpec, Invocation,
    InvocationContext, Runtime, ServiceCaller, Version, from_fn,
};

/// A guest allowed every hub service.
fn wasm(name: &str, module: &str, export: &str) -> FunctionSpec {
    let mut profile = fnhub::CapabilityProfile::default();
    profile.services = fnhub::ServiceAccess::all();
    closed(name, module, export).with_capabilities(profile)
}

/// A guest with the default profile: no hub service allowed.
fn closed(name: &str, module: &str, export: &str) -> FunctionSpec {
    FunctionSpec::new(
        FunctionName::new(name).unwrap(),
        Runtime::Wasm {
            module: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("fixtures/wasm/{module}.wat")),
            export: export.into(),
        },
    )
}

fn caller(principal: &str) -> ServiceCaller {
    let mut context = InvocationContext::default();
    context.principal = fnhub::Principal::new(principal);
    ServiceCaller::new(
        FunctionName::new("test").unwrap(),
        Version::FIRST,
        fnhub::InvocationId::random(),
        context,
    )
}

async fn next(sub: &mut fnhub::Subscription) -> Event {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_publishes_invokes_and_keeps_state_through_the_hub() {
    let hub = EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("double").unwrap()),
            from_fn(|inv: Invocation| async move {
                let n: i64 = std::str::from_utf8(&inv.payload).unwrap().parse().unwrap();
                Ok(Bytes::from((n * 2).to_string()))
            }),
        )
        .deploy(wasm("script", "services", "script"))
        .build()
        .unwrap();
    let mut out = hub.subscribe("wasm/out", 8).unwrap();

    let mut inv = Invocation::new("script".parse().unwrap(), "21");
    inv.context.principal = fnhub::Principal::new("tenant-a");
    let trace = inv.context.trace;
    let done = hub.call(inv).await.unwrap();
    assert_eq!(&done.outcome.unwrap()[..], b"42");

    let event = next(&mut out).await;
    assert_eq!(&event.payload[..], b"21");
    assert_eq!(
        event.source,
        EventSource::Function(FunctionName::new("script").unwrap())
    );
    // The guest's event continues the invocation's trace, one hop deeper.
    assert_eq!(event.headers.trace().unwrap().trace_id(), trace.trace_id());
    assert_eq!(event.headers.depth(), 1);

    // The key is tenant-a's: another principal does not see it.
    let services = hub.services();
    assert_eq!(
        services.kv_get(&caller("tenant-a"), "count").await.unwrap(),
        Some(Bytes::from("21"))
    );
    assert_eq!(
        services.kv_get(&caller("tenant-b"), "count").await.unwrap(),
        None
    );

    // What invoke refuses, and why.
    use fnhub::ServiceError;
    let c = caller("tenant-a");
    assert_eq!(
        services
            .invoke(&c, "double", Bytes::from("4"))
            .await
            .unwrap(),
        Bytes::from("8")
    );
    let r = services.invoke(&c, "nobody", Bytes::new()).await;
    assert!(matches!(r, Err(ServiceError::NotFound(_))), "{r:?}");
    let r = services.invoke(&c, "bad name!", Bytes::new()).await;
    assert!(matches!(r, Err(ServiceError::Invalid(_))), "{r:?}");
    let mut deep = caller("tenant-a");
    deep.context.depth = 16;
    let r = services.invoke(&deep, "double", Bytes::from("4")).await;
    assert!(
        matches!(&r, Err(ServiceError::Denied(m)) if m.contains("17 hops deep")),
        "{r:?}"
    );
    let r = services.publish(&c, "bad/+/topic", Bytes::new()).await;
    assert!(matches!(r, Err(ServiceError::Invalid(_))), "{r:?}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_updates_from_a_guest_publish_accepted_and_delta_documents() {
    let hub = EdgeHub::builder()
        .deploy(wasm("lamp", "services", "shadow"))
        .build()
        .unwrap();
    let mut accepted = hub
        .subscribe("$aws/things/lamp/shadow/update/accepted", 8)
        .unwrap();
    let mut delta = hub
        .subscribe("$aws/things/lamp/shadow/update/delta", 8)
        .unwrap();

    let out = hub
        .invoke(
            "lamp".parse().unwrap(),
            r#"{"state":{"desired":{"on":true,"level":7}}}"#,
        )
        .await
        .unwrap()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["state"]["delta"]["level"], 7);

    let a: serde_json::Value = serde_json::from_slice(&next(&mut accepted).await.payload).unwrap();
    assert_eq!(a["state"]["desired"]["on"], true);
    let d: serde_json::Value = serde_json::from_slice(&next(&mut delta).await.payload).unwrap();
    assert_eq!(d["state"], serde_json::json!({"on": true, "level": 7}));

    // The device reports part of it: the shadow keeps the rest as the delta.
    let doc = hub
        .services()
        .shadow_update(
            &caller("device"),
            &fnhub_core::ShadowRef::classic("lamp").unwrap(),
            Bytes::from(r#"{"state":{"reported":{"on":true,"level":3}}}"#),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&doc).unwrap()["version"],
        2
    );
    let d: serde_json::Value = serde_json::from_slice(&next(&mut delta).await.payload).unwrap();
    assert_eq!(d["state"], serde_json::json!({"level": 7}));

    // A document that is not a shadow update is refused, and the guest fails with why.
    let err = hub
        .invoke("lamp".parse().unwrap(), r#"{"state":{"wanted":{}}}"#)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Handled);
    assert!(err.message.contains("unknown section"), "{err}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_wasm_functions_and_their_outputs_are_published() {
    let hub = EdgeHub::builder()
        .deploy(wasm("echo", "basic", "echo").with_output_topic("echoed/{1}"))
        .flow(Flow::parse("device:*", "sensors/+/raw", "function:echo").unwrap())
        .build()
        .unwrap();
    let mut echoed = hub.subscribe("echoed/#", 8).unwrap();
    hub.publish(Event::new(
        "sensors/d4/raw",
        "21.5",
        EventSource::Device("d4".into()),
    ))
    .unwrap();
    let event = next(&mut echoed).await;
    assert_eq!(event.topic.as_str(), "echoed/d4");
    assert_eq!(&event.payload[..], b"21.5");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_calls_itself_stops_at_the_depth_limit() {
    // "double" is the script itself: each call invokes the next, one level deeper.
    let hub = EdgeHub::builder()
        .max_depth(3)
        .deploy(wasm("double", "services", "script"))
        .build()
        .unwrap();
    let err = hub
        .invoke("double".parse().unwrap(), "1")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Handled);
    // The innermost refusal (of its publish, one hop past the limit, which comes before
    // its call) travels out through every level as Lambda's error JSON.
    assert!(err.message.contains("the limit is 3"), "{err}");
    let stats = hub.stats();
    assert_eq!(stats.functions["double"].invocations, 4, "{stats:?}");
    hub.shutdown().await;
}

/// A guest's calls are held to its function's allow-list: with none, its first hub call
/// (a key-value write, allowed) passes and its publish is refused, and the guest fails
/// saying so; nothing reaches the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_may_use_only_the_services_its_profile_allows() {
    let hub = EdgeHub::builder()
        .deploy(closed("script", "services", "script"))
        .build()
        .unwrap();
    let mut out = hub.subscribe("wasm/out", 8).unwrap();
    let done = hub
        .call(Invocation::new("script".parse().unwrap(), "21"))
        .await
        .unwrap();
    let err = done.outcome.unwrap_err();
    assert!(err.message.contains("may not use publish"), "{err}");
    assert!(
        out.try_recv().is_none(),
        "a refused publish reached the bus"
    );
    hub.shutdown().await;
}
