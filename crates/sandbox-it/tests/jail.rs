//! Hostile handlers against the jail: each tries one escape a black-box test of the hub
//! found open, and the jail must refuse it; the same handlers run normally when they behave.
//!
//! Needs root, bubblewrap and `awslambdaric` (all present under CI, which fails without
//! them); elsewhere the tests skip.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{json, python_with_ric};
use fnhub_core::{
    CapabilityProfile, Environment, ErrorKind, FunctionName, FunctionSpec, Invocation,
    PrepareError, Restriction, Runtime, Sandbox,
};
use fnhub_sandbox::{ProcessLimits, ProcessSandbox};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")
}

/// A function running `hostile.<handler>` with the default profile: no network, no files
/// beyond its own, no inherited environment.
fn hostile(python: &std::path::Path, handler: &str) -> FunctionSpec {
    let entry = format!("hostile.{handler}");
    FunctionSpec::new(
        FunctionName::new(&format!("hostile-{}", handler.replace('_', "-"))).unwrap(),
        Runtime::Process {
            command: vec![
                python.display().to_string(),
                "-m".into(),
                "awslambdaric".into(),
                entry.clone(),
            ],
            workdir: Some(fixtures()),
            handler: Some(entry),
        },
    )
    .with_capabilities(CapabilityProfile::default())
    .with_timeout(Duration::from_secs(20))
}

/// The jailed environment for `spec`, or `None` (skip) where a jail cannot be made outside CI.
async fn jailed(sandbox: &ProcessSandbox, spec: &FunctionSpec) -> Option<Box<dyn Environment>> {
    match sandbox.prepare(spec).await {
        Ok(env) => {
            let report = env.isolation();
            for r in [
                Restriction::Identity,
                Restriction::Processes,
                Restriction::Filesystem,
                Restriction::Network,
            ] {
                assert!(report.enforced.contains(&r), "{r} not enforced: {report:?}");
            }
            Some(env)
        }
        Err(PrepareError::CannotEnforce { missing, .. }) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the jail needs root and bubblewrap under CI; missing {missing:?}"
            );
            eprintln!("skipping: cannot jail here ({missing:?})");
            None
        }
        Err(other) => panic!("{other}"),
    }
}

async fn setup(handler: &str) -> Option<(FunctionSpec, Box<dyn Environment>)> {
    let python = python_with_ric()?;
    let spec = hostile(&python, handler);
    let env = jailed(&ProcessSandbox::new(), &spec).await?;
    Some((spec, env))
}

