//! A hub started from a config file: a Python function over the Lambda Runtime API, invoked
//! through the HTTP listener the file declares, with `/healthz` and `/metrics`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use common::python_with_ric;
use fnhub::config::HubConfig;

fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"),
    )
}

fn write_config(dir: &std::path::Path, program: &str) -> PathBuf {
    let report = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/report");
    let text = format!(
        r#"
[hub]
name = "hub-config-test"

[http]
listen = "127.0.0.1:0"
auth = "none"

[[function]]
name = "report"
runtime = "process"
command = ["{program}", "-m", "awslambdaric", "app.handler"]
workdir = "{}"
memory_mb = 256
timeout_ms = 10000

[[flow]]
source = "any"
topic = "counts/+"
target = "function:report"
"#,
        report.display()
    );
    let path = dir.join("hub.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_starts_a_hub_that_serves_invocations_health_and_metrics() {
    let Some(python) = python_with_ric() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig::load(write_config(dir.path(), &python.display().to_string())).unwrap();
    // The application installs the process's recorder; /metrics renders it.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let render: fnhub::http::RenderMetrics = std::sync::Arc::new(move || recorder.render());
    let running = config
        .start(config.builder().unwrap(), Some(render))
        .await
        .unwrap();
    let addr = running.http.as_ref().unwrap().local_addr();

    let (health, metrics, invoked) = tokio::task::spawn_blocking(move || {
        let health = get(addr, "/healthz");
        let invoked = http(
            addr,
            "POST /2015-03-31/functions/report/invocations HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nContent-Length: 2\r\n\r\n42",
        );
        let metrics = get(addr, "/metrics");
        (health, metrics, invoked)
    })
    .await
    .unwrap();
    assert_eq!(health.0, 200, "{}", health.1);
    assert!(health.1.contains("\"ready\""), "{}", health.1);
    assert_eq!(invoked.0, 200, "{}", invoked.1);
    let body: serde_json::Value = serde_json::from_str(&invoked.1).unwrap();
    assert_eq!(body["readings"], 42);
    assert_eq!(metrics.0, 200);
    // The work done shows: one invocation of report, ok, on the environment started at
    // start (warm); one invoke answered 200; every family has its HELP.
    let sum = |name: &str, labels: &[&str]| -> f64 {
        metrics
            .1
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum(
            "fnhub_invocations_total",
            &["function=\"report\"", "outcome=\"ok\"", "start=\"warm\""]
        ),
        1.0,
        "{}",
        metrics.1
    );
    assert_eq!(
        sum("fnhub_invocations_total", &["function=\"report\""]),
        1.0
    );
    assert_eq!(
        sum(
            "fnhub_http_requests_total",
            &["route=\"invoke\"", "status=\"200\""]
        ),
        1.0,
        "{}",
        metrics.1
    );
    assert!(sum("fnhub_prewarms_total", &[]) >= 1.0, "{}", metrics.1);
    // The Python function forks from a template (on by default), whose memory is counted.
    assert_eq!(sum("fnhub_python_templates", &[]), 1.0, "{}", metrics.1);
    assert!(
        sum("fnhub_python_template_bytes", &[]) > 8.0 * 1024.0 * 1024.0,
        "{}",
        metrics.1
    );
    for line in metrics.1.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split(' ').nth(2).unwrap();
        assert!(
            metrics.1.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }
    running.shutdown().await;

    // A module that does not import, and a workdir that is not there: found at start,
    // each named in /healthz with why.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("app.py"), "import no_such_module\n").unwrap();
    let text = format!(
        "[hub]\nname = \"broken\"\n[http]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\
         [[function]]\nname = \"imports\"\nruntime = \"process\"\n\
         command = [\"{py}\", \"-m\", \"awslambdaric\", \"app.handler\"]\nworkdir = \"{}\"\n\
         [[function]]\nname = \"nowhere\"\nruntime = \"process\"\n\
         command = [\"{py}\", \"-m\", \"awslambdaric\", \"app.handler\"]\nworkdir = \"{}\"\n",
        broken.display(),
        dir.path().join("missing").display(),
        py = python.display(),
    );
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, text).unwrap();
    let config = HubConfig::load(&path).unwrap();
    let running = config.start(config.builder().unwrap(), None).await.unwrap();
    let addr = running.http.as_ref().unwrap().local_addr();
    let health = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.0, 503, "{}", health.1);
    let body: serde_json::Value = serde_json::from_str(&health.1).unwrap();
    let imports = body["cannot_start"]["imports:1"]
        .as_str()
        .unwrap_or_default();
    assert!(imports.contains("no_such_module"), "{body}");
    let nowhere = body["cannot_start"]["nowhere:1"]
        .as_str()
        .unwrap_or_default();
    assert!(
        nowhere.contains("workdir") && nowhere.contains("not found"),
        "{body}"
    );
    assert_eq!(body["confinement"], "enforced");
    running.shutdown().await;

    // A program that is not there: the hub starts, and /healthz says what cannot run.
    let config = HubConfig::load(write_config(dir.path(), "/nonexistent/python3")).unwrap();
    let running = config.start(config.builder().unwrap(), None).await.unwrap();
    let addr = running.http.as_ref().unwrap().local_addr();
    let health = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .unwrap();
    assert_eq!(health.0, 503);
    assert!(
        health.1.contains("report:1") && health.1.contains("not found"),
        "{}",
        health.1
    );
    running.shutdown().await;
}
