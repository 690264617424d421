//! Lambda durable functions beside their peers, in one run:
//!
//! - a ten-step Python workflow written with AWS's `aws-durable-execution-sdk-python`, one
//!   execution per iteration on fnhub (the function under the unmodified `awslambdaric`,
//!   each step a `CheckpointDurableExecution` through the function endpoint, each
//!   checkpoint saved and fsynced), beside the same workflow on AWS's own local runner
//!   (`aws-durable-execution-sdk-python-testing`, in process, its filesystem store);
//! - the checkpoint round trip per step on fnhub, `(ten steps − no steps) / 10`, beside a
//!   raw `write` + `fdatasync` of one checkpoint's size;
//! - with `--features nats` and `nats-server` installed, the same workflow on a hub that is
//!   a node of the cloud runtime (each checkpoint stored in the deployment's JetStream
//!   bucket before it is answered, so another node can take the execution up), beside the
//!   hub on its folder.
//!
//! Needs python3 with awslambdaric and the durable SDK (and, for the peer, the testing
//! package); skipped with a line saying so without them.
//!
//! ```text
//! cargo bench -p fnhub-benches --bench durable_lambda
//! cargo bench -p fnhub-benches --features nats --bench durable_lambda
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::{DurableConfig, EdgeHub, FunctionName, FunctionSpec, Runtime};

fn python(modules: &str) -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import sys, {modules}; print(sys.executable)"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn functions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/durable")
}

