//! The hub's side of the MQTT bridge (feature `mqtt`): upstream messages enter the hub as
//! events, and the remote interface runs invocations the cloud asks for.
//!
//! # The remote interface
//!
//! With [`EdgeHubBuilder::remote_invoke`](crate::EdgeHubBuilder::remote_invoke), a message
//! published upstream on `{requests}/{function}` (a name, `name:version` or `name:alias`)
//! invokes that function with the message's payload. The reply is published upstream:
//!
//! - on the request's MQTT 5 response topic, with its correlation data echoed (the MQTT 5
//!   request / response pattern), or else on `{replies}/{request-id}`;
//! - with user properties `request-id` (the request's own `request-id` property, else the
//!   invocation id), `traceparent` (continuing the request's, when it sent one) and
//!   `executed-version`;
//! - on success, the output as payload; on failure, a `function-error` property (the error
//!   type: the function's own, or `ResourceNotFoundException`, `TooManyRequestsException`,
//!   `ServiceException` when the hub could not run it) and Lambda's
//!   `{"errorType","errorMessage"}` as payload.
//!
//! A request's `principal` user property names the principal it runs for (default
//! `cloud`): the broker is trusted to have authenticated whoever could publish there.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Event, EventSink, FunctionRef, Invocation, InvocationId, Principal, PublishError,
    TraceParent,
};
use fnhub_router::mqtt::{
    BridgePublisher, BridgeStats, CORRELATION_HEADER, InboundRule, MqttBridge, MqttConfig,
    RESPONSE_TOPIC_HEADER, Upstream, from_hex,
};
use fnhub_router::topic::TopicFilter;
use fnhub_scheduler::SubmitError;
use serde_json::json;

use crate::edge::{EdgeHub, HubInner};

/// How long shutdown waits for the bridge to send what the last invocations published.
const FLUSH: Duration = Duration::from_secs(2);

/// Where requests arrive locally: under a `$` prefix, so no flow's leading wildcard sees
/// them.
const LOCAL_PREFIX: &str = "$fnhub/remote/";

/// The topics of the remote interface. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteInvoke {
    /// Requests arrive on `{requests}/{function}` upstream.
    pub requests: String,
    /// Replies without a response topic go to `{replies}/{request-id}` upstream.
    pub replies: String,
}

impl RemoteInvoke {
    /// Requests on `{requests}/{function}`, replies on `{replies}/{request-id}`.
    pub fn new(requests: impl Into<String>, replies: impl Into<String>) -> RemoteInvoke {
        RemoteInvoke {
            requests: requests.into().trim_end_matches('/').to_owned(),
            replies: replies.into().trim_end_matches('/').to_owned(),
        }
    }
}

/// Upstream messages enter the hub as events from outside. An invocation that admission
/// refuses is offered again, with backoff, before the message counts as taken (and the
/// bridge acknowledges it): the broker waits, instead of the message being lost.
struct HubSink(Weak<HubInner>);

/// How long a refused invocation keeps being offered before it is given up (and logged).
const READMIT_FOR: Duration = Duration::from_secs(60);

impl EventSink for HubSink {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let Some(hub) = self.0.upgrade() else {
                return Err(PublishError::Closed(event));
            };
            let report = hub.publish(event).map_err(|e| match e {
                crate::PublishError::Route(route) => PublishError::InvalidTopic(route.into_event()),
            })?;
            for refused in report.rejected {
                readmit(&hub, refused).await;
            }
            Ok(())
        })
    }
}

async fn readmit(hub: &HubInner, mut refused: SubmitError) {
    let until = Instant::now() + READMIT_FOR;
    let mut wait = Duration::from_millis(1);
    loop {
        if matches!(
            refused,
            SubmitError::UnknownFunction(_) | SubmitError::ShuttingDown(_)
        ) || Instant::now() > until
        {
            tracing::warn!(error = %refused, "an invocation from upstream was not admitted; given up");
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(100));
        match hub.scheduler.try_submit_detached(refused.into_invocation()) {
            Ok(_) => return,
            Err(again) => refused = again,
        }
    }
}

