//! Cloud runtime nodes from config files, as a user runs them: the `cloud_runtime` example
//! binary with `--config node.toml --serve`, Python (`awslambdaric`) functions, a real
//! `nats-server`, and the AWS CLI and boto3 as the callers. Node A has only `caller`; B and
//! C have `probe`. A call to A of a function it lacks runs on B or C with the caller's
//! trace, deadline and principal; node B is killed with SIGKILL while it holds calls, and
//! every call still gets its one answer. A Lambda durable function (AWS's durable SDK)
//! started on one node is answered for by another, and finished there when its node is
//! killed, without running a finished step again.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The example binary, built by `cargo test --workspace --all-features` beside this test.
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/cloud_runtime");
    assert!(
        bin.exists(),
        "{} not built (cargo test --workspace --all-features builds it)",
        bin.display()
    );
    bin
}

fn aws_cli() -> bool {
    let ok = Command::new("aws")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "the AWS CLI is required under CI (pip install awscli)"
    );
    ok
}

/// A running node: killed when dropped.
struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config of node `name` with `functions` (name, Python handler) of the fixtures.
fn node_config(
    dir: &Path,
    name: &str,
    url: &str,
    python: &Path,
    functions: &[(&str, &str)],
) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python");
    let mut toml = format!(
        r#"[hub]
name = "{name}"

[http]
listen = "127.0.0.1:0"
auth = "sigv4"

[[http.credentials]]
access_key = "AKIDTENANTA"
secret_key = "tenant-a-secret"
principal = "tenant-a"

[cloud]
nats = "{url}"
deployment = "it"
ack_wait_ms = 2000
in_flight = 3
"#
    );
    for (function, handler) in functions {
        toml.push_str(&format!(
            r#"
[[function]]
name = "{function}"
runtime = "process"
command = ["{python}", "-m", "awslambdaric", "{handler}"]
workdir = "{fixtures}"
timeout_ms = 30000
allow = {{ invoke = ["probe"] }}
env = {{ NODE = "{name}" }}
"#,
            python = python.display(),
            fixtures = fixtures.display(),
        ));
        // The fixtures' durable functions are written with AWS's durable SDK.
        if handler.starts_with("durable_app.") {
            toml.push_str("durable = { execution_timeout_s = 600 }\n");
        }
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    // It holds a secret key: the hub warns about a file others may read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Starts a node from `config` and waits until its front door listens.
fn start_node(config: &Path) -> Node {
    let mut child = Command::new(node_binary())
        .args(["--config"])
        .arg(config)
        .arg("--serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listening(&mut child, "node", |line| {
        let (_, rest) = line
            .split_once(" http ")
            .filter(|_| line.contains(" up: "))?;
        Some(rest.split(',').next()?.trim().to_owned())
    });
    Node { child, addr }
}

fn caller_env(cmd: &mut Command, dir: &Path) {
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDTENANTA")
        .env("AWS_SECRET_ACCESS_KEY", "tenant-a-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_MAX_ATTEMPTS", "1")
        .current_dir(dir);
}

/// The X-Ray trace the AWS CLI sends: botocore adds `X-Amzn-Trace-Id` from
/// `_X_AMZN_TRACE_ID` when it runs inside a Lambda function (`AWS_LAMBDA_FUNCTION_NAME`).
const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// `aws lambda invoke` on node `addr` with `args` (then `out.json`) and `env`, signed as
/// tenant A: what the CLI printed, and the function's answer.
fn invoke_with(addr: &str, args: &[&str], env: &[(&str, &str)]) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("aws");
    cmd.args(["lambda", "invoke", "--endpoint-url"])
        .arg(format!("http://{addr}"))
        .args(args)
        .arg("out.json")
        .envs(env.iter().copied());
    caller_env(&mut cmd, dir.path());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "aws lambda invoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = std::fs::read(dir.path().join("out.json")).unwrap();
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        serde_json::from_slice(&answer).unwrap(),
    )
}

/// `aws lambda invoke` of `function` on node `addr` with `payload`, as a caller inside a
/// Lambda function with trace [`TRACE`]; the function's answer.
fn cli_invoke(addr: &str, function: &str, payload: &str) -> Value {
    let (meta, answer) = invoke_with(
        addr,
        &["--function-name", function, "--payload", payload],
        &[
            ("AWS_LAMBDA_FUNCTION_NAME", "a-caller-outside"),
            ("_X_AMZN_TRACE_ID", TRACE),
        ],
    );
    assert_eq!(meta["StatusCode"], 200, "{meta}");
    assert!(meta.get("FunctionError").is_none(), "{meta}");
    answer
}

