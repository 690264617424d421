//! The front door under a slowloris and a flood of unsigned uploads. A test binary of its
//! own: it measures this process's resident memory, which other tests running beside it
//! would disturb.
#![cfg(feature = "http")]
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use fnhub::http::{Credentials, HttpConfig};
use fnhub::{EdgeHub, FunctionName, FunctionSpec, Invocation, Principal, from_fn};

const KEY_A: (&str, &str) = (
    "AKIDTENANTA0000000001",
    "secret-a/K7MDENG+bPxRfiCYEXAMPLEKEY",
);

fn hub() -> EdgeHub {
    EdgeHub::builder()
        .function(
            FunctionSpec::in_process(FunctionName::new("hello").unwrap()),
            from_fn(|_inv: Invocation| async move { Ok(Bytes::from_static(b"{}")) }),
        )
        .build()
        .unwrap()
}

/// Resident memory of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A slowloris (connections that send their headers a byte at a time) and a flood of
/// unauthenticated 6 MiB requests: resident memory stays bounded, the slow connections are
/// closed at the header timeout, the door answers afterwards, and shutdown still
/// ends within its grace period. Before: 100 such uploads took RSS from 26 MB to 631 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_unsigned_floods_leave_memory_bounded() {
    let hub = hub();
    let mut limits = fnhub::http::HttpLimits::default();
    limits.header_timeout = Duration::from_secs(1);
    limits.max_unauthenticated = 64;
    let config = HttpConfig::sigv4(vec![Credentials::new(
        KEY_A.0,
        KEY_A.1,
        Principal::new("tenant-a"),
    )])
    .with_limits(limits);
    let server = fnhub::http::serve(&hub, "127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let addr = server.local_addr();
    let body = std::sync::Arc::new(vec![b'7'; 6 * 1024 * 1024]);
    let before = rss_bytes();

    // 200 slow connections, each with the start of a request line.
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /2015-03-31/functions/hello/invo")
                .unwrap();
            s
        })
        .collect();
    // 100 uploads of 6 MiB with no signature, all at once.
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let head = format!(
                    "POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: hub\r\n\
                     Connection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                // The hub answers and closes without reading the body: writing it fails
                // part way, or lands in socket buffers and is thrown away.
                let _ = s.write_all(&body);
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                usize::from(answer.starts_with(b"HTTP/1.1 403"))
            })
        })
        .collect();
    let refused: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(refused, 100, "every unsigned upload is refused");
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "front door flood: resident memory grew by {} KiB",
        grown >> 10
    );
    // 64 unauthenticated connections × a 64 KiB head at most, plus buffers: 32 MiB is far
    // below what holding even a few of the 6 MiB bodies would take.
    assert!(
        grown < 32 * 1024 * 1024,
        "resident memory grew by {} MiB",
        grown >> 20
    );

    // The slow connections are closed at the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let closed = tokio::task::spawn_blocking(move || {
        slow.into_iter()
            .filter(|s| {
                let mut s = s.try_clone().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0; 256];
                // Closed: end of stream, a reset, or a 408 and then the end.
                !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(
        closed, 200,
        "slow connections left open after the header timeout"
    );

    // The door still answers, at once.
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"POST /2015-03-31/functions/hello/invocations HTTP/1.1\r\nHost: hub\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        let mut buf = [0; 64];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // Shutdown with a half-open connection still ends within its grace.
    let _half = TcpStream::connect(addr).unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        server.shutdown_within(Duration::from_millis(300)),
    )
    .await
    .expect("shutdown waited past its grace");
    hub.shutdown().await;
}
