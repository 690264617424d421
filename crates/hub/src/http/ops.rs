//! The operator's routes: `/metrics` and `/healthz`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::EdgeHub;

/// Renders the process's metrics as Prometheus text: the application installs a recorder
/// (for example `metrics-exporter-prometheus`'s) and hands over its render; a library does
/// not install a process-wide recorder of its own.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the operator's routes of [`serve_with_ops`](super::serve_with_ops) serve.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Ops {
    /// What `GET /metrics` answers; without it, `503`.
    pub metrics: Option<RenderMetrics>,
    /// Where the front door sends the calls its hub cannot run (a function it lacks, or no
    /// room): a cloud runtime node's deployment.
    pub dispatch: Option<Arc<dyn super::Dispatch>>,
    /// What `/healthz` reports of the node's connection to its deployment, when it is one:
    /// whether it is connected.
    pub cloud: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("metrics", &self.metrics.is_some())
            .field("dispatch", &self.dispatch.is_some())
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// `/metrics` answers what `render` returns.
    pub fn with_metrics(mut self, render: RenderMetrics) -> Ops {
        self.metrics = Some(render);
        self
    }

    /// Calls the hub cannot run go to `dispatch`; `/healthz` reports `connected()` as the
    /// node's link to its deployment (a node that lost it still serves what it runs).
    pub fn with_dispatch(
        mut self,
        dispatch: Arc<dyn super::Dispatch>,
        connected: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Ops {
        self.dispatch = Some(dispatch);
        self.cloud = Some(connected);
        self
    }
}

/// Why a deployed function could not start an environment now, if it could not.
fn cannot_start(spec: &fnhub_core::FunctionSpec) -> Option<String> {
    match &spec.runtime {
        fnhub_core::Runtime::Process {
            command, workdir, ..
        } => {
            if let Some(dir) = workdir
                && !dir.is_dir()
            {
                return Some(format!("workdir {} not found", dir.display()));
            }
            let program = command.first()?;
            let found = if program.contains('/') {
                let p = std::path::Path::new(program);
                let p = match (p.is_relative(), workdir) {
                    (true, Some(dir)) => dir.join(p),
                    _ => p.to_owned(),
                };
                p.exists()
            } else {
                std::env::var_os("PATH").is_some_and(|paths| {
                    std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
                })
            };
            (!found).then(|| format!("program {program:?} not found"))
        }
        fnhub_core::Runtime::Wasm { module, .. } => {
            (!module.exists()).then(|| format!("module {} not found", module.display()))
        }
        _ => None,
    }
}

/// `app` with `/metrics` and `/healthz` of `hub`.
pub(super) fn routes(app: axum::Router, hub: &EdgeHub, ops: Ops) -> axum::Router {
    let hub = hub.clone();
    let cloud = ops.cloud.clone();
    #[cfg(feature = "process")]
    let scraped = hub.clone();
    app.route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = ops.metrics.clone();
            // Read when scraped: what the templates hold changes without an event.
            #[cfg(feature = "process")]
            {
                let usage = scraped.python_templates();
                metrics::gauge!("fnhub_python_templates").set(usage.templates as f64);
                metrics::gauge!("fnhub_python_template_bytes").set(usage.resident_bytes as f64);
            }
            async move {
                match metrics {
                    Some(render) => (StatusCode::OK, render()).into_response(),
                    None => {
                        (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder").into_response()
                    }
                }
            }
        }),
    )
    .route(
        "/healthz",
        axum::routing::get(move || {
            let hub = hub.clone();
            let cloud = cloud.clone();
            async move {
                let closing = hub.is_closing();
                let mut failing: BTreeMap<String, String> = hub.start_failures();
                for s in hub.deployed() {
                    if let Some(why) = cannot_start(&s) {
                        failing.insert(format!("{}:{}", s.name, s.version), why);
                    }
                }
                // A broker that refuses the hub (wrong password or certificate) will not
                // let it in by itself: unavailable. One merely unreachable is reported,
                // and the hub works offline meanwhile.
                #[cfg(feature = "mqtt")]
                let (mqtt, refused) = match hub.mqtt_stats() {
                    Some(b) => (
                        json!({"connected": b.connected, "last_error": b.last_error, "refused": b.refused}),
                        b.refused && !b.connected,
                    ),
                    None => (serde_json::Value::Null, false),
                };
                #[cfg(not(feature = "mqtt"))]
                let (mqtt, refused) = (serde_json::Value::Null, false);
                // A node that lost NATS still serves what it runs: reported, not unready.
                let nats = cloud.map_or(serde_json::Value::Null, |c| json!({"connected": c()}));
                let ready = !closing && failing.is_empty() && !refused;
                let body = json!({
                    "status": if ready { "ready" } else { "unavailable" },
                    "closing": closing,
                    "confinement": if hub.best_effort_confinement() { "best-effort" } else { "enforced" },
                    "cannot_start": failing,
                    "mqtt": mqtt,
                    "nats": nats,
                });
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut r = (status, body.to_string()).into_response();
                r.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                );
                r
            }
        }),
    )
}