/// `calls` concurrent boto3 invocations of `probe` on node `addr`, each sleeping `sleep`
/// seconds there; the answers, in order.
fn boto3_probes(python: &Path, addr: &str, calls: usize, sleep: f64) -> std::process::Child {
    let dir = tempfile::tempdir().unwrap().keep();
    let script = format!(
        r#"
import json, sys, boto3, botocore.config
from concurrent.futures import ThreadPoolExecutor
client = boto3.client("lambda", endpoint_url="http://{addr}",
    config=botocore.config.Config(read_timeout=120, retries={{"max_attempts": 1}}, max_pool_connections=32))
def call(n):
    r = client.invoke(FunctionName="probe", Payload=json.dumps({{"n": n, "sleep": {sleep}}}).encode())
    return {{"status": r["StatusCode"], "error": r.get("FunctionError"), "body": json.loads(r["Payload"].read())}}
with ThreadPoolExecutor({calls}) as pool:
    print(json.dumps(list(pool.map(call, range({calls})))))
"#
    );
    let mut cmd = Command::new(python);
    cmd.args(["-c", &script]).stdout(Stdio::piped());
    caller_env(&mut cmd, &dir);
    cmd.spawn().unwrap()
}

/// The body of `GET http://{addr}{path}`, whatever its status (with Python's urllib).
fn http_get(addr: &str, path: &str) -> String {
    let script = format!(
        "import urllib.request, urllib.error\ntry:\n    r = urllib.request.urlopen('http://{addr}{path}', timeout=10)\nexcept urllib.error.HTTPError as e:\n    r = e\nprint(r.read().decode())"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(addr: &str, name: &str) -> f64 {
    http_get(addr, "/metrics")
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn healthz(addr: &str) -> Value {
    serde_json::from_str(&http_get(addr, "/healthz")).unwrap()
}

/// Python with awslambdaric, a `nats-server` of the test's own, and the AWS CLI; `None`
/// (the test skips) when one is missing outside CI.
fn peers() -> Option<(PathBuf, fnhub_testkit::NatsServer)> {
    let python = common::python_with_ric()?;
    let nats = fnhub_testkit::NatsServer::start()?;
    aws_cli().then_some((python, nats))
}

#[test]
fn nodes_from_config_files_share_calls_with_their_context_and_lose_none() {
    let Some((python, nats)) = peers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    // A first, so that it sets up the deployment; then the two that run `probe`.
    let a = start_node(&node_config(
        dir.path(),
        "a",
        url,
        &python,
        &[("caller", "aws_client.handle")],
    ));
    let mut b = start_node(&node_config(
        dir.path(),
        "b",
        url,
        &python,
        &[("probe", "cloud_probe.handle")],
    ));
    let c = start_node(&node_config(
        dir.path(),
        "c",
        url,
        &python,
        &[("probe", "cloud_probe.handle")],
    ));

    // The AWS CLI calls `caller` on A; its boto3 call of `probe`, which A lacks, runs on B
    // or C with the caller's trace, deadline and principal.
    let out = cli_invoke(
        &a.addr,
        "caller",
        r#"{"op": "invoke", "target": "probe", "payload": {"k": 1}}"#,
    );
    assert_eq!(out["status"], 200, "{out}");
    let probe = &out["payload"];
    assert!(matches!(probe["node"].as_str(), Some("b" | "c")), "{out}");
    assert_eq!(probe["event"]["k"], 1, "{out}");
    let root = |t: &Value| {
        t.as_str()
            .and_then(|t| t.split(';').next())
            .map(str::to_owned)
    };
    assert_eq!(
        root(&out["trace"]).as_deref(),
        Some("Root=1-5759e988-bd862e3fe1be46a994272793"),
        "{out}"
    );
    assert_eq!(root(&probe["trace"]), root(&out["trace"]), "{out}");
    assert_ne!(
        probe["trace"], out["trace"],
        "the child runs in a span of its own: {out}"
    );
    assert_eq!(out["tenant"], "tenant-a", "{out}");
    assert_eq!(probe["tenant"], "tenant-a", "{out}");
    // The child's deadline is its parent's (its own timeout is no shorter), to the ms.
    assert_eq!(probe["deadline_ms"], out["deadline_ms"], "{out}");

    // A call to A of `probe` (which it lacks): twelve at once, each taking 2 s where it
    // runs; B is killed with SIGKILL while it holds some. Each still gets its one answer.
    let callers = boto3_probes(&python, &a.addr, 12, 2.0);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = b.child.kill();
    let _ = b.child.wait();
    let out = callers.wait_with_output().unwrap();
    assert!(out.status.success(), "the boto3 callers failed");
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers.len(), 12);
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer["status"], 200, "{answer}");
        assert!(answer["error"].is_null(), "{answer}");
        assert_eq!(answer["body"]["event"]["n"], n, "{answer}");
        assert_eq!(answer["body"]["tenant"], "tenant-a", "{answer}");
    }
    // Calls B held when it died came again to C.
    assert!(
        metric(&c.addr, "fnhub_cloud_redelivered_total") >= 1.0,
        "no call came again to C: B was killed holding none"
    );
    // A node's /healthz reports its link to NATS.
    let health = healthz(&a.addr);
    assert_eq!(health["nats"]["connected"], true, "{health}");
}

