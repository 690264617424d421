//! The config file's parser and checks, on a sample and on damaged text.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fnhub_core::Runtime;
use fnhub_router::Overflow;

use super::*;

const SAMPLE: &str = r#"
[hub]
name = "hub-a"
checkpoint_dir = "./data/checkpoints"

[http]
listen = "127.0.0.1:9000"
auth = "none"

[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "hub-a"

[[function]]
name = "hello"
runtime = "process"
command = ["python3", "-m", "awslambdaric", "app.handler"]
workdir = "functions/hello"
memory_mb = 128
timeout_ms = 3000

[[flow]]
source = "any"
topic = "sensors/+/temperature"
target = "function:hello"
"#;

#[test]
fn the_sample_loads_with_paths_resolved() {
    let c = HubConfig::parse(SAMPLE, Path::new("/etc/fnhub/hub.toml")).unwrap();
    assert_eq!(c.name(), "hub-a");
    assert_eq!(
        c.checkpoint_dir.as_deref(),
        Some(Path::new("/etc/fnhub/./data/checkpoints"))
    );
    let f = &c.functions()[0];
    assert_eq!(f.resources.timeout, Duration::from_millis(3000));
    match &f.runtime {
        Runtime::Process {
            workdir, command, ..
        } => {
            assert_eq!(
                workdir.as_deref(),
                Some(Path::new("/etc/fnhub/functions/hello"))
            );
            assert_eq!(command[0], "python3");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.flows().len(), 1);
}

fn error(text: &str) -> String {
    HubConfig::parse(text, Path::new("hub.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_line() {
    let e = error("[hub]\nname = \"a\"\ncolour = \"red\"\n");
    assert!(e.starts_with("hub.toml:3:") && e.contains("colour"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\ntimeout_ms = \"soon\"\n",
    );
    assert!(e.starts_with("hub.toml:6:"), "{e}");
    let e = error("[hub]\nname = \"a\"\n\n[[function]]\nname = \"f\"\nruntime = \"lisp\"\n");
    assert!(
        e.contains("hub.toml:4:") && e.contains("function.f.runtime"),
        "{e}"
    );
    let e = error("[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\n");
    assert!(e.contains("function.f.command"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[[flow]]\nsource = \"any\"\ntopic = \"a/#/b\"\ntarget = \"function:f\"\n",
    );
    assert!(e.contains("hub.toml:3:") && e.contains("flow[0]"), "{e}");
    let e = error(
        "[hub]\nname = \"a\"\n[[flow]]\nsource = \"any\"\ntopic = \"a\"\ntarget = \"function:f\"\noverflow = \"later\"\n",
    );
    assert!(e.contains("flow[0].overflow"), "{e}");
    let e = error("[hub]\nname = \"a\"\n[http]\nlisten = \"0.0.0.0:80\"\nauth = \"none\"\n");
    assert!(e.contains("hub.toml:4:") && e.contains("loopback"), "{e}");
    let e = error("[hub]\nname = \"a\"\n[http]\nlisten = \"127.0.0.1:80\"\nauth = \"sigv4\"\n");
    assert!(e.contains("http.credentials"), "{e}");
    let e = error("[hub]\nname = \"a\"\n[mqtt]\nurl = \"tcp://x\"\nclient_id = \"a\"\n");
    assert!(e.contains("hub.toml:4:") && e.contains("mqtt.url"), "{e}");
    let e = error("not toml at all [");
    assert!(e.starts_with("hub.toml:1:"), "{e}");
    assert!(
        error("[http]\nlisten = \"x\"\n").contains("hub"),
        "the [hub] table is required"
    );
}

#[test]
fn overflow_values() {
    assert_eq!(
        parse_overflow("wait:5s"),
        Some(Overflow::Wait(Duration::from_secs(5)))
    );
    assert_eq!(
        parse_overflow("wait:250ms"),
        Some(Overflow::Wait(Duration::from_millis(250)))
    );
    assert_eq!(parse_overflow("drop_oldest"), Some(Overflow::DropOldest));
    assert_eq!(parse_overflow("wait:"), None);
    assert_eq!(parse_overflow("wait:5y"), None);
}

/// `SAMPLE` with the bytes in `cut` replaced by `insert` (SAMPLE is ASCII, so every
/// index is a character boundary).
fn spliced(cut: std::ops::Range<usize>, insert: &str) -> String {
    let (start, end) = (cut.start.min(SAMPLE.len()), cut.end.min(SAMPLE.len()));
    let end = end.max(start);
    format!("{}{insert}{}", &SAMPLE[..start], &SAMPLE[end..])
}

proptest::proptest! {
    #[test]
    fn any_text_is_a_config_or_an_error(text in "\\PC{0,300}") {
        let _ = HubConfig::parse(&text, Path::new("/nonexistent/hub.toml"));
    }

    #[test]
    fn a_damaged_sample_is_a_config_or_an_error_that_says_why(
        start in 0usize..600,
        len in 0usize..40,
        insert in "[\\[\\]=\"a-z0-9#\n .{},_+-]{0,12}",
    ) {
        let text = spliced(start..start + len, &insert);
        if let Err(e) = HubConfig::parse(&text, Path::new("/nonexistent/hub.toml")) {
            proptest::prop_assert!(!e.to_string().is_empty());
        }
    }
}
