//! Device shadows over MQTT (feature `mqtt`): the hub answers devices on the bridged broker
//! on AWS IoT's reserved topics, from the same shadow store its functions use.
//!
//! For each thing served (see `Bridge::device_shadows`), a message on
//! `$aws/things/{thing}/shadow/[name/{name}/]get`, `…/update` or `…/delete` is answered
//! upstream: `…/get/accepted` (the document) or `…/get/rejected`; `…/update/rejected` or
//! `…/delete/rejected`, AWS's `{"code": 400|403|404|409|413, "message": …}` with the
//! request's `clientToken`. Every change to a served thing's shadows, whoever made it (a
//! device, a function, a WebAssembly guest), goes upstream as AWS IoT sends it:
//! `…/update/accepted`, `…/update/delta` when desired and reported differ,
//! `…/update/documents` (previous and current), `…/delete/accepted`.

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{
    FunctionName, InvocationContext, InvocationId, LocalServices, Principal, ServiceCaller,
    ServiceError, ShadowRef, Version,
};
use fnhub_router::mqtt::{BridgePublisher, InboundRule, Upstream};
use fnhub_router::topic::TopicFilter;
use serde_json::{Value, json};

/// Where device requests arrive locally: under a `$` prefix no flow's wildcard sees.
pub(crate) const LOCAL_PREFIX: &str = "$fnhub/device-shadow/";

/// The upstream filters for `things` (`"*"`: every thing): requests to their classic and
/// named shadows.
pub(crate) fn rules(things: &[String]) -> Vec<InboundRule> {
    things
        .iter()
        .flat_map(|t| {
            let thing = if t == "*" { "+" } else { t.as_str() };
            [
                format!("$aws/things/{thing}/shadow/+"),
                format!("$aws/things/{thing}/shadow/name/+/+"),
            ]
        })
        .filter_map(|f| {
            let filter: TopicFilter = f.parse().ok()?;
            Some(InboundRule::new(filter).with_local_prefix(LOCAL_PREFIX))
        })
        .collect()
}

/// The local filter the requests arrive on.
pub(crate) fn local_filter() -> Option<TopicFilter> {
    format!("{LOCAL_PREFIX}$aws/things/+/shadow/#").parse().ok()
}

/// The local filter of the shadow store's announcements (what changed).
pub(crate) fn announcements() -> Option<TopicFilter> {
    "$aws/things/+/shadow/#".parse().ok()
}

/// A request's shadow and operation, from its topic (without the local prefix).
fn parse_request(topic: &str) -> Option<(ShadowRef, &str)> {
    let parts: Vec<&str> = topic.split('/').collect();
    match parts[..] {
        ["$aws", "things", thing, "shadow", op] => Some((ShadowRef::classic(thing).ok()?, op)),
        ["$aws", "things", thing, "shadow", "name", name, op] => {
            Some((ShadowRef::named(thing, name).ok()?, op))
        }
        _ => None,
    }
}

/// Whether `topic` is an announcement devices get, for a thing in `things`.
fn forwarded(topic: &str, things: &[String]) -> bool {
    let parts: Vec<&str> = topic.split('/').collect();
    let (thing, tail) = match parts[..] {
        ["$aws", "things", thing, "shadow", a, b] => (thing, [a, b]),
        ["$aws", "things", thing, "shadow", "name", _, a, b] => (thing, [a, b]),
        _ => return false,
    };
    let answer = matches!(
        tail,
        ["update", "accepted" | "delta" | "documents"] | ["delete", "accepted"]
    );
    answer && things.iter().any(|t| t == "*" || t == thing)
}

