//! The process sandbox running Python's unmodified `awslambdaric`, and a raw Python client
//! probing the Runtime API's answers to bad requests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{json, open_profile, python_with_ric};
use fnhub_core::{
    ErrorKind, FunctionName, FunctionSpec, Invocation, PrepareError, Runtime, Sandbox,
};
use fnhub_sandbox::ProcessSandbox;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")
}

fn python_spec(python: &std::path::Path, name: &str, handler: &str) -> FunctionSpec {
    let python = python.display().to_string();
    FunctionSpec::new(
        FunctionName::new(name).unwrap(),
        Runtime::Process {
            command: vec![python, "-m".into(), "awslambdaric".into(), handler.into()],
            workdir: Some(fixtures()),
            handler: Some(handler.into()),
        },
    )
    .with_capabilities(open_profile(&[]))
    .with_timeout(Duration::from_secs(5))
}

fn invocation(spec: &FunctionSpec, payload: &str) -> Invocation {
    Invocation::new(spec.name.clone().into(), payload.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awslambdaric_runs_handlers_and_reports_their_errors() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let spec = python_spec(&python, "py-echo", "app.echo").with_memory_mb(512);
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let mut inv = invocation(&spec, r#"{"n": 7}"#);
    inv.context.topic = Some("sensors/py/x".into());
    let id = inv.id.to_string();
    let out = json(&env.invoke(inv).await.unwrap());
    assert_eq!(out["event"]["n"], 7);
    assert_eq!(out["request_id"], id.as_str());
    assert_eq!(out["function"], "py-echo");
    assert_eq!(out["topic"], "sensors/py/x", "{out}");
    assert_eq!(out["memory"], "512");
    assert!(
        out["trace"].as_str().unwrap().starts_with("Root=1-"),
        "{out}"
    );
    let remaining = out["remaining_ms"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 5_000, "{remaining}");
    let pid = out["pid"].as_u64().unwrap();
    // A caller's ClientContext reaches the handler as `context.client_context`.
    let mut with_context = invocation(&spec, r#"{"n": 8}"#);
    with_context.context.client_context = Some(r#"{"custom":{"k":"v"}}"#.into());
    let again = json(&env.invoke(with_context).await.unwrap());
    assert_eq!(
        again["pid"].as_u64().unwrap(),
        pid,
        "the warm process is reused"
    );
    assert_eq!(again["custom"], serde_json::json!({"k": "v"}), "{again}");

    let spec = python_spec(&python, "py-fail", "app.fail");
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let e = env.invoke(invocation(&spec, "{}")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unhandled, "{e}");
    assert_eq!(e.error_type.as_deref(), Some("ValueError"));
    assert!(
        e.message.starts_with("python handler failed on purpose"),
        "{e}"
    );
    assert!(
        e.stack_trace.iter().any(|frame| frame.contains("app.py")),
        "the stack names the handler's file: {:?}",
        e.stack_trace
    );

    let spec = python_spec(&python, "py-slow", "app.slow").with_timeout(Duration::from_millis(700));
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let e = env
        .invoke(invocation(&spec, r#"{"seconds": 5}"#))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    let out = env
        .invoke(invocation(&spec, r#"{"seconds": 0}"#))
        .await
        .unwrap();
    assert_eq!(&out[..], b"\"done\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awslambdaric_init_errors_fail_the_environment() {
    let Some(python) = python_with_ric() else {
        return;
    };
    for (handler, error_type) in [
        // An exception at import keeps its own type.
        ("broken.handler", "RuntimeError"),
        ("no_such_module.handler", "Runtime.ImportModuleError"),
        ("app.no_such_handler", "Runtime.HandlerNotFound"),
    ] {
        let spec = python_spec(&python, "py-broken", handler);
        match ProcessSandbox::new().prepare(&spec).await {
            Err(PrepareError::Init(error)) => {
                assert_eq!(error.error_type.as_deref(), Some(error_type), "{error}");
                assert_eq!(error.kind, ErrorKind::Unhandled, "{error}");
            }
            Err(other) => panic!("expected an init error, got {other}"),
            Ok(_) => panic!("{handler} cannot initialise"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_api_answers_bad_requests_as_documented() {
    let python = match python_with_ric() {
        Some(p) => p,
        None => PathBuf::from("python3"),
    };
    let spec = FunctionSpec::new(
        FunctionName::new("raw").unwrap(),
        Runtime::Process {
            command: vec![
                python.display().to_string(),
                fixtures().join("raw_runtime.py").display().to_string(),
            ],
            workdir: None,
            handler: None,
        },
    )
    .with_capabilities(open_profile(&[]));
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let seen = json(
        &env.invoke(invocation(&spec, r#"{"probe":true}"#))
            .await
            .unwrap(),
    );
    assert_eq!(seen["next"], 200);
    assert_eq!(seen["unknown_path"], 404);
    assert_eq!(seen["wrong_method"], 405);
    assert_eq!(seen["unknown_id"], 400);
    assert_eq!(seen["unknown_id_error"], 400);
    assert_eq!(seen["unknown_id_type"], "InvalidRequestID");
    assert_eq!(seen["event"]["probe"], true);
    assert_eq!(
        seen["headers"],
        serde_json::json!([
            "lambda-runtime-aws-request-id",
            "lambda-runtime-deadline-ms",
            "lambda-runtime-invoked-function-arn",
            "lambda-runtime-trace-id"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_the_process_never_took_goes_to_the_next_process() {
    let spec = FunctionSpec::new(
        FunctionName::new("one-shot").unwrap(),
        Runtime::Process {
            command: vec![
                "python3".into(),
                fixtures().join("one_shot_runtime.py").display().to_string(),
            ],
            workdir: None,
            handler: None,
        },
    )
    .with_capabilities(open_profile(&[]));
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let mut pids = Vec::new();
    for n in 0..3 {
        // Each call but the first is handed to a process that answered its one invocation
        // and exits 300 ms later without asking for another.
        let out = json(
            &env.invoke(invocation(&spec, &format!(r#"{{"n":{n}}}"#)))
                .await
                .unwrap(),
        );
        assert_eq!(out["event"]["n"], n);
        pids.push(out["process"].as_str().unwrap().to_owned());
    }
    pids.dedup();
    assert_eq!(
        pids.len(),
        3,
        "each answer came from a new process: {pids:?}"
    );
    assert!(env.is_healthy());
}
