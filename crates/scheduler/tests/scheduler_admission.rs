//! Admission, ordering, deadlines, failures and shutdown of the scheduler, with real
//! in-process functions.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionName, FunctionSpec, Invocation, LoadProbe, Priority, from_fn};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::{DeployError, Scheduler, Start, SubmitError};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

fn name(s: &str) -> FunctionName {
    FunctionName::new(s).unwrap()
}

/// A function that waits for a permit of `gate` and records its payload in `order`.
fn gated(sandbox: &InProcessSandbox, gate: Arc<Semaphore>, order: Arc<Mutex<Vec<String>>>) {
    sandbox.register(
        "gated",
        from_fn(move |inv: Invocation| {
            let gate = gate.clone();
            let order = order.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                order
                    .lock()
                    .push(String::from_utf8_lossy(&inv.payload).into_owned());
                Ok(inv.payload)
            }
        }),
    );
}

/// A scheduler with one worker and "gated" deployed: the scheduler, its gate, the run order.
fn one_gated_worker() -> (Scheduler, Arc<Semaphore>, Arc<Mutex<Vec<String>>>) {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    gated(&sandbox, gate.clone(), order.clone());
    let s = Scheduler::builder()
        .workers(1)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("gated"))).unwrap();
    (s, gate, order)
}

async fn wait_running(s: &Scheduler, n: usize) {
    for _ in 0..1000 {
        if s.snapshot().running == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never reached {n} running");
}

#[tokio::test]
async fn full_queue_hands_the_invocation_back() {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    gated(&sandbox, gate.clone(), Arc::default());
    let s = Scheduler::builder()
        .workers(1)
        .queue_capacity(2)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("gated"))).unwrap();

    let first = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "0"))
        .unwrap();
    wait_running(&s, 1).await;
    let queued: Vec<_> = (1..=2)
        .map(|i| {
            s.try_submit(Invocation::new("gated".parse().unwrap(), i.to_string()))
                .unwrap()
        })
        .collect();

    let extra = Invocation::new("gated".parse().unwrap(), "overflow");
    let extra_id = extra.id;
    match s.try_submit(extra) {
        Err(SubmitError::Full(back)) => {
            assert_eq!(back.id, extra_id);
            assert_eq!(back.payload, Bytes::from_static(b"overflow"));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    let load = s.snapshot();
    assert_eq!(
        (load.queued, load.queue_capacity, load.rejected_total),
        (2, 2, 1)
    );

    gate.add_permits(3);
    assert_eq!(&first.await.outcome.unwrap()[..], b"0");
    for t in queued {
        assert!(t.await.outcome.is_ok());
    }
    s.shutdown().await;
}

#[tokio::test]
async fn runs_by_priority_then_deadline_then_arrival() {
    let (s, gate, order) = one_gated_worker();

    let blocker = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "blocker"))
        .unwrap();
    wait_running(&s, 1).await;

    let far = SystemTime::now() + Duration::from_secs(600);
    let near = SystemTime::now() + Duration::from_secs(300);
    let cases = [
        ("low", Priority::LOW, None),
        ("normal-a", Priority::NORMAL, None),
        ("normal-far", Priority::NORMAL, Some(far)),
        ("high", Priority::HIGH, None),
        ("normal-near", Priority::NORMAL, Some(near)),
        ("normal-b", Priority::NORMAL, None),
    ];
    let mut tickets = Vec::new();
    for (label, priority, deadline) in cases {
        let mut inv = Invocation::new("gated".parse().unwrap(), label);
        inv.context.priority = priority;
        inv.context.deadline = deadline;
        tickets.push(s.try_submit(inv).unwrap());
    }
    gate.add_permits(100);
    blocker.await;
    for t in tickets {
        t.await;
    }
    assert_eq!(
        *order.lock(),
        [
            "blocker",
            "high",
            "normal-near",
            "normal-far",
            "normal-a",
            "normal-b",
            "low"
        ]
    );
    s.shutdown().await;
}

