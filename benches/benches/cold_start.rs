//! Python cold starts beside their peer, in one run: the first invocation of six freshly
//! deployed Python (`awslambdaric`) functions, each importing boto3,
//!
//! - `template`: the process sandbox with templates: each function deployed (its template
//!   made, `ProcessSandbox::stage`), then a new environment prepared and invoked once;
//! - `spawn`: the same without templates (an interpreter started per environment);
//! - `interpreter_import` (the peer): starting the same interpreter to import the runtime
//!   client and the same handler's module, until it exits.
//!
//! Each iteration is one cold start, taken in turn from the six functions, with the
//! function's default profile (jailed when the bench runs as root with bubblewrap; else
//! best effort, and the bench says so).
//!
//! ```text
//! cargo bench -p fnhub-benches --bench cold_start
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::core::Sandbox;
use fnhub::{CapabilityProfile, FunctionName, FunctionSpec, Invocation, ProcessSandbox, Runtime};

const FUNCTIONS: usize = 6;

fn workdir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/cold")
}

fn python() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, awslambdaric, boto3; print(sys.executable)",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn specs(python: &str) -> Vec<FunctionSpec> {
    (1..=FUNCTIONS)
        .map(|i| {
            FunctionSpec::new(
                FunctionName::new(&format!("cold-{i}")).expect("name"),
                Runtime::Process {
                    command: vec![
                        python.to_owned(),
                        "-m".into(),
                        "awslambdaric".into(),
                        "app.handler".into(),
                    ],
                    workdir: Some(workdir()),
                    handler: Some("app.handler".into()),
                },
            )
            .with_capabilities(CapabilityProfile::default())
            .with_timeout(Duration::from_secs(30))
        })
        .collect()
}

/// One cold start: a new environment for `spec`, invoked once, then stopped (not timed).
async fn first_invocation(sandbox: &ProcessSandbox, spec: &FunctionSpec) -> Duration {
    let started = Instant::now();
    let env = sandbox.prepare(spec).await.expect("prepare");
    let out = env
        .invoke(Invocation::new(spec.name.clone().into(), r#"{"n":1}"#))
        .await
        .expect("invoke");
    let took = started.elapsed();
    assert!(
        out.starts_with(b"{\"ok\": true"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    env.shutdown().await;
    took
}

fn bench(c: &mut Criterion) {
    let Some(python) = python() else {
        eprintln!("cold_start: skipped, python3 with awslambdaric and boto3 is needed");
        return;
    };
    let rt = fnhub_benches::runtime(2);
    let specs = specs(&python);
    let jailed = rt.block_on(async {
        let env = ProcessSandbox::new().prepare(&specs[0]).await.ok()?;
        env.shutdown().await;
        Some(())
    });
    let base = || {
        let sandbox = ProcessSandbox::new();
        if jailed.is_some() {
            sandbox
        } else {
            eprintln!("cold_start: not jailed here (root and bwrap are needed): best effort");
            sandbox.best_effort()
        }
    };
    let with_templates = base().with_templates(Duration::from_secs(3600), u64::MAX);
    let without = base();
    // "Deploying" the six: their templates made.
    rt.block_on(async {
        for spec in &specs {
            with_templates.stage(spec).await.expect("stage");
        }
    });
    eprintln!(
        "cold_start: {} templates, {} MiB resident",
        with_templates.templates().templates,
        with_templates.templates().resident_bytes / (1024 * 1024)
    );

    let mut g = c.benchmark_group("python_cold_start");
    g.sample_size(30);
    for (name, sandbox) in [("template", &with_templates), ("spawn", &without)] {
        g.bench_function(name, |b| {
            let mut next = 0;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let spec = &specs[next % FUNCTIONS];
                    next += 1;
                    total += rt.block_on(first_invocation(sandbox, spec));
                }
                total
            })
        });
    }
    g.bench_function("interpreter_import", |b| {
        b.iter(|| {
            let status = std::process::Command::new(&python)
                .args(["-c", "import awslambdaric.__main__, app"])
                .current_dir(workdir())
                .status()
                .expect("python");
            assert!(status.success());
        })
    });
    g.finish();
    fnhub_benches::print_ratio("python_cold_start", "template", "interpreter_import");
    fnhub_benches::print_ratio("python_cold_start", "spawn", "interpreter_import");
    fnhub_benches::print_ratio("python_cold_start", "template", "spawn");
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(2), Duration::from_secs(8))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
