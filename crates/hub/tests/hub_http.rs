//! The HTTP front door with real clients: the AWS CLI (`aws lambda invoke`, SigV4-signed by
//! botocore) and plain HTTP/1.1 on a socket for what the CLI would retry or hide.
#![cfg(feature = "http")]
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use fnhub::http::{Credentials, HttpConfig, HttpError, HttpServer};
use fnhub::{
    EdgeHub, FunctionError, FunctionName, FunctionSpec, Invocation, Principal, Runtime, Version,
    from_fn,
};
use serde_json::{Value, json};

const KEY_A: (&str, &str) = (
    "AKIDTENANTA0000000001",
    "secret-a/K7MDENG+bPxRfiCYEXAMPLEKEY",
);
const KEY_B: (&str, &str) = (
    "AKIDTENANTB0000000002",
    "secret-b/K7MDENG+bPxRfiCYEXAMPLEKEY",
);

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

/// `hello` v1 and v2 (answering with their version, the caller's principal and the
/// payload) and `boom`, which fails.
fn hub() -> EdgeHub {
    let hello = |version: u32| {
        let mut spec = FunctionSpec::in_process(FunctionName::new("hello").unwrap())
            .with_version(Version::new(version).unwrap());
        spec.runtime = Runtime::InProcess {
            handler: format!("hello-v{version}"),
        };
        let handler = from_fn(move |inv: Invocation| async move {
            let payload: Value = serde_json::from_slice(&inv.payload).unwrap_or(Value::Null);
            Ok(Bytes::from(
                json!({
                    "version": version,
                    "principal": inv.context.principal.as_str(),
                    "payload": payload,
                    "client_context": inv.context.client_context,
                })
                .to_string(),
            ))
        });
        (spec, handler)
    };
    let (v1, h1) = hello(1);
    let (v2, h2) = hello(2);
    EdgeHub::builder()
        .function(v1, h1)
        .function(v2, h2)
        .function(
            FunctionSpec::in_process(FunctionName::new("boom").unwrap()),
            from_fn(|_inv: Invocation| async move {
                Err(FunctionError::handled("reading out of range")
                    .with_type("RangeError")
                    .with_stack_trace(vec!["at read (sensor.js:3:9)".into()]))
            }),
        )
        .build()
        .unwrap()
}