#[tokio::test]
async fn deadline_passing_in_the_queue_completes_without_running() {
    let (s, gate, order) = one_gated_worker();
    let blocker = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "blocker"))
        .unwrap();
    wait_running(&s, 1).await;

    let mut inv = Invocation::new("gated".parse().unwrap(), "expires");
    inv.context.deadline = Some(SystemTime::now() + Duration::from_millis(20));
    let ticket = s.try_submit(inv).unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    gate.add_permits(10);
    blocker.await;
    let c = ticket.await;
    assert_eq!(c.outcome.unwrap_err().kind, ErrorKind::DeadlineExceeded);
    assert_eq!(c.start, Start::NotStarted);
    assert_eq!(
        *order.lock(),
        ["blocker"],
        "the expired invocation must not run"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn panics_and_timeouts_get_their_kinds_and_serving_goes_on() {
    let sandbox = InProcessSandbox::new();
    sandbox.register(
        "moody",
        from_fn(|inv: Invocation| async move {
            match &inv.payload[..] {
                b"panic" => panic!("bad reading"),
                b"hang" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(inv.payload)
                }
                b"fail" => Err(fnhub_core::FunctionError::handled("rejected reading")),
                _ => Ok(inv.payload),
            }
        }),
    );
    let s = Scheduler::builder()
        .workers(2)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("moody")).with_timeout(Duration::from_millis(50)))
        .unwrap();
    let call = |p: &'static str| {
        s.try_submit(Invocation::new("moody".parse().unwrap(), p))
            .unwrap()
    };

    assert_eq!(
        call("panic").await.outcome.unwrap_err().kind,
        ErrorKind::Crashed
    );
    assert_eq!(
        call("hang").await.outcome.unwrap_err().kind,
        ErrorKind::Timeout
    );
    assert_eq!(
        call("fail").await.outcome.unwrap_err().kind,
        ErrorKind::Handled
    );
    for _ in 0..10 {
        assert_eq!(&call("ok").await.outcome.unwrap()[..], b"ok");
    }
    assert_eq!(s.snapshot().completed_total, 13);
    s.shutdown().await;
}

#[tokio::test]
async fn first_call_is_cold_then_warm() {
    let sandbox = InProcessSandbox::new();
    sandbox.register(
        "echo",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let s = Scheduler::builder()
        .workers(1)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("echo"))).unwrap();
    let call = || {
        s.try_submit(Invocation::new("echo".parse().unwrap(), "x"))
            .unwrap()
    };
    assert_eq!(call().await.start, Start::Cold);
    assert_eq!(call().await.start, Start::Warm);
    assert_eq!(s.idle_environments(), 1);
    s.shutdown().await;
    assert_eq!(s.idle_environments(), 0);
}

#[tokio::test]
async fn unknown_functions_and_unrunnable_specs() {
    let sandbox = InProcessSandbox::new();
    let s = Scheduler::builder()
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();

    let inv = Invocation::new("ghost".parse().unwrap(), "x");
    assert!(
        matches!(s.try_submit(inv), Err(SubmitError::UnknownFunction(i)) if &i.payload[..] == b"x")
    );

    let wasm = FunctionSpec::new(
        name("w"),
        fnhub_core::Runtime::Wasm {
            module: "m.wat".into(),
            export: "handle".into(),
        },
    );
    assert!(matches!(
        s.deploy(wasm),
        Err(DeployError::NoSandbox {
            runtime: "wasm",
            ..
        })
    ));

    // Deployed, but no handler registered: the environment fails to start.
    s.deploy(FunctionSpec::in_process(name("unregistered")))
        .unwrap();
    let c = s
        .try_submit(Invocation::new("unregistered".parse().unwrap(), "x"))
        .unwrap()
        .await;
    let err = c.outcome.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert!(err.message.contains("unregistered"), "{}", err.message);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_every_admitted_invocation() {
    let sandbox = InProcessSandbox::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    sandbox.register(
        "work",
        from_fn(move |inv: Invocation| {
            let counter = counter.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(inv.payload)
            }
        }),
    );
    let s = Arc::new(
        Scheduler::builder()
            .workers(4)
            .queue_capacity(10_000)
            .sandbox(Arc::new(sandbox))
            .build()
            .unwrap(),
    );
    s.deploy(FunctionSpec::in_process(name("work"))).unwrap();

    let tickets: Vec<_> = (0..500)
        .map(|i| {
            s.try_submit(Invocation::new("work".parse().unwrap(), i.to_string()))
                .unwrap()
        })
        .collect();
    s.shutdown().await;

    let late = Invocation::new("work".parse().unwrap(), "late");
    assert!(matches!(
        s.try_submit(late),
        Err(SubmitError::ShuttingDown(_))
    ));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        500,
        "shutdown returned before the queue drained"
    );
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.await.outcome.unwrap(), Bytes::from(i.to_string()));
    }
}

