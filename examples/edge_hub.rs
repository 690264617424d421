//! The edge hub on embedded defaults: simulated temperature sensors publish readings, three
//! functions smooth them, raise alerts and count them, and a dashboard listens for alerts.
//! No broker, no server.
//!
//! When Python 3 with `awslambdaric` is installed (`pip install awslambdaric`), a fourth
//! function, `report`, is a Python handler (`examples/functions/report/app.py`) run as a
//! process over the AWS Lambda Runtime API, confined (no network, no files but its own, no
//! inherited environment) where the machine allows; `--no-python` leaves it out.
//!
//! ```text
//! cargo run --release --example edge_hub -- [--duration SECS] [--devices N] [--rate HZ] [--json] [--no-python]
//! cargo run --release --example edge_hub -- --config hub.toml [--serve | --duration SECS] [--json]
//! ```
//!
//! Logs go to stderr: `RUST_LOG` picks what (default `info`), `--log-format json` makes one
//! JSON object a line (see `fnhub_examples::logs`); a function's output lines are among
//! them, with its name, version and request id.
//!
//! With `--config FILE` the hub is the one the file declares (functions, flows, the MQTT
//! bridge, the HTTP listener with `/metrics` and `/healthz`; see `fnhub::config`) instead of
//! the simulation; `--serve` keeps it running until SIGINT or SIGTERM, then drains it and
//! exits 0.
//!
//! Flows:
//!
//! ```text
//! device:*          sensors/+/temperature  -> function:smoother   (EWMA per device -> smoothed/{1})
//! device:*          sensors/+/temperature  -> function:counter    (per-device count -> counts/{1}, every 100th)
//! function:smoother smoothed/+             -> function:alert      (over 30 °C -> alerts/{1})
//! function:counter  counts/+               -> function:report     (Python -> reports/{1})
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnhub::{
    EdgeHub, Event, EventSource, Flow, FunctionError, FunctionName, FunctionSpec, Invocation,
    ProcessSandbox, Runtime, from_fn,
};
use parking_lot::Mutex;

const ALERT_ABOVE: f64 = 30.0;
const USAGE: &str = "usage: edge_hub [--duration SECS] [--devices N] [--rate HZ] [--json] [--no-python] [--log-format text|json]\n       edge_hub --config FILE [--serve | --duration SECS] [--json] [--log-format text|json]";

struct Options {
    config: Option<PathBuf>,
    serve: bool,
    duration: Duration,
    devices: usize,
    rate_hz: f64,
    json: bool,
    python: bool,
    log_format: fnhub_examples::logs::LogFormat,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        config: None,
        serve: false,
        duration: Duration::from_secs(3),
        devices: 8,
        rate_hz: 50.0,
        json: false,
        python: true,
        log_format: fnhub_examples::logs::LogFormat::Text,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--duration" => {
                let secs: f64 = value("--duration")?
                    .parse()
                    .map_err(|_| format!("--duration takes seconds\n{USAGE}"))?;
                if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
                    return Err(format!("--duration must be in (0, 86400]\n{USAGE}"));
                }
                o.duration = Duration::from_secs_f64(secs);
            }
            "--devices" => {
                o.devices = value("--devices")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| format!("--devices takes 1..=10000\n{USAGE}"))?;
            }
            "--rate" => {
                o.rate_hz = value("--rate")?
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r <= 100_000.0)
                    .ok_or_else(|| {
                        format!("--rate takes readings per second per device\n{USAGE}")
                    })?;
            }
            "--json" => o.json = true,
            "--config" => o.config = Some(PathBuf::from(value("--config")?)),
            "--serve" => o.serve = true,
            "--no-python" => o.python = false,
            "--log-format" => o.log_format = value("--log-format")?.parse()?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.serve && o.config.is_none() {
        return Err(format!("--serve needs --config\n{USAGE}"));
    }
    Ok(o)
}

fn reading(inv: &Invocation) -> Result<f64, FunctionError> {
    std::str::from_utf8(&inv.payload)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or_else(|| FunctionError::handled("reading is not a number").with_type("BadReading"))
}

/// The device id: level 1 of the trigger topic (`sensors/<device>/temperature`).
fn device_of(inv: &Invocation) -> String {
    inv.context
        .topic
        .as_deref()
        .and_then(|t| t.split('/').nth(1))
        .unwrap_or("unknown")
        .to_owned()
}

