//! The cloud runtime: N node processes share a workload through NATS JetStream; one is
//! killed with SIGKILL midway, and every invocation still gets exactly one result.
//!
//! ```text
//! cargo run --release --features nats --example cloud_runtime -- [--nodes N] [--invocations M] [--url nats://HOST:PORT] [--durable] [--json]
//! cargo run --release --features nats --example cloud_runtime -- --config node.toml [--serve | --duration SECS] [--json] [--log-format text|json]
//! ```
//!
//! With `--config` it runs one node from a config file: the hub's format plus `[cloud]`
//! (see `fnhub::config::CloudNode`), with the file's process and WebAssembly functions, the
//! Lambda front door, `/metrics` and `/healthz`. Start two or ten with the same
//! `deployment` and they share the work: a call to any node of a function it lacks, or
//! has no room for, runs on a node that has it.
//!
//! With `--durable` the workload is a durable function, `order`: a step, a 300 ms sleep
//! (which suspends it), and a child invocation of `work`. Every node keeps checkpoints in
//! the JetStream object store, so the executions the killed node had suspended, or was
//! replaying, finish on the others.
//!
//! Without `--url` the example starts a `nats-server -js` of its own (the installed binary)
//! on a free port. It prints, per node, how many results it produced, then how many
//! invocations were submitted, how many results arrived, how many duplicates were
//! suppressed (by JetStream's message ids, or by the client), and how many were lost (must
//! be 0). `--json` prints that summary as one JSON object.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fnhub::cloud::{CloudClient, CloudConfig, CloudRuntime};
use fnhub::libs::checkpoint::nats::NatsStore;
use fnhub::{
    DurableContext, EdgeHub, FunctionError, FunctionName, FunctionSpec, Invocation, SuspendPolicy,
    durable_fn, from_fn,
};
use futures_util::StreamExt;
use parking_lot::Mutex;

const USAGE: &str = "usage: cloud_runtime [--nodes N] [--invocations M] [--url nats://HOST:PORT] [--durable] [--json]\n       cloud_runtime --config FILE [--serve | --duration SECS] [--json] [--log-format text|json]";

fn config() -> CloudConfig {
    // A killed node's work comes back after two seconds.
    CloudConfig::default().with_ack_wait(Duration::from_secs(2))
}

