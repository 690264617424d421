//! Templates for Python functions: environments forked from a process that has already
//! imported the runtime client and the handler's libraries, run by the unmodified
//! `awslambdaric`. Each environment keeps its own variables, its own control group, its own
//! module state; a function never sees another's template; a template that dies is
//! replaced.
//!
//! Needs `awslambdaric` (and `boto3`, which the fixture imports); the jail parts need root
//! and bubblewrap (present under CI, which fails without them).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{json, python_with_ric};
use fnhub_core::{
    EnvAccess, Environment, FilesystemAccess, FunctionSpec, Invocation, PathGrant, Restriction,
    Sandbox, ServiceAccess,
};
use fnhub_sandbox::ProcessSandbox;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")
}

/// `zygote_app.<handler>` under the default profile (its own files, no network, only the
/// granted variables), with `ZYGOTE_SECRET` set to `secret` and `grant` readable.
fn spec(
    python: &std::path::Path,
    name: &str,
    handler: &str,
    secret: &str,
    grant: Option<&std::path::Path>,
) -> FunctionSpec {
    let entry = format!("zygote_app.{handler}");
    let mut spec = common::python_function(
        python,
        name,
        &entry,
        ServiceAccess::default(),
        Duration::from_secs(20),
    )
    .with_memory_mb(256);
    let profile = &mut spec.capabilities;
    profile.env = EnvAccess::Only([("ZYGOTE_SECRET".to_owned(), secret.to_owned())].into());
    if let Some(dir) = grant {
        profile.filesystem = FilesystemAccess::Only(vec![PathGrant {
            path: dir.to_path_buf(),
            writable: false,
        }]);
    }
    spec
}

