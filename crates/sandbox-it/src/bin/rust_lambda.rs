//! A Lambda function built with the unmodified `lambda_runtime` crate, for the process
//! sandbox's tests. The event's `op` field picks what it does.

use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var_os("FIXTURE_EXIT_AT_INIT").is_some() {
        eprintln!("fixture: exiting during init as asked");
        std::process::exit(7);
    }
    lambda_runtime::run(service_fn(handle)).await
}

/// Tells one process from the next: in its own PID namespace every process of a jailed
/// function has the same pid, so the pid cannot.
fn process_token() -> u64 {
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(48)
    })
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    let op = payload.get("op").and_then(Value::as_str).unwrap_or("echo");
    let arg = |name: &str| payload.get(name).and_then(Value::as_u64).unwrap_or(0);
    match op {
        "echo" => Ok(json!({
            "payload": payload,
            "request_id": context.request_id,
            "deadline_ms": context.deadline,
            "arn": context.invoked_function_arn,
            "trace_id": context.xray_trace_id,
            "topic": context.client_context.as_ref().and_then(|c| c.custom.get("topic")),
            "env": {
                "name": std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
                "version": std::env::var("AWS_LAMBDA_FUNCTION_VERSION").ok(),
                "memory": std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok(),
                "region": std::env::var("AWS_REGION").ok(),
                "handler": std::env::var("_HANDLER").ok(),
                "task_root": std::env::var("LAMBDA_TASK_ROOT").ok(),
                "home": std::env::var("HOME").ok(),
                "granted": std::env::var("GRANTED").ok(),
            },
            "pid": process_token(),
        })),
        "fail" => Err("the fixture failed on purpose".into()),
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(arg("ms"))).await;
            Ok(json!({ "slept_ms": arg("ms"), "pid": process_token() }))
        }
        "log" => {
            println!("fixture stdout line");
            eprintln!("fixture stderr line");
            Ok(json!("logged"))
        }
        "crash" => {
            eprintln!("fixture: crashing mid-invocation");
            std::process::exit(3);
        }
        "big" => Ok(Value::String("x".repeat(arg("bytes") as usize))),
        "alloc" => {
            // Touch every page so the memory is really used.
            let mut v: Vec<u8> = Vec::new();
            let mb = arg("mb") as usize;
            v.resize(mb * 1024 * 1024, 1);
            Ok(
                json!({ "allocated_mb": mb, "sum": v.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>() }),
            )
        }
        "read" => {
            let path = payload.get("path").and_then(Value::as_str).unwrap_or("/");
            Ok(json!({ "ok": std::fs::read(path).is_ok() }))
        }
        "write" => {
            let path = payload.get("path").and_then(Value::as_str).unwrap_or("/");
            Ok(json!({ "ok": std::fs::write(path, b"written").is_ok() }))
        }
        "connect" => {
            let addr = payload
                .get("addr")
                .and_then(Value::as_str)
                .unwrap_or("127.0.0.1:1");
            let r = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            Ok(json!({ "ok": matches!(r, Ok(Ok(_))) }))
        }
        other => Err(format!("unknown op {other:?}").into()),
    }
}