/// A node that loses NATS says so in `/healthz`, keeps serving the functions it runs, and
/// reconnects when the server is back.
#[test]
fn a_node_that_loses_nats_serves_what_it_runs_and_reconnects() {
    let Some((python, mut nats)) = peers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(
        dir.path(),
        "solo",
        nats.url(),
        &python,
        &[("probe", "cloud_probe.handle")],
    );
    let node = start_node(&config);
    let wait_for = |connected: bool| {
        for _ in 0..150 {
            if healthz(&node.addr)["nats"]["connected"] == connected {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("/healthz never said nats connected = {connected}");
    };
    wait_for(true);
    nats.kill();
    wait_for(false);
    // Still serving what it runs itself, over the AWS CLI.
    let out = cli_invoke(&node.addr, "probe", r#"{"k": 2}"#);
    assert_eq!(out["event"]["k"], 2, "{out}");
    assert_eq!(out["node"], "solo", "{out}");
    assert_eq!(healthz(&node.addr)["status"], "ready");
    nats.start_again();
    wait_for(true);
}

/// `aws lambda ARGS` against node `addr`, signed as tenant A: its JSON answer, or why not.
fn cli(addr: &str, args: &[&str]) -> Result<Value, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("aws");
    cmd.args(["lambda", "--endpoint-url"])
        .arg(format!("http://{addr}"))
        .args(args);
    caller_env(&mut cmd, dir.path());
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {:?}", out.stdout))
}

/// `aws lambda invoke` (`RequestResponse`) of `function` at `addr` under execution name
/// `name`: what the CLI printed, and the function's answer.
fn sync_invoke(addr: &str, function: &str, name: &str, payload: &str) -> (Value, Value) {
    let args = [
        "--function-name",
        function,
        "--durable-execution-name",
        name,
        "--payload",
        payload,
    ];
    invoke_with(addr, &args, &[])
}

/// Execution `arn` once it no longer runs, as node `addr` answers for it (90 s at most).
fn finished_at(addr: &str, arn: &str) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let exec = cli(
            addr,
            &["get-durable-execution", "--durable-execution-arn", arn],
        );
        if let Ok(exec) = &exec
            && exec["Status"] != "RUNNING"
        {
            return exec.clone();
        }
        assert!(std::time::Instant::now() < until, "still running: {exec:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Execution `id` as the deployment's bucket holds it (`x.{id}`: its node and itself).
fn in_bucket(url: &str, id: &str) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.ok()?);
        let kv = js.get_key_value("FNHUB_it_EXECUTIONS").await.ok()?;
        let value = kv.get(format!("x.{id}")).await.ok()??;
        serde_json::from_slice(&value).ok()
    })
}

