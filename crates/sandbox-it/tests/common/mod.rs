//! Helpers shared by the sandbox tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fnhub_core::{
    CapabilityProfile, EnvAccess, FunctionName, FunctionSpec, Runtime, ServiceAccess,
};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The `lambda_runtime` fixture binary of this package.
pub(crate) fn rust_fixture() -> String {
    env!("CARGO_BIN_EXE_rust_lambda").to_owned()
}

/// A profile that grants network and files but no inherited environment, plus `vars`.
pub(crate) fn open_profile(vars: &[(&str, &str)]) -> CapabilityProfile {
    let mut profile = CapabilityProfile::unrestricted();
    profile.env = EnvAccess::Only(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    profile
}

/// A process function running `command`.
pub(crate) fn spec(name: &str, command: Vec<String>, profile: CapabilityProfile) -> FunctionSpec {
    FunctionSpec::new(
        FunctionName::new(name).unwrap(),
        Runtime::Process {
            command,
            workdir: None,
            handler: Some("fixture.handle".into()),
        },
    )
    .with_capabilities(profile)
    .with_timeout(Duration::from_secs(5))
}

pub(crate) fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes));
    })
}

/// The Python interpreter that has `awslambdaric`, if any. Under `CI=true` a missing one is
/// a failure: `.ci/run` installs it.
pub(crate) fn python_with_ric() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, awslambdaric; print(sys.executable)"])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 with awslambdaric is required under CI (pip install awslambdaric)"
            );
            eprintln!(
                "skipping: python3 with awslambdaric is not installed (pip install awslambdaric)"
            );
            None
        }
    }
}

/// Runs `command` with `input` on its stdin; what it printed and how it ended.
pub(crate) fn with_stdin(command: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Records the fields of every event with target `fnhub::function`.
#[derive(Clone, Default)]
pub(crate) struct Recorder(pub(crate) Arc<Mutex<Vec<BTreeMap<String, String>>>>);

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

/// Starts the `event_hub` binary (a hub from `config` with a native `record` function that
/// appends what it ran to `record`): the process and its HTTP address, once it listens.
/// Its stderr is echoed with a `hub:` prefix.
pub(crate) fn start_event_hub(
    config: &std::path::Path,
    record: &std::path::Path,
) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_event_hub"))
        .env("EVENT_HUB_STATS", "1")
        .arg(config)
        .arg(record)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut child, "hub", |line| {
        line.strip_prefix("http ").map(str::to_owned)
    });
    (child, addr)
}

/// Reads `child`'s stderr until `find` finds its address in a line, then echoes the rest
/// of its lines, each after `who: `, for the test's output.
pub(crate) fn listening(
    child: &mut std::process::Child,
    who: &'static str,
    find: impl Fn(&str) -> Option<String>,
) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the {who} exited before listening"))
            .unwrap();
        eprintln!("{who}: {line}");
        if let Some(addr) = find(&line) {
            break addr;
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("{who}: {line}");
        }
    });
    addr
}

/// A Python function of `fixtures/python` under awslambdaric, allowed `access` on its
/// endpoint, with `timeout`.
pub(crate) fn python_function(
    python: &std::path::Path,
    name: &str,
    handler: &str,
    access: ServiceAccess,
    timeout: Duration,
) -> FunctionSpec {
    let mut profile = CapabilityProfile::default();
    profile.services = access;
    FunctionSpec::new(
        FunctionName::new(name).unwrap(),
        Runtime::Process {
            command: vec![
                python.display().to_string(),
                "-m".into(),
                "awslambdaric".into(),
                handler.into(),
            ],
            workdir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python")),
            handler: Some(handler.into()),
        },
    )
    .with_capabilities(profile)
    .with_timeout(timeout)
}

/// The result of the fixture `durable_app.slow`'s step `first`, once `ops` (an execution's
/// operations as saved) show it succeeded and the wait `nap` begun.
pub(crate) fn first_step_while_napping(ops: &[Value]) -> Option<Value> {
    let step = ops
        .iter()
        .find(|o| o["name"] == "first" && o["status"] == "SUCCEEDED")?;
    ops.iter()
        .any(|o| o["name"] == "nap" && o["status"] == "STARTED")
        .then(|| serde_json::from_str(step["result"].as_str()?).ok())
        .flatten()
}

/// Node.js 22 or later with AWS's runtime interface client (`aws-lambda-ric`) and durable
/// SDK (`@aws/durable-execution-sdk-js`) built beside it, as `.ci/run` installs them (from
/// `fixtures/node/package.json`) in `$FNHUB_NODE_DIR`, by default `/var/tmp/fnhub-node`.
pub(crate) struct NodeRic {
    /// `bin/node` inside the folder.
    pub(crate) node: PathBuf,
    /// Its `node_modules`.
    pub(crate) modules: PathBuf,
}

/// The Node.js install the JavaScript functions run on, if any. Under `CI=true` a missing
/// one is a failure: `.ci/run` installs it.
pub(crate) fn node_with_ric() -> Option<NodeRic> {
    let dir = std::env::var_os("FNHUB_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/fnhub-node"));
    let node = dir.join("bin/node");
    let modules = dir.join("node_modules");
    let recent = std::process::Command::new(&node)
        .args([
            "-e",
            "process.exit(+process.versions.node.split('.')[0] >= 22 ? 0 : 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    let built = modules.join("aws-lambda-ric/index.mjs").is_file()
        && modules
            .join("@aws/durable-execution-sdk-js/package.json")
            .is_file();
    if recent && built {
        return Some(NodeRic { node, modules });
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Node.js 22 with aws-lambda-ric and @aws/durable-execution-sdk-js in {} is required \
         under CI (.ci/run installs them)",
        dir.display()
    );
    eprintln!(
        "skipping: no Node.js 22 with aws-lambda-ric in {} (see .ci/run)",
        dir.display()
    );
    None
}

impl NodeRic {
    /// A folder holding the JavaScript fixture `file` (from `fixtures/node`) beside a link
    /// to the modules, for a function's `workdir`: the handler's imports resolve there.
    pub(crate) fn task_root(&self, file: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/node")
            .join(file);
        std::fs::copy(&fixture, dir.path().join(file)).unwrap();
        std::os::unix::fs::symlink(&self.modules, dir.path().join("node_modules")).unwrap();
        dir
    }
}
