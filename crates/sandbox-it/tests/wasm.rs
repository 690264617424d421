//! The WebAssembly backend with guests written as WAT: outcomes, limits, WASI under a
//! capability profile, and the hub-local services of the `fnhub` imports.
#![cfg(feature = "wasm")]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::Recorder;
use fnhub_core::{
    BoxFuture, CapabilityProfile, EnvAccess, ErrorKind, FilesystemAccess, FunctionError,
    FunctionName, FunctionSpec, Invocation, LocalServices, PathGrant, PrepareError, Restriction,
    Runtime, Sandbox, ServiceCaller, ServiceError, ShadowRef,
};
use fnhub_sandbox::{WasmConfig, WasmError, WasmSandbox};

fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/wasm/{name}.wat"))
}

/// A guest's spec, allowed every hub service (the tests of refusals narrow it).
fn spec(module: &str, export: &str) -> FunctionSpec {
    let mut profile = CapabilityProfile::default();
    profile.services = fnhub_core::ServiceAccess::all();
    FunctionSpec::new(
        FunctionName::new(&export.replace('_', "-")).unwrap(),
        Runtime::Wasm {
            module: guest(module),
            export: export.into(),
        },
    )
    .with_capabilities(profile)
    .with_timeout(Duration::from_secs(5))
}

fn call(spec: &FunctionSpec, payload: &'static str) -> Invocation {
    Invocation::new(spec.name.clone().into(), payload)
}

fn kind(outcome: &Result<Bytes, FunctionError>) -> ErrorKind {
    outcome.as_ref().unwrap_err().kind.clone()
}

#[tokio::test]
async fn echo_and_a_fresh_instance_per_invocation() {
    let sandbox = WasmSandbox::new().unwrap();
    let echo = spec("basic", "echo");
    let env = sandbox.prepare(&echo).await.unwrap();
    assert_eq!(
        &env.invoke(call(&echo, "hello")).await.unwrap()[..],
        b"hello"
    );
    // An empty payload needs no allocation and comes back empty.
    assert!(env.invoke(call(&echo, "")).await.unwrap().is_empty());
    // 200 KiB: the guest's allocator grows its memory for it.
    let big = "x".repeat(200 * 1024);
    let out = env
        .invoke(Invocation::new(echo.name.clone().into(), big.clone()))
        .await
        .unwrap();
    assert_eq!(out.len(), big.len());

    let count = spec("basic", "count");
    let env = sandbox.prepare(&count).await.unwrap();
    for _ in 0..3 {
        // Each invocation counts from zero: no state survives in the instance.
        assert_eq!(&env.invoke(call(&count, "")).await.unwrap()[..], b"1");
    }
    let report = env.isolation();
    assert_eq!(report.backend, "wasm");
    for r in [
        Restriction::Network,
        Restriction::Filesystem,
        Restriction::Environment,
        Restriction::Memory,
        Restriction::Cpu,
    ] {
        assert!(report.enforced.contains(&r), "{r} not enforced");
    }
    assert!(report.not_enforced.is_empty());
}

#[tokio::test]
async fn a_guest_that_loops_forever_times_out_and_the_engine_keeps_serving() {
    let sandbox = WasmSandbox::new().unwrap();
    let spin = spec("basic", "spin").with_timeout(Duration::from_millis(100));
    let env = sandbox.prepare(&spin).await.unwrap();
    let out = env.invoke(call(&spin, "")).await;
    assert_eq!(kind(&out), ErrorKind::Timeout, "{out:?}");

    // A deadline sooner than the timeout ends it as DeadlineExceeded.
    let spin = spin.with_timeout(Duration::from_secs(30));
    let env = sandbox.prepare(&spin).await.unwrap();
    let mut inv = call(&spin, "");
    inv.context.deadline = Some(SystemTime::now() + Duration::from_millis(50));
    let out = env.invoke(inv).await;
    assert_eq!(kind(&out), ErrorKind::DeadlineExceeded, "{out:?}");

    let echo = spec("basic", "echo");
    let env = sandbox.prepare(&echo).await.unwrap();
    assert_eq!(
        &env.invoke(call(&echo, "still here")).await.unwrap()[..],
        b"still here"
    );
}

