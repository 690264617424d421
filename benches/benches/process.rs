//! The process sandbox beside its peers, in the same run:
//!
//! - `warm_invoke`: one invocation of a warm process environment over the Lambda Runtime API
//!   (our server, a std-only custom runtime in the process) against one raw HTTP round trip
//!   on loopback to the same program serving HTTP (the same request and response parser).
//!   Beside them, the floor of any Runtime API on tokio: a lean server (no hyper, no
//!   channel, the caller's task writes the event and reads the answer on the socket itself)
//!   driving the same runtime, so that the share of the ratio a tokio server cannot shed is
//!   measured, not guessed.
//! - `environment_start`: preparing an environment (spawn, Runtime API up, the process asks
//!   for work) and shutting it down, against `Command::spawn` of the same binary until it
//!   has printed a line and exited.
//!
//! - `jail`: the same two, for a function with the default profile (no network, no files
//!   but its own), jailed (namespaces under bubblewrap, its own uid, a control group, a
//!   syscall filter) against the confinement before the jail (Landlock and limits per
//!   process). Skipped where a jail cannot be made (not root, no bwrap).
//!
//! ```text
//! cargo bench -p fnhub-benches --bench process
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::core::Sandbox;
use fnhub::{
    CapabilityProfile, Confinement, FunctionName, FunctionSpec, Invocation, ProcessSandbox, Runtime,
};

const PROGRAM: &str = env!("CARGO_BIN_EXE_bench_runtime");
const PAYLOAD: &[u8] = br#"{"device":"dev-1","temperature":21.5}"#;

fn spec() -> FunctionSpec {
    FunctionSpec::new(
        FunctionName::new("bench").expect("name"),
        Runtime::Process {
            command: vec![PROGRAM.to_owned()],
            workdir: None,
            handler: None,
        },
    )
    .with_capabilities(CapabilityProfile::unrestricted())
}

/// One raw HTTP/1.1 round trip on a kept-alive loopback connection.
fn round_trip(writer: &mut TcpStream, reader: &mut BufReader<TcpStream>) {
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n",
        PAYLOAD.len()
    )
    .into_bytes();
    request.extend_from_slice(PAYLOAD);
    writer.write_all(&request).expect("write");
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    assert_eq!(body, PAYLOAD);
}

/// The least a Runtime API server on tokio can do per invocation, for the floor of the
/// ratio: the caller's task writes the event straight to the runtime's parked `GET /next`,
/// reads its `POST …/response` off the socket and answers `202`; the next `GET /next` is read
/// before the next call, untimed. The event carries the API's headers (the runtime parses
/// them); nothing else is done (no routing, limits or checks).
struct LeanApi {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    _process: tokio::process::Child,
}