/// The Python interpreter that has `awslambdaric`, if there is one.
fn python_with_ric() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, awslambdaric; print(sys.executable)"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The `report` function: a Python handler run by awslambdaric over the Runtime API.
fn report_spec(python: &Path) -> Result<FunctionSpec, Box<dyn std::error::Error>> {
    let workdir = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/report");
    let command = vec![
        python.display().to_string(),
        "-m".into(),
        "awslambdaric".into(),
        "app.handler".into(),
    ];
    // The default capability profile grants nothing: no network, no files but the
    // function's own folder and the interpreter's, no inherited environment.
    Ok(FunctionSpec::new(
        FunctionName::new("report")?,
        Runtime::Process {
            command,
            workdir: Some(workdir),
            handler: Some("app.handler".into()),
        },
    )
    .with_output_topic("reports/{1}"))
}

fn build_hub(devices: usize, python: Option<&Path>) -> Result<EdgeHub, Box<dyn std::error::Error>> {
    // Exponentially weighted moving average per device.
    let averages: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let smoother = from_fn(move |inv: Invocation| {
        let averages = averages.clone();
        async move {
            let value = reading(&inv)?;
            let mut map = averages.lock();
            let avg = map.entry(device_of(&inv)).or_insert(value);
            *avg = 0.8 * *avg + 0.2 * value;
            Ok(format!("{avg:.2}").into())
        }
    });

    let alert = from_fn(|inv: Invocation| async move {
        let value = reading(&inv)?;
        if value > ALERT_ABOVE {
            let device = device_of(&inv);
            Ok(
                format!(r#"{{"device":"{device}","smoothed":{value},"above":{ALERT_ABOVE}}}"#)
                    .into(),
            )
        } else {
            Ok(bytes::Bytes::new()) // empty output: nothing is published
        }
    });

    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let counter = from_fn(move |inv: Invocation| {
        let counts = counts.clone();
        async move {
            let mut map = counts.lock();
            let n = map.entry(device_of(&inv)).or_insert(0);
            *n += 1;
            Ok(if n.is_multiple_of(100) {
                n.to_string().into()
            } else {
                bytes::Bytes::new()
            })
        }
    });

    let mut hub = EdgeHub::builder()
        .name("edge-hub-example")
        .workers(8)
        .queue_capacity(devices.max(1) * 64)
        .function(
            FunctionSpec::in_process(FunctionName::new("smoother")?)
                .with_output_topic("smoothed/{1}"),
            smoother,
        )
        .function(
            FunctionSpec::in_process(FunctionName::new("alert")?).with_output_topic("alerts/{1}"),
            alert,
        )
        .function(
            FunctionSpec::in_process(FunctionName::new("counter")?).with_output_topic("counts/{1}"),
            counter,
        )
        .flow(Flow::parse(
            "device:*",
            "sensors/+/temperature",
            "function:smoother",
        )?)
        .flow(Flow::parse(
            "device:*",
            "sensors/+/temperature",
            "function:counter",
        )?)
        .flow(Flow::parse(
            "function:smoother",
            "smoothed/+",
            "function:alert",
        )?);
    if let Some(python) = python {
        hub = hub
            // Confine what this machine can confine and run anyway: an example should run
            // for a user who is not root. A deployment keeps the default, fail closed.
            .sandbox(Arc::new(ProcessSandbox::new().best_effort()))
            .deploy(report_spec(python)?)
            .flow(Flow::parse(
                "function:counter",
                "counts/+",
                "function:report",
            )?);
    }
    Ok(hub.build()?)
}

/// xorshift64*: a small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One simulated sensor. Device 3 slowly overheats; about one reading in 200 is garbage.
async fn device(hub: EdgeHub, index: usize, rate_hz: f64, until: Instant) -> (u64, u64) {
    let id = format!("dev-{index}");
    let topic = format!("sensors/{id}/temperature");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
    let mut temperature = 20.0 + 5.0 * rng.next_f64();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_hz));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut rejected) = (0, 0);
    while Instant::now() < until {
        ticker.tick().await;
        temperature += (rng.next_f64() - 0.5) * 0.4 + if index == 3 { 0.08 } else { 0.0 };
        let payload = if rng.next_f64() < 0.005 {
            "ERR".to_owned()
        } else {
            format!("{temperature:.2}")
        };
        let event = Event::new(topic.as_str(), payload, EventSource::Device(id.clone()));
        match hub.publish(event) {
            Ok(report) => rejected += report.rejected.len() as u64,
            Err(e) => eprintln!("{id}: {e}"),
        }
        sent += 1;
    }
    (sent, rejected)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let logs = fnhub_examples::logs::init(options.log_format);
    let code = match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            logs.finish();
            eprintln!("edge_hub: {e}");
            return ExitCode::FAILURE;
        }
    };
    logs.finish();
    code
}