impl EdgeHub {
    pub(crate) fn start_bridge(
        &self,
        mut config: MqttConfig,
        remote: Option<RemoteInvoke>,
        shadow: Option<String>,
    ) {
        let capacity = config.buffer.clamp(64, 65_536);
        #[cfg(feature = "config")]
        let deltas = shadow.as_ref().and_then(|thing| {
            let upstream = format!("$aws/things/{thing}/shadow/update/delta");
            let filter: TopicFilter = upstream.parse().ok()?;
            config
                .inbound
                .push(InboundRule::new(filter).with_local_prefix(crate::shadow::LOCAL_PREFIX));
            let local: TopicFilter = format!("{}{upstream}", crate::shadow::LOCAL_PREFIX)
                .parse()
                .ok()?;
            Some(self.inner.router.subscribe(local, 64))
        });
        #[cfg(not(feature = "config"))]
        let _ = &shadow;
        let requests = remote.as_ref().and_then(|r| {
            let filter: TopicFilter = format!("{}/#", r.requests).parse().ok()?;
            config
                .inbound
                .push(InboundRule::new(filter).with_local_prefix(LOCAL_PREFIX));
            let local: TopicFilter = format!("{LOCAL_PREFIX}{}/#", r.requests).parse().ok()?;
            Some(self.inner.router.subscribe(local, capacity))
        });
        if remote.is_some() && requests.is_none() {
            tracing::warn!("the remote interface's request topic is not a valid topic; it is off");
        }
        let subscriptions = config
            .outbound
            .iter()
            .map(|rule| self.inner.router.subscribe(rule.local.clone(), capacity))
            .collect();
        let sink = Arc::new(HubSink(Arc::downgrade(&self.inner)));
        let bridge = MqttBridge::start(config, sink, subscriptions);
        if let (Some(remote), Some(requests)) = (remote, requests) {
            tokio::spawn(serve_requests(
                Arc::downgrade(&self.inner),
                remote,
                requests,
                bridge.publisher(),
            ));
        }
        #[cfg(feature = "config")]
        if let (Some(thing), Some(deltas)) = (shadow, deltas) {
            tokio::spawn(crate::shadow::serve(
                Arc::downgrade(&self.inner),
                thing,
                deltas,
                bridge.publisher(),
            ));
        }
        *self.inner.bridge.lock() = Some(bridge);
    }

    pub(crate) async fn stop_bridge(&self) {
        let started = Instant::now();
        while let Some(stats) = self.mqtt_stats() {
            if stats.buffered == 0 || !stats.connected || started.elapsed() > FLUSH {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let bridge = self.inner.bridge.lock().take();
        if let Some(bridge) = bridge {
            bridge.shutdown().await;
        }
    }

    /// The MQTT bridge's counters (feature `mqtt`); `None` without a bridge.
    pub fn mqtt_stats(&self) -> Option<BridgeStats> {
        self.inner.bridge.lock().as_ref().map(MqttBridge::stats)
    }
}

async fn serve_requests(
    hub: Weak<HubInner>,
    remote: RemoteInvoke,
    mut requests: fnhub_router::Subscription,
    publisher: BridgePublisher,
) {
    let prefix = format!("{LOCAL_PREFIX}{}/", remote.requests);
    let remote = Arc::new(remote);
    while let Some(event) = requests.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        let hub = EdgeHub { inner: hub };
        let (remote, publisher) = (remote.clone(), publisher.clone());
        let function = event.topic.strip_prefix(&prefix).map(str::to_owned);
        // Each request on its own task: a slow function does not hold up the next.
        tokio::spawn(async move {
            let reply = answer(&hub, &remote, function, event).await;
            if !publisher.publish(reply).await {
                tracing::warn!("the bridge stopped before a remote reply could be sent");
            }
        });
    }
}

/// Runs one request and makes its reply.
async fn answer(
    hub: &EdgeHub,
    remote: &RemoteInvoke,
    function: Option<String>,
    event: Event,
) -> Upstream {
    let headers = &event.headers;
    let trace = headers.trace();
    let id = InvocationId::random();
    let request_id = headers
        .get("request-id")
        .map(str::to_owned)
        .unwrap_or_else(|| id.to_string());
    let response_topic = headers
        .get(RESPONSE_TOPIC_HEADER)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/{request_id}", remote.replies));
    let mut reply = |payload: Bytes| {
        let mut up = Upstream::new(response_topic.clone(), payload)
            .with_property("request-id", request_id.clone());
        if let Some(data) = headers.get(CORRELATION_HEADER).and_then(from_hex) {
            up = up.with_correlation(data);
        }
        up
    };
    let error = |reply: &mut dyn FnMut(Bytes) -> Upstream, kind: &str, message: &str| {
        let body = json!({ "errorType": kind, "errorMessage": message }).to_string();
        reply(Bytes::from(body)).with_property("function-error", kind)
    };
    let target = match function.as_deref().map(str::parse::<FunctionRef>) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(&mut reply, "InvalidParameterValueException", &e.to_string()),
        None => {
            return error(
                &mut reply,
                "InvalidParameterValueException",
                "no function named",
            );
        }
    };
    let mut invocation = Invocation::new(target, event.payload.clone());
    invocation.id = id;
    invocation.context.principal = headers
        .get("principal")
        .map_or_else(|| Principal::new("cloud"), Principal::new);
    if let Some(trace) = trace {
        invocation.context.trace = trace.child();
    }
    let traceparent = invocation.context.trace;
    let with_trace =
        |up: Upstream, trace: TraceParent| up.with_property("traceparent", trace.to_string());
    let completion = match hub.call(invocation).await {
        Ok(c) => c,
        Err(e) => {
            let kind = match &e {
                SubmitError::UnknownFunction(_) => "ResourceNotFoundException",
                SubmitError::ShuttingDown(_) => "ServiceException",
                _ => "TooManyRequestsException",
            };
            return with_trace(error(&mut reply, kind, &e.to_string()), traceparent);
        }
    };
    let version = completion.version.get().to_string();
    let up = match completion.outcome {
        Ok(output) => reply(output),
        Err(e) => {
            let kind = e
                .error_type
                .clone()
                .unwrap_or_else(|| e.kind.as_str().to_owned());
            error(&mut reply, &kind, &e.message)
        }
    };
    with_trace(up.with_property("executed-version", version), traceparent)
}