impl LeanApi {
    async fn start() -> LeanApi {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let process = tokio::process::Command::new(PROGRAM)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("runtime");
        let (stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        LeanApi {
            stream,
            buf: Vec::with_capacity(4096),
            _process: process,
        }
    }

    /// Reads one request (head and `Content-Length` body) into `self.buf`'s front and
    /// returns its body's range.
    async fn read_request(&mut self) -> std::ops::Range<usize> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("head");
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let body = end + 4..end + 4 + length;
                if self.buf.len() >= body.end {
                    return body;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the runtime went away");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the runtime's `GET /next` (it comes after each `202`; a server reads it while
    /// no invocation waits, so the idle case does not time it).
    async fn parked(&mut self) {
        let next = self.read_request().await;
        self.buf.drain(..next.end);
    }

    async fn invoke(&mut self, payload: &[u8]) -> Vec<u8> {
        use tokio::io::AsyncWriteExt;
        // The headers the Runtime API sends with every event (the runtime reads them all).
        let mut event = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Lambda-Runtime-Aws-Request-Id: 0192f3a4-5b6c-7d8e-9f01-23456789abcd\r\n\
             Lambda-Runtime-Deadline-Ms: 1764892800000\r\n\
             Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:local:000000000000:function:bench\r\n\
             Lambda-Runtime-Trace-Id: Root=1-01234567-89abcdef0123456789abcdef;Parent=0123456789abcdef;Sampled=1\r\n\
             Content-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        event.extend_from_slice(payload);
        self.stream.write_all(&event).await.expect("write");
        let body = self.read_request().await;
        let out = self.buf[body.clone()].to_vec();
        self.buf.drain(..body.end);
        self.stream
            .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("write");
        out
    }
}

fn warm(c: &mut Criterion, runtime: &str, rt: &tokio::runtime::Runtime) {
    let spec = spec();
    let sandbox = ProcessSandbox::new();
    let env = rt.block_on(sandbox.prepare(&spec)).expect("prepare");

    // The peer: the same program as an HTTP echo server.
    let dir = tempfile::tempdir().expect("tempdir");
    let port_file = dir.path().join("port");
    let mut server = std::process::Command::new(PROGRAM)
        .arg("echo")
        .arg(&port_file)
        .spawn()
        .expect("echo server");
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && let Ok(p) = p.trim().parse::<u16>()
        {
            break p;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);

    // Back to back, the Lambda protocol costs two loopback exchanges per invocation: the
    // runtime posts the answer, waits for the `202`, and only then asks for the next event.
    let group = format!("process_warm_invoke_back_to_back_{runtime}");
    let mut g = c.benchmark_group(&group);
    g.bench_function("runtime_api_invoke", |b| {
        b.to_async(rt).iter(|| async {
            let inv = Invocation::new(spec.name.clone().into(), Bytes::from_static(PAYLOAD));
            let out = env.invoke(inv).await.expect("ok");
            assert_eq!(&out[..], PAYLOAD);
        })
    });
    g.bench_function("raw_loopback_http", |b| {
        b.iter(|| round_trip(&mut writer, &mut reader))
    });
    g.finish();
    fnhub_benches::print_ratio(&group, "runtime_api_invoke", "raw_loopback_http");

    // An event reaching an idle warm environment, whose runtime already waits in `/next`
    // (how events arrive at an edge hub): a pause before each call, not timed, on both
    // sides. The pause is a thread sleep (tokio's timer would round it up to 1 ms, and
    // wake the runtime differently from the peer's client). Before it, ours let the
    // runtime run for 200 µs, so the server reads the runtime's `GET /next`, as a hub
    // between events does; the sleep alone would block it and put that read in the next
    // call's time.
    let gap = Duration::from_micros(500);
    let group = format!("process_warm_invoke_idle_{runtime}");
    let mut g = c.benchmark_group(&group);
    // The same, for a process under Landlock and limits only (what this bench measured
    // before every process was jailed; the jail's own cost is `process_jail` below).
    let landlock = ProcessSandbox::new().with_confinement(Confinement::Landlock);
    let unjailed = rt.block_on(landlock.prepare(&spec)).expect("prepare");
    for (name, env) in [
        ("runtime_api_invoke", &env),
        ("runtime_api_invoke_unjailed", &unjailed),
    ] {
        g.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let spec = &spec;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // The runtime serves a while, so the server reads `GET /next`.
                        let until = Instant::now() + Duration::from_micros(200);
                        while Instant::now() < until {
                            tokio::task::yield_now().await;
                        }
                        std::thread::sleep(gap);
                        let inv =
                            Invocation::new(spec.name.clone().into(), Bytes::from_static(PAYLOAD));
                        let started = Instant::now();
                        let out = env.invoke(inv).await.expect("ok");
                        total += started.elapsed();
                        assert_eq!(&out[..], PAYLOAD);
                    }
                    total
                }
            })
        });
    }
    let lean = tokio::sync::Mutex::new(rt.block_on(LeanApi::start()));
    g.bench_function("lean_tokio_runtime_api", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let lean = &lean;
            async move {
                let mut lean = lean.lock().await;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    lean.parked().await;
                    std::thread::sleep(gap);
                    let started = Instant::now();
                    let out = lean.invoke(PAYLOAD).await;
                    total += started.elapsed();
                    assert_eq!(&out[..], PAYLOAD);
                }
                total
            }
        })
    });
    g.bench_function("raw_loopback_http", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(gap);
                let started = Instant::now();
                round_trip(&mut writer, &mut reader);
                total += started.elapsed();
            }
            total
        })
    });
    g.finish();
    fnhub_benches::print_ratio(&group, "runtime_api_invoke", "raw_loopback_http");
    fnhub_benches::print_ratio(&group, "runtime_api_invoke_unjailed", "raw_loopback_http");
    fnhub_benches::print_ratio(&group, "lean_tokio_runtime_api", "raw_loopback_http");
    rt.block_on(unjailed.shutdown());
    let _ = server.kill();
    let _ = server.wait();
    rt.block_on(env.shutdown());
}

fn start(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let spec = spec();
    let sandbox = ProcessSandbox::new();
    let mut g = c.benchmark_group("process_environment_start");
    g.sample_size(20);
    g.bench_function("prepare_and_shutdown", |b| {
        b.to_async(rt).iter(|| async {
            let env = sandbox.prepare(&spec).await.expect("prepare");
            env.shutdown().await;
        })
    });
    g.bench_function("command_spawn", |b| {
        b.to_async(rt).iter(|| async {
            let out = tokio::process::Command::new(PROGRAM)
                .arg("ready")
                .output()
                .await
                .expect("spawn");
            assert_eq!(&out.stdout[..], b"ready\n");
        })
    });
    g.finish();
    fnhub_benches::print_ratio(
        "process_environment_start",
        "prepare_and_shutdown",
        "command_spawn",
    );
}

/// Jailed against Landlock-only, for a confined function: warm invoke and environment start.
fn jail(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let spec = spec().with_capabilities(CapabilityProfile::default());
    let jailed = ProcessSandbox::new();
    let landlock = ProcessSandbox::new().with_confinement(Confinement::Landlock);
    let ready = rt.block_on(async {
        let env = jailed.prepare(&spec).await.ok()?;
        env.shutdown().await;
        Some(())
    });
    if ready.is_none() {
        eprintln!("process_jail: skipped, a jail cannot be made here (root and bwrap are needed)");
        return;
    }
    let mut g = c.benchmark_group("process_jail_warm_invoke");
    for (name, sandbox) in [("jail", &jailed), ("landlock", &landlock)] {
        let env = rt.block_on(sandbox.prepare(&spec)).expect("prepare");
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let inv = Invocation::new(spec.name.clone().into(), Bytes::from_static(PAYLOAD));
                let out = env.invoke(inv).await.expect("invoke");
                assert_eq!(&out[..], PAYLOAD);
            })
        });
        rt.block_on(env.shutdown());
    }
    g.finish();
    fnhub_benches::print_ratio("process_jail_warm_invoke", "jail", "landlock");
    let mut g = c.benchmark_group("process_jail_environment_start");
    g.sample_size(20);
    for (name, sandbox) in [("jail", &jailed), ("landlock", &landlock)] {
        g.bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let env = sandbox.prepare(&spec).await.expect("prepare");
                env.shutdown().await;
            })
        });
    }
    g.finish();
    fnhub_benches::print_ratio("process_jail_environment_start", "jail", "landlock");
}

fn bench(c: &mut Criterion) {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    warm(c, "current_thread", &current);
    let multi = fnhub_benches::runtime(2);
    warm(c, "multi_thread", &multi);
    start(c, &multi);
    jail(c, &multi);
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
