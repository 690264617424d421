//! Device shadows over MQTT (feature `mqtt`): the hub answers devices on the bridged broker
//! on AWS IoT's reserved topics, from the same shadow store its functions use.
//!
//! For each thing served (see `Bridge::device_shadows`),
//! a message on `$aws/things/{thing}/shadow/get`, `…/update` or `…/delete` is answered
//! upstream on `…/get/accepted` (the document) or `…/get/rejected`, `…/update/accepted`
//! (and `…/update/delta` when desired and reported differ) or `…/update/rejected`,
//! `…/delete/accepted` or `…/delete/rejected`. A rejection is AWS's
//! `{"code": 400|403|404|409|413, "message": …}`; a request's `clientToken` is echoed.
//! Named shadows are not served yet.

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{
    FunctionName, InvocationContext, InvocationId, LocalServices, Principal, ServiceCaller,
    ServiceError, Version,
};
use fnhub_router::mqtt::{BridgePublisher, InboundRule, Upstream};
use fnhub_router::topic::TopicFilter;
use serde_json::{Value, json};

/// Where device requests arrive locally: under a `$` prefix no flow's wildcard sees.
pub(crate) const LOCAL_PREFIX: &str = "$fnhub/device-shadow/";

/// The upstream filters for `things` (`"*"`: every thing).
pub(crate) fn rules(things: &[String]) -> Vec<InboundRule> {
    things
        .iter()
        .filter_map(|t| {
            let thing = if t == "*" { "+" } else { t.as_str() };
            let filter: TopicFilter = format!("$aws/things/{thing}/shadow/+").parse().ok()?;
            Some(InboundRule::new(filter).with_local_prefix(LOCAL_PREFIX))
        })
        .collect()
}

/// The local filter the requests arrive on.
pub(crate) fn local_filter() -> Option<TopicFilter> {
    format!("{LOCAL_PREFIX}$aws/things/+/shadow/+").parse().ok()
}

/// Answers device requests until the subscription ends.
pub(crate) async fn serve(
    services: Arc<dyn LocalServices>,
    mut requests: fnhub_router::Subscription,
    publisher: BridgePublisher,
) {
    let Ok(function) = FunctionName::new("mqtt-devices") else {
        return;
    };
    while let Some(event) = requests.recv().await {
        let Some(topic) = event.topic.strip_prefix(LOCAL_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = topic.split('/').collect();
        let ["$aws", "things", thing, "shadow", op] = parts[..] else {
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
        for (topic, body) in answer(services.as_ref(), &caller, thing, op, &event.payload).await {
            if !publisher
                .publish(Upstream::new(topic, Bytes::from(body.to_string())))
                .await
            {
                return;
            }
        }
    }
}

/// The replies to one request: `(topic, body)`.
async fn answer(
    services: &dyn LocalServices,
    caller: &ServiceCaller,
    thing: &str,
    op: &str,
    payload: &[u8],
) -> Vec<(String, Value)> {
    let base = format!("$aws/things/{thing}/shadow/{op}");
    let token = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("clientToken").cloned());
    let with_token = |mut v: Value| {
        if let (Some(t), Some(o)) = (&token, v.as_object_mut()) {
            o.insert("clientToken".into(), t.clone());
        }
        v
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
    let parse = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null);
    match op {
        "get" => match services.shadow_get(caller, thing).await {
            Ok(doc) => vec![(format!("{base}/accepted"), with_token(parse(doc)))],
            Err(e) => rejected(e),
        },
        "update" => {
            match services
                .shadow_update(caller, thing, Bytes::copy_from_slice(payload))
                .await
            {
                Ok(accepted) => {
                    let mut out = vec![(format!("{base}/accepted"), with_token(parse(accepted)))];
                    if let Ok(doc) = services.shadow_get(caller, thing).await {
                        let doc = parse(doc);
                        if let Some(delta) = doc["state"].get("delta") {
                            out.push((
                                format!("{base}/delta"),
                                json!({"state": delta, "version": doc["version"], "timestamp": doc["timestamp"]}),
                            ));
                        }
                    }
                    out
                }
                Err(e) => rejected(e),
            }
        }
        "delete" => {
            let before = services.shadow_get(caller, thing).await.map(parse);
            match services.shadow_delete(caller, thing).await {
                Ok(()) => {
                    let version = before.map(|d| d["version"].clone()).unwrap_or(Value::Null);
                    vec![(
                        format!("{base}/accepted"),
                        with_token(json!({"version": version})),
                    )]
                }
                Err(e) => rejected(e),
            }
        }
        _ => Vec::new(),
    }
}