async fn serve_signed(hub: &EdgeHub) -> HttpServer {
    let config = HttpConfig::sigv4(vec![
        Credentials::new(KEY_A.0, KEY_A.1, Principal::new("tenant-a")),
        Credentials::new(KEY_B.0, KEY_B.1, Principal::new("tenant-b")),
    ])
    .allow(Principal::new("tenant-a"), "*")
    .allow(Principal::new("tenant-b"), "hello:1");
    fnhub::http::serve(hub, "127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// The front door of `hub` without authentication, on a free loopback port.
async fn serve_open(hub: &EdgeHub) -> HttpServer {
    fnhub::http::serve(
        hub,
        "127.0.0.1:0".parse().unwrap(),
        HttpConfig::unauthenticated_loopback(),
    )
    .await
    .unwrap()
}

struct Cli {
    status: i32,
    stdout: Value,
    stderr: String,
    file: Vec<u8>,
}

/// `aws lambda` against the hub at `addr`, signing with `key`, reading no config of the
/// machine's (its files go in `dir`).
fn aws_lambda_command(addr: SocketAddr, key: (&str, &str), dir: &Path) -> Command {
    let mut cmd = Command::new("aws");
    cmd.args(["lambda", "--endpoint-url"])
        .arg(format!("http://{addr}"))
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1");
    cmd
}

/// `aws lambda invoke` against the hub, in a blocking thread.
async fn invoke(addr: SocketAddr, key: (&str, &str), args: &[&str]) -> Cli {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let mut cmd = aws_lambda_command(addr, key, dir.path());
    cmd.arg("invoke").args(args).arg(&out);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    Cli {
        status: output.status.code().unwrap_or(-1),
        stdout: serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        file: read(&out),
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_invokes_functions_with_sigv4() {
    let Some(()) = aws_cli() else { return };
    let hub = hub();
    let server = serve_signed(&hub).await;
    let addr = server.local_addr();

    // The latest version (answered as `$LATEST`, as Lambda does), run for the principal
    // behind the key.
    let r = invoke(
        addr,
        KEY_A,
        &["--function-name", "hello", "--payload", r#"{"x":1}"#],
    )
    .await;
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout["StatusCode"], 200);
    assert_eq!(r.stdout["ExecutedVersion"], "$LATEST");
    let body = json_of(&r.file);
    assert_eq!(body["version"], 2);
    assert_eq!(body["principal"], "tenant-a");
    assert_eq!(body["payload"], json!({"x": 1}));
    assert_eq!(body["client_context"], Value::Null);

    // A ClientContext (base64 JSON) reaches the function as it was sent.
    let r = invoke(
        addr,
        KEY_A,
        &[
            "--function-name",
            "hello",
            // {"custom":{"k":"v"}}
            "--client-context",
            "eyJjdXN0b20iOnsiayI6InYifX0=",
        ],
    )
    .await;
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        json_of(&r.file)["client_context"],
        r#"{"custom":{"k":"v"}}"#
    );

    // A version by qualifier, and by ARN.
    let r = invoke(
        addr,
        KEY_A,
        &["--function-name", "hello", "--qualifier", "1"],
    )
    .await;
    assert_eq!(r.stdout["ExecutedVersion"], "1", "{}", r.stderr);
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:hello:1";
    let r = invoke(addr, KEY_A, &["--function-name", arn]).await;
    assert_eq!(r.stdout["ExecutedVersion"], "1", "{}", r.stderr);

    // A function error: 200, FunctionError, Lambda's error body.
    let r = invoke(addr, KEY_A, &["--function-name", "boom"]).await;
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout["FunctionError"], "Unhandled");
    let body = json_of(&r.file);
    assert_eq!(body["errorType"], "RangeError");
    assert_eq!(body["errorMessage"], "reading out of range");
    assert_eq!(body["stackTrace"], json!(["at read (sensor.js:3:9)"]));
    assert!(body["requestId"].is_string(), "{body}");

    // Event and DryRun.
    let r = invoke(
        addr,
        KEY_A,
        &["--function-name", "hello", "--invocation-type", "Event"],
    )
    .await;
    assert_eq!(r.stdout["StatusCode"], 202, "{}", r.stderr);
    let r = invoke(
        addr,
        KEY_A,
        &["--function-name", "hello", "--invocation-type", "DryRun"],
    )
    .await;
    assert_eq!(r.stdout["StatusCode"], 204, "{}", r.stderr);

    // Errors the CLI reports by their AWS names.
    let cases: [(&[&str], (&str, &str), &str); 5] = [
        (
            &["--function-name", "nope"],
            KEY_A,
            "ResourceNotFoundException",
        ),
        (
            &["--function-name", "hello", "--qualifier", "9"],
            KEY_A,
            "ResourceNotFoundException",
        ),
        (
            &["--function-name", "hello", "--payload", "not json"],
            KEY_A,
            "InvalidRequestContentException",
        ),
        // tenant-b may invoke hello:1 only.
        (
            &["--function-name", "hello"],
            KEY_B,
            "AccessDeniedException",
        ),
        (
            &["--function-name", "hello"],
            (KEY_A.0, "a wrong secret"),
            "InvalidSignatureException",
        ),
    ];
    for (args, key, error) in cases {
        let r = invoke(addr, key, args).await;
        assert_ne!(r.status, 0, "{args:?} succeeded");
        assert!(r.stderr.contains(error), "{args:?}: {}", r.stderr);
    }
    let r = invoke(
        addr,
        ("AKIDUNKNOWN000000000", "x"),
        &["--function-name", "hello"],
    )
    .await;
    assert!(
        r.stderr.contains("UnrecognizedClientException"),
        "{}",
        r.stderr
    );
    let r = invoke(
        addr,
        KEY_B,
        &["--function-name", "hello", "--qualifier", "1"],
    )
    .await;
    assert_eq!(r.status, 0, "tenant-b may invoke hello:1: {}", r.stderr);
    assert_eq!(json_of(&r.file)["principal"], "tenant-b");

    server.shutdown().await;
    hub.shutdown().await;
}

/// One HTTP/1.1 request on a fresh connection: status, headers (lowercased), body.
fn http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn post(path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_without_authentication_on_loopback() {
    let hub = hub();
    // Unauthenticated serving is refused off loopback.
    let err = fnhub::http::serve(
        &hub,
        "0.0.0.0:0".parse().unwrap(),
        HttpConfig::unauthenticated_loopback(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpError::NotLoopback(_)), "{err}");
    // Empty and duplicate access keys are refused before anything listens.
    for creds in [
        vec![Credentials::new("", "secret", Principal::new("a"))],
        vec![Credentials::new("key", "", Principal::new("a"))],
        vec![
            Credentials::new("key", "one", Principal::new("a")),
            Credentials::new("key", "two", Principal::new("b")),
        ],
    ] {
        let err = fnhub::http::serve(
            &hub,
            "127.0.0.1:0".parse().unwrap(),
            HttpConfig::sigv4(creds),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HttpError::Credentials(_)), "{err}");
    }
    let server = fnhub::http::serve(
        &hub,
        "127.0.0.1:0".parse().unwrap(),
        HttpConfig::unauthenticated_loopback().with_max_payload(1024),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let path = "/2015-03-31/functions/hello/invocations";

    let response = tokio::task::spawn_blocking(move || {
        let ok = http(addr, &post(path, "", r#"{"a":1}"#));
        let too_big = http(
            addr,
            &post(path, "", &format!(r#"{{"a":"{}"}}"#, "x".repeat(2000))),
        );
        let bad_type = http(addr, &post(path, "X-Amz-Invocation-Type: Later\r\n", ""));
        let traced = http(
            addr,
            &post(
                path,
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
                "",
            ),
        );
        let unknown = http(
            addr,
            &post("/2015-03-31/functions/ghost/invocations", "", ""),
        );
        let get = http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"),
        );
        (ok, too_big, bad_type, traced, unknown, get)
    })
    .await
    .unwrap();
    let (ok, too_big, bad_type, traced, unknown, get) = response;
    assert_eq!(ok.0, 200);
    assert_eq!(json_of(ok.2.as_bytes())["principal"], "anonymous");
    assert_eq!(header(&ok.1, "x-amz-executed-version"), Some("$LATEST"));
    assert!(header(&ok.1, "x-amzn-requestid").is_some());
    assert_eq!(too_big.0, 413);
    assert_eq!(
        header(&too_big.1, "x-amzn-errortype"),
        Some("RequestTooLargeException")
    );
    assert_eq!(bad_type.0, 400);
    assert_eq!(
        header(&bad_type.1, "x-amzn-errortype"),
        Some("InvalidParameterValueException")
    );
    assert_eq!(traced.0, 200);
    assert_eq!(unknown.0, 404);
    assert!(
        json_of(unknown.2.as_bytes())["message"]
            .as_str()
            .unwrap()
            .contains("Function not found: ghost")
    );
    assert_eq!(get.0, 405);
    server.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hub_answers_429_and_a_closing_one_503() {
    // One worker, a queue of one: a slow call holds the worker, a second waits, a third
    // is refused.
    let (release, released) = tokio::sync::watch::channel(false);
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let hub = EdgeHub::builder()
        .workers(1)
        .queue_capacity(1)
        .function(
            FunctionSpec::in_process(FunctionName::new("slow").unwrap())
                .with_timeout(Duration::from_secs(60)),
            from_fn(move |_inv: Invocation| {
                let mut released = released.clone();
                let _ = started_tx.send(());
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok(Bytes::from_static(b"{}"))
                }
            }),
        )
        .build()
        .unwrap();
    let server = serve_open(&hub).await;
    let addr = server.local_addr();
    let path = "/2015-03-31/functions/slow/invocations";
    let event = "X-Amz-Invocation-Type: Event\r\n";
    let first = tokio::task::spawn_blocking(move || http(addr, &post(path, event, "")))
        .await
        .unwrap();
    assert_eq!(first.0, 202);
    // The first holds the only worker; the second waits in the queue; the third finds
    // the queue full.
    started.recv().await.unwrap();
    let (second, third) = tokio::task::spawn_blocking(move || {
        (
            http(addr, &post(path, event, "")),
            http(addr, &post(path, event, "")),
        )
    })
    .await
    .unwrap();
    assert_eq!(second.0, 202);
    assert_eq!(third.0, 429);
    assert_eq!(
        header(&third.1, "x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert!(third.2.contains("Reason"));
    let _ = release.send(true);
    let closing = hub.clone();
    let shutdown = tokio::spawn(async move { closing.shutdown().await });
    shutdown.await.unwrap();
    let after = tokio::task::spawn_blocking(move || http(addr, &post(path, "", "")))
        .await
        .unwrap();
    assert_eq!(after.0, 503);
    server.shutdown().await;
}

/// A client that sends half a request (headers cut short, or a body shorter than its
/// length) no longer keeps the front door, and so the hub, from stopping: shutdown closes
/// it after its grace period. Before, shutdown waited for it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_half_sent_requests_after_its_grace() {
    let hub = hub();
    let server = serve_open(&hub).await;
    let addr = server.local_addr();
    let half = |text: &'static str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(text.as_bytes()).unwrap();
        s
    };
    let _headers = half("POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: hub\r\n");
    let _body = half(
        "POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n\r\n{\"a\":",
    );
    // Let the server take both connections before it is told to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The outer bound only turns a hang into a failure; the grace is what ends it.
    tokio::time::timeout(
        Duration::from_secs(30),
        server.shutdown_within(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown waited for a half-sent request");
    hub.shutdown().await;
}

/// A request that is not signed is answered `403` on its headers alone: the hub does not
/// wait for (or hold) the 6 MiB its Content-Length announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_requests_are_refused_before_their_body() {
    let hub = hub();
    let server = serve_signed(&hub).await;
    let addr = server.local_addr();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: hub\r\n\
              Content-Length: 6291456\r\n\r\n{\"a\":",
        )
        .unwrap();
        let mut buf = [0; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("MissingAuthenticationTokenException"),
        "{answer}"
    );
    server.shutdown().await;
    hub.shutdown().await;
}

/// Requests signed by botocore's own SigV4 signer, sent with Python's urllib: one signed for
/// service `s3` instead of `lambda`, and one that signs `X-Amz-Content-Sha256` of a body
/// and sends another. Both were accepted before; both are refused now, and the same
/// signer's honest request still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botocore_signed_forgeries_are_refused() {
    if aws_cli().is_none() {
        return;
    }
    let hub = hub();
    let server = serve_signed(&hub).await;
    let addr = server.local_addr();
    let script = r#"
import hashlib, json, sys, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
addr, key, secret = sys.argv[1:4]
url = f"http://{addr}/2015-03-31/functions/hello/invocations"
def send(service, signed_body, sent_body, declare_hash):
    headers = {}
    if declare_hash:
        headers["X-Amz-Content-Sha256"] = hashlib.sha256(signed_body).hexdigest()
    req = AWSRequest(method="POST", url=url, data=signed_body, headers=headers)
    SigV4Auth(Credentials(key, secret), service, "us-east-1").add_auth(req)
    out = urllib.request.Request(url, data=sent_body, method="POST", headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(out, timeout=10) as r:
            return r.status, r.headers.get("x-amzn-ErrorType")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType")
print(json.dumps({
    "honest": send("lambda", b'{"a":1}', b'{"a":1}', False),
    "honest_declared": send("lambda", b'{"a":1}', b'{"a":1}', True),
    "wrong_service": send("s3", b'{"a":1}', b'{"a":1}', False),
    "swapped_body": send("lambda", b'{"a":1}', b'{"a":2}', True),
}))
"#;
    let (key, secret) = KEY_A;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &addr.to_string(), key, secret])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["honest"], json!([200, null]), "{r}");
    assert_eq!(r["honest_declared"], json!([200, null]), "{r}");
    assert_eq!(
        r["wrong_service"],
        json!([403, "InvalidSignatureException"]),
        "{r}"
    );
    assert_eq!(
        r["swapped_body"],
        json!([403, "InvalidSignatureException"]),
        "{r}"
    );
    server.shutdown().await;
    hub.shutdown().await;
}

/// `aws lambda <args>` against the hub: exit status, stdout as JSON, stderr.
async fn aws_lambda(addr: SocketAddr, key: (&str, &str), args: &[&str]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = aws_lambda_command(addr, key, dir.path());
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The read-only Lambda operations the CLI and SDKs call, in Lambda's shapes; an unknown
/// operation is a JSON error with its type, not a bare 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_reads_functions_versions_and_aliases() {
    let Some(()) = aws_cli() else { return };
    let hub = hub();
    hub.set_alias(
        &FunctionName::new("hello").unwrap(),
        fnhub::libs::core::Alias::new("live".parse().unwrap(), Version::new(1).unwrap()),
    )
    .unwrap();
    let server = serve_signed(&hub).await;
    let addr = server.local_addr();

    let (status, out, err) = aws_lambda(addr, KEY_A, &["list-functions"]).await;
    assert_eq!(status, 0, "{err}");
    let names: Vec<&str> = out["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FunctionName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boom", "hello"]);

    let (status, out, err) =
        aws_lambda(addr, KEY_A, &["get-function", "--function-name", "hello"]).await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out["Configuration"]["Version"], "$LATEST");
    assert_eq!(out["Configuration"]["State"], "Active");

    let (status, out, err) = aws_lambda(
        addr,
        KEY_A,
        &[
            "get-function-configuration",
            "--function-name",
            "hello",
            "--qualifier",
            "1",
        ],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out["Version"], "1");
    assert!(
        out["FunctionArn"]
            .as_str()
            .unwrap()
            .ends_with(":function:hello:1")
    );

    let (status, out, err) = aws_lambda(
        addr,
        KEY_A,
        &["list-versions-by-function", "--function-name", "hello"],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    let versions: Vec<&str> = out["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["$LATEST", "1", "2"]);

    let (status, out, err) =
        aws_lambda(addr, KEY_A, &["list-aliases", "--function-name", "hello"]).await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out["Aliases"][0]["Name"], "live");
    assert_eq!(out["Aliases"][0]["FunctionVersion"], "1");
    let (status, out, err) = aws_lambda(
        addr,
        KEY_A,
        &["get-alias", "--function-name", "hello", "--name", "live"],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out["FunctionVersion"], "1");
    let (status, _, err) = aws_lambda(
        addr,
        KEY_A,
        &["get-alias", "--function-name", "hello", "--name", "gone"],
    )
    .await;
    assert_ne!(status, 0);
    assert!(err.contains("ResourceNotFoundException"), "{err}");

    // A principal sees only what it may invoke: tenant-b may invoke hello:1 only.
    let (status, out, err) = aws_lambda(addr, KEY_B, &["list-functions"]).await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out["Functions"], json!([]));
    let (status, _, err) =
        aws_lambda(addr, KEY_B, &["get-function", "--function-name", "boom"]).await;
    assert_ne!(status, 0);
    assert!(err.contains("AccessDeniedException"), "{err}");

    // Something this hub does not serve.
    let (status, _, err) = aws_lambda(addr, KEY_A, &["list-layers"]).await;
    assert_ne!(status, 0);
    assert!(err.contains("UnknownOperationException"), "{err}");
    server.shutdown().await;
    hub.shutdown().await;
}

/// `order`, a durable Rust function: a step, a wait for `payments/{input}`, a step.
fn durable_hub() -> EdgeHub {
    use fnhub::{DurableContext, durable_fn};
    EdgeHub::builder()
        .durable(
            FunctionSpec::in_process(FunctionName::new("order").unwrap()),
            durable_fn(|ctx: DurableContext, input: Bytes| async move {
                ctx.step("reserve", || async { Ok(Bytes::from_static(b"\"held\"")) })
                    .await?;
                let order = String::from_utf8_lossy(&input).trim_matches('"').to_owned();
                let filter = format!("payments/{order}");
                let paid = ctx.wait_for("payment", &filter).await?;
                ctx.step("ship", || async move { Ok(paid) }).await
            }),
        )
        .build()
        .unwrap()
}

/// The same operations that list, read and stop Lambda durable executions do so for a
/// Rust function's executions (the engine's), with the AWS CLI: each execution's journal
/// reads as Lambda's operations and history events, a stop ends it with the given error
/// (its caller gets it), and one that ended is listed with its outcome until deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_reads_and_stops_the_executions_of_a_rust_durable_function() {
    let Some(()) = aws_cli() else { return };
    let hub = durable_hub();
    let server = serve_signed(&hub).await;
    let addr = server.local_addr();
    for order in ["o-1", "o-2"] {
        let reply = hub
            .invoke("order".parse().unwrap(), Bytes::from(order))
            .await
            .unwrap()
            .unwrap();
        assert!(reply.is_empty(), "it waits for its payment");
    }
    let list = |extra: &'static [&'static str]| {
        let mut args = vec![
            "list-durable-executions-by-function",
            "--function-name",
            "order",
        ];
        args.extend(extra);
        async move {
            let (status, out, err) = aws_lambda(addr, KEY_A, &args).await;
            assert_eq!(status, 0, "{err}");
            out["DurableExecutions"].as_array().unwrap().clone()
        }
    };
    let listed = list(&[]).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|e| e["Status"] == "RUNNING"),
        "{listed:?}"
    );
    let arn = |e: &Value| e["DurableExecutionArn"].as_str().unwrap().to_owned();
    let id = |e: &Value| -> fnhub::ExecutionId {
        e["DurableExecutionName"].as_str().unwrap().parse().unwrap()
    };
    let get = |arn: String| async move {
        let (status, got, err) = aws_lambda(
            addr,
            KEY_A,
            &["get-durable-execution", "--durable-execution-arn", &arn],
        )
        .await;
        assert_eq!(status, 0, "{err}");
        got
    };
    // Both started within a millisecond or so: which is which, by their input.
    let mut listed = listed;
    if get(arn(&listed[0])).await["InputPayload"] != "o-1" {
        listed.swap(0, 1);
    }
    let (first, second) = (arn(&listed[0]), arn(&listed[1]));
    let got = get(first.clone()).await;
    assert_eq!(got["Status"], "RUNNING");
    assert_eq!(got["InputPayload"], "o-1");
    assert_eq!(
        got["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:order:1"
    );

    let (status, history, err) = aws_lambda(
        addr,
        KEY_A,
        &[
            "get-durable-execution-history",
            "--durable-execution-arn",
            &first,
        ],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    let events: Vec<&str> = history["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["EventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "ExecutionStarted",
            "StepStarted",
            "StepSucceeded",
            "CallbackStarted"
        ]
    );
    assert_eq!(
        history["Events"][2]["StepSucceededDetails"]["Result"]["Payload"],
        "\"held\""
    );
    assert_eq!(history["Events"][3]["Name"], "payments/o-1");

    // Another tenant, without the right to invoke `order`, neither reads nor stops.
    let (status, _, err) = aws_lambda(
        addr,
        KEY_B,
        &["stop-durable-execution", "--durable-execution-arn", &first],
    )
    .await;
    assert_ne!(status, 0);
    assert!(err.contains("AccessDeniedException"), "{err}");

    let waiting = tokio::spawn({
        let (hub, id) = (hub.clone(), id(&listed[0]));
        async move { hub.durable_outcome(id).await }
    });
    let (status, stopped, err) = aws_lambda(
        addr,
        KEY_A,
        &[
            "stop-durable-execution",
            "--durable-execution-arn",
            &first,
            "--error",
            "ErrorType=OrderCancelled,ErrorMessage=the customer called",
        ],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert!(
        stopped["StopTimestamp"].as_f64().unwrap() > 0.0,
        "{stopped}"
    );
    let outcome = waiting.await.unwrap().unwrap().unwrap_err();
    assert_eq!(outcome.error_type.as_deref(), Some("OrderCancelled"));
    assert_eq!(outcome.message, "the customer called");
    // Its payment, if it comes, wakes nothing.
    hub.publish(fnhub::Event::new(
        "payments/o-1",
        "late",
        fnhub::EventSource::Local,
    ))
    .unwrap();

    // The other is paid and finishes.
    let paid = tokio::spawn({
        let (hub, id) = (hub.clone(), id(&listed[1]));
        async move { hub.durable_outcome(id).await }
    });
    hub.publish(fnhub::Event::new(
        "payments/o-2",
        "\"paid\"",
        fnhub::EventSource::Local,
    ))
    .unwrap();
    assert_eq!(paid.await.unwrap().unwrap().unwrap(), "\"paid\"");

    let listed = list(&[]).await;
    let mut statuses: Vec<(String, &str)> = listed
        .iter()
        .map(|e| (arn(e), e["Status"].as_str().unwrap()))
        .collect();
    statuses.sort_by_key(|(arn, _)| *arn != first);
    assert_eq!(
        statuses,
        [(first.clone(), "STOPPED"), (second.clone(), "SUCCEEDED")]
    );
    assert_eq!(list(&["--statuses", "STOPPED"]).await.len(), 1);
    assert_eq!(get(second.clone()).await["Result"], "\"paid\"");

    // One that ended is not stopped again; deleted, it is gone.
    let (status, _, err) = aws_lambda(
        addr,
        KEY_A,
        &["stop-durable-execution", "--durable-execution-arn", &second],
    )
    .await;
    assert_ne!(status, 0);
    assert!(err.contains("ResourceConflictException"), "{err}");
    // botocore 1.43 has no DeleteDurableExecution (nor pause and resume): plain HTTP,
    // through an open loopback door of the same hub.
    let open = serve_open(&hub).await;
    let path = |arn: &str| {
        let encoded = arn.replace(':', "%3A").replace('/', "%2F");
        format!("/2025-12-01/durable-executions/{encoded}")
    };
    let (status, _, body) = http(
        open.local_addr(),
        &post(&format!("{}/pause", path(&second)), "", ""),
    );
    assert_eq!(status, 409, "{body}");
    let delete = |arn: &str| {
        format!(
            "DELETE {} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n",
            path(arn)
        )
    };
    let (status, _, body) = http(open.local_addr(), &delete(&first));
    assert_eq!(status, 202, "{body}");
    let (status, _, err) = aws_lambda(
        addr,
        KEY_A,
        &["get-durable-execution", "--durable-execution-arn", &first],
    )
    .await;
    assert_ne!(status, 0);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    open.shutdown().await;
    assert_eq!(list(&[]).await.len(), 1);

    // Invoked with the CLI, it answers as a Lambda durable function: the execution's ARN,
    // and a call that waits for the execution's end (here, its payment).
    let call = tokio::spawn(invoke(
        addr,
        KEY_A,
        &["--function-name", "order", "--payload", r#""o-3""#],
    ));
    let started = loop {
        let running = list(&["--statuses", "RUNNING"]).await;
        if let Some(e) = running.first() {
            break arn(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!call.is_finished(), "the call waits for the execution");
    hub.publish(fnhub::Event::new(
        "payments/o-3",
        "\"paid 3\"",
        fnhub::EventSource::Local,
    ))
    .unwrap();
    let answered = call.await.unwrap();
    assert_eq!(answered.status, 0, "{}", answered.stderr);
    assert_eq!(answered.stdout["DurableExecutionArn"], started.as_str());
    assert_eq!(answered.file, b"\"paid 3\"");
    let queued = invoke(
        addr,
        KEY_A,
        &[
            "--function-name",
            "order",
            "--invocation-type",
            "Event",
            "--payload",
            r#""o-4""#,
        ],
    )
    .await;
    assert_eq!(queued.stdout["StatusCode"], 202, "{}", queued.stderr);
    assert!(
        queued.stdout["DurableExecutionArn"]
            .as_str()
            .is_some_and(|a| a.contains(":function:order:1/durable-execution/")),
        "{}",
        queued.stdout
    );
    let named = invoke(
        addr,
        KEY_A,
        &[
            "--function-name",
            "order",
            "--durable-execution-name",
            "o-5",
            "--payload",
            r#""o-5""#,
        ],
    )
    .await;
    assert_ne!(named.status, 0);
    assert!(
        named.stderr.contains("InvalidParameterValueException"),
        "{}",
        named.stderr
    );

    // A wait for an event is a callback too: its id is in the history, and the callback
    // API answers it as the event would (here o-4, queued above, waits for its payment).
    let o4 = queued.stdout["DurableExecutionArn"]
        .as_str()
        .unwrap()
        .to_owned();
    let callback = loop {
        let (status, history, err) = aws_lambda(
            addr,
            KEY_A,
            &[
                "get-durable-execution-history",
                "--durable-execution-arn",
                &o4,
            ],
        )
        .await;
        assert_eq!(status, 0, "{err}");
        let started = history["Events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["EventType"] == "CallbackStarted")
            .map(|e| {
                e["CallbackStartedDetails"]["CallbackId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
        if let Some(id) = started {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let send = |verb: &'static str, extra: &'static [&'static str]| {
        let callback = callback.clone();
        async move {
            let mut args = vec![verb, "--callback-id", callback.as_str()];
            args.extend(extra);
            aws_lambda(addr, KEY_A, &args).await
        }
    };
    let (status, _, err) = send("send-durable-execution-callback-heartbeat", &[]).await;
    assert_eq!(status, 0, "{err}");
    let (status, _, err) = aws_lambda(
        addr,
        KEY_B,
        &[
            "send-durable-execution-callback-success",
            "--callback-id",
            &callback,
            "--result",
            "x",
        ],
    )
    .await;
    assert_ne!(status, 0, "tenant B may not invoke order");
    assert!(err.contains("AccessDeniedException"), "{err}");
    let o4_id: fnhub::ExecutionId = o4.rsplit('/').nth(1).unwrap().parse().unwrap();
    let ended = tokio::spawn({
        let hub = hub.clone();
        async move { hub.durable_outcome(o4_id).await }
    });
    let (status, _, err) = send(
        "send-durable-execution-callback-success",
        &["--result", r#""paid by hand""#],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(ended.await.unwrap().unwrap().unwrap(), r#""paid by hand""#);
    let (status, _, err) = send(
        "send-durable-execution-callback-success",
        &["--result", r#""twice""#],
    )
    .await;
    assert_ne!(status, 0, "a callback is answered once");
    assert!(err.contains("CallbackTimeoutException"), "{err}");
    server.shutdown().await;
    hub.shutdown().await;
}
