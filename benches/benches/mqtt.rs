//! End to end over MQTT, beside mosquitto alone, in the same run:
//!
//! - `hub`: a device publishes readings to mosquitto; the hub's bridge brings them in, a
//!   flow runs a function on each, and the function's output goes back out through the
//!   bridge to mosquitto, where a subscriber takes it. QoS 1 all the way.
//! - `mosquitto_alone`: the same device publishes the same messages to mosquitto, and the
//!   same subscriber takes them straight from the broker. QoS 1.
//! - `forwarder`: what a user would write instead of the hub (issue 17's peer): one rumqttc
//!   client subscribed to the readings, running the same function in its process on each,
//!   and publishing the result to the subscriber's topic. QoS 1.
//!
//! Then the hub and the forwarder at QoS 0 (the device's publishes, the bridge's and the
//! forwarder's subscriptions and publishes, the subscriber's subscription): a subscriber
//! that cannot keep up loses messages at QoS 0, so each path is timed to its last delivery,
//! and its rate and CPU count only what arrived (`QOS0` and `RATIO mqtt_qos0` lines, the
//! median of three rounds each).
//!
//! Each iteration moves a batch of messages and ends when the subscriber has all of them;
//! the figure is time per message. Then one batch of 20 000 on each path is timed with the
//! CPU that mosquitto and this process spent on it, to show where the time goes. Target of the router issue: the hub's rate at least
//! 0.8× mosquitto's. Needs `mosquitto` installed; the benchmark starts its own broker.
//!
//! ```text
//! cargo bench -p fnhub-benches --features mqtt --bench mqtt
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::{
    EdgeHub, Flow, FunctionName, FunctionSpec, InboundRule, Invocation, MqttConfig, OutboundRule,
    from_fn,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};

static HUB: std::sync::OnceLock<EdgeHub> = std::sync::OnceLock::new();

/// The function on every path: the reading passed on.
async fn relay(payload: Bytes) -> Bytes {
    payload
}