async fn run(o: Options) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = o.config.clone() {
        let until = if o.serve {
            fnhub_examples::serve::Until::Signal
        } else {
            fnhub_examples::serve::Until::After(o.duration)
        };
        return fnhub_examples::serve::run_config(&path, until, o.json).await;
    }
    let python = if o.python { python_with_ric() } else { None };
    let python_state = match (&python, o.python) {
        (Some(_), _) => "awslambdaric",
        (None, true) => "absent",
        (None, false) => "disabled",
    };
    let hub = build_hub(o.devices, python.as_deref())?;
    let mut reports_sub = hub.subscribe("reports/#", 4096)?;
    let reports = tokio::spawn(async move {
        let mut n = 0u64;
        while reports_sub.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let mut dashboard = hub.subscribe("alerts/#", 4096)?;
    let alerts = tokio::spawn(async move {
        let mut n = 0u64;
        while dashboard.recv().await.is_some() {
            n += 1;
        }
        n
    });

    let started = Instant::now();
    let until = started + o.duration;
    // Progress on stderr when it is a terminal, once a second.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let hub = hub.clone();
        let total = o.duration.as_secs_f64();
        tokio::spawn(async move {
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let s = hub.stats();
                eprint!(
                    "\r{:.0}/{total:.0} s: {} events in, {} out ",
                    started.elapsed().as_secs_f64().min(total),
                    s.events_in,
                    s.events_out
                );
            }
            eprintln!();
        });
    }
    let devices: Vec<_> = (0..o.devices)
        .map(|i| tokio::spawn(device(hub.clone(), i, o.rate_hz, until)))
        .collect();
    let (mut sent, mut device_rejected) = (0, 0);
    for d in devices {
        let (s, r) = d.await?;
        sent += s;
        device_rejected += r;
    }
    hub.shutdown().await;
    let elapsed = started.elapsed();
    let stats = hub.stats();
    drop(hub); // closes the bus, so the dashboard ends
    let alerts = alerts.await?;
    let reports = reports.await?;

    if o.json {
        let summary = serde_json::json!({
            "duration_s": elapsed.as_secs_f64(),
            "devices": o.devices,
            "events_in": stats.events_in,
            "events_out": stats.events_out,
            "invocations": stats.functions.iter()
                .map(|(k, v)| (k.clone(), v.invocations)).collect::<HashMap<_, _>>(),
            "cold_starts": stats.functions.iter()
                .map(|(k, v)| (k.clone(), v.cold_starts)).collect::<HashMap<_, _>>(),
            "outcomes": stats.outcomes,
            "rejected": stats.rejected,
            "delivery_full": stats.delivery_full,
            "events_refused": stats.events_refused,
            "alerts": alerts,
            "python": python_state,
            "reports": reports,
            "latency_us": {
                "p50": stats.latency.p50_us,
                "p99": stats.latency.p99_us,
                "max": stats.latency.max_us,
                "count": stats.latency.count,
            },
        });
        println!("{summary}");
    } else {
        println!(
            "fnhub edge hub: {} devices at {} Hz for {:.1} s",
            o.devices,
            o.rate_hz,
            elapsed.as_secs_f64()
        );
        println!(
            "  events in           {} ({} sent by devices)",
            stats.events_in, sent
        );
        println!("  events from outputs {}", stats.events_out);
        println!("  invocations");
        for (name, f) in &stats.functions {
            println!(
                "    {name:<12} {:>8}  (ok {}, cold starts {})",
                f.invocations, f.ok, f.cold_starts
            );
        }
        println!("  outcomes");
        for (kind, n) in &stats.outcomes {
            println!("    {kind:<12} {n:>8}");
        }
        println!(
            "  rejected            {} (by devices' publishes: {device_rejected})",
            stats.rejected
        );
        println!(
            "  latency, admission to completion: p50 {} µs, p99 {} µs, max {} µs",
            stats.latency.p50_us, stats.latency.p99_us, stats.latency.max_us
        );
        println!("  alerts received     {alerts}");
        match python_state {
            "awslambdaric" => println!("  python reports      {reports} (awslambdaric)"),
            "absent" => println!(
                "  python reports      skipped: no python3 with awslambdaric (pip install awslambdaric)"
            ),
            _ => println!("  python reports      skipped (--no-python)"),
        }
    }
    Ok(())
}
