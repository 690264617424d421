//! `aws lambda invoke --log-type Tail` against the hub's front door, with a Python function
//! under the unmodified `awslambdaric`: the tail holds what the invocation wrote to stdout
//! and stderr, up to its last line, framed by `START` / `END` / `REPORT`, at most 4 KB.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::python_with_ric;
use fnhub::http::HttpConfig;
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Runtime};
use serde_json::Value;

/// The AWS CLI, or `None` when it is not installed (a failure under `CI=true`).
fn aws_cli() -> Option<()> {
    match Command::new("aws").arg("--version").output() {
        Ok(out) if out.status.success() => Some(()),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the AWS CLI is required under CI (pip install awscli)"
            );
            eprintln!("skipping: the AWS CLI is not installed (pip install awscli)");
            None
        }
    }
}

/// `aws lambda invoke` of `chatty` writing `lines` lines; the CLI's answer and the tail
/// decoded from its `LogResult`.
async fn invoke(addr: std::net::SocketAddr, lines: usize, tail: bool) -> (Value, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("aws");
    cmd.args(["lambda", "--endpoint-url"])
        .arg(format!("http://{addr}"))
        .args(["invoke", "--function-name", "chatty"])
        .arg("--payload")
        .arg(format!(r#"{{"lines": {lines}}}"#))
        .args(if tail {
            &["--log-type", "Tail"][..]
        } else {
            &[][..]
        })
        .arg(dir.path().join("out.json"))
        .env("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_MAX_ATTEMPTS", "1");
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let log = answer["LogResult"].as_str().map(|b64| {
        let out = common::with_stdin(Command::new("base64").arg("-d"), b64);
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    });
    (answer, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_the_tail_of_what_the_invocation_wrote() {
    let (Some(python), Some(())) = (python_with_ric(), aws_cli()) else {
        return;
    };
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python");
    let spec = FunctionSpec::new(
        FunctionName::new("chatty").unwrap(),
        Runtime::Process {
            command: vec![
                python.display().to_string(),
                "-m".into(),
                "awslambdaric".into(),
                "app.chatty".into(),
            ],
            workdir: Some(fixtures),
            handler: Some("app.chatty".into()),
        },
    )
    .with_timeout(Duration::from_secs(20));
    let hub = EdgeHub::builder().deploy(spec).build().unwrap();
    let server = fnhub::http::serve(
        &hub,
        "127.0.0.1:0".parse().unwrap(),
        HttpConfig::unauthenticated_loopback(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();

    // Every line, the last one written just before the answer, each time.
    for _ in 0..3 {
        let (answer, log) = invoke(addr, 3, true).await;
        assert_eq!(answer["StatusCode"], 200, "{answer}");
        let log = log.expect("no LogResult");
        let first = log.lines().next().unwrap();
        assert!(first.starts_with("START RequestId: "), "{log}");
        let id = first
            .trim_start_matches("START RequestId: ")
            .split(' ')
            .next()
            .unwrap();
        for line in [
            format!("line 0 of {id}"),
            format!("line 2 of {id}"),
            "to stderr".into(),
            "last words".into(),
            format!("END RequestId: {id}"),
        ] {
            assert!(log.lines().any(|l| l == line), "{line:?} missing: {log}");
        }
        assert!(
            log.contains(&format!("REPORT RequestId: {id}\tDuration: ")),
            "{log}"
        );
    }

    // A long log: its last 4 KB, ending with the report.
    let (_, log) = invoke(addr, 400, true).await;
    let log = log.unwrap();
    assert!(log.len() <= 4096, "{} bytes", log.len());
    assert!(log.len() > 3000, "{} bytes", log.len());
    assert!(
        log.contains("line 399 of") && log.contains("last words"),
        "{log}"
    );
    assert!(!log.contains("line 0 of"), "{log}");
    assert!(
        log.trim_end().lines().last().unwrap().starts_with("REPORT"),
        "{log}"
    );

    // Without --log-type Tail, no LogResult.
    let (answer, log) = invoke(addr, 1, false).await;
    assert!(log.is_none(), "{answer}");
    server.shutdown().await;
    hub.shutdown().await;
}
