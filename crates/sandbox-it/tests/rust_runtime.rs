//! The process sandbox running the unmodified `lambda_runtime` crate.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{json, open_profile, rust_fixture, spec};
use fnhub_core::{
    ErrorKind, FilesystemAccess, Invocation, NetworkAccess, PathGrant, PrepareError, Restriction,
    Sandbox,
};
use fnhub_sandbox::ProcessSandbox;

fn invocation(spec: &fnhub_core::FunctionSpec, payload: &str) -> Invocation {
    Invocation::new(spec.name.clone().into(), payload.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_runtime_api_context_and_processes_stay_warm() {
    let spec = spec(
        "echo",
        vec![rust_fixture()],
        open_profile(&[("GRANTED", "yes")]),
    )
    .with_memory_mb(256);
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    assert_eq!(env.isolation().backend, "process");
    assert!(env.isolation().enforced.contains(&Restriction::Environment));
    assert!(env.isolation().not_enforced.is_empty());

    let inv = invocation(&spec, r#"{"op":"echo","n":1}"#);
    let id = inv.id.to_string();
    let trace = inv.context.trace;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = json(&env.invoke(inv).await.unwrap());
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(out["payload"]["n"], 1);
    assert_eq!(out["request_id"], id.as_str());
    // The deadline is the 5 s timeout from the moment the invocation was handed over.
    let deadline = out["deadline_ms"].as_u64().unwrap();
    assert!(
        deadline >= before + 5_000 && deadline <= after + 5_000,
        "deadline {deadline} is not 5 s after a moment in [{before}, {after}]"
    );
    assert_eq!(
        out["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:echo:1"
    );
    let xray = out["trace_id"].as_str().unwrap();
    let hex = format!("{:032x}", trace.trace_id());
    assert!(
        xray.starts_with(&format!("Root=1-{}-{}", &hex[..8], &hex[8..])),
        "{xray}"
    );
    assert_eq!(out["env"]["name"], "echo");
    assert_eq!(out["env"]["version"], "1");
    assert_eq!(out["env"]["memory"], "256");
    assert_eq!(out["env"]["region"], "us-east-1");
    assert_eq!(out["env"]["handler"], "fixture.handle");
    assert_eq!(out["env"]["granted"], "yes");
    // Only granted variables: the hub's own environment is not inherited (its HOME is
    // not the function's, which is the function's own /tmp).
    assert_eq!(out["env"]["home"], "/tmp", "{out}");
    let pid = out["pid"].as_u64().unwrap();

    for n in 0..5 {
        let out = json(
            &env.invoke(invocation(&spec, &format!(r#"{{"op":"echo","n":{n}}}"#)))
                .await
                .unwrap(),
        );
        assert_eq!(out["payload"]["n"], n);
        assert_eq!(
            out["pid"].as_u64().unwrap(),
            pid,
            "the warm process is reused"
        );
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_end_in_the_right_kind_and_the_next_invocation_is_healthy() {
    let spec = spec("faulty", vec![rust_fixture()], open_profile(&[]))
        .with_timeout(Duration::from_millis(800));
    let sandbox = ProcessSandbox::new().with_max_response_bytes(64 * 1024);
    let env = sandbox.prepare(&spec).await.unwrap();
    let pid = |v: &serde_json::Value| v["pid"].as_u64().unwrap();
    let first = pid(&json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    ));

    // A handler error: Unhandled, with the client's error type and message.
    let e = env
        .invoke(invocation(&spec, r#"{"op":"fail"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unhandled, "{e}");
    assert!(e.message.contains("failed on purpose"), "{e}");
    assert!(e.error_type.is_some(), "{e:?}");
    let after_fail = pid(&json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    ));
    assert_eq!(after_fail, first, "a handled error keeps the process");

    // A timeout kills the process; the next invocation gets a new one.
    let e = env
        .invoke(invocation(&spec, r#"{"op":"sleep","ms":5000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    let after_timeout = pid(&json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    ));
    assert_ne!(after_timeout, first, "the timed-out process was replaced");

    // A crash mid-invocation: Crashed, with the exit status and the last stderr line.
    let e = env
        .invoke(invocation(&spec, r#"{"op":"crash"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Crashed, "{e}");
    assert_eq!(e.error_type.as_deref(), Some("Runtime.ExitError"));
    assert!(e.message.contains("exit status: 3"), "{e}");
    assert!(e.message.contains("crashing mid-invocation"), "{e}");
    let after_crash = pid(&json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    ));
    assert_ne!(after_crash, after_timeout);

    // An oversized response: refused with 413 to the client, Unhandled to the caller.
    let e = env
        .invoke(invocation(&spec, r#"{"op":"big","bytes":200000}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unhandled, "{e}");
    assert_eq!(
        e.error_type.as_deref(),
        Some("Function.ResponseSizeTooLarge")
    );
    let out = json(
        &env.invoke(invocation(&spec, r#"{"op":"big","bytes":1000}"#))
            .await
            .unwrap(),
    );
    assert_eq!(out.as_str().unwrap().len(), 1000);
    // The refused body was read to its end before the 413, so the client saw the answer
    // (not a broken pipe, on which it exits) and its process stayed.
    let after_big = pid(&json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    ));
    assert_eq!(
        after_big, after_crash,
        "a refused response keeps the process"
    );
    assert!(env.is_healthy());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_sooner_than_the_timeout_wins() {
    let spec = spec("late", vec![rust_fixture()], open_profile(&[]));
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let mut inv = invocation(&spec, r#"{"op":"sleep","ms":3000}"#);
    inv.context.deadline = Some(SystemTime::now() + Duration::from_millis(300));
    let e = env.invoke(inv).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e}");
    let mut inv = invocation(&spec, r#"{"op":"echo"}"#);
    inv.context.deadline = Some(SystemTime::now() - Duration::from_millis(1));
    let e = env.invoke(inv).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e}");
    env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_invocation_kills_its_process() {
    let spec = spec("dropped", vec![rust_fixture()], open_profile(&[]));
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let first = json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    )["pid"]
        .as_u64()
        .unwrap();
    let slow = env.invoke(invocation(&spec, r#"{"op":"sleep","ms":4000}"#));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), slow)
            .await
            .is_err()
    );
    // A new process answers: the one running the abandoned sleep was killed.
    let out = json(
        &env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
            .await
            .unwrap(),
    );
    assert_ne!(out["pid"].as_u64().unwrap(), first);
    let stat = std::fs::read_to_string(format!("/proc/{first}/stat"));
    assert!(
        stat.as_ref().map_or(true, |s| s.contains(") Z ")),
        "the abandoned process is gone: {stat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_dies_during_init_is_an_init_error() {
    let spec = spec(
        "no-init",
        vec![rust_fixture()],
        open_profile(&[("FIXTURE_EXIT_AT_INIT", "1")]),
    );
    let error = match ProcessSandbox::new().prepare(&spec).await {
        Err(PrepareError::Init(error)) => error,
        Err(other) => panic!("expected an init error, got {other}"),
        Ok(_) => panic!("expected an init error"),
    };
    assert_eq!(error.kind, ErrorKind::Crashed, "{error}");
    assert_eq!(error.error_type.as_deref(), Some("Runtime.ExitError"));
    assert!(error.message.contains("exit status: 7"), "{error}");
    assert!(error.message.contains("exiting during init"), "{error}");

    let missing = spec_with_command("missing", vec!["/nonexistent/bootstrap".into()]);
    match ProcessSandbox::new().prepare(&missing).await {
        Err(PrepareError::Init(error)) => {
            assert!(error.message.contains("/nonexistent/bootstrap"), "{error}");
        }
        Err(other) => panic!("expected an init error, got {other}"),
        Ok(_) => panic!("a missing program cannot start"),
    }
}

fn spec_with_command(name: &str, command: Vec<String>) -> fnhub_core::FunctionSpec {
    spec(name, command, open_profile(&[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_past_the_cap_ends_the_invocation() {
    let spec = spec("hungry", vec![rust_fixture()], open_profile(&[])).with_memory_mb(96);
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    assert!(env.isolation().enforced.contains(&Restriction::Memory));
    let ok = json(
        &env.invoke(invocation(&spec, r#"{"op":"alloc","mb":16}"#))
            .await
            .unwrap(),
    );
    assert_eq!(ok["allocated_mb"], 16);
    let e = env
        .invoke(invocation(&spec, r#"{"op":"alloc","mb":400}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::OutOfMemory, "{e}");
    env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_is_confined_to_grants() {
    let granted = tempfile::tempdir().unwrap();
    // The jailed function runs as a uid of its own: the grant must be writable by it.
    std::fs::set_permissions(
        granted.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"hidden").unwrap();
    let mut profile = open_profile(&[]);
    profile.filesystem = FilesystemAccess::Only(vec![PathGrant {
        path: granted.path().to_owned(),
        writable: true,
    }]);
    let spec = spec("confined", vec![rust_fixture()], profile);
    let env = match ProcessSandbox::new().prepare(&spec).await {
        Ok(env) => env,
        Err(PrepareError::CannotEnforce { missing, .. }) => {
            // Fail closed on a kernel without Landlock; CI's kernel has it.
            assert_eq!(missing, vec![Restriction::Filesystem]);
            assert!(
                std::env::var_os("CI").is_none(),
                "Landlock is expected under CI"
            );
            return;
        }
        Err(other) => panic!("{other}"),
    };
    assert!(env.isolation().enforced.contains(&Restriction::Filesystem));
    let call = |payload: serde_json::Value| {
        let inv = invocation(&spec, &payload.to_string());
        let env = &env;
        async move {
            json(&env.invoke(inv).await.unwrap())["ok"]
                .as_bool()
                .unwrap()
        }
    };
    let inside = granted.path().join("out.txt");
    assert!(call(serde_json::json!({"op":"write","path":inside})).await);
    assert_eq!(std::fs::read(&inside).unwrap(), b"written");
    assert!(!call(serde_json::json!({"op":"read","path":secret})).await);
    assert!(!call(serde_json::json!({"op":"write","path":outside.path().join("x")})).await);
    // The system's files stay readable.
    assert!(
        call(serde_json::json!({"op":"read","path":"/etc/hosts"})).await
            || !std::path::Path::new("/etc/hosts").exists()
    );
    // Without confinement the same read works: the denial above came from the sandbox.
    let open = spec_with_command("open", vec![rust_fixture()]);
    let env = ProcessSandbox::new().prepare(&open).await.unwrap();
    let inv = invocation(
        &open,
        &serde_json::json!({"op":"read","path":secret}).to_string(),
    );
    assert_eq!(json(&env.invoke(inv).await.unwrap())["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_the_host_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let payload = serde_json::json!({"op":"connect","addr":addr}).to_string();

    let open = spec_with_command("net-open", vec![rust_fixture()]);
    let env = ProcessSandbox::new().prepare(&open).await.unwrap();
    assert_eq!(
        json(&env.invoke(invocation(&open, &payload)).await.unwrap())["ok"],
        true
    );

    let mut profile = open_profile(&[]);
    profile.network = NetworkAccess::None;
    let closed = spec("net-closed", vec![rust_fixture()], profile);
    let env = match ProcessSandbox::new().prepare(&closed).await {
        Ok(env) => env,
        Err(PrepareError::CannotEnforce { missing, .. }) => {
            assert_eq!(missing, vec![Restriction::Network]);
            assert!(
                std::env::var_os("CI").is_none(),
                "network namespaces are expected under CI"
            );
            return;
        }
        Err(other) => panic!("{other}"),
    };
    assert!(env.isolation().enforced.contains(&Restriction::Network));
    // It still reaches its Runtime API (it answered), but not the host's listener.
    assert_eq!(
        json(&env.invoke(invocation(&closed, &payload)).await.unwrap())["ok"],
        false
    );
    // And it keeps working across a process restart in the same namespace.
    let _ = env
        .invoke(invocation(&closed, r#"{"op":"crash"}"#))
        .await
        .unwrap_err();
    env.invoke(invocation(&closed, r#"{"op":"echo"}"#))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_reports_what_it_left_out() {
    let mut profile = open_profile(&[]);
    profile.filesystem = FilesystemAccess::Only(Vec::new());
    let spec = spec("report", vec![rust_fixture()], profile);
    // Whatever this machine can enforce, the report accounts for every restriction asked.
    let env = ProcessSandbox::new()
        .best_effort()
        .prepare(&spec)
        .await
        .unwrap();
    let report = env.isolation();
    assert!(
        report.enforced.contains(&Restriction::Filesystem)
            ^ report.not_enforced.contains(&Restriction::Filesystem)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_live_and_die_with_their_environment() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("sidecar.starts");
    // A jailed sidecar has a pid of its own namespace: the host finds it by a sleep
    // length no other test uses.
    let marker = format!("30.{}", std::process::id());
    let script = format!("echo started >> {}; exec sleep {marker}", starts.display());
    let spec = spec("with-sidecar", vec![rust_fixture()], open_profile(&[])).with_sidecar(
        fnhub_core::SidecarSpec::new("shipper", vec!["sh".into(), "-c".into(), script]),
    );
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let host_pids = || -> Vec<u32> {
        let wanted = format!("sleep\0{marker}\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
            })
            .collect()
    };
    let (starts, host_pids) = (&starts, &host_pids);
    let wait_for = |n: usize| async move {
        for _ in 0..300 {
            let started = std::fs::read_to_string(starts).unwrap_or_default();
            if started.lines().count() >= n && host_pids().len() == 1 {
                return host_pids()[0];
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the sidecar did not start {n} time(s)");
    };
    let first = wait_for(1).await;
    env.invoke(invocation(&spec, r#"{"op":"echo"}"#))
        .await
        .unwrap();
    assert!(env.is_healthy());

    // A sidecar that dies marks the environment unhealthy and is started again.
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    let second = wait_for(2).await;
    assert!(
        !env.is_healthy(),
        "a dead sidecar makes the environment unhealthy"
    );
    assert_ne!(second, first);

    // Shutting the environment down stops its sidecars.
    env.shutdown().await;
    for _ in 0..200 {
        let alive = std::fs::read_to_string(format!("/proc/{second}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sidecar outlived its environment");
}