#[test]
fn a_durable_execution_is_finished_by_another_node_when_its_node_is_killed() {
    let Some((python, nats)) = peers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let durable = [
        ("slow", "durable_app.slow"),
        ("approve", "durable_app.approve"),
    ];
    let mut a = start_node(&node_config(dir.path(), "a", url, &python, &durable));
    let b = start_node(&node_config(dir.path(), "b", url, &python, &durable));

    // A callback of an execution A runs, answered at B's front door. Its name is the
    // deployment's: B finds it under that name, and refuses the name with another input.
    let start_approval = |addr: &str, payload: &str| {
        cli(
            addr,
            &[
                "invoke",
                "--function-name",
                "approve",
                "--durable-execution-name",
                "approval-1",
                "--invocation-type",
                "Event",
                "--payload",
                payload,
                "out.json",
            ],
        )
    };
    let approving = start_approval(&a.addr, "{}").unwrap();
    let again = start_approval(&b.addr, "{}").unwrap();
    assert_eq!(
        again["DurableExecutionArn"], approving["DurableExecutionArn"],
        "{again}"
    );
    let err = start_approval(&b.addr, r#"{"other": 1}"#).unwrap_err();
    assert!(
        err.contains("DurableExecutionAlreadyStartedException"),
        "{err}"
    );
    // A synchronous call of that name at B waits for the execution's end on A.
    let waiting = {
        let addr = b.addr.clone();
        std::thread::spawn(move || sync_invoke(&addr, "approve", "approval-1", "{}"))
    };
    let approving = approving["DurableExecutionArn"]
        .as_str()
        .unwrap()
        .to_owned();
    let approving_id = approving.rsplit('/').next().unwrap().to_owned();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let callback = loop {
        let saved = in_bucket(url, &approving_id);
        let callback = saved.as_ref().and_then(|s| {
            s["exec"]["ops"]
                .as_array()?
                .iter()
                .find_map(|o| o["callback_id"].as_str().map(str::to_owned))
        });
        if let Some(callback) = callback {
            break callback;
        }
        assert!(std::time::Instant::now() < until, "no callback: {saved:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    cli(
        &b.addr,
        &[
            "send-durable-execution-callback-success",
            "--callback-id",
            &callback,
            "--result",
            r#"{"approved": true}"#,
        ],
    )
    .unwrap();
    let approved = finished_at(&b.addr, &approving);
    assert_eq!(approved["Status"], "SUCCEEDED", "{approved}");
    let result: Value = serde_json::from_str(approved["Result"].as_str().unwrap()).unwrap();
    assert_eq!(result["approval"], r#"{"approved": true}"#, "{result}");
    assert_eq!(in_bucket(url, &approving_id).unwrap()["node"], "a");
    let (meta, answer) = waiting.join().unwrap();
    assert_eq!(meta["DurableExecutionArn"], approving.as_str(), "{meta}");
    assert_eq!(answer, result);
    // B lists it among the function's executions, though A runs it.
    let listed = cli(
        &b.addr,
        &[
            "list-durable-executions-by-function",
            "--function-name",
            "approve",
        ],
    )
    .unwrap();
    let arns: Vec<&str> = listed["DurableExecutions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["DurableExecutionArn"].as_str())
        .collect();
    assert_eq!(arns, [approving.as_str()], "{listed}");

    // Started on A: a step, then a 6 s wait.
    let started = cli(
        &a.addr,
        &[
            "invoke",
            "--function-name",
            "slow",
            "--invocation-type",
            "Event",
            "--payload",
            r#"{"wait": 6}"#,
            "out.json",
        ],
    )
    .unwrap();
    let arn = started["DurableExecutionArn"].as_str().unwrap().to_owned();
    let id = arn.rsplit('/').next().unwrap().to_owned();

    // B answers for it while A runs it.
    let seen = cli(
        &b.addr,
        &["get-durable-execution", "--durable-execution-arn", &arn],
    )
    .unwrap();
    assert_eq!(seen["Status"], "RUNNING", "{seen}");
    assert_eq!(seen["DurableExecutionArn"], arn.as_str());

    // Once the bucket holds the step's result and the wait begun, on A, kill A.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let first = loop {
        let saved = in_bucket(url, &id);
        let ops = saved
            .as_ref()
            .and_then(|s| s["exec"]["ops"].as_array().cloned())
            .unwrap_or_default();
        if let Some(first) = common::first_step_while_napping(&ops) {
            assert_eq!(saved.as_ref().unwrap()["node"], "a");
            break first;
        }
        assert!(
            std::time::Instant::now() < until,
            "never reached the wait: {saved:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    // A's finished execution is still answered, by B, from the bucket.
    let later = cli(
        &b.addr,
        &[
            "get-durable-execution",
            "--durable-execution-arn",
            &approving,
        ],
    )
    .unwrap();
    assert_eq!(later["Status"], "SUCCEEDED", "{later}");
    let history = cli(
        &b.addr,
        &[
            "get-durable-execution-history",
            "--durable-execution-arn",
            &approving,
        ],
    )
    .unwrap();
    let kinds: Vec<&str> = history["Events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    assert!(kinds.contains(&"CallbackSucceeded"), "{kinds:?}");

    // B takes it up once A has left the live nodes, and finishes it: the step's recorded
    // result is replayed, not run again.
    let until = std::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let exec = cli(
            &b.addr,
            &["get-durable-execution", "--durable-execution-arn", &arn],
        );
        if let Ok(exec) = &exec
            && exec["Status"] != "RUNNING"
        {
            break exec.clone();
        }
        assert!(std::time::Instant::now() < until, "still running: {exec:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(done["Status"], "SUCCEEDED", "{done}");
    let result: Value = serde_json::from_str(done["Result"].as_str().unwrap()).unwrap();
    assert_eq!(result, serde_json::json!({"first": first, "after": "done"}));
    assert_eq!(in_bucket(url, &id).unwrap()["node"], "b");
    assert_eq!(
        metric(&b.addr, "fnhub_cloud_executions_taken_up_total"),
        1.0
    );

    // An execution B does not know, and garbage, are the model's errors.
    let unknown = arn.replace(&id, "0123456789abcdef0123456789abcdef");
    let err = cli(
        &b.addr,
        &["get-durable-execution", "--durable-execution-arn", &unknown],
    )
    .unwrap_err();
    assert!(err.contains("ResourceNotFoundException"), "{err}");
}
