//! `Event` invocations answered `202` survive a SIGKILL of the hub: the hub from a config
//! file with a `checkpoint_dir` keeps them in its durable queue, and the restarted hub runs
//! every one of them (at least once).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One `Event` invocation on a fresh connection: its request id when answered `202`.
fn event(addr: &str, n: usize) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = format!("{{\"n\":{n}}}");
    let request = format!(
        "POST /2015-03-31/functions/record/invocations HTTP/1.1\r\nHost: hub\r\n\
         X-Amz-Invocation-Type: Event\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    if !answer.starts_with("HTTP/1.1 202") {
        return None;
    }
    answer.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-amzn-requestid")
            .then(|| v.trim().to_owned())
    })
}

fn ran(record: &Path) -> HashSet<String> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_accepted_event_runs_after_a_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    let record = dir.path().join("ran.txt");
    std::fs::write(
        &config,
        format!(
            "[hub]\nname = \"events\"\nworkers = 2\nqueue_capacity = 100000\n\
             checkpoint_dir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (mut hub, addr) = common::start_event_hub(&config, &record);

    // Eight clients send events as fast as they are answered; the hub runs ~400 a second.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (addr, accepted, stop) = (addr.clone(), accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    match event(&addr, n) {
                        Some(id) => accepted.lock().unwrap().push(id),
                        None if stop.load(Ordering::Relaxed) => break,
                        None => {}
                    }
                    n += 8;
                }
            })
        })
        .collect();
    while accepted.lock().unwrap().len() < 1500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    hub.kill().unwrap();
    hub.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    let before = ran(&record);
    let missing_at_kill = accepted.iter().filter(|id| !before.contains(*id)).count();
    assert!(
        missing_at_kill > 0,
        "every accepted event had run before the kill: the test shows nothing"
    );

    let (mut hub, _) = common::start_event_hub(&config, &record);
    let mut left = accepted.len();
    for _ in 0..600 {
        let after = ran(&record);
        left = accepted.iter().filter(|id| !after.contains(*id)).count();
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = std::fs::read_to_string(&record).unwrap().lines().count();
    eprintln!(
        "accepted {}, not yet run at the SIGKILL {missing_at_kill}, run after the restart; \
         {} runs recorded in all ({} ran twice)",
        accepted.len(),
        lines,
        lines.saturating_sub(ran(&record).len())
    );
    assert_eq!(
        left,
        0,
        "{left} of {} accepted events never ran",
        accepted.len()
    );
    // A clean stop after the restart leaves nothing to run a third time.
    sigterm(&hub);
    assert!(hub.wait().unwrap().success());
    // What the drain ran (events stored but never answered 202 may still have been
    // queued) counts; nothing runs a third time after that.
    let drained = std::fs::read_to_string(&record).unwrap().lines().count();
    let (mut hub, _) = common::start_event_hub(&config, &record);
    std::thread::sleep(Duration::from_millis(500));
    let final_lines = std::fs::read_to_string(&record).unwrap().lines().count();
    assert_eq!(
        final_lines, drained,
        "a drained hub's events ran again after a restart"
    );
    hub.kill().unwrap();
    hub.wait().unwrap();
}

/// SIGTERM through the `kill` program (the tests do not link libc).
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
