//! The function endpoint beside its peer, from one Python process in the same run: a
//! function's boto3 IoT `publish` through the hub (SigV4 signing, the endpoint, the hub's
//! router) against a paho-mqtt QoS 1 publish straight to a mosquitto the bench starts,
//! each waited for. The function times its own loop (`iter_custom`), so the invocation
//! around it is not counted. Needs python3 with awslambdaric, boto3 and paho-mqtt, and
//! mosquitto; skipped (with a line saying so) without them.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench endpoint
//! ```

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::{
    CapabilityProfile, EdgeHub, FunctionName, FunctionSpec, Invocation, NetworkAccess, Runtime,
    ServiceAccess,
};

fn python() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, awslambdaric, boto3, paho.mqtt; print(sys.executable)",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bench(c: &mut Criterion) {
    let Some(python) = python() else {
        eprintln!("endpoint: skipped, python3 with awslambdaric, boto3 and paho-mqtt is needed");
        return;
    };
    let Some(broker) = fnhub_testkit::Mosquitto::start("") else {
        return;
    };
    let port = broker.port();

    let rt = fnhub_benches::runtime(2);
    let mut profile = CapabilityProfile::default();
    profile.network = NetworkAccess::Any;
    profile.services = ServiceAccess::all();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/publish");
    let spec = FunctionSpec::new(
        FunctionName::new("publisher").expect("name"),
        Runtime::Process {
            command: vec![
                python,
                "-m".into(),
                "awslambdaric".into(),
                "app.handle".into(),
            ],
            workdir: Some(dir),
            handler: Some("app.handle".into()),
        },
    )
    .with_capabilities(profile)
    .with_timeout(Duration::from_secs(300));
    let hub = rt.block_on(async { EdgeHub::builder().deploy(spec).build().expect("hub") });
    let run = |mode: &str, n: u64| -> Duration {
        let event = serde_json::json!({"mode": mode, "n": n, "port": port}).to_string();
        let out = rt
            .block_on(hub.call(Invocation::new("publisher".parse().expect("ref"), event)))
            .expect("admitted")
            .outcome
            .expect("the function ran");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        Duration::from_nanos(v["ns"].as_u64().expect("ns"))
    };
    // Warm both clients (imports, connections) before measuring.
    run("boto3", 5);
    run("mqtt", 5);
    let mut g = c.benchmark_group("endpoint_publish");
    g.bench_function("boto3_through_the_hub", |b| {
        b.iter_custom(|n| run("boto3", n))
    });
    g.bench_function("paho_to_mosquitto", |b| b.iter_custom(|n| run("mqtt", n)));
    g.finish();
    fnhub_benches::print_ratio(
        "endpoint_publish",
        "boto3_through_the_hub",
        "paho_to_mosquitto",
    );
    rt.block_on(hub.shutdown());
    drop(broker);
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(3)).sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