/// One node: a hub with the `work` function, serving until killed. Prints its counters
/// every 100 ms.
async fn node(url: String, name: String) -> Result<(), Box<dyn std::error::Error>> {
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let store = Arc::new(NatsStore::open(&js, "fnhub-example").await?);
    let hub = EdgeHub::builder()
        .workers(8)
        .checkpoint_store(store)
        .suspend_policy(SuspendPolicy::with_threshold(Duration::from_millis(100)))
        .durable(
            FunctionSpec::in_process(FunctionName::new("order")?),
            durable_fn(|ctx: DurableContext, input: Bytes| async move {
                let n = ctx.step("parse", || async move { Ok(input) }).await?;
                ctx.sleep("settle", Duration::from_millis(300)).await?;
                ctx.invoke("double", "work".parse().expect("name"), n).await
            }),
        )
        .function(
            FunctionSpec::in_process(FunctionName::new("work")?),
            from_fn(|inv: Invocation| async move {
                let n: u64 = std::str::from_utf8(&inv.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| FunctionError::handled("not a number"))?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Bytes::from((n * 2).to_string()))
            }),
        )
        .build()?;
    let runtime = CloudRuntime::start(&url, name, hub, config()).await?;
    println!("ready");
    loop {
        let s = runtime.stats();
        println!(
            "stats {} {} {}",
            s.ran, s.duplicates_suppressed, s.redelivered
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Options {
    nodes: usize,
    invocations: u64,
    url: Option<String>,
    durable: bool,
    json: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        nodes: 3,
        invocations: 600,
        url: None,
        durable: false,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--nodes" => {
                o.nodes = value()?
                    .parse()
                    .ok()
                    .filter(|n| (2..=32).contains(n))
                    .ok_or(format!("--nodes takes 2..=32\n{USAGE}"))?;
            }
            "--invocations" => {
                o.invocations = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or(format!("--invocations takes 1..=1000000\n{USAGE}"))?;
            }
            "--url" => o.url = Some(value()?),
            "--durable" => o.durable = true,
            "--json" => o.json = true,
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// A `nats-server -js` on a free port, removed on drop.
struct Server(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> Result<(Server, String), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let program = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .ok_or("nats-server is not installed (apt-get install nats-server)")?;
    let child = Command::new(program)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > until {
            return Err("nats-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((Server(child, dir), format!("nats://127.0.0.1:{port}")))
}

/// Starts node `name` as a child process; its last reported counters land in `stats`.
fn spawn_node(
    url: &str,
    name: &str,
    stats: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
) -> Result<Child, Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--node", url, name])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = tx.send(());
            } else if let Some(rest) = line.strip_prefix("stats ") {
                let mut parts = rest.split(' ').filter_map(|p| p.parse::<u64>().ok());
                if let (Some(_ran), Some(dup), Some(again)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    stats.lock().insert(name.clone(), (dup, again));
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "a node did not start")?;
    Ok(child)
}

async fn run(o: Options) -> Result<bool, Box<dyn std::error::Error>> {
    let (_server, url) = match &o.url {
        Some(url) => (None, url.clone()),
        None => {
            let (server, url) = start_server()?;
            (Some(server), url)
        }
    };
    let stats = Arc::new(Mutex::new(BTreeMap::new()));
    let mut children = Vec::new();
    for i in 0..o.nodes {
        children.push(spawn_node(&url, &format!("node-{i}"), stats.clone())?);
    }
    let client = CloudClient::connect(&url, &config()).await?;
    let duplicates = Arc::new(AtomicU64::new(0));
    let mut results = Box::pin(client.results(duplicates.clone()).await?);
    // Submitted while results come back, so that the killed node dies holding work.
    let expected = Arc::new(Mutex::new(BTreeMap::new()));
    let submitter = {
        let expected = expected.clone();
        let total = o.invocations;
        let function = if o.durable { "order" } else { "work" };
        tokio::spawn(async move {
            for n in 0..total {
                let inv = Invocation::new(function.parse().expect("name"), n.to_string());
                expected.lock().insert(inv.id, n * 2);
                client.submit(&inv).await?;
            }
            Ok::<_, fnhub::cloud::CloudError>(())
        })
    };
    let mut per_node: BTreeMap<String, u64> = BTreeMap::new();
    let mut wrong = 0u64;
    let mut received = 0u64;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < o.invocations && Instant::now() < deadline {
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), results.next()).await else {
            continue;
        };
        let Some(want) = expected.lock().get(&r.id).copied() else {
            continue; // a result of an earlier run on the same server
        };
        received += 1;
        *per_node.entry(r.node.clone()).or_default() += 1;
        if r.outcome.ok().as_deref() != Some(want.to_string().as_bytes()) {
            wrong += 1;
        }
        if !killed && received >= o.invocations / 3 {
            // Midway, under load: no goodbye, no acknowledgement of what it holds.
            children[0].kill()?;
            killed = true;
        }
    }
    submitter.await??;
    if o.durable && received < o.invocations {
        // Which executions are stuck, and on what.
        let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
        let store = NatsStore::open(&js, "fnhub-example").await?;
        use fnhub::CheckpointStore;
        for id in store.list().await? {
            if let Some(c) = store.load(id).await? {
                eprintln!(
                    "left: {id} journal {} pending {:?} resolution {:?}",
                    c.journal.len(),
                    c.pending,
                    c.resolution.is_some()
                );
            }
        }
    }
    // The survivors report every 100 ms: let their last figures in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let node_dups: u64 = stats.lock().values().map(|(d, _)| d).sum();
    let redelivered: u64 = stats.lock().values().map(|(_, r)| r).sum();
    let lost = o.invocations - received;
    let summary = serde_json::json!({
        "submitted": o.invocations,
        "results": received,
        "duplicates_suppressed": duplicates.load(Ordering::Relaxed) + node_dups,
        "lost": lost,
        "wrong": wrong,
        "per_node": per_node,
        "redelivered": redelivered,
        "killed": "node-0",
        "workload": if o.durable { "durable" } else { "plain" },
    });
    if o.json {
        println!("{summary}");
    } else {
        for (node, n) in &per_node {
            println!("{node}: {n} results");
        }
        println!(
            "submitted {}, results {received}, duplicates suppressed {}, lost {lost}, wrong {wrong}; node-0 killed midway, {redelivered} of its invocations redelivered",
            o.invocations, summary["duplicates_suppressed"]
        );
    }
    Ok(lost == 0 && wrong == 0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, url, name] = args.as_slice()
        && flag == "--node"
    {
        return match node(url.clone(), name.clone()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node {name}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "--config") {
        return node_from_config(&args).await;
    }
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cloud_runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--config FILE [--serve | --duration SECS] [--json] [--log-format text|json]`: one node
/// from a config file.
async fn node_from_config(args: &[String]) -> ExitCode {
    let (mut path, mut until, mut json, mut format) = (
        None,
        fnhub_examples::serve::Until::Signal,
        false,
        fnhub_examples::logs::LogFormat::Text,
    );
    let mut serve = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let parsed = match a.as_str() {
            "--config" => it.next().map(|p| path = Some(std::path::PathBuf::from(p))),
            "--serve" => {
                serve = true;
                Some(())
            }
            "--json" => {
                json = true;
                Some(())
            }
            "--duration" => it
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e7)
                .map(|s| until = fnhub_examples::serve::Until::After(Duration::from_secs_f64(s))),
            "--log-format" => it.next().and_then(|f| f.parse().ok()).map(|f| format = f),
            _ => None,
        };
        if parsed.is_none() {
            eprintln!("bad or unknown argument {a:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let Some(path) = path else {
        eprintln!("--config needs a file\n{USAGE}");
        return ExitCode::from(2);
    };
    if serve {
        until = fnhub_examples::serve::Until::Signal;
    }
    let logs = fnhub_examples::logs::init(format);
    let result = fnhub_examples::serve::run_config(&path, until, json).await;
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    logs.finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud_runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