#[tokio::test]
async fn dropping_the_invocation_stops_a_spinning_guest() {
    // One instance in the pool: if the dropped guest kept its slot, nothing else could run.
    let sandbox = WasmSandbox::with_config(
        WasmConfig::default().with_instances(1),
        Arc::new(fnhub_core::NoServices),
    )
    .unwrap();
    let spin = spec("basic", "spin").with_timeout(Duration::from_secs(60));
    let env = sandbox.prepare(&spin).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(50), env.invoke(call(&spin, ""))).await;
    assert!(cut.is_err(), "the spinning guest finished: {cut:?}");
    let echo = spec("basic", "echo");
    let env = sandbox.prepare(&echo).await.unwrap();
    assert_eq!(&env.invoke(call(&echo, "next")).await.unwrap()[..], b"next");
}

#[tokio::test]
async fn memory_past_the_cap_is_out_of_memory_and_within_it_is_fine() {
    let sandbox = WasmSandbox::new().unwrap();
    // The guest grows by 256 MiB.
    let small = spec("basic", "grow").with_memory_mb(64);
    let env = sandbox.prepare(&small).await.unwrap();
    let out = env.invoke(call(&small, "")).await;
    let err = out.as_ref().unwrap_err();
    assert_eq!(err.kind, ErrorKind::OutOfMemory, "{out:?}");
    assert_eq!(err.error_type.as_deref(), Some("Wasm.MemoryLimit"));

    let roomy = spec("basic", "grow").with_memory_mb(512);
    let env = sandbox.prepare(&roomy).await.unwrap();
    assert_eq!(&env.invoke(call(&roomy, "")).await.unwrap()[..], b"grew");

    // More than the pool gives any instance is refused before anything runs.
    let huge = spec("basic", "grow").with_memory_mb(4096);
    match sandbox.prepare(&huge).await {
        Err(PrepareError::Start(e)) => assert!(
            matches!(
                e.downcast_ref::<WasmError>(),
                Some(WasmError::MemoryTooLarge { asked: 4096, .. })
            ),
            "{e}"
        ),
        other => panic!("expected MemoryTooLarge, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn traps_fail_and_bad_outputs_end_in_their_kinds() {
    let sandbox = WasmSandbox::with_config(
        WasmConfig::default().with_max_response_bytes(1024),
        Arc::new(fnhub_core::NoServices),
    )
    .unwrap();
    let cases = [
        ("trap", ErrorKind::Crashed, "Wasm.Trap"),
        ("deep", ErrorKind::Crashed, "Wasm.Trap"),
        ("fail", ErrorKind::Handled, ""),
        ("bad_output", ErrorKind::Crashed, "Wasm.BadGuest"),
        ("big", ErrorKind::Unhandled, "Function.ResponseSizeTooLarge"),
    ];
    for (export, want, error_type) in cases {
        let s = spec("basic", export);
        let env = sandbox.prepare(&s).await.unwrap();
        let out = env.invoke(call(&s, "")).await;
        let err = out.as_ref().unwrap_err();
        assert_eq!(err.kind, want, "{export}: {err}");
        if !error_type.is_empty() {
            assert_eq!(
                err.error_type.as_deref(),
                Some(error_type),
                "{export}: {err}"
            );
        }
    }
    let s = spec("basic", "trap");
    let err = sandbox
        .prepare(&s)
        .await
        .unwrap()
        .invoke(call(&s, ""))
        .await
        .unwrap_err();
    assert!(err.message.contains("unreachable"), "{err}");
    let s = spec("basic", "fail");
    let err = sandbox
        .prepare(&s)
        .await
        .unwrap()
        .invoke(call(&s, ""))
        .await
        .unwrap_err();
    assert_eq!(err.message, "not a number");
    // A payload for a module that cannot take one (it exports no `fnhub_alloc`).
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("no_alloc.wat");
    std::fs::write(
        &module,
        r#"(module (memory (export "memory") 1)
             (func (export "h") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let mut s = spec("basic", "echo");
    s.runtime = Runtime::Wasm {
        module,
        export: "h".into(),
    };
    let env = sandbox.prepare(&s).await.unwrap();
    assert!(env.invoke(call(&s, "")).await.unwrap().is_empty());
    let err = env.invoke(call(&s, "payload")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Crashed);
    assert!(err.message.contains("fnhub_alloc"), "{err}");
}

#[tokio::test]
async fn fuel_meters_work_deterministically() {
    let sandbox = WasmSandbox::with_config(
        WasmConfig::default().with_fuel(1_000_000),
        Arc::new(fnhub_core::NoServices),
    )
    .unwrap();
    let spin = spec("basic", "spin").with_timeout(Duration::from_secs(60));
    let env = sandbox.prepare(&spin).await.unwrap();
    let err = env.invoke(call(&spin, "")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert_eq!(err.error_type.as_deref(), Some("Wasm.OutOfFuel"));
    let echo = spec("basic", "echo");
    let env = sandbox.prepare(&echo).await.unwrap();
    assert_eq!(
        &env.invoke(call(&echo, "cheap")).await.unwrap()[..],
        b"cheap"
    );
}

#[tokio::test]
async fn modules_that_do_not_fit_are_refused_with_the_reason() {
    let sandbox = WasmSandbox::new().unwrap();
    let reason = |r: Result<Box<dyn fnhub_core::Environment>, PrepareError>| match r {
        Err(PrepareError::Start(e)) => e.to_string(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("prepared"),
    };
    // An import the host does not offer.
    let msg = reason(sandbox.prepare(&spec("wrong", "fine")).await);
    assert!(msg.contains("mystery"), "{msg}");
    // A missing export, and a module that is not there.
    let msg = reason(sandbox.prepare(&spec("basic", "absent")).await);
    assert!(msg.contains("no export named `absent`"), "{msg}");
    let msg = reason(sandbox.prepare(&spec("nowhere", "handle")).await);
    assert!(msg.contains("cannot read the module"), "{msg}");
    // Garbage instead of a module.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0garbage").unwrap();
    let mut s = spec("basic", "echo");
    s.runtime = Runtime::Wasm {
        module: junk,
        export: "echo".into(),
    };
    let msg = reason(sandbox.prepare(&s).await);
    assert!(msg.contains("does not compile"), "{msg}");
    // Not a wasm function at all.
    let in_process = FunctionSpec::in_process(FunctionName::new("native").unwrap());
    assert!(!sandbox.supports(&in_process));
    assert!(matches!(
        sandbox.prepare(&in_process).await,
        Err(PrepareError::UnsupportedRuntime { .. })
    ));
}

#[tokio::test]
async fn a_wrongly_typed_handler_is_named() {
    let sandbox = WasmSandbox::new().unwrap();
    // The exports are checked before the imports are linked.
    let s = spec("wrong", "handle");
    match sandbox.prepare(&s).await {
        Err(PrepareError::Start(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("(param i32 i32) (result i64)"), "{msg}");
        }
        other => panic!("expected a type error, got {:?}", other.map(|_| ())),
    }
}

fn profile(grants: Vec<PathGrant>, vars: &[(&str, &str)]) -> CapabilityProfile {
    let mut p = CapabilityProfile::default();
    p.filesystem = FilesystemAccess::Only(grants);
    p.env = EnvAccess::Only(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    p
}

#[tokio::test]
async fn wasi_sees_only_the_granted_directories_and_variables() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("note.txt"), "inside").unwrap();
    std::fs::write(root.path().join("secret.txt"), "outside").unwrap();
    let sandbox = WasmSandbox::new().unwrap();
    let read_only = vec![PathGrant {
        path: granted.clone(),
        writable: false,
    }];

    // Reading inside the grant works; climbing out of it does not.
    let read = spec("wasi", "read").with_capabilities(profile(read_only.clone(), &[]));
    let env = sandbox.prepare(&read).await.unwrap();
    assert_eq!(
        &env.invoke(call(&read, "note.txt")).await.unwrap()[..],
        b"inside"
    );
    let escaped = env.invoke(call(&read, "../secret.txt")).await.unwrap();
    assert!(escaped.starts_with(b"errno "), "{escaped:?}");
    assert_ne!(&escaped[..], b"errno 00");

    // With no grant there is no directory at all.
    let none = spec("wasi", "read").with_capabilities(profile(Vec::new(), &[]));
    let env = sandbox.prepare(&none).await.unwrap();
    let out = env.invoke(call(&none, "note.txt")).await.unwrap();
    assert_eq!(&out[..], b"errno 08", "EBADF expected");

    // Writing needs a writable grant.
    let write = spec("wasi", "write").with_capabilities(profile(read_only, &[]));
    let env = sandbox.prepare(&write).await.unwrap();
    let out = env.invoke(call(&write, "new.txt")).await.unwrap();
    assert_ne!(&out[..], b"errno 00");
    assert!(!granted.join("new.txt").exists());
    let writable = vec![PathGrant {
        path: granted.clone(),
        writable: true,
    }];
    let write = spec("wasi", "write").with_capabilities(profile(writable, &[]));
    let env = sandbox.prepare(&write).await.unwrap();
    assert_eq!(
        &env.invoke(call(&write, "new.txt")).await.unwrap()[..],
        b"errno 00"
    );
    assert_eq!(
        std::fs::read_to_string(granted.join("new.txt")).unwrap(),
        "hello from wasm\n"
    );

    // Only the granted variables, none of the hub's.
    let env_spec =
        spec("wasi", "env").with_capabilities(profile(Vec::new(), &[("GREETING", "hi")]));
    let env = sandbox.prepare(&env_spec).await.unwrap();
    assert_eq!(
        &env.invoke(call(&env_spec, "")).await.unwrap()[..],
        b"GREETING=hi\0"
    );

    // A grant that does not exist is refused when preparing.
    let missing = spec("wasi", "read").with_capabilities(profile(
        vec![PathGrant {
            path: root.path().join("nope"),
            writable: false,
        }],
        &[],
    ));
    match sandbox.prepare(&missing).await {
        Err(PrepareError::Start(e)) => assert!(
            matches!(e.downcast_ref::<WasmError>(), Some(WasmError::Grant { .. })),
            "{e}"
        ),
        other => panic!("expected a grant error, got {:?}", other.map(|_| ())),
    }
}

// One thread, so the subscriber set for this thread sees the guest's output.
#[tokio::test(flavor = "current_thread")]
async fn stdout_and_fnhub_log_are_traced_with_the_request_id() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let sandbox = WasmSandbox::new().unwrap();
    let print = spec("wasi", "print");
    let env = sandbox.prepare(&print).await.unwrap();
    let inv = call(&print, "");
    let id = inv.id.to_string();
    env.invoke(inv).await.unwrap();
    let echo = spec("basic", "echo");
    let env = sandbox.prepare(&echo).await.unwrap();
    let inv = call(&echo, "x");
    let echo_id = inv.id.to_string();
    env.invoke(inv).await.unwrap();

    let events = recorder.0.lock().unwrap().clone();
    let lines: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["message"].as_str(),
                e["stream"].as_str(),
                e["request_id"].as_str(),
            )
        })
        .collect();
    assert!(
        lines.contains(&("hello from wasm", "stdout", &id)),
        "{lines:?}"
    );
    assert!(lines.contains(&("second line", "stdout", &id)), "{lines:?}");
    assert!(
        lines.contains(&("handled a request", "log", &echo_id)),
        "{lines:?}"
    );
}

/// Hub-local services in memory, recording what guests asked.
#[derive(Default)]
struct Services {
    kv: Mutex<HashMap<(String, String), Bytes>>,
    published: Mutex<Vec<(String, Bytes, String)>>,
    shadows: Mutex<HashMap<String, String>>,
}

impl LocalServices for Services {
    fn publish<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        topic: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.published.lock().unwrap().push((
                topic.to_owned(),
                payload,
                caller.function.to_string(),
            ));
            Ok(())
        })
    }

    fn invoke<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        function: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            match function {
                "double" => {
                    let n: i64 = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                    Ok(Bytes::from((n * 2).to_string()))
                }
                "slow" => {
                    std::future::pending::<()>().await;
                    Ok(Bytes::new())
                }
                "broken" => Err(ServiceError::Function(
                    FunctionError::new(ErrorKind::Unhandled, "it broke").with_type("ValueError"),
                )),
                other => Err(ServiceError::NotFound(other.to_owned())),
            }
        })
    }

    fn kv_get<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Bytes>, ServiceError>> {
        let k = (caller.context.principal.to_string(), key.to_owned());
        Box::pin(async move { Ok(self.kv.lock().unwrap().get(&k).cloned()) })
    }

    fn kv_put<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        let k = (caller.context.principal.to_string(), key.to_owned());
        Box::pin(async move {
            self.kv.lock().unwrap().insert(k, value);
            Ok(())
        })
    }

    fn kv_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, ServiceError>> {
        let k = (caller.context.principal.to_string(), key.to_owned());
        Box::pin(async move { Ok(self.kv.lock().unwrap().remove(&k).is_some()) })
    }

    fn shadow_get<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        let thing = shadow.thing();
        Box::pin(async move {
            self.shadows
                .lock()
                .unwrap()
                .get(thing)
                .map(|d| Bytes::from(d.clone()))
                .ok_or_else(|| ServiceError::NotFound(thing.to_owned()))
        })
    }

    fn shadow_update<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
        document: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        let thing = shadow.thing();
        Box::pin(async move {
            let doc = String::from_utf8(document.to_vec())
                .map_err(|_| ServiceError::Invalid("not UTF-8".into()))?;
            if !doc.starts_with('{') {
                return Err(ServiceError::Invalid("not a JSON object".into()));
            }
            self.shadows
                .lock()
                .unwrap()
                .insert(thing.to_owned(), doc.clone());
            Ok(Bytes::from(doc))
        })
    }
}