#[tokio::test]
async fn cancel_by_id_stops_queued_and_running_invocations() {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    gated(&sandbox, gate.clone(), order.clone());
    let s = Scheduler::builder()
        .workers(1)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("gated")).with_timeout(Duration::from_secs(60)))
        .unwrap();
    let running = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "running"))
        .unwrap();
    wait_running(&s, 1).await;
    let queued = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "queued"))
        .unwrap();
    let after = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "after"))
        .unwrap();

    assert!(s.cancel(queued.id()));
    let c = queued.await;
    assert_eq!(c.outcome.unwrap_err().kind, ErrorKind::Cancelled);
    assert_eq!(c.start, Start::NotStarted);
    assert!(!s.cancel(c.id), "already completed");

    assert!(s.cancel(running.id()));
    let c = running.await;
    assert_eq!(c.outcome.unwrap_err().kind, ErrorKind::Cancelled);

    // The worker goes on with the next job, which a stale signal must not cancel.
    gate.add_permits(1);
    assert_eq!(&after.await.outcome.unwrap()[..], b"after");
    assert_eq!(*order.lock(), ["after"]);
    assert!(!s.cancel(fnhub_core::InvocationId::random()));
    s.shutdown().await;
}

#[tokio::test]
async fn function_and_tenant_limits_name_their_reason() {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    gated(&sandbox, gate.clone(), Arc::default());
    sandbox.register(
        "other",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let s = Scheduler::builder()
        .workers(1)
        .queue_capacity(100)
        .function_queue_limit(2)
        .tenant_queue_limit(2)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    s.deploy(FunctionSpec::in_process(name("gated"))).unwrap();
    s.deploy(FunctionSpec::in_process(name("other"))).unwrap();
    let blocker = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "b"))
        .unwrap();
    wait_running(&s, 1).await;

    let as_tenant = |f: &str, t: &str| {
        let mut inv = Invocation::new(f.parse().unwrap(), "x");
        inv.context.principal = fnhub_core::Principal::new(t);
        inv
    };
    let mut tickets = vec![
        s.try_submit(as_tenant("gated", "t1")).unwrap(),
        s.try_submit(as_tenant("gated", "t2")).unwrap(),
    ];
    let e = s.try_submit(as_tenant("gated", "t3")).unwrap_err();
    assert!(matches!(e, SubmitError::FunctionLimit(_)), "{e}");
    assert_eq!(e.reason(), "function_limit");
    tickets.push(s.try_submit(as_tenant("other", "t1")).unwrap());
    let e = s.try_submit(as_tenant("other", "t1")).unwrap_err();
    assert!(
        matches!(e, SubmitError::TenantLimit(ref i) if i.context.principal.as_str() == "t1"),
        "{e}"
    );
    let loads = s.snapshot().functions;
    assert_eq!((loads["gated"].queued, loads["gated"].running), (2, 1));
    assert_eq!(loads["other"].queued, 1);

    gate.add_permits(10);
    blocker.await;
    for t in tickets {
        assert!(t.await.outcome.is_ok());
    }
    let loads = s.snapshot().functions;
    assert_eq!(loads["gated"].completed_total, 3);
    assert_eq!(loads["gated"].cold_starts_total, 1);
    s.shutdown().await;
}

