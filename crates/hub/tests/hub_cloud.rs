//! The cloud runtime against a nats-server each test starts: results once per invocation,
//! submissions deduplicated, and a node killed with SIGKILL under load losing nothing.
#![cfg(feature = "nats")]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnhub::cloud::{CloudClient, CloudConfig, CloudRuntime};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, from_fn};
use futures_util::StreamExt;

/// A `nats-server -js` of the test's own; `None` when it is not installed (a failure under
/// `CI=true`).
struct Server(Child, String, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server() -> Option<Server> {
    let program = common::installed(
        &[
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ],
        "apt-get install nats-server",
    )?;
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(program)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port, "nats-server");
    Some(Server(child, format!("nats://127.0.0.1:{port}"), dir))
}

fn doubling_hub() -> EdgeHub {
    EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("double").unwrap()),
            from_fn(|inv: Invocation| async move {
                let n: u64 = std::str::from_utf8(&inv.payload).unwrap().parse().unwrap();
                Ok(Bytes::from((n * 2).to_string()))
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_give_every_invocation_one_result() {
    let Some(server) = server() else { return };
    let config = CloudConfig::default();
    let a = CloudRuntime::start(&server.1, "a", doubling_hub(), config.clone())
        .await
        .unwrap();
    let b = CloudRuntime::start(&server.1, "b", doubling_hub(), config.clone())
        .await
        .unwrap();
    let client = CloudClient::connect(&server.1, &config).await.unwrap();
    // Both nodes registered the function; one nobody runs is refused.
    assert_eq!(client.functions().await.unwrap(), vec!["double".to_owned()]);
    let ghost = Invocation::new("ghost".parse().unwrap(), "1");
    assert!(matches!(
        client.submit(&ghost).await,
        Err(fnhub::cloud::CloudError::UnknownFunction(_))
    ));
    let duplicates = Arc::new(AtomicU64::new(0));
    let mut results = Box::pin(client.results(duplicates.clone()).await.unwrap());

    let mut want = BTreeMap::new();
    for n in 0..200u64 {
        let inv = Invocation::new("double".parse().unwrap(), n.to_string());
        client.submit(&inv).await.unwrap();
        if n % 50 == 0 {
            // The same invocation (same id) submitted again is stored once.
            client.submit(&inv).await.unwrap();
        }
        want.insert(inv.id, (n * 2).to_string());
    }
    let mut got = BTreeMap::new();
    while got.len() < want.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .expect("results stopped coming")
            .unwrap();
        assert!(got.insert(r.id, r.outcome.unwrap()).is_none());
    }
    for (id, output) in &got {
        assert_eq!(&output[..], want[id].as_bytes());
    }
    // Nothing more comes: no invocation ran twice to a second result.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), results.next())
            .await
            .is_err()
    );
    assert_eq!(a.stats().ran + b.stats().ran, 200, "each submission once");
    assert_eq!(duplicates.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_invocation() {
    let Some(server) = server() else { return };
    // The example, built by `cargo test` beside this test: it runs three node processes,
    // kills one with SIGKILL once a third of the results are in, and reports.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/cloud_runtime");
    assert!(example.exists(), "{} not built", example.display());
    let url = server.1.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(example)
            .args([
                "--nodes",
                "3",
                "--invocations",
                "600",
                "--json",
                "--url",
                &url,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["submitted"], 600);
    assert_eq!(summary["results"], 600);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["wrong"], 0);
    let per_node = summary["per_node"].as_object().unwrap();
    let total: u64 = per_node.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 600);
    // The killed node stopped early: the others took the rest.
    assert!(per_node["node-0"].as_u64().unwrap() < 300, "{summary}");
}
