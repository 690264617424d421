//! A hub from a config file, plus one native function, `record`, that appends a line with
//! the id and the payload of each invocation it runs to a file (after a short pause, so a
//! backlog builds). For the tests that stop a hub under load (SIGKILL under `Event`
//! invocations, SIGTERM with an MQTT backlog) and start it again.
//!
//! `event_hub CONFIG RECORD_FILE`: prints `http ADDRESS` on stderr once it listens, and
//! drains and exits on SIGTERM.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use fnhub::{FunctionName, FunctionSpec, Invocation, from_fn};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(config), Some(record)) = (args.next(), args.next()) else {
        return Err("usage: event_hub CONFIG RECORD_FILE".into());
    };
    let config = fnhub::config::HubConfig::load(&config)?;
    let file = Arc::new(parking_lot::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&record)?,
    ));
    let handler = from_fn(move |inv: Invocation| {
        let file = file.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let payload = String::from_utf8_lossy(&inv.payload).replace('\n', " ");
            // One write per line: a SIGKILL between the parts of a formatted write would
            // leave half a line for the next hub's first line to be glued to.
            let line = format!("{} {payload}\n", inv.id);
            let _ = file.lock().write_all(line.as_bytes());
            Ok(bytes::Bytes::new())
        }
    });
    let builder = config.builder()?.function(
        FunctionSpec::in_process(FunctionName::new("record")?),
        handler,
    );
    let running = config.start(builder, None).await?;
    let addr = running
        .http
        .as_ref()
        .map(|h| h.local_addr().to_string())
        .ok_or("the config has no [http]")?;
    eprintln!("http {addr}");
    if std::env::var_os("EVENT_HUB_STATS").is_some() {
        let hub = running.hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let s = hub.stats();
                eprintln!(
                    "stats: mqtt {:?} events_in {} rejected {}",
                    hub.mqtt_stats(),
                    s.events_in,
                    s.rejected
                );
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    running.shutdown().await;
    Ok(())
}