async fn call(env: &dyn Environment, spec: &FunctionSpec, event: Value) -> Value {
    let out = env
        .invoke(Invocation::new(spec.name.clone().into(), event.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    json(&out)
}

fn refused(attempt: &Value) -> bool {
    attempt["ok"] == false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_runs_unprivileged_with_no_capability() {
    let Some((spec, env)) = setup("identity").await else {
        return;
    };
    let out = call(env.as_ref(), &spec, json!({})).await;
    let uid = out["uid"].as_u64().unwrap();
    assert!(uid >= 1_000_000_000, "runs as uid {uid}: {out}");
    assert_eq!(out["euid"], uid);
    let groups = out["groups"].as_array().unwrap();
    assert!(
        groups.iter().all(|g| *g == out["gid"]),
        "supplementary groups: {out}"
    );
    for key in ["cap_eff", "cap_prm", "cap_bnd"] {
        assert_eq!(out[key], "0000000000000000", "{key}: {out}");
    }
    assert_eq!(out["no_new_privs"], "1");
    assert_eq!(out["seccomp"], "2", "a seccomp filter is in force: {out}");
    assert!(refused(&out["userns"]), "made a user namespace: {out}");
    // A second function gets a uid of its own.
    let python = python_with_ric().unwrap();
    let other = hostile(&python, "echo");
    let env2 = jailed(&ProcessSandbox::new(), &other).await.unwrap();
    let out2 = call(env2.as_ref(), &other, json!({})).await;
    assert_ne!(out2["uid"], uid, "two functions share a uid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_cannot_see_or_signal_the_hub() {
    let hub = std::process::id();
    let Some((spec, env)) = setup("processes").await else {
        return;
    };
    let seen = call(env.as_ref(), &spec, json!({ "pid": hub })).await;
    assert_eq!(seen["hub_visible"], false, "{seen}");
    let pids = seen["pids"].as_object().unwrap();
    // Its init and itself (the runtime client), nothing of the host.
    assert!(pids.len() <= 3, "sees {pids:?}");
    let me = std::env::current_exe().unwrap();
    let me = me.file_name().unwrap().to_string_lossy();
    assert!(
        pids.values()
            .all(|cmd| !cmd.as_str().unwrap().contains(me.as_ref())),
        "{pids:?}"
    );

    let python = python_with_ric().unwrap();
    let spec = hostile(&python, "signal_pid");
    let env = jailed(&ProcessSandbox::new(), &spec).await.unwrap();
    let sent = call(env.as_ref(), &spec, json!({ "pid": hub })).await;
    assert!(refused(&sent), "{sent}");
    assert_eq!(sent["error"], "ProcessLookupError", "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_cannot_read_host_secrets() {
    let Some((spec, env)) = setup("read").await else {
        return;
    };
    // A hub config with secrets where the black-box test put one, readable by everyone.
    let config = PathBuf::from(format!("/etc/fnhub-jail-test-{}.toml", std::process::id()));
    std::fs::write(&config, "[[http.credentials]]\nsecret_key = \"s3cret\"\n").unwrap();
    let hub_environ = format!("/proc/{}/environ", std::process::id());
    let paths = [
        "/etc/shadow",
        config.to_str().unwrap(),
        &hub_environ,
        "/proc/1/environ",
        "/root/.bash_history",
        "/etc/hosts",
    ];
    let out = call(env.as_ref(), &spec, json!({ "paths": paths })).await;
    std::fs::remove_file(&config).unwrap();
    for path in &paths[..5] {
        assert!(refused(&out[path]), "read {path}: {out}");
    }
    // Reading works at all: what a runtime needs of /etc is there.
    assert_eq!(out["/etc/hosts"]["ok"], true, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_cannot_write_devices_or_the_host() {
    let Some((spec, env)) = setup("write").await else {
        return;
    };
    let paths = [
        "/dev/kmsg",
        "/dev/mem",
        "/etc/passwd",
        "/usr/fnhub-jail-test",
        "/dev/null",
        "/tmp/scratch",
    ];
    let out = call(env.as_ref(), &spec, json!({ "paths": paths })).await;
    for path in &paths[..4] {
        assert!(refused(&out[path]), "wrote {path}: {out}");
    }
    assert!(!std::path::Path::new("/usr/fnhub-jail-test").exists());
    for path in &paths[4..] {
        assert_eq!(out[path]["ok"], true, "{path}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_cannot_reach_host_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let abstract_name = format!("fnhub-jail-test-{}", std::process::id());
    let _abstract = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    let Some((spec, env)) = setup("unix").await else {
        return;
    };
    let out = call(
        env.as_ref(),
        &spec,
        json!({ "paths": [path, "/run/mysqld/mysqld.sock", "/var/run/postgresql/.s.PGSQL.5432"], "abstract": [abstract_name] }),
    )
    .await;
    let attempts = out.as_object().unwrap();
    assert_eq!(attempts.len(), 4);
    for (target, attempt) in attempts {
        assert!(refused(attempt), "connected to {target}: {out}");
    }
    // The socket file is not there at all, and the abstract name is in another namespace.
    assert_eq!(
        out[path.to_str().unwrap()]["error"],
        "FileNotFoundError",
        "{out}"
    );
    assert_eq!(
        out[format!("@{abstract_name}")]["error"],
        "ConnectionRefusedError",
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_stop_at_the_process_limit() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let spec = hostile(&python, "fork_bomb");
    let mut limits = ProcessLimits::default();
    limits.processes = Some(40);
    let Some(env) = jailed(&ProcessSandbox::new().with_limits(limits), &spec).await else {
        return;
    };
    let out = call(env.as_ref(), &spec, json!({ "max": 300 })).await;
    let forked = out["forked"].as_u64().unwrap();
    assert!(forked < 40, "forked {forked} under a limit of 40: {out}");
    assert_eq!(out["refused"], "BlockingIOError", "{out}");
    // The children are gone again, and the function still works.
    let again = call(env.as_ref(), &spec, json!({ "max": 5 })).await;
    assert_eq!(again["forked"], 5, "{again}");
}

/// Host processes whose command line holds `marker`.
fn host_processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmd| String::from_utf8_lossy(cmd).contains(marker))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outlives_a_timeout() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let spec = hostile(&python, "linger").with_timeout(Duration::from_secs(4));
    let Some(env) = jailed(&ProcessSandbox::new(), &spec).await else {
        return;
    };
    let marker = format!("fnhub-linger-{}", std::process::id());
    let event = json!({ "children": 5, "marker": marker }).to_string();
    let call = env.invoke(Invocation::new(spec.name.clone().into(), event));
    tokio::pin!(call);
    let mut most = 0;
    let outcome = loop {
        tokio::select! {
            outcome = &mut call => break outcome,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                most = most.max(host_processes_with(&marker));
            }
        }
    };
    let err = outcome.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert_eq!(
        most, 5,
        "the children in sessions of their own were seen running"
    );
    let mut left = host_processes_with(&marker);
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = host_processes_with(&marker);
    }
    assert_eq!(left, 0, "children outlived the function's timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mb_bounds_all_its_processes_together() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let spec = hostile(&python, "memory").with_memory_mb(128);
    let Some(env) = jailed(&ProcessSandbox::new(), &spec).await else {
        return;
    };
    // Each child stays under memory_mb on its own; six together hold three times it.
    let event = json!({ "children": 6, "mb": 64, "hold_s": 3 }).to_string();
    match env
        .invoke(Invocation::new(spec.name.clone().into(), event))
        .await
    {
        Ok(out) => {
            let statuses = json(&out)["statuses"].clone();
            let killed = statuses
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s.as_i64() != Some(0))
                .count();
            assert!(
                killed > 0,
                "six children held 384 MB under memory_mb = 128: {statuses}"
            );
        }
        Err(e) => assert_eq!(e.kind, ErrorKind::OutOfMemory, "{e}"),
    }
    // Within the limit, the same handler runs.
    let event = json!({ "children": 2, "mb": 16, "hold_s": 0 }).to_string();
    let out = json(
        &env.invoke(Invocation::new(spec.name.clone().into(), event))
            .await
            .unwrap(),
    );
    assert_eq!(out["statuses"], json!([0, 0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaving_handlers_run_in_the_jail() {
    let Some((spec, env)) = setup("echo").await else {
        return;
    };
    for n in 0..3 {
        let out = call(env.as_ref(), &spec, json!({ "n": n })).await;
        assert_eq!(out["event"]["n"], n);
    }
}
