//! Migration between two processes: a child process starts a durable execution, which
//! suspends waiting for an event; the child exports it to a file and exits. This process
//! imports it and finishes it. The step done in the child is not done again here.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::NoChildren;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use fnhub_checkpoint::MemoryStore;
use fnhub_checkpoint::durable::{
    DurableContext, DurableFunction, Engine, RunResult, SuspendPolicy, durable_fn,
};
use fnhub_core::{Event, EventSource, ExecutionId, FunctionName, Invocation, SystemClock, Version};

const CHILD_DIR: &str = "FNHUB_MIGRATE_CHILD_DIR";

fn order() -> impl DurableFunction {
    durable_fn(|ctx: DurableContext, _input: Bytes| async move {
        let reserved = ctx
            .step("reserve", || async {
                Ok(Bytes::from(format!("pid {}", std::process::id())))
            })
            .await?;
        let paid = ctx.wait_for("payment", "payments/o-1").await?;
        Ok(Bytes::from(format!(
            "reserved by {}, paid {}, finished by pid {}",
            String::from_utf8_lossy(&reserved),
            String::from_utf8_lossy(&paid),
            std::process::id()
        )))
    })
}

fn engine() -> Engine {
    let e = Engine::new(
        "hub",
        Arc::new(MemoryStore::new()),
        Arc::new(NoChildren),
        Arc::new(SystemClock),
        SuspendPolicy::default(),
    );
    e.register(FunctionName::new("order").unwrap(), Version::FIRST, order());
    e
}

#[test]
fn migrate_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let rt = common::runtime();
    rt.block_on(async {
        let e = engine();
        let inv = Invocation::new("order".parse().unwrap(), "o-1");
        let id: ExecutionId = inv.id.into();
        match e.start(inv, Version::FIRST).await.unwrap() {
            RunResult::Suspended { .. } => {}
            other => panic!("{other:?}"),
        }
        let bytes = e.export(id).await.unwrap();
        std::fs::write(Path::new(&dir).join("exported.ckpt"), &bytes).unwrap();
        e.release(id).await.unwrap();
    });
}

#[test]
fn an_execution_moves_between_processes() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "migrate_child", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(dir.path().join("exported.ckpt")).unwrap();

    let rt = common::runtime();
    rt.block_on(async {
        let e = engine();
        let id = e.import(&bytes).await.unwrap();
        assert_eq!(
            e.deliver(&Event::new("payments/o-1", "12 EUR", EventSource::Local))
                .await,
            1
        );
        let out = e.outcome(id).await.unwrap().unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        let me = std::process::id();
        assert!(text.ends_with(&format!("finished by pid {me}")), "{text}");
        assert!(
            !text.starts_with(&format!("reserved by pid {me},")),
            "{text}"
        );
        assert!(text.contains("paid 12 EUR"), "{text}");
    });
}