fn bench(c: &mut Criterion) {
    let Some(interpreter) = python("awslambdaric, aws_durable_execution_sdk_python") else {
        eprintln!(
            "durable_lambda: skipped, python3 with awslambdaric and aws-durable-execution-sdk-python is needed"
        );
        return;
    };
    let rt = fnhub_benches::runtime(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = |name: &str| {
        FunctionSpec::new(
            FunctionName::new(name).expect("name"),
            Runtime::Process {
                command: vec![
                    interpreter.clone(),
                    "-m".into(),
                    "awslambdaric".into(),
                    format!("app.{name}"),
                ],
                workdir: Some(functions()),
                handler: Some(format!("app.{name}")),
            },
        )
        .with_timeout(Duration::from_secs(60))
    };
    let hub = rt.block_on(async {
        EdgeHub::builder()
            .deploy(spec("ten"))
            .deploy(spec("zero"))
            .lambda_durable("ten", DurableConfig::default())
            .lambda_durable("zero", DurableConfig::default())
            .checkpoint_store(Arc::new(
                fnhub::libs::checkpoint::DirStore::open(dir.path().join("executions"))
                    .expect("store")
                    .0,
            ))
            .build()
            .expect("hub")
    });
    let run_on = |hub: &EdgeHub, function: &str| {
        rt.block_on(async {
            let execution = hub
                .start_durable(function, r#"{"n": 1}"#, None)
                .await
                .expect("started");
            let out = execution.outcome().await.expect("the workflow ran");
            // 1 + (0 + 1 + … + 9) after ten steps; 1 after none.
            let want: &[u8] = if function == "ten" {
                br#"{"total": 46}"#
            } else {
                br#"{"total": 1}"#
            };
            assert_eq!(&out[..], want, "{function}");
        });
    };
    let run = |function: &str| run_on(&hub, function);
    // Warm the environments (the interpreter, the SDK's imports).
    run("ten");
    run("zero");

    let mut g = c.benchmark_group("durable_workflow");
    g.bench_function("fnhub_ten_steps", |b| b.iter(|| run("ten")));
    g.bench_function("fnhub_no_steps", |b| b.iter(|| run("zero")));
    let runner = python("aws_durable_execution_sdk_python_testing").is_some();
    if runner {
        g.bench_function("aws_local_runner_ten_steps", |b| {
            b.iter_custom(|n| {
                let out = std::process::Command::new(&interpreter)
                    .arg(functions().join("aws_runner.py"))
                    .arg(n.to_string())
                    .current_dir(functions())
                    .output()
                    .expect("the runner ran");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let ns: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("nanoseconds");
                Duration::from_nanos(ns)
            })
        });
    } else {
        eprintln!(
            "durable_lambda: AWS's local runner skipped (pip install aws-durable-execution-sdk-python-testing)"
        );
    }
    g.finish();
    #[cfg(feature = "nats")]
    let node = cloud_node(&rt, &spec);
    #[cfg(feature = "nats")]
    if let Some((hub, _node, _server)) = &node {
        run_on(hub, "ten");
        run_on(hub, "zero");
        let mut g = c.benchmark_group("durable_workflow_cloud");
        g.bench_function("node_ten_steps", |b| b.iter(|| run_on(hub, "ten")));
        g.bench_function("node_no_steps", |b| b.iter(|| run_on(hub, "zero")));
        g.finish();
    }

    // One checkpoint's bytes (an execution of ten steps, as saved), written and synced.
    let mut g = c.benchmark_group("durable_checkpoint");
    let path = dir.path().join("raw");
    let bytes = vec![b'x'; 4096];
    g.bench_function("raw_write_fdatasync", |b| {
        let mut file = std::fs::File::create(&path).expect("file");
        b.iter(|| {
            file.write_all(&bytes).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
    g.finish();

    if runner {
        fnhub_benches::print_ratio(
            "durable_workflow",
            "fnhub_ten_steps",
            "aws_local_runner_ten_steps",
        );
    }
    let est = |g: &str, b: &str| fnhub_benches::estimate_ns(g, b);
    if let (Some(ten), Some(zero), Some(raw)) = (
        est("durable_workflow", "fnhub_ten_steps"),
        est("durable_workflow", "fnhub_no_steps"),
        est("durable_checkpoint", "raw_write_fdatasync"),
    ) {
        let step = (ten - zero) / 10.0;
        println!(
            "RATIO durable_checkpoint: fnhub step round trip {step:.0} ns / raw_write_fdatasync {raw:.0} ns = {:.2}x",
            step / raw
        );
        println!(
            "durable_workflow: {:.1} executions/s of ten steps on fnhub",
            1e9 / ten
        );
    }
    #[cfg(feature = "nats")]
    if let (Some(hub_step), Some(ten), Some(zero)) = (
        est("durable_workflow", "fnhub_ten_steps")
            .zip(est("durable_workflow", "fnhub_no_steps"))
            .map(|(t, z)| (t - z) / 10.0),
        est("durable_workflow_cloud", "node_ten_steps"),
        est("durable_workflow_cloud", "node_no_steps"),
    ) {
        let step = (ten - zero) / 10.0;
        println!(
            "RATIO durable_workflow_cloud: node step round trip {step:.0} ns / hub step round trip {hub_step:.0} ns = {:.2}x",
            step / hub_step
        );
    }
    rt.block_on(hub.shutdown());
}

/// A hub with the same two durable functions, as a node of a cloud runtime on a
/// `nats-server` of its own (no folder: its executions are kept in the deployment's
/// bucket); `None` with a line saying so without `nats-server`.
#[cfg(feature = "nats")]
fn cloud_node(
    rt: &tokio::runtime::Runtime,
    spec: &dyn Fn(&str) -> FunctionSpec,
) -> Option<(
    EdgeHub,
    fnhub::cloud::CloudRuntime,
    fnhub_testkit::NatsServer,
)> {
    let Some(server) = fnhub_testkit::NatsServer::start() else {
        eprintln!("durable_lambda: the cloud node skipped (apt-get install nats-server)");
        return None;
    };
    rt.block_on(async {
        let hub = EdgeHub::builder()
            .deploy(spec("ten"))
            .deploy(spec("zero"))
            .lambda_durable("ten", DurableConfig::default())
            .lambda_durable("zero", DurableConfig::default())
            .build()
            .expect("hub");
        let node = fnhub::cloud::CloudRuntime::start(
            server.url(),
            "bench",
            hub.clone(),
            fnhub::cloud::CloudConfig::default(),
        )
        .await
        .expect("node");
        Some((hub, node, server))
    })
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(2), Duration::from_secs(10)).sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
