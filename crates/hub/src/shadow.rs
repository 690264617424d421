//! The hub's deployment driven by a device shadow (features `mqtt` and `config`).
//!
//! With [`Bridge::shadow_deployment`](crate::bridge::Bridge::shadow_deployment),
//! the hub takes desired state from `$aws/things/{thing}/shadow/update/delta` over its MQTT
//! bridge. The delta's `state` may hold:
//!
//! - `functions`: the whole list of functions the shadow manages, each as a `[[function]]`
//!   of the config file (`name`, `runtime`, `command` or `module`, `version`, ...). New ones
//!   and new versions are deployed (an older version drains: admitted work finishes, new
//!   work goes to the newest), and functions the shadow deployed before but no longer
//!   lists are removed. Functions the hub was built with are never touched.
//! - `flows`: the whole list of flows the shadow manages, each as a `[[flow]]`; they
//!   replace the shadow's previous flows (the new ones are added before the old ones go,
//!   so no event misses both).
//!
//! At every connect of the bridge the hub asks for the whole document
//! (`$aws/things/{thing}/shadow/get`) and acts on the delta in `…/get/accepted`, so a
//! change published while it was offline is not missed.
//!
//! The whole document is checked before anything changes — every function spec, every
//! flow, that each flow's function will exist, that a sandbox can run each function, that
//! no version is redeclared with another spec — so a bad document changes nothing. Either
//! way the hub reports on `$aws/things/{thing}/shadow/update`: `state.reported.functions`
//! and `state.reported.flows` after a change, or `state.reported.deployment_error` with
//! the reason; a `clientToken` in the document is echoed in the report.

use std::collections::{BTreeMap, BTreeSet};

use fnhub_core::FunctionName;
use fnhub_router::mqtt::{BridgePublisher, Connections, Upstream};
use fnhub_router::{FlowId, Target};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{FlowSection, FunctionSection, flow, function_spec};
use crate::edge::{EdgeHub, WeakHub};

/// Where deltas arrive locally: under a `$` prefix, out of reach of wildcard flows.
pub(crate) const LOCAL_PREFIX: &str = "$fnhub/shadow/";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Desired {
    functions: Option<Vec<FunctionSection>>,
    flows: Option<Vec<FlowSection>>,
}

/// What the shadow deployed so far.
#[derive(Default)]
struct Managed {
    functions: BTreeSet<FunctionName>,
    flows: Vec<FlowId>,
}

pub(crate) async fn serve(
    hub: WeakHub,
    thing: String,
    mut deltas: fnhub_router::Subscription,
    publisher: BridgePublisher,
    mut connections: Connections,
) {
    let mut managed = Managed::default();
    loop {
        let event = tokio::select! {
            event = deltas.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = connections.next() => {
                // Connected (again): ask for the whole document, so a delta published
                // while the hub was offline is not missed.
                let get = Upstream::new(format!("$aws/things/{thing}/shadow/get"), "{}");
                if !publisher.publish(get).await {
                    return;
                }
                continue;
            }
        };
        let Some(hub) = hub.upgrade() else { return };
        let payload = if event.topic.ends_with("/get/accepted") {
            // The whole document: what is left to do is its delta, if any.
            let doc: Value = serde_json::from_slice(&event.payload).unwrap_or(Value::Null);
            match doc.get("state").and_then(|s| s.get("delta")) {
                Some(delta) => {
                    let mut d = json!({ "state": delta });
                    if let Some(token) = doc.get("clientToken") {
                        d["clientToken"] = token.clone();
                    }
                    bytes::Bytes::from(d.to_string())
                }
                None => continue,
            }
        } else {
            event.payload.clone()
        };
        let reported = match apply(&hub, &payload, &mut managed).await {
            Ok(reported) => {
                tracing::info!(%thing, "deployment updated from the shadow");
                reported
            }
            Err(error) => {
                tracing::warn!(%thing, %error, "shadow document rejected; nothing changed");
                json!({ "deployment_error": error })
            }
        };
        // A `clientToken` in the document comes back in the report, as AWS IoT echoes it,
        // so the sender can tell which document a report answers.
        let token = serde_json::from_slice::<Value>(&payload)
            .ok()
            .and_then(|d| d.get("clientToken").cloned());
        let mut report = json!({ "state": { "reported": reported } });
        if let Some(token) = token {
            report["clientToken"] = token;
        }
        let report = report.to_string();
        let topic = format!("$aws/things/{thing}/shadow/update");
        if !publisher.publish(Upstream::new(topic, report)).await {
            return;
        }
    }
}