#[tokio::test]
async fn guests_reach_hub_services_through_the_fnhub_imports() {
    let services = Arc::new(Services::default());
    let sandbox = WasmSandbox::with_config(WasmConfig::default(), services.clone()).unwrap();

    let script = spec("services", "script");
    let env = sandbox.prepare(&script).await.unwrap();
    let mut inv = call(&script, "21");
    inv.context.principal = fnhub_core::Principal::new("tenant-a");
    assert_eq!(&env.invoke(inv).await.unwrap()[..], b"42");
    assert_eq!(
        services.published.lock().unwrap().clone(),
        vec![(
            "wasm/out".to_owned(),
            Bytes::from("21"),
            "script".to_owned()
        )]
    );
    // The key is the caller's principal's.
    assert_eq!(
        services
            .kv
            .lock()
            .unwrap()
            .get(&("tenant-a".into(), "count".into())),
        Some(&Bytes::from("21"))
    );

    let missing = spec("services", "missing");
    let env = sandbox.prepare(&missing).await.unwrap();
    let out = env.invoke(call(&missing, "")).await.unwrap();
    assert_eq!(i32::from_le_bytes(out[..4].try_into().unwrap()), -1);

    // Another principal does not see tenant-a's key.
    let forget = spec("services", "forget");
    let env = sandbox.prepare(&forget).await.unwrap();
    let out = env.invoke(call(&forget, "")).await.unwrap();
    assert_eq!(i32::from_le_bytes(out[..4].try_into().unwrap()), -1);
    let mut inv = call(&forget, "");
    inv.context.principal = fnhub_core::Principal::new("tenant-a");
    let out = env.invoke(inv).await.unwrap();
    assert_eq!(i32::from_le_bytes(out[..4].try_into().unwrap()), 0);

    let shadow = spec("services", "shadow");
    let env = sandbox.prepare(&shadow).await.unwrap();
    let doc = r#"{"state":{"reported":{"on":true}}}"#;
    assert_eq!(
        &env.invoke(call(&shadow, doc)).await.unwrap()[..],
        doc.as_bytes()
    );
    // A service's refusal reaches the guest, which fails with its message.
    let err = env.invoke(call(&shadow, "on")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Handled);
    assert_eq!(err.message, "invalid request: not a JSON object");

    // A failed invoke: code -5 and Lambda's error JSON.
    let broken = spec("services", "call_broken");
    let env = sandbox.prepare(&broken).await.unwrap();
    let out = env.invoke(call(&broken, "")).await.unwrap();
    assert_eq!(i32::from_le_bytes(out[..4].try_into().unwrap()), -5);
    let body: serde_json::Value = serde_json::from_slice(&out[4..]).unwrap();
    assert_eq!(body["errorType"], "ValueError");
    assert_eq!(body["errorMessage"], "it broke");

    // A pointer outside memory is the guest's bug: a trap, not a service call.
    let bad = spec("services", "bad_pointer");
    let env = sandbox.prepare(&bad).await.unwrap();
    let err = env.invoke(call(&bad, "")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Crashed);
    assert!(err.message.contains("outside the guest's memory"), "{err}");
    assert_eq!(services.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_host_call_still_waiting_at_the_timeout_ends_the_invocation() {
    let sandbox =
        WasmSandbox::with_config(WasmConfig::default(), Arc::new(Services::default())).unwrap();
    let slow = spec("services", "call_slow").with_timeout(Duration::from_millis(150));
    let env = sandbox.prepare(&slow).await.unwrap();
    // The service never answers; only the invocation's timeout can end the call. (The
    // outer timeout is a watchdog so that a failure does not hang the suite.)
    let err = tokio::time::timeout(Duration::from_secs(300), env.invoke(call(&slow, "")))
        .await
        .expect("the waiting host call was not cut off")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn without_services_every_call_is_unavailable() {
    let sandbox = WasmSandbox::new().unwrap();
    let script = spec("services", "script");
    let env = sandbox.prepare(&script).await.unwrap();
    let err = env.invoke(call(&script, "1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Handled);
    assert!(err.message.starts_with("unavailable"), "{err}");
}

#[tokio::test]
async fn concurrent_invocations_each_get_their_own_instance() {
    let sandbox = WasmSandbox::new().unwrap();
    let echo = spec("basic", "echo").with_concurrency(8);
    let env: Arc<dyn fnhub_core::Environment> = Arc::from(sandbox.prepare(&echo).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (env, name) = (env.clone(), echo.name.clone());
        tasks.push(tokio::spawn(async move {
            let payload = format!("call {i}");
            let out = env
                .invoke(Invocation::new(name.into(), payload.clone()))
                .await
                .unwrap();
            assert_eq!(out, payload.as_bytes());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
