//! Lambda durable functions, unchanged: Python functions written with AWS's
//! `aws-durable-execution-sdk-python` under the unmodified `awslambdaric`, run by the hub,
//! driven and inspected with the AWS CLI at the front door. The SDK checkpoints through
//! the function endpoint; the hub re-invokes it after a wait, a callback and a chained
//! invoke.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::python_with_ric;
use fnhub::http::HttpConfig;
use fnhub::{DurableConfig, EdgeHub, FunctionSpec};
use fnhub_core::ServiceAccess;
use serde_json::{Value, json};

/// Python with awslambdaric and the durable SDK, and the AWS CLI; `None` (a failure under
/// `CI=true`) when one is missing.
fn peers() -> Option<PathBuf> {
    let python = python_with_ric()?;
    let sdk = Command::new(&python)
        .args(["-c", "import aws_durable_execution_sdk_python"])
        .status()
        .is_ok_and(|s| s.success());
    let cli = Command::new("aws")
        .args(["lambda", "help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("get-durable-execution"));
    if sdk && cli {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "aws-durable-execution-sdk-python and an AWS CLI with the durable API are required under CI"
    );
    eprintln!("skipping: pip install aws-durable-execution-sdk-python awscli");
    None
}

fn function(
    python: &std::path::Path,
    name: &str,
    handler: &str,
    access: ServiceAccess,
) -> FunctionSpec {
    common::python_function(python, name, handler, access, Duration::from_secs(30))
}

/// `aws lambda <args>` against the hub; its exit status, JSON answer and stderr.
async fn aws(addr: SocketAddr, args: Vec<String>) -> (bool, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("aws");
    cmd.args(["lambda", "--endpoint-url"])
        .arg(format!("http://{addr}"))
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_MAX_ATTEMPTS", "1")
        .current_dir(dir.path());
    let out = tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap();
        drop(dir);
        out
    })
    .await
    .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that a `get-durable-execution-history` answer fits botocore's Lambda model (the
/// event types, each event's details and their members): `fixtures/python/check_history.py`.
fn follows_the_model(python: &std::path::Path, history: &Value) {
    let checker =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python/check_history.py");
    let out = common::with_stdin(Command::new(python).arg(checker), &history.to_string());
    assert!(
        out.status.success(),
        "the history does not fit the model:\n{}\n{history}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn hub(python: &std::path::Path) -> (EdgeHub, fnhub::http::HttpServer) {
    let mut order = ServiceAccess::default();
    order.publish = vec!["approvals/#".into()];
    order.invoke = vec!["plain".into()];
    let mut tour = ServiceAccess::default();
    tour.publish = vec!["approvals/#".into()];
    tour.invoke = vec!["quick".into()];
    let hub = EdgeHub::builder()
        .deploy(function(python, "order", "durable_app.order", order))
        .deploy(function(python, "tour", "durable_app.tour", tour))
        .deploy(function(
            python,
            "slow",
            "durable_app.slow",
            ServiceAccess::default(),
        ))
        .lambda_durable("tour", DurableConfig::default())
        .lambda_durable("slow", DurableConfig::default())
        .deploy(function(
            python,
            "quick",
            "durable_app.quick",
            ServiceAccess::default(),
        ))
        .deploy(function(
            python,
            "plain",
            "durable_app.plain",
            ServiceAccess::default(),
        ))
        .lambda_durable("order", DurableConfig::default())
        .lambda_durable("quick", DurableConfig::default());
    serve(hub).await
}

/// Builds the hub and serves its front door on a loopback port, without auth.
async fn serve(hub: fnhub::EdgeHubBuilder) -> (EdgeHub, fnhub::http::HttpServer) {
    let hub = hub.build().unwrap();
    let server = fnhub::http::serve(
        &hub,
        "127.0.0.1:0".parse().unwrap(),
        HttpConfig::unauthenticated_loopback(),
    )
    .await
    .unwrap();
    (hub, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_function_waits_takes_a_callback_and_calls_another() {
    let Some(python) = peers() else { return };
    let (hub, server) = hub(&python).await;
    let addr = server.local_addr();
    let mut approvals = hub.subscribe("approvals/#", 4).unwrap();

    // Started as an Event: 202 and the execution's ARN at once.
    let (ok, started, err) = aws(
        addr,
        args(&[
            "invoke",
            "--function-name",
            "order",
            "--invocation-type",
            "Event",
            "--durable-execution-name",
            "order-1",
            "--payload",
            r#"{"n": 21}"#,
            "out.json",
        ]),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(started["StatusCode"], 202, "{started}");
    let arn = started["DurableExecutionArn"].as_str().unwrap().to_owned();
    assert!(
        arn.contains(":function:order:") && arn.contains("/durable-execution/order-1/"),
        "{arn}"
    );

    // The same name and input finds the same execution; another input is refused.
    let (_, again, _) = aws(
        addr,
        args(&[
            "invoke",
            "--function-name",
            "order",
            "--invocation-type",
            "Event",
            "--durable-execution-name",
            "order-1",
            "--payload",
            r#"{"n": 21}"#,
            "out.json",
        ]),
    )
    .await;
    assert_eq!(again["DurableExecutionArn"], arn.as_str());
    let (ok, _, err) = aws(
        addr,
        args(&[
            "invoke",
            "--function-name",
            "order",
            "--invocation-type",
            "Event",
            "--durable-execution-name",
            "order-1",
            "--payload",
            r#"{"n": 1}"#,
            "out.json",
        ]),
    )
    .await;
    assert!(
        !ok && err.contains("DurableExecutionAlreadyStartedException"),
        "{err}"
    );

    // After its step and its one-second wait it asks for approval: answer the callback.
    let asked = tokio::time::timeout(Duration::from_secs(60), approvals.recv())
        .await
        .expect("the function never asked for approval")
        .unwrap();
    let callback: Value = serde_json::from_slice(&asked.payload).unwrap();
    let callback = callback["callback"].as_str().unwrap().to_owned();
    let (running, _, _) = aws(
        addr,
        args(&["get-durable-execution", "--durable-execution-arn", &arn]),
    )
    .await;
    assert!(running);
    let (ok, _, err) = aws(
        addr,
        args(&[
            "send-durable-execution-callback-success",
            "--callback-id",
            &callback,
            "--result",
            r#"{"approved": true}"#,
        ]),
    )
    .await;
    assert!(ok, "{err}");
    // A second answer to the same callback is refused.
    let (ok, _, err) = aws(
        addr,
        args(&[
            "send-durable-execution-callback-success",
            "--callback-id",
            &callback,
            "--result",
            "{}",
        ]),
    )
    .await;
    assert!(!ok && err.contains("CallbackTimeoutException"), "{err}");

    // Then it calls `plain` and ends.
    let done = finished(addr, &arn).await;
    assert_eq!(done["Status"], "SUCCEEDED", "{done}");
    let result: Value = serde_json::from_str(done["Result"].as_str().unwrap()).unwrap();
    // A callback's result reaches the function as sent (the SDK passes it through).
    assert_eq!(
        result,
        json!({"doubled": 42, "approval": r#"{"approved": true}"#, "child": {"x2": 142}})
    );
    assert_eq!(done["DurableExecutionName"], "order-1");

    let (_, history, err) = history(addr, &arn).await;
    assert!(history["Events"].is_array(), "{history} {err}");
    has_events(
        &history,
        &[
            "ExecutionStarted",
            "StepSucceeded",
            "WaitSucceeded",
            "CallbackSucceeded",
            "ChainedInvokeSucceeded",
            "ExecutionSucceeded",
        ],
    );
    follows_the_model(&python, &history);
    let (_, listed, _) = aws(
        addr,
        args(&[
            "list-durable-executions-by-function",
            "--function-name",
            "order",
        ]),
    )
    .await;
    assert_eq!(
        listed["DurableExecutions"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(listed["DurableExecutions"][0]["Status"], "SUCCEEDED");

    // A checkpoint with a token the hub never gave is refused.
    let (ok, _, err) = aws(
        addr,
        args(&[
            "checkpoint-durable-execution",
            "--durable-execution-arn",
            &arn,
            "--checkpoint-token",
            "forged",
        ]),
    )
    .await;
    assert!(
        !ok && err.contains("InvalidParameterValueException"),
        "{err}"
    );
    server.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_call_waits_for_the_execution() {
    let Some(python) = peers() else { return };
    let (hub, server) = hub(&python).await;
    let addr = server.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let (ok, answer, err) = aws(
        addr,
        vec![
            "invoke".into(),
            "--function-name".into(),
            "quick".into(),
            "--payload".into(),
            r#"{"n": 4}"#.into(),
            out.display().to_string(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(answer["StatusCode"], 200, "{answer}");
    assert!(answer["DurableExecutionArn"].as_str().is_some(), "{answer}");
    let result: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(result, json!({"first": 5, "second": 50}));
    server.shutdown().await;
    hub.shutdown().await;
}

/// A config file for a hub whose checkpoints go to `dir/state`, serving the Lambda API on
/// a free loopback port without auth, with one durable function `name`: the handler
/// `durable_app.{name}` under awslambdaric. Its path.
fn config_file(dir: &std::path::Path, python: &std::path::Path, name: &str) -> PathBuf {
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nname = \"durable\"\ncheckpoint_dir = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\n\
             [[function]]\nname = \"{name}\"\nruntime = \"process\"\n\
             command = [\"{}\", \"-m\", \"awslambdaric\", \"durable_app.{name}\"]\n\
             workdir = \"{}\"\ntimeout_ms = 30000\ndurable = {{ execution_timeout_s = 600 }}\n",
            dir.join("state").display(),
            python.display(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/python")
                .display()
        ),
    )
    .unwrap();
    config
}

/// A durable function whose process dies on every invocation, on a hub from its config
/// file, driven with the AWS CLI: the hub invokes it again a few times, then the execution
/// ends FAILED with the runtime's error, rather than staying RUNNING until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_whose_function_keeps_crashing_fails() {
    let Some(python) = peers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &python, "crash");
    let (mut hub, addr) = common::start_event_hub(&config, &dir.path().join("record"));
    let addr: SocketAddr = addr.parse().unwrap();
    let (ok, started, err) = aws(
        addr,
        args(&[
            "invoke",
            "--function-name",
            "crash",
            "--invocation-type",
            "Event",
            "--payload",
            "{}",
            "out.json",
        ]),
    )
    .await;
    assert!(ok, "{err}");
    let arn = started["DurableExecutionArn"].as_str().unwrap().to_owned();
    let done = finished(addr, &arn).await;
    let _ = hub.kill();
    let _ = hub.wait();
    assert_eq!(done["Status"], "FAILED", "{done}");
    assert!(
        done["Error"]["ErrorType"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "the runtime's error is kept: {done}"
    );
}

/// A hub killed with SIGKILL while an execution waits comes back from its config file and
/// finishes it: the step that ran before the kill is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_survives_a_sigkill_of_the_hub() {
    let Some(python) = peers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = config_file(dir.path(), &python, "slow");
    let record = dir.path().join("record");
    let (mut first_hub, addr) = common::start_event_hub(&config, &record);
    let addr: SocketAddr = addr.parse().unwrap();
    let (ok, started, err) = aws(
        addr,
        args(&[
            "invoke",
            "--function-name",
            "slow",
            "--invocation-type",
            "Event",
            "--payload",
            r#"{"wait": 4}"#,
            "out.json",
        ]),
    )
    .await;
    assert!(ok, "{err}");
    let arn = started["DurableExecutionArn"].as_str().unwrap().to_owned();

    // Once the step is saved and the wait begun, as the history says (an answer comes
    // only once what it shows is in the checkpoint store), kill the hub.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let first = loop {
        let (_, history, _) = aws(
            addr,
            args(&[
                "get-durable-execution-history",
                "--durable-execution-arn",
                &arn,
            ]),
        )
        .await;
        let events = history["Events"].as_array().cloned().unwrap_or_default();
        let napping = events
            .iter()
            .any(|e| e["EventType"] == "WaitStarted" && e["Name"] == "nap");
        let step = events
            .iter()
            .find(|e| e["EventType"] == "StepSucceeded" && e["Name"] == "first")
            .and_then(|e| e["StepSucceededDetails"]["Result"]["Payload"].as_str())
            .and_then(|p| serde_json::from_str::<Value>(p).ok());
        if let (true, Some(first)) = (napping, step) {
            break first;
        }
        assert!(
            std::time::Instant::now() < until,
            "never reached the wait: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Kept in the hub's one checkpoint store, beside the engine's, not in a folder of
    // their own.
    assert!(!state.join("durable-executions").exists());
    let slots = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
        .count();
    assert_eq!(
        slots,
        1,
        "one execution, one checkpoint in {}",
        state.display()
    );
    first_hub.kill().unwrap();
    first_hub.wait().unwrap();

    let (mut second_hub, addr) = common::start_event_hub(&config, &record);
    let addr: SocketAddr = addr.parse().unwrap();
    let done = finished(addr, &arn).await;
    let _ = second_hub.kill();
    let _ = second_hub.wait();
    assert_eq!(done["Status"], "SUCCEEDED", "{done}");
    let result: Value = serde_json::from_str(done["Result"].as_str().unwrap()).unwrap();
    assert_eq!(result, json!({"first": first, "after": "done"}));
}

/// Answers `callback` of execution `arn` with `result`, waits for the execution to
/// succeed, and gives its result.
async fn answer_and_finish(addr: SocketAddr, arn: &str, callback: &str, result: &str) -> Value {
    let (ok, _, err) = aws(
        addr,
        args(&[
            "send-durable-execution-callback-success",
            "--callback-id",
            callback,
            "--result",
            result,
        ]),
    )
    .await;
    assert!(ok, "{err}");
    let done = finished(addr, arn).await;
    assert_eq!(done["Status"], "SUCCEEDED", "{done}");
    serde_json::from_str(done["Result"].as_str().unwrap()).unwrap()
}

/// Asserts that `function`'s execution (a durable child's) succeeded.
async fn a_child_succeeded(addr: SocketAddr, function: &str) {
    let (_, listed, _) = aws(
        addr,
        args(&[
            "list-durable-executions-by-function",
            "--function-name",
            function,
        ]),
    )
    .await;
    assert_eq!(
        listed["DurableExecutions"][0]["Status"], "SUCCEEDED",
        "{listed}"
    );
}

/// Asserts that a history holds an event of each of `kinds`.
fn has_events(history: &Value, kinds: &[&str]) {
    let seen: Vec<&str> = history["Events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    for kind in kinds {
        assert!(seen.contains(kind), "{kind} missing from {seen:?}");
    }
}

/// `get-durable-execution-history` of execution `arn`.
async fn history(addr: SocketAddr, arn: &str) -> (bool, Value, String) {
    aws(
        addr,
        args(&[
            "get-durable-execution-history",
            "--durable-execution-arn",
            arn,
        ]),
    )
    .await
}

/// Polls `get-durable-execution` until the execution is no longer running.
async fn finished(addr: SocketAddr, arn: &str) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, exec, err) = aws(
            addr,
            args(&["get-durable-execution", "--durable-execution-arn", arn]),
        )
        .await;
        if exec["Status"] != "RUNNING" {
            return exec;
        }
        assert!(
            std::time::Instant::now() < until,
            "still running: {exec} {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn start(addr: SocketAddr, function: &str, payload: &str) -> String {
    let (ok, started, err) = aws(
        addr,
        args(&[
            "invoke",
            "--function-name",
            function,
            "--invocation-type",
            "Event",
            "--payload",
            payload,
            "out.json",
        ]),
    )
    .await;
    assert!(ok, "{err}");
    started["DurableExecutionArn"].as_str().unwrap().to_owned()
}

/// The SDK's other operations: retries with backoff, `wait_for_callback`,
/// `wait_for_condition`, `map`, `parallel`, a child context and a chained invoke of a
/// durable function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_s_operations_all_run() {
    let Some(python) = peers() else { return };
    let (hub, server) = hub(&python).await;
    let addr = server.local_addr();
    let mut approvals = hub.subscribe("approvals/#", 4).unwrap();
    let arn = start(addr, "tour", "{}").await;
    let asked = tokio::time::timeout(Duration::from_secs(60), approvals.recv())
        .await
        .expect("the function never asked for approval")
        .unwrap();
    let callback: Value = serde_json::from_slice(&asked.payload).unwrap();
    let callback = callback["callback"].as_str().unwrap().to_owned();
    let result = answer_and_finish(addr, &arn, &callback, r#""yes""#).await;
    assert_eq!(
        result,
        json!({
            "attempts": 3,
            // As sent: the SDK passes a callback's result through.
            "approved": r#""yes""#,
            "polled": 3,
            "squares": [1, 4, 9],
            "branches": ["left", "right"],
            "nested": "inside",
            "durable_child": {"first": 2, "second": 20},
        }),
        "{result}"
    );
    // The child execution is an execution of `quick` in its own right.
    a_child_succeeded(addr, "quick").await;
    server.shutdown().await;
    hub.shutdown().await;
}

/// Stop, and what the API refuses: unknown callbacks and executions, a payload over the
/// limit; the execution is unharmed by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_bad_input() {
    let Some(python) = peers() else { return };
    let (hub, server) = hub(&python).await;
    let addr = server.local_addr();
    let arn = start(addr, "slow", r#"{"wait": 30}"#).await;
    for (call, error) in [
        (
            args(&[
                "send-durable-execution-callback-success",
                "--callback-id",
                "no-such",
                "--result",
                "1",
            ]),
            "ResourceNotFoundException",
        ),
        (
            args(&[
                "get-durable-execution",
                "--durable-execution-arn",
                &format!("{arn}x"),
            ]),
            "ResourceNotFoundException",
        ),
        (
            args(&[
                "get-durable-execution-state",
                "--durable-execution-arn",
                &arn,
                "--checkpoint-token",
                "forged",
            ]),
            "InvalidParameterValueException",
        ),
    ] {
        let (ok, _, err) = aws(addr, call).await;
        assert!(!ok && err.contains(error), "{error}: {err}");
    }
    let big = "x".repeat(7 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("big.json");
    std::fs::write(&payload, format!("\"{big}\"")).unwrap();
    let (ok, _, err) = aws(
        addr,
        vec![
            "invoke".into(),
            "--function-name".into(),
            "slow".into(),
            "--invocation-type".into(),
            "Event".into(),
            "--payload".into(),
            format!("fileb://{}", payload.display()),
            "out.json".into(),
        ],
    )
    .await;
    assert!(!ok && err.contains("RequestTooLargeException"), "{err}");
    let (_, exec, _) = aws(
        addr,
        args(&["get-durable-execution", "--durable-execution-arn", &arn]),
    )
    .await;
    assert_eq!(exec["Status"], "RUNNING", "{exec}");

    let (ok, stopped, err) = aws(
        addr,
        args(&["stop-durable-execution", "--durable-execution-arn", &arn]),
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        stopped["StopTimestamp"].is_string() || stopped["StopTimestamp"].is_number(),
        "{stopped}"
    );
    let exec = finished(addr, &arn).await;
    assert_eq!(exec["Status"], "STOPPED", "{exec}");
    let (ok, _, err) = aws(
        addr,
        args(&["stop-durable-execution", "--durable-execution-arn", &arn]),
    )
    .await;
    assert!(!ok && err.contains("ResourceConflictException"), "{err}");
    server.shutdown().await;
    hub.shutdown().await;
}

/// JavaScript: the same durable operations written with AWS's
/// `@aws/durable-execution-sdk-js` under AWS's Node.js runtime interface client
/// (`aws-lambda-ric`), both unmodified, on Node.js 22: steps, a wait, a step retried with
/// backoff until it gives up, `waitForCallback` answered through the callback API,
/// `waitForCondition`, `map`, `parallel`, a child context, and chained invokes of a plain
/// and of a durable JavaScript function. Its history fits botocore's model. The hub is the
/// binary, from a config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_durable_functions_run_unchanged() {
    let Some(python) = peers() else { return };
    let Some(node) = common::node_with_ric() else {
        return;
    };
    // As a user runs it: the hub binary from a config file, the functions' folder apart
    // from it.
    let root = node.task_root("durable_app.mjs");
    let dir = tempfile::tempdir().unwrap();
    let function = |name: &str, handler: &str, extra: &str| {
        format!(
            "[[function]]\nname = \"{name}\"\nruntime = \"process\"\n\
             command = [\"{}\", \"node_modules/aws-lambda-ric/index.mjs\"]\n\
             handler = \"durable_app.{handler}\"\nworkdir = \"{}\"\ntimeout_ms = 30000\n{extra}\n",
            node.node.display(),
            root.path().display()
        )
    };
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nname = \"js\"\ncheckpoint_dir = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\n{}{}{}",
            dir.path().join("state").display(),
            function(
                "tour-js",
                "tour",
                "durable = {}\nallow = { invoke = [\"plain-js\", \"quick-js\"] }"
            ),
            function("quick-js", "quick", "durable = {}"),
            function("plain-js", "plain", ""),
        ),
    )
    .unwrap();
    let (mut hub, addr) = common::start_event_hub(&config, &dir.path().join("record"));
    let addr: SocketAddr = addr.parse().unwrap();
    let arn = start(addr, "tour-js", r#"{"n": 21}"#).await;

    // The callback's id, from the execution's history once it is asked for.
    let until = std::time::Instant::now() + Duration::from_secs(90);
    let callback = loop {
        let (_, history, err) = history(addr, &arn).await;
        let id = history["Events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["EventType"] == "CallbackStarted")
                .and_then(|e| e["CallbackStartedDetails"]["CallbackId"].as_str())
                .map(str::to_owned)
        });
        if let Some(id) = id {
            break id;
        }
        let (_, exec, _) = aws(
            addr,
            args(&["get-durable-execution", "--durable-execution-arn", &arn]),
        )
        .await;
        assert!(
            exec["Status"] == "RUNNING" && std::time::Instant::now() < until,
            "no callback asked for: {exec} {history} {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let result = answer_and_finish(addr, &arn, &callback, r#""yes""#).await;
    assert_eq!(
        result,
        json!({
            "doubled": 42,
            "flaky": "gave up: fails on purpose",
            // As sent: like the Python SDK, it passes a callback's result through.
            "approval": r#""yes""#,
            "polled": 3,
            "squares": [1, 4, 9],
            "branches": ["left", "right"],
            "nested": "inside",
            "plain": {"x2": 142},
            "durableChild": {"first": 2, "second": 20},
        }),
        "{result}"
    );
    let (_, history, _) = history(addr, &arn).await;
    follows_the_model(&python, &history);
    let events = history["Events"].as_array().unwrap();
    // The step that gave up was attempted three times, as its retry strategy said.
    let flaky = events
        .iter()
        .find(|e| e["Name"] == "flaky" && e["EventType"] == "StepFailed")
        .unwrap_or_else(|| panic!("no StepFailed for flaky: {history}"));
    assert_eq!(
        flaky["StepFailedDetails"]["RetryDetails"]["CurrentAttempt"],
        3
    );
    has_events(
        &history,
        &[
            "ExecutionStarted",
            "StepSucceeded",
            "WaitSucceeded",
            "CallbackSucceeded",
            "ContextSucceeded",
            "ChainedInvokeSucceeded",
            "ExecutionSucceeded",
        ],
    );
    // The durable child is an execution of `quick-js` in its own right.
    a_child_succeeded(addr, "quick-js").await;
    let _ = hub.kill();
    let _ = hub.wait();
}
