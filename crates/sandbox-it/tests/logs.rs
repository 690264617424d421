//! A function's stdout and stderr become tracing events carrying its request id.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{open_profile, rust_fixture, spec};
use fnhub_core::{Invocation, Sandbox};
use fnhub_sandbox::ProcessSandbox;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records the fields of every event with target `fnhub::function`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() == "fnhub::function" {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

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
