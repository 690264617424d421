//! Helpers shared by the tests that start a real peer (mosquitto, nats-server).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The first of `candidates` that is installed, or `None` (a failure under `CI=true`,
/// where `.ci/run` installs it: `install` says how).
pub(crate) fn installed(candidates: &[&str], install: &str) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is required under CI ({install})",
            candidates[0]
        );
        eprintln!("skipping: {} is not installed ({install})", candidates[0]);
    }
    found
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until something accepts connections on `port` (a watchdog of 10 s).
pub(crate) fn wait_for_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}
