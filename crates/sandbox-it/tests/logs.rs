//! A function's stdout and stderr become tracing events carrying its request id.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Recorder, open_profile, rust_fixture, spec};
use fnhub_core::{Invocation, Sandbox};
use fnhub_sandbox::ProcessSandbox;

// One thread, so the subscriber set for this thread sees the log readers' events.
#[tokio::test(flavor = "current_thread")]
async fn output_lines_are_traced_with_the_request_id() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let spec = spec("chatty", vec![rust_fixture()], open_profile(&[]));
    let env = ProcessSandbox::new().prepare(&spec).await.unwrap();
    let inv = Invocation::new(spec.name.clone().into(), r#"{"op":"log"}"#);
    let id = inv.id.to_string();
    env.invoke(inv).await.unwrap();
    let wanted = |stream: &str, text: &str| {
        let events = recorder.0.lock().unwrap();
        events.iter().any(|e| {
            e.get("stream").map(String::as_str) == Some(stream)
                && e.get("message").is_some_and(|m| m.contains(text))
                && e.get("request_id") == Some(&id)
                && e.get("function").map(String::as_str) == Some("chatty")
        })
    };
    for _ in 0..200 {
        if wanted("stdout", "fixture stdout line") && wanted("stderr", "fixture stderr line") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("log lines missing: {:?}", recorder.0.lock().unwrap());
}