/// The hand-written forwarder: subscribes to `{prefix}/+`, runs [`relay`] on each reading
/// and publishes the result to `{prefix}-out/{device}`, at `qos`; its publishes go through a
/// task of their own so the event loop never waits on its own request queue.
async fn forwarder(port: u16, prefix: &'static str, qos: QoS) {
    let mut options = MqttOptions::new(format!("forwarder-{prefix}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 100_000);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(String, Bytes)>();
    let publisher = client.clone();
    tokio::spawn(async move {
        while let Some((topic, payload)) = out_rx.recv().await {
            if publisher.publish(topic, qos, false, payload).await.is_err() {
                return;
            }
        }
    });
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(format!("{prefix}/+"), qos).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let device = String::from_utf8_lossy(&p.topic)
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let output = relay(p.payload).await;
                    if out_tx
                        .send((format!("{prefix}-out/{device}"), output))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    ready.recv().await.expect("forwarder subscribed");
}

/// The broker, its port, and the folder of its configuration (kept while it runs).
struct Broker(Child, u16, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker() -> Broker {
    let port = fnhub_benches::free_port();
    let program = fnhub_benches::installed(
        &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"],
        "apt-get install mosquitto",
    );
    // mosquitto keeps at most 1000 queued messages per client by default and drops the
    // rest; a benchmark that floods it must lift that for both paths alike.
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
    )
    .expect("config");
    let child = Command::new(program)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    fnhub_benches::wait_for_port(port, "mosquitto");
    Broker(child, port, dir)
}

/// A client whose received publishes are counted on the channel.
async fn client(
    port: u16,
    id: &str,
    subscribe: Option<&str>,
    qos: QoS,
) -> (AsyncClient, mpsc::UnboundedReceiver<()>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 100_000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let sub = client.clone();
    let filter = subscribe.map(str::to_owned);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => match &filter {
                    Some(f) => {
                        let _ = sub.subscribe(f.clone(), qos).await;
                    }
                    None => {
                        let _ = ready_tx.send(());
                    }
                },
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    ready.recv().await.expect("connected");
    (client, rx)
}

/// Publishes `n` readings at QoS 1 and waits until `received` has had `n` messages.
async fn batch(
    device: AsyncClient,
    received: Arc<Mutex<mpsc::UnboundedReceiver<()>>>,
    topic: &'static str,
    n: u64,
) -> Duration {
    let mut received = received.lock().await;
    let started = Instant::now();
    for i in 0..n {
        device
            .publish(topic, QoS::AtLeastOnce, false, format!("{{\"t\":{i}}}"))
            .await
            .expect("publish");
    }
    for i in 0..n {
        if tokio::time::timeout(Duration::from_secs(20), received.recv())
            .await
            .is_err()
        {
            let hub = HUB.get().map(|h| (h.mqtt_stats(), h.stats()));
            panic!("{} of {n} messages on {topic} arrived; {hub:#?}", i);
        }
    }
    started.elapsed()
}

/// Publishes `n` readings at QoS 0 and counts what `received` gets until `n` have come or
/// none for half a second: how many arrived, and the time from the first publish to the last
/// arrival.
async fn qos0_run(
    device: AsyncClient,
    received: Arc<Mutex<mpsc::UnboundedReceiver<()>>>,
    topic: &'static str,
    n: u64,
) -> (u64, Duration) {
    let mut received = received.lock().await;
    let started = Instant::now();
    for i in 0..n {
        device
            .publish(topic, QoS::AtMostOnce, false, format!("{{\"t\":{i}}}"))
            .await
            .expect("publish");
    }
    let (mut delivered, mut last) = (0, started.elapsed());
    while delivered < n {
        match tokio::time::timeout(Duration::from_millis(500), received.recv()).await {
            Ok(Some(())) => {
                delivered += 1;
                last = started.elapsed();
            }
            _ => break,
        }
    }
    (delivered, last)
}

/// CPU time (user + system) a process has used, in clock ticks, from `/proc/{pid}/stat`.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends at the last ')'): utime is the 12th,
    // stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(11) + at(12)
}

/// Moves `n` messages on one path once, and prints the CPU each side spent per message:
/// mosquitto, and this process (the device and the subscriber, and on the hub's path the
/// hub as well).
fn cpu_per_message(
    rt: &tokio::runtime::Runtime,
    broker_pid: &str,
    path: &str,
    run: impl std::future::Future<Output = Duration>,
    n: u64,
) -> (f64, f64, f64) {
    // Ticks are 10 ms (USER_HZ 100).
    let tick_us = 10_000.0;
    let (b0, s0) = (cpu_ticks(broker_pid), cpu_ticks("self"));
    let wall = rt.block_on(run);
    let (b1, s1) = (cpu_ticks(broker_pid), cpu_ticks("self"));
    let per = |ticks: u64| ticks as f64 * tick_us / n as f64;
    let (broker, own, wall) = (
        per(b1 - b0),
        per(s1 - s0),
        wall.as_secs_f64() * 1e6 / n as f64,
    );
    println!(
        "CPU {path}: {n} messages, {wall:.1} µs each; CPU per message: mosquitto {broker:.1} µs, this process {own:.1} µs"
    );
    (wall, broker, own)
}

fn bench(c: &mut Criterion) {
    let rt = fnhub_benches::runtime(2);
    let broker = broker();
    let port = broker.1;
    let hub = rt.block_on(async {
        let hub = EdgeHub::builder()
            .function(
                FunctionSpec::in_process(FunctionName::new("relay").expect("name"))
                    .with_output_topic("out/{1}"),
                from_fn(|inv: Invocation| async move { Ok::<Bytes, _>(relay(inv.payload).await) }),
            )
            .function(
                FunctionSpec::in_process(FunctionName::new("relay0").expect("name"))
                    .with_output_topic("out0/{1}"),
                from_fn(|inv: Invocation| async move { Ok::<Bytes, _>(relay(inv.payload).await) }),
            )
            .flow(Flow::parse("cloud", "sensors/+", "function:relay").expect("flow"))
            .flow(Flow::parse("cloud", "sensors0/+", "function:relay0").expect("flow"))
            .build()
            .expect("hub");
        fnhub::bridge::Bridge::new(
            MqttConfig::new("127.0.0.1", port, "bench-hub")
                .inbound(InboundRule::new("sensors/#".parse().expect("filter")))
                .outbound(OutboundRule::new("out/#".parse().expect("filter")))
                .inbound(
                    InboundRule::new("sensors0/#".parse().expect("filter"))
                        .with_qos(fnhub::Qos::AtMostOnce),
                )
                .outbound(
                    OutboundRule::new("out0/#".parse().expect("filter"))
                        .with_qos(fnhub::Qos::AtMostOnce),
                )
                // Criterion's batches reach tens of thousands of messages.
                .with_buffer(1_000_000),
        )
        .attach(&hub)
        .expect("bridge");
        let _ = HUB.set(hub.clone());
        while !hub.mqtt_stats().is_some_and(|s| s.connected) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hub
    });
    let (q1, q0) = (QoS::AtLeastOnce, QoS::AtMostOnce);
    let (device, _) = rt.block_on(client(port, "device", None, q1));
    let (_sink, mut received) = rt.block_on(client(port, "sink", Some("out/#"), q1));
    let (_sink0, mut received0) = rt.block_on(client(port, "sink0", Some("out0/#"), q0));
    let (_direct, direct) = rt.block_on(client(port, "direct", Some("direct/#"), q1));
    rt.block_on(forwarder(port, "fwd", q1));
    rt.block_on(forwarder(port, "fwd0", q0));
    let (_forwarded, forwarded) = rt.block_on(client(port, "fwd-sink", Some("fwd-out/#"), q1));
    let (_forwarded0, forwarded0) = rt.block_on(client(port, "fwd0-sink", Some("fwd0-out/#"), q0));
    // The hub's upstream subscriptions are in place once one reading makes it through each.
    for (topic, received) in [
        ("sensors/warmup", &mut received),
        ("sensors0/warmup", &mut received0),
    ] {
        rt.block_on(async {
            loop {
                device
                    .publish(topic, q1, false, "{}")
                    .await
                    .expect("publish");
                if tokio::time::timeout(Duration::from_millis(300), received.recv())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            while tokio::time::timeout(Duration::from_millis(300), received.recv())
                .await
                .is_ok()
            {}
        });
    }

    let mut g = c.benchmark_group("mqtt_end_to_end");
    g.sample_size(10);
    let (received, direct) = (Arc::new(Mutex::new(received)), Arc::new(Mutex::new(direct)));
    let forwarded = Arc::new(Mutex::new(forwarded));
    let (received0, forwarded0) = (
        Arc::new(Mutex::new(received0)),
        Arc::new(Mutex::new(forwarded0)),
    );
    g.bench_function("hub", |b| {
        b.to_async(&rt)
            .iter_custom(|n| batch(device.clone(), received.clone(), "sensors/d1", n))
    });
    g.bench_function("mosquitto_alone", |b| {
        b.to_async(&rt)
            .iter_custom(|n| batch(device.clone(), direct.clone(), "direct/d1", n))
    });
    g.bench_function("forwarder", |b| {
        b.to_async(&rt)
            .iter_custom(|n| batch(device.clone(), forwarded.clone(), "fwd/d1", n))
    });
    g.finish();
    fnhub_benches::print_ratio("mqtt_end_to_end", "hub", "mosquitto_alone");
    // Time per message: the hub's throughput against the forwarder's is the inverse.
    fnhub_benches::print_ratio("mqtt_end_to_end", "hub", "forwarder");

    // Where the time goes: one long batch on each path, with the CPU each process spent.
    // On two cores, a path whose processes need C µs of CPU per message cannot move a
    // message faster than C / 2 µs.
    let pid = broker.0.id().to_string();
    let n = 20_000;
    let (_, alone_broker, alone_own) = cpu_per_message(
        &rt,
        &pid,
        "mosquitto_alone",
        batch(device.clone(), direct.clone(), "direct/d1", n),
        n,
    );
    let (_, hub_broker, hub_own) = cpu_per_message(
        &rt,
        &pid,
        "hub",
        batch(device.clone(), received.clone(), "sensors/d1", n),
        n,
    );
    let (_, fwd_broker, fwd_own) = cpu_per_message(
        &rt,
        &pid,
        "forwarder",
        batch(device.clone(), forwarded.clone(), "fwd/d1", n),
        n,
    );
    println!(
        "CPU per message: through the hub {:.1} µs, through the forwarder {:.1} µs = {:.2}x",
        hub_broker + hub_own,
        fwd_broker + fwd_own,
        (hub_broker + hub_own) / (fwd_broker + fwd_own)
    );
    // QoS 0: nothing is acknowledged and a subscriber that cannot keep up loses messages
    // (the hub drops what finds its intake full, and counts it), so each path is timed
    // until its last delivery and its rate counts only what arrived.
    let mut rates = (Vec::new(), Vec::new());
    for round in 0..3 {
        for (path, topic, sink, rate) in [
            ("hub_qos0", "sensors0/d1", &received0, &mut rates.0),
            ("forwarder_qos0", "fwd0/d1", &forwarded0, &mut rates.1),
        ] {
            let (b0, s0) = (cpu_ticks(&pid), cpu_ticks("self"));
            let (delivered, took) = rt.block_on(qos0_run(device.clone(), sink.clone(), topic, n));
            let cpu = (cpu_ticks(&pid) - b0 + cpu_ticks("self") - s0) as f64 * 10_000.0;
            let per_second = delivered as f64 / took.as_secs_f64();
            println!(
                "QOS0 {path} round {round}: {delivered} of {n} delivered ({:.1}% lost), {per_second:.0}/s, CPU {:.1} µs per delivered message",
                100.0 * (n - delivered) as f64 / n as f64,
                cpu / delivered.max(1) as f64
            );
            rate.push((per_second, cpu / delivered.max(1) as f64));
        }
    }
    let median = |v: &[(f64, f64)], by: fn(&(f64, f64)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(by).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let (hub_rate, fwd_rate) = (median(&rates.0, |r| r.0), median(&rates.1, |r| r.0));
    let (hub_cpu, fwd_cpu) = (median(&rates.0, |r| r.1), median(&rates.1, |r| r.1));
    println!(
        "RATIO mqtt_qos0: hub {hub_rate:.0}/s / forwarder {fwd_rate:.0}/s = {:.2}x throughput; CPU per message {hub_cpu:.1} / {fwd_cpu:.1} µs = {:.2}x",
        hub_rate / fwd_rate,
        hub_cpu / fwd_cpu
    );
    let (alone, via_hub) = (alone_broker + alone_own, hub_broker + hub_own);
    println!(
        "CPU per message: mosquitto alone {alone:.1} µs, through the hub {via_hub:.1} µs \
         (of which mosquitto {hub_broker:.1} µs, the hub about {:.1} µs): \
         if both are CPU-bound, the hub's rate is at most {:.2}x mosquitto's",
        hub_own - alone_own,
        alone / via_hub
    );
    let stats = hub.mqtt_stats().expect("bridge");
    println!(
        "BRIDGE inbound {} outbound {} dropped {}/{}",
        stats.inbound, stats.outbound, stats.inbound_dropped, stats.outbound_dropped
    );
    rt.block_on(hub.shutdown());
    drop(broker);
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(2), Duration::from_secs(8))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