async fn apply(hub: &EdgeHub, payload: &[u8], managed: &mut Managed) -> Result<Value, String> {
    let doc: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let state = doc
        .get("state")
        .cloned()
        .ok_or("the document has no \"state\"")?;
    let desired: Desired = serde_json::from_value(state).map_err(|e| e.to_string())?;
    let scheduler = hub.scheduler();
    let deployed: BTreeSet<FunctionName> = scheduler
        .deployed()
        .iter()
        .map(|s| s.name.clone())
        .collect();

    // Check everything first.
    let as_is = |p: &std::path::Path| p.to_owned();
    let specs = match &desired.functions {
        None => None,
        Some(list) => {
            let mut specs = Vec::new();
            let mut seen = BTreeSet::new();
            for f in list {
                let spec = function_spec(f, &as_is).map_err(|(k, m)| format!("{k}: {m}"))?;
                if !seen.insert((spec.name.clone(), spec.version)) {
                    return Err(format!(
                        "{} version {} is listed twice",
                        spec.name, spec.version
                    ));
                }
                if !managed.functions.contains(&spec.name) && deployed.contains(&spec.name) {
                    return Err(format!(
                        "{} was deployed with the hub, not by the shadow; it is not the shadow's to change",
                        spec.name
                    ));
                }
                hub.check_deploy(&spec)
                    .map_err(|e| format!("{}: {e}", spec.name))?;
                specs.push(spec);
            }
            Some(specs)
        }
    };
    let flows = match &desired.flows {
        None => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, f)| flow(f, i).map_err(|(k, m)| format!("{k}: {m}")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    // The functions there will be, and every flow there will be must find its function.
    let mut names = deployed;
    if let Some(specs) = &specs {
        names.retain(|n| !managed.functions.contains(n));
        names.extend(specs.iter().map(|s| s.name.clone()));
    }
    let kept_flows: Vec<fnhub_router::Flow> = match &flows {
        Some(new) => new.clone(),
        None => hub
            .flows()
            .into_iter()
            .filter(|(id, _)| managed.flows.contains(id))
            .map(|(_, f)| f)
            .collect(),
    };
    for f in &kept_flows {
        if let Target::Function(target) = &f.target
            && !names.contains(&target.name)
        {
            return Err(format!(
                "flow {} {} -> {} targets {}, which would not be deployed",
                f.source, f.filter, f.target, target.name
            ));
        }
    }

    // Then change.
    if let Some(specs) = specs {
        let wanted: BTreeSet<FunctionName> = specs.iter().map(|s| s.name.clone()).collect();
        // Each new version warms before it takes traffic; one that cannot start is
        // withdrawn and its old version keeps serving.
        for spec in specs {
            hub.deploy_warm(spec)
                .await
                .map_err(|e| format!("half applied: {e}"))?;
        }
        for gone in managed.functions.difference(&wanted) {
            scheduler.undeploy(gone);
        }
        managed.functions = wanted;
    }
    if let Some(flows) = flows {
        let mut added = Vec::new();
        for f in flows {
            added.push(hub.add_flow(f).map_err(|e| format!("half applied: {e}"))?);
        }
        for old in std::mem::replace(&mut managed.flows, added) {
            hub.remove_flow(old);
        }
    }

    let functions: Vec<Value> = scheduler
        .deployed()
        .iter()
        .filter(|s| managed.functions.contains(&s.name))
        .map(|s| json!({ "name": s.name.as_str(), "version": s.version.get() }))
        .collect();
    let flows: Vec<BTreeMap<&str, String>> = hub
        .flows()
        .into_iter()
        .filter(|(id, _)| managed.flows.contains(id))
        .map(|(_, f)| {
            BTreeMap::from([
                ("source", f.source.to_string()),
                ("topic", f.filter.to_string()),
                ("target", f.target.to_string()),
            ])
        })
        .collect();
    Ok(json!({ "functions": functions, "flows": flows }))
}
