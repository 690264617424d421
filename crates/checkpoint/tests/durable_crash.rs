//! Exactly-once steps across a real crash: a child process runs a durable execution on a
//! `DirStore`, performs a step's side effect, and is killed with SIGKILL inside the next
//! operation. Recovery in a fresh engine finishes the execution without redoing the step.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::NoChildren;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fnhub_checkpoint::DirStore;
use fnhub_checkpoint::durable::{
    DurableContext, DurableFunction, Engine, SuspendPolicy, durable_fn,
};
use fnhub_core::{FunctionName, Invocation, SystemClock, Version};

const CHILD_DIR: &str = "FNHUB_DURABLE_CRASH_DIR";

/// Charges once (appending a line to `effects`), then runs `second`.
fn payment(effects: PathBuf, hang: bool) -> impl DurableFunction {
    durable_fn(move |ctx: DurableContext, input: Bytes| {
        let effects = effects.clone();
        async move {
            ctx.step("charge", || async {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&effects)
                    .unwrap();
                writeln!(f, "charged {}", String::from_utf8_lossy(&input)).unwrap();
                f.sync_all().unwrap();
                Ok(Bytes::from_static(b"charge-ok"))
            })
            .await?;
            ctx.step("receipt", || async {
                if hang {
                    // The charge is journaled; tell the parent, and wait to be killed.
                    println!("CHARGED");
                    std::io::stdout().flush().unwrap();
                    std::future::pending::<()>().await;
                }
                Ok(Bytes::from_static(b"receipt-ok"))
            })
            .await
        }
    })
}

fn engine(dir: &Path, hang: bool) -> Engine {
    let (store, _) = DirStore::open(dir.join("store")).unwrap();
    let e = Engine::new(
        "hub",
        Arc::new(store),
        Arc::new(NoChildren),
        Arc::new(SystemClock),
        SuspendPolicy::default(),
    );
    e.register(
        FunctionName::new("pay").unwrap(),
        Version::FIRST,
        payment(dir.join("effects.log"), hang),
    );
    e
}

#[test]
fn durable_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let rt = common::runtime();
    rt.block_on(async {
        let e = engine(Path::new(&dir), true);
        let inv = Invocation::new("pay".parse().unwrap(), "order-9");
        let _ = e.start(inv, Version::FIRST).await;
    });
}

#[test]
fn a_step_acknowledged_before_a_crash_is_not_redone() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durable_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let charged = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.ends_with("CHARGED"));
    assert!(charged, "the child never charged");
    child.kill().unwrap(); // SIGKILL, inside the second step
    child.wait().unwrap();
    let effects = std::fs::read_to_string(dir.path().join("effects.log")).unwrap();
    assert_eq!(effects.lines().count(), 1);

    let rt = common::runtime();
    rt.block_on(async {
        let e = engine(dir.path(), false);
        let recovered = e.recover().await.unwrap();
        assert_eq!(recovered.len(), 1);
        let out = tokio::time::timeout(Duration::from_secs(30), e.outcome(recovered[0]))
            .await
            .expect("the taken-over execution never ended")
            .expect("an outcome");
        assert_eq!(out.unwrap(), "receipt-ok");
    });
    let effects = std::fs::read_to_string(dir.path().join("effects.log")).unwrap();
    assert_eq!(effects, "charged order-9\n", "the charge was not repeated");
}