/// Answers device requests, and sends served things' changes upstream, until either
/// subscription ends.
pub(crate) async fn serve(
    services: Arc<dyn LocalServices>,
    things: Vec<String>,
    mut requests: fnhub_router::Subscription,
    mut changes: fnhub_router::Subscription,
    publisher: BridgePublisher,
) {
    let Ok(function) = FunctionName::new("mqtt-devices") else {
        return;
    };
    loop {
        let replies = tokio::select! {
            change = changes.recv() => {
                let Some(event) = change else { return };
                if !forwarded(&event.topic, &things) {
                    continue;
                }
                vec![(event.topic.to_string(), event.payload.clone())]
            }
            request = requests.recv() => {
                let Some(event) = request else { return };
                let Some(topic) = event.topic.strip_prefix(LOCAL_PREFIX) else {
                    continue;
                };
                let Some((shadow, op)) = parse_request(topic) else {
                    continue;
                };
                let mut context = InvocationContext::default();
                context.principal = Principal::new("mqtt-devices");
                if let Some(trace) = event.headers.trace() {
                    context.trace = trace;
                }
                let caller = ServiceCaller::new(
                    function.clone(),
                    Version::FIRST,
                    InvocationId::random(),
                    context,
                );
                answer(services.as_ref(), &caller, &shadow, op, &event.payload).await
            }
        };
        for (topic, body) in replies {
            if !publisher.publish(Upstream::new(topic, body)).await {
                return;
            }
        }
    }
}

/// The direct replies to one request: `(topic, body)`. What an accepted update or delete
/// changed goes upstream from the store's announcements.
async fn answer(
    services: &dyn LocalServices,
    caller: &ServiceCaller,
    shadow: &ShadowRef,
    op: &str,
    payload: &[u8],
) -> Vec<(String, Bytes)> {
    let base = format!("{}/{op}", shadow.topic_prefix());
    let token = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("clientToken").cloned());
    let with_token = |mut v: Value| {
        if let (Some(t), Some(o)) = (&token, v.as_object_mut()) {
            o.insert("clientToken".into(), t.clone());
        }
        Bytes::from(v.to_string())
    };
    let rejected = |e: ServiceError| {
        let code = match e {
            ServiceError::NotFound(_) => 404,
            ServiceError::Denied(_) => 403,
            ServiceError::Conflict(_) => 409,
            ServiceError::TooLarge(_) => 413,
            ServiceError::Overloaded(_) => 429,
            ServiceError::Unavailable(_) => 503,
            _ => 400,
        };
        vec![(
            format!("{base}/rejected"),
            with_token(json!({"code": code, "message": e.to_string()})),
        )]
    };
    let done = match op {
        "get" => match services.shadow_get(caller, shadow).await {
            Ok(doc) => {
                let doc = serde_json::from_slice::<Value>(&doc).unwrap_or(Value::Null);
                return vec![(format!("{base}/accepted"), with_token(doc))];
            }
            Err(e) => Err(e),
        },
        "update" => services
            .shadow_update(caller, shadow, Bytes::copy_from_slice(payload))
            .await
            .map(drop),
        "delete" => services.shadow_delete(caller, shadow).await.map(drop),
        _ => return Vec::new(),
    };
    match done {
        Ok(()) => Vec::new(),
        Err(e) => rejected(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_classic_or_named_shadow() {
        let (s, op) = parse_request("$aws/things/lamp/shadow/get").unwrap();
        assert_eq!((s.thing(), s.name(), op), ("lamp", None, "get"));
        let (s, op) = parse_request("$aws/things/lamp/shadow/name/cfg/update").unwrap();
        assert_eq!((s.thing(), s.name(), op), ("lamp", Some("cfg"), "update"));
        for bad in [
            "$aws/things/lamp/shadow",
            "$aws/things/lamp/shadow/name/cfg",
            "$aws/things/la mp/shadow/get",
            "$aws/things/lamp/other/get",
        ] {
            assert!(parse_request(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_served_things_changes_go_upstream() {
        let things = vec!["lamp".to_owned()];
        assert!(forwarded(
            "$aws/things/lamp/shadow/update/accepted",
            &things
        ));
        assert!(forwarded(
            "$aws/things/lamp/shadow/name/cfg/update/documents",
            &things
        ));
        assert!(forwarded(
            "$aws/things/lamp/shadow/delete/accepted",
            &things
        ));
        assert!(!forwarded(
            "$aws/things/fan/shadow/update/accepted",
            &things
        ));
        assert!(!forwarded("$aws/things/lamp/shadow/update", &things));
        assert!(!forwarded("$aws/things/lamp/shadow/get/accepted", &things));
        assert!(forwarded(
            "$aws/things/fan/shadow/update/delta",
            &["*".to_owned()]
        ));
    }
}
