//! Helpers shared by the benchmarks: where criterion writes, and the ratio of our path to
//! its peer read back from criterion's own estimates.

use std::path::PathBuf;

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

/// The first of `candidates` that is installed; panics naming what to install.
pub fn installed(candidates: &[&str], install: &str) -> std::path::PathBuf {
    candidates
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{} is needed: {install}", candidates[0]))
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until something accepts connections on `port` (a watchdog of 10 s).
pub fn wait_for_port(port: u16, what: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < until, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
