//! Process functions on an `EdgeHub`: events in, outputs published, failures recycled by
//! the pool, confinement by default.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{json, open_profile, python_with_ric, rust_fixture, spec};
use fnhub::{CapabilityProfile, EdgeHub, ErrorKind, Event, EventSource, Flow, FunctionRef};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_process_functions_and_their_outputs_are_published() {
    let echo = spec("echo", vec![rust_fixture()], open_profile(&[]))
        .with_timeout(Duration::from_millis(800))
        .with_output_topic("echoed/{1}");
    let hub = EdgeHub::builder()
        .deploy(echo)
        .flow(Flow::parse("device:*", "sensors/+/json", "function:echo").unwrap())
        .build()
        .unwrap();
    let mut echoed = hub.subscribe("echoed/#", 16).unwrap();
    hub.publish(Event::new(
        "sensors/d9/json",
        r#"{"op":"echo","t":21.5}"#,
        EventSource::Device("d9".into()),
    ))
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), echoed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.topic.as_str(), "echoed/d9");
    let out = json(&out.payload);
    assert_eq!(out["payload"]["t"], 21.5);
    assert_eq!(
        out["topic"], "sensors/d9/json",
        "the client context names the topic"
    );

    // A timeout through the scheduler: the next invocation still succeeds.
    let f: FunctionRef = "echo".parse().unwrap();
    let timed_out = hub
        .invoke(f.clone(), r#"{"op":"sleep","ms":5000}"#)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(timed_out.kind, ErrorKind::Timeout);
    let ok = hub
        .invoke(f.clone(), r#"{"op":"echo"}"#)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json(&ok)["payload"]["op"], "echo");
    let stats = hub.stats();
    assert!(stats.functions["echo"].invocations >= 3);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_profile_confines_or_refuses() {
    // Nothing granted: no network, no files, no inherited variables.
    let confined = spec(
        "confined",
        vec![rust_fixture()],
        CapabilityProfile::default(),
    );
    let hub = EdgeHub::builder().deploy(confined).build().unwrap();
    let outcome = hub
        .invoke(
            "confined".parse().unwrap(),
            r#"{"op":"read","path":"/root"}"#,
        )
        .await
        .unwrap();
    match outcome {
        Ok(out) => assert_eq!(json(&out)["ok"], false),
        Err(e) => {
            // Fail closed where the machine cannot confine; CI's can.
            assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
            assert!(e.message.contains("cannot enforce"), "{e}");
            assert!(std::env::var_os("CI").is_none(), "{e}");
        }
    }
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_init_errors_reach_the_caller() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python");
    let mut broken = spec(
        "broken",
        vec![
            python.display().to_string(),
            "-m".into(),
            "awslambdaric".into(),
            "no_such_module.handler".into(),
        ],
        open_profile(&[]),
    );
    broken.runtime = fnhub::Runtime::Process {
        command: match &broken.runtime {
            fnhub::Runtime::Process { command, .. } => command.clone(),
            _ => unreachable!(),
        },
        workdir: Some(fixtures),
        handler: Some("no_such_module.handler".into()),
    };
    let hub = EdgeHub::builder().deploy(broken).build().unwrap();
    let e = hub
        .invoke("broken".parse().unwrap(), "{}")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unhandled, "{e}");
    assert_eq!(e.error_type.as_deref(), Some("Runtime.ImportModuleError"));
    hub.shutdown().await;
}