fn sandbox() -> ProcessSandbox {
    let sandbox = ProcessSandbox::new().with_templates(Duration::from_secs(600), u64::MAX);
    if ci() { sandbox } else { sandbox.best_effort() }
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

async fn call(env: &dyn Environment, spec: &FunctionSpec, event: Value) -> Value {
    let out = env
        .invoke(Invocation::new(spec.name.clone().into(), event.to_string()))
        .await
        .unwrap();
    json(&out)
}

/// Whether this machine jails functions (root with bubblewrap): the control groups and
/// namespaces asserted below exist only then.
fn jailed(env: &dyn Environment) -> bool {
    let report = env.isolation();
    [Restriction::Processes, Restriction::Filesystem]
        .iter()
        .all(|r| report.enforced.contains(r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_are_forked_from_their_functions_template_each_with_its_own_state() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let sandbox = sandbox();
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("b.txt"), "b's data").unwrap();
    let secret_file = granted.path().join("b.txt").display().to_string();
    let a = spec(&python, "tmpl-a", "whoami", "a", None);
    let b = spec(&python, "tmpl-b", "whoami", "b", Some(granted.path()));

    let a1 = sandbox.prepare(&a).await.unwrap();
    let a2 = sandbox.prepare(&a).await.unwrap();
    assert_eq!(
        sandbox.templates().templates,
        1,
        "one template for one function"
    );
    let one = call(&*a1, &a, serde_json::json!({"read": [&secret_file]})).await;
    let two = call(&*a2, &a, serde_json::json!({})).await;

    // Two processes, forked by one parent (the template).
    assert_ne!(one["process"], two["process"], "{one} {two}");
    assert_eq!(one["ppid"], two["ppid"], "{one} {two}");
    // Each is told its own Runtime API, and its module-level code ran with it: the
    // handler's module was imported after the fork, not in the template.
    assert_ne!(one["runtime_api"], two["runtime_api"]);
    for out in [&one, &two] {
        assert_eq!(out["imported_with"], out["runtime_api"], "{out}");
        assert_eq!(out["secret"], "a", "{out}");
        assert_eq!(out["function"], "tmpl-a", "{out}");
        assert_eq!(
            out["argv"],
            serde_json::json!(["zygote_app.whoami"]),
            "{out}"
        );
        assert_eq!(out["cwd"], fixtures().display().to_string(), "{out}");
    }
    // Function b's files are not a's to read.
    assert_ne!(one["peek"][&secret_file], "read", "{one}");

    let b1 = sandbox.prepare(&b).await.unwrap();
    assert_eq!(sandbox.templates().templates, 2, "a template per function");
    let three = call(&*b1, &b, serde_json::json!({"read": [&secret_file]})).await;
    assert_eq!(three["secret"], "b", "{three}");
    assert_eq!(three["function"], "tmpl-b", "{three}");
    assert_eq!(three["peek"][&secret_file], "read", "{three}");

    // What the templates hold is counted: an interpreter with the runtime client and boto3.
    let usage = sandbox.templates();
    assert!(
        usage.resident_bytes > 2 * 8 * 1024 * 1024,
        "two templates hold {} bytes",
        usage.resident_bytes
    );

    if jailed(&*a1) {
        // Each environment's process was moved into a control group of its own, apart
        // from the template's and from each other's.
        assert_ne!(one["cgroup"], two["cgroup"], "{one} {two}");
        assert!(one["cgroup"].as_str().unwrap().contains("fnhub-"), "{one}");
        // Functions run as uids of their own: a's template is not b's.
        assert_ne!(one["uid"], three["uid"], "{one} {three}");
    } else {
        assert!(!ci(), "CI runs as root with bubblewrap");
    }
    for env in [a1, a2, b1] {
        env.shutdown().await;
    }
}

/// The host pids of the processes of the templates serving `handler` (its launcher, bwrap
/// and the interpreter all carry its script and handler in their arguments).
fn templates_of(handler: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_template = args
            .iter()
            .any(|a| a.starts_with(b"# The template (\"zygote\")"));
        if is_template && args.contains(&handler.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_dies_is_replaced_and_its_environments_carry_on() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let sandbox = sandbox();
    let a = spec(&python, "tmpl-phoenix", "phoenix", "p", None);
    let env = sandbox.prepare(&a).await.unwrap();
    let before = call(&*env, &a, serde_json::json!({})).await;
    let pids = templates_of("zygote_app.phoenix");
    assert!(!pids.is_empty(), "no template process found");
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    // The sandbox sees it go.
    let mut waited = 0;
    while sandbox.templates().templates > 0 {
        waited += 1;
        assert!(waited < 1_000, "the dead template is still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The environment whose process went with it starts another and answers.
    let after = call(&*env, &a, serde_json::json!({})).await;
    assert_eq!(after["secret"], "p", "{after}");
    assert_ne!(after["process"], before["process"], "a new process");
    // A new environment gets a new template.
    let fresh = sandbox.prepare(&a).await.unwrap();
    assert_eq!(sandbox.templates().templates, 1);
    let out = call(&*fresh, &a, serde_json::json!({})).await;
    assert_eq!(out["imported_with"], out["runtime_api"], "{out}");
    // A fork that crashes is a crash of that environment only.
    let crash = spec(&python, "tmpl-phoenix", "crash", "p", None);
    let crashing = sandbox.prepare(&crash).await.unwrap();
    let error = crashing
        .invoke(Invocation::new(crash.name.clone().into(), "{}"))
        .await
        .unwrap_err();
    assert!(error.message.contains("exit status: 3"), "{error}");
    let still = call(&*fresh, &a, serde_json::json!({})).await;
    assert_eq!(
        still["process"], out["process"],
        "the other environment lives on"
    );
    for env in [env, fresh, crashing] {
        env.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_keep_to_their_memory_bound() {
    let Some(python) = python_with_ric() else {
        return;
    };
    // One byte: any template fills it.
    let sandbox = ProcessSandbox::new().with_templates(Duration::from_secs(600), 1);
    let sandbox = if ci() { sandbox } else { sandbox.best_effort() };
    let a = spec(&python, "tmpl-small-a", "small_a", "a", None);
    let b = spec(&python, "tmpl-small-b", "small_b", "b", None);
    let a1 = sandbox.prepare(&a).await.unwrap();
    assert!(!templates_of("zygote_app.small_a").is_empty());
    // a's template is in use: b gets none, and its environment starts the interpreter.
    let b1 = sandbox.prepare(&b).await.unwrap();
    assert_eq!(sandbox.templates().templates, 1);
    assert!(templates_of("zygote_app.small_b").is_empty());
    let out = call(&*b1, &b, serde_json::json!({})).await;
    assert_eq!(out["secret"], "b", "{out}");
    // Once no environment holds a's, it makes room for b's.
    a1.shutdown().await;
    let b2 = sandbox.prepare(&b).await.unwrap();
    assert!(!templates_of("zygote_app.small_b").is_empty());
    let mut waited = 0;
    while !templates_of("zygote_app.small_a").is_empty() {
        waited += 1;
        assert!(waited < 500, "a's template was not stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sandbox.templates().templates, 1);
    let out = call(&*b2, &b, serde_json::json!({})).await;
    assert_eq!(out["imported_with"], out["runtime_api"], "{out}");
    for env in [b1, b2] {
        env.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_policy_decides_how_long_a_template_stays() {
    use fnhub::libs::scheduler::Scheduler;
    use fnhub::libs::scheduler::policy::FixedKeepAlive;
    let Some(python) = python_with_ric() else {
        return;
    };
    // The sandbox alone would keep an unused template ten minutes; the scheduler's policy
    // keeps the function warm one minute of its manual clock.
    let sandbox = sandbox();
    let clock = fnhub_core::ManualClock::new();
    let scheduler = Scheduler::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .reservation_policy(Box::new(FixedKeepAlive::new(Duration::from_secs(60))))
        .maintenance_interval(Duration::ZERO)
        .sandbox(std::sync::Arc::new(sandbox.clone()))
        .build()
        .unwrap();
    let f = spec(&python, "tmpl-policy", "kept_by_policy", "p", None);
    scheduler.deploy(f.clone()).unwrap();
    let call = async || {
        let c = scheduler
            .try_submit(Invocation::new(f.name.clone().into(), "{}"))
            .unwrap()
            .await;
        assert_eq!(json(&c.outcome.unwrap())["secret"], "p");
    };
    call().await;
    assert_eq!(sandbox.templates().templates, 1);
    clock.advance(Duration::from_secs(50));
    scheduler.maintain().await;
    assert_eq!(scheduler.idle_environments(), 1, "within the keep-alive");
    assert_eq!(
        sandbox.templates().templates,
        1,
        "the warm function keeps its template"
    );
    call().await;
    clock.advance(Duration::from_secs(61));
    scheduler.maintain().await;
    assert_eq!(scheduler.idle_environments(), 0, "evicted by the policy");
    assert_eq!(
        sandbox.templates().templates,
        0,
        "the policy let the function go cold: its template went with it"
    );
    let mut waited = 0;
    while !templates_of("zygote_app.kept_by_policy").is_empty() {
        waited += 1;
        assert!(waited < 500, "the template's process was not stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The next call makes it again.
    call().await;
    assert_eq!(sandbox.templates().templates, 1);
    scheduler.shutdown().await;
}
