//! A hub, or a cloud runtime node, from a config file: what `edge_hub --config` and
//! `cloud_runtime --config` run.

use std::path::Path;
use std::time::Duration;

/// How long [`run_config`] serves.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Until SIGINT or SIGTERM.
    Signal,
    /// For this long.
    After(Duration),
}

/// Runs the hub the config file at `path` declares (a cloud runtime node too, when it has
/// `[cloud]` and fnhub has feature `nats`) until `until`; then drains it and prints its
/// figures (one JSON object with `json`).
pub async fn run_config(
    path: &Path,
    until: Until,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = fnhub::config::HubConfig::load(path)?;
    // The binary, not the library, installs the process's metrics recorder; `/metrics`
    // renders it.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))?;
    let render: fnhub::http::RenderMetrics = std::sync::Arc::new(move || metrics.render());
    let running = config.start(config.builder()?, Some(render)).await?;
    let http = running.http.as_ref().map(|h| h.local_addr().to_string());
    let node = config
        .cloud()
        .map(|c| format!(", node {} of {}", c.node, c.servers.join(",")))
        .unwrap_or_default();
    eprintln!(
        "hub {} up: {} functions, {} flows, http {}{node}",
        config.name(),
        config.functions().len(),
        config.flows().len(),
        http.as_deref().unwrap_or("off"),
    );
    // Started: the code that only starting ran need not stay resident.
    match crate::memory::release_startup_code() {
        Ok(bytes) => tracing::debug!(code_mib = bytes >> 20, "start-up code pages released"),
        Err(error) => tracing::debug!(%error, "start-up code pages kept"),
    }
    match until {
        Until::Signal => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("signal: draining");
        }
        Until::After(d) => tokio::time::sleep(d).await,
    }
    let hub = running.hub.clone();
    running.shutdown().await;
    let stats = hub.stats();
    if json {
        let summary = serde_json::json!({
            "hub": config.name(),
            "http": http,
            "events_in": stats.events_in,
            "events_out": stats.events_out,
            "rejected": stats.rejected,
            "outcomes": stats.outcomes,
            "invocations": stats.functions.iter().map(|(k, v)| (k.clone(), v.invocations)).collect::<std::collections::BTreeMap<_, _>>(),
        });
        println!("{summary}");
    } else {
        println!(
            "hub {}: {} events in, {} out, outcomes {:?}",
            config.name(),
            stats.events_in,
            stats.events_out,
            stats.outcomes
        );
    }
    Ok(())
}
