//! Helpers shared by the benchmarks: where criterion writes and how long it measures, the
//! runtime, the ratio of our path to its peer read back from criterion's own estimates, and
//! the peers' programs (through `fnhub-testkit`).

use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;

/// Where criterion writes its reports: `$CARGO_TARGET_DIR/criterion`, else
/// `<workspace>/target/criterion`.
pub fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// The time per iteration, in nanoseconds, criterion estimated for `group/bench`: the
/// slope of its linear fit (the middle figure criterion prints), else the mean.
pub fn estimate_ns(group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| json["mean"]["point_estimate"].as_f64())
}

/// Prints `ours` beside `peer` with the ratio of their estimates, as measured in this run.
pub fn print_ratio(group: &str, ours: &str, peer: &str) {
    match (estimate_ns(group, ours), estimate_ns(group, peer)) {
        (Some(a), Some(b)) => println!(
            "RATIO {group}: {ours} {a:.0} ns / {peer} {b:.0} ns = {:.2}x",
            a / b
        ),
        _ => println!(
            "RATIO {group}: estimates not found under {:?}",
            criterion_dir()
        ),
    }
}

pub use fnhub_testkit::{free_port, wait_for_port};

/// The first of `candidates` that is installed; panics naming what to install.
pub fn installed(candidates: &[&str], install: &str) -> PathBuf {
    fnhub_testkit::installed(candidates, install)
        .unwrap_or_else(|| panic!("{} is needed: {install}", candidates[0]))
}

/// Criterion writing to [`criterion_dir`], with these warm-up and measurement times.
pub fn criterion(warm_up: Duration, measurement: Duration) -> Criterion {
    Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(warm_up)
        .measurement_time(measurement)
}

/// A multi-threaded tokio runtime with `workers` threads.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("no runtime: {e}"))
}