#[tokio::test]
async fn max_concurrency_holds_back_one_function_only() {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    gated(&sandbox, gate.clone(), Arc::default());
    sandbox.register(
        "free",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let s = Scheduler::builder()
        .workers(4)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    let mut spec = FunctionSpec::in_process(name("gated"));
    spec.resources.max_concurrency = Some(1);
    s.deploy(spec).unwrap();
    s.deploy(FunctionSpec::in_process(name("free"))).unwrap();
    let gated_tickets: Vec<_> = (0..3)
        .map(|i| {
            s.try_submit(Invocation::new("gated".parse().unwrap(), i.to_string()))
                .unwrap()
        })
        .collect();
    wait_running(&s, 1).await;
    // Three workers are free, but only one gated invocation may run; others still flow.
    for _ in 0..5 {
        let c = s
            .try_submit(Invocation::new("free".parse().unwrap(), "f"))
            .unwrap()
            .await;
        assert!(c.outcome.is_ok());
    }
    let load = s.snapshot();
    assert_eq!(load.functions["gated"].running, 1);
    assert_eq!(load.functions["gated"].queued, 2);
    gate.add_permits(3);
    for t in gated_tickets {
        assert!(t.await.outcome.is_ok());
    }
    s.shutdown().await;
}

#[tokio::test]
async fn impossible_placement_is_refused_at_deploy() {
    let sandbox = InProcessSandbox::new();
    sandbox.register(
        "f",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let host = fnhub_scheduler::HostInfo::default()
        .with_cpu_features(["avx2"])
        .with_label("zone", "edge");
    let s = Scheduler::builder()
        .host(host)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    let mut ok = FunctionSpec::in_process(name("f"));
    ok.placement.cpu_features = vec!["avx2".into()];
    ok.placement.labels.insert("zone".into(), "edge".into());
    s.deploy(ok).unwrap();

    let mut impossible =
        FunctionSpec::in_process(name("f")).with_version(fnhub_core::Version::new(2).unwrap());
    impossible.placement.cpu_features = vec!["avx512f".into()];
    impossible
        .placement
        .labels
        .insert("gpu".into(), "a100".into());
    match s.deploy(impossible) {
        Err(DeployError::Placement { missing, .. }) => assert_eq!(missing, ["avx512f", "gpu=a100"]),
        other => panic!("expected a placement error, got {other:?}"),
    }
    // The detected host knows this machine's real features.
    let detected = fnhub_scheduler::HostInfo::detect();
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        assert!(
            detected.cpu_features.contains("sse2"),
            "{:?}",
            detected.cpu_features
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_new_version_takes_over_while_the_old_one_drains() {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    gated(&sandbox, gate.clone(), Arc::default());
    let s = Scheduler::builder()
        .workers(2)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    let v1 = FunctionSpec::in_process(name("gated")).with_timeout(Duration::from_secs(60));
    let v2 = v1
        .clone()
        .with_version(fnhub_core::Version::new(2).unwrap());
    s.deploy(v1).unwrap();

    gate.add_permits(1);
    s.try_submit(Invocation::new("gated".parse().unwrap(), "warm-up"))
        .unwrap()
        .await;
    assert_eq!(s.idle_environments(), 1, "v1 warm");
    let running_v1 = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "on v1"))
        .unwrap();
    wait_running(&s, 1).await;

    s.deploy(v2).unwrap();
    assert_eq!(
        s.idle_environments(),
        0,
        "v1's idle environment stopped at once"
    );
    gate.add_permits(2);
    let c = running_v1.await;
    assert_eq!(c.version.get(), 1, "the running invocation finished on v1");
    assert_eq!(
        s.idle_environments(),
        0,
        "and its environment stopped instead of idling"
    );

    let c = s
        .try_submit(Invocation::new("gated".parse().unwrap(), "new"))
        .unwrap()
        .await;
    assert_eq!((c.version.get(), c.start), (2, Start::Cold));
    assert_eq!(s.idle_environments(), 1, "v2 warm");

    // An alias keeps v1 live again: a split routes by weight, and both stay warm.
    let alias = fnhub_core::Alias::new("prod".parse().unwrap(), fnhub_core::Version::FIRST)
        .with_split(fnhub_core::Version::new(2).unwrap(), 5_000)
        .unwrap();
    s.set_alias(&name("gated"), alias).unwrap();
    gate.add_permits(200);
    let mut versions = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let c = s
            .try_submit(Invocation::new("gated:prod".parse().unwrap(), "x"))
            .unwrap()
            .await;
        *versions.entry(c.version.get()).or_insert(0) += 1;
    }
    assert_eq!(versions.len(), 2, "both versions served: {versions:?}");
    assert!(versions.values().all(|&n| n > 50), "{versions:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn reserved_concurrency_keeps_workers_for_its_function() {
    let sandbox = InProcessSandbox::new();
    let gate = Arc::new(Semaphore::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    gated(&sandbox, gate.clone(), order.clone());
    sandbox.register(
        "vip",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let s = Scheduler::builder()
        .workers(3)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    let mut vip = FunctionSpec::in_process(name("vip"));
    vip.resources.reserved_concurrency = Some(1);
    s.deploy(vip).unwrap();
    s.deploy(FunctionSpec::in_process(name("gated")).with_timeout(Duration::from_secs(60)))
        .unwrap();

    let held: Vec<_> = (0..3)
        .map(|i| {
            s.try_submit(Invocation::new("gated".parse().unwrap(), i.to_string()))
                .unwrap()
        })
        .collect();
    wait_running(&s, 2).await;
    // Two unreserved workers are busy; the third is vip's, so the third gated call waits...
    tokio::time::sleep(Duration::from_millis(20)).await;
    let load = s.snapshot();
    assert_eq!(
        (
            load.functions["gated"].running,
            load.functions["gated"].queued
        ),
        (2, 1)
    );
    // ...while vip still runs at once.
    let c = s
        .try_submit(Invocation::new("vip".parse().unwrap(), "now"))
        .unwrap()
        .await;
    assert_eq!(&c.outcome.unwrap()[..], b"now");

    let mut greedy =
        FunctionSpec::in_process(name("vip")).with_version(fnhub_core::Version::new(2).unwrap());
    greedy.resources.reserved_concurrency = Some(3);
    assert!(matches!(
        s.deploy(greedy),
        Err(DeployError::ReservationExceeded {
            total: 3,
            workers: 3,
            ..
        })
    ));
    assert!(
        s.try_submit(Invocation::new("vip:2".parse().unwrap(), "x"))
            .is_err(),
        "the refused version is not deployed"
    );

    gate.add_permits(3);
    for t in held {
        assert!(t.await.outcome.is_ok());
    }
    assert_eq!(order.lock().len(), 3);
    s.shutdown().await;
}

#[tokio::test]
async fn an_undeployed_function_takes_no_more_work_and_frees_its_reservation() {
    let sandbox = InProcessSandbox::new();
    sandbox.register(
        "echo",
        from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
    );
    let s = Scheduler::builder()
        .workers(2)
        .sandbox(Arc::new(sandbox))
        .build()
        .unwrap();
    let mut spec = FunctionSpec::in_process(name("echo"));
    spec.resources.reserved_concurrency = Some(1);
    s.check_deploy(&spec).unwrap();
    s.deploy(spec.clone()).unwrap();
    let ok = s
        .try_submit(Invocation::new("echo".parse().unwrap(), "a"))
        .unwrap()
        .await;
    assert_eq!(&ok.outcome.unwrap()[..], b"a");

    // Another spec under the same version is refused by the dry run, which changes nothing.
    let other = spec.clone().with_timeout(Duration::from_secs(9));
    assert!(matches!(
        s.check_deploy(&other),
        Err(DeployError::VersionConflict { .. })
    ));

    assert!(s.undeploy(&name("echo")));
    assert!(!s.undeploy(&name("echo")), "already gone");
    assert!(s.deployed().is_empty());
    assert!(matches!(
        s.try_submit(Invocation::new("echo".parse().unwrap(), "b")),
        Err(SubmitError::UnknownFunction(_))
    ));
    // Its reserved worker is free again: with two workers, another function may reserve
    // one (had echo's stayed reserved, that would leave no unreserved worker).
    let mut other = FunctionSpec::in_process(name("other"));
    other.resources.reserved_concurrency = Some(1);
    s.deploy(other).unwrap();
    s.deploy(FunctionSpec::in_process(name("echo"))).unwrap();
    let ok = s
        .try_submit(Invocation::new("echo".parse().unwrap(), "c"))
        .unwrap()
        .await;
    assert_eq!(&ok.outcome.unwrap()[..], b"c");
    s.shutdown().await;
}
