//! The hub's side of the MQTT bridge (feature `mqtt`): upstream messages enter the hub as
//! events, and the remote interface runs invocations the cloud asks for.
//!
//! A [`Bridge`] attaches to a built hub:
//!
//! ```no_run
//! # async fn f(hub: fnhub::EdgeHub) -> Result<(), fnhub::HubError> {
//! use fnhub::bridge::{Bridge, RemoteInvoke};
//! use fnhub::MqttConfig;
//! Bridge::new(MqttConfig::new("127.0.0.1", 1883, "hub-1"))
//!     .remote_invoke(RemoteInvoke::new("fnhub/hub-1/invoke", "fnhub/hub-1/reply"))
//!     .attach(&hub)?;
//! // ... the bridge stops with `hub.shutdown()`, after sending what the last invocations
//! // published.
//! # Ok(()) }
//! ```
//!
//! # The remote interface
//!
//! With [`Bridge::remote_invoke`], a message
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
//! Requests run for the principal the [`RemoteInvoke`] names (default `cloud`): whoever
//! could publish on the request topic is that principal. A `principal` user property in
//! the request is not trusted (anyone who can publish could claim any tenant) and is
//! ignored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Event, EventSink, FunctionRef, Invocation, InvocationId, Principal,
    PublishError as SinkError, TraceParent,
};
use fnhub_router::mqtt::{
    BridgePublisher, CORRELATION_HEADER, InboundRule, MqttBridge, MqttConfig,
    RESPONSE_TOPIC_HEADER, Upstream, from_hex,
};
use fnhub_router::topic::TopicFilter;
use fnhub_scheduler::SubmitError;
use serde_json::json;

use crate::edge::{EdgeHub, HubError, WeakHub};

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
    /// Whom the requests run for. Default `cloud`.
    pub principal: Principal,
}

impl RemoteInvoke {
    /// Requests on `{requests}/{function}`, replies on `{replies}/{request-id}`.
    pub fn new(requests: impl Into<String>, replies: impl Into<String>) -> RemoteInvoke {
        RemoteInvoke {
            requests: requests.into().trim_end_matches('/').to_owned(),
            replies: replies.into().trim_end_matches('/').to_owned(),
            principal: Principal::new("cloud"),
        }
    }

    /// Runs the requests for `principal` (whom the broker lets publish on the request
    /// topic), instead of `cloud`.
    pub fn with_principal(mut self, principal: Principal) -> RemoteInvoke {
        self.principal = principal;
        self
    }
}

/// Upstream messages enter the hub as events from outside. An invocation that admission
/// refuses is offered again as room appears, before the message counts as taken (and the
/// bridge acknowledges it): the broker waits, instead of the message being lost. Once the
/// hub is closing, messages are refused (and so left unacknowledged with the broker).
struct HubSink(WeakHub);

impl EventSink for HubSink {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let Some(hub) = self.0.upgrade() else {
                return Err(SinkError::Closed(event));
            };
            if hub.is_closing() {
                return Err(SinkError::Closed(event));
            }
            let report = hub
                .publish(event.clone())
                .map_err(|refused| SinkError::InvalidTopic(refused.into_event()))?;
            for refused in report.rejected {
                if !readmit(&hub, refused).await {
                    // The hub began closing: not taken, so the broker keeps it. (Flows
                    // that did admit it run it again after the next delivery.)
                    return Err(SinkError::Closed(event));
                }
            }
            Ok(())
        })
    }
}

/// Offers a refused invocation again each time the scheduler may have room, until it is
/// admitted (true) or the hub is closing (false). One for a function that is not deployed
/// is given up, logged and counted as refused (true: it can never run).
async fn readmit(hub: &EdgeHub, mut refused: SubmitError) -> bool {
    loop {
        match refused {
            SubmitError::ShuttingDown(_) => return false,
            SubmitError::UnknownFunction(_) => {
                tracing::warn!(error = %refused, "an invocation from upstream was not admitted; given up");
                return true;
            }
            _ => {}
        }
        if hub.is_closing() {
            return false;
        }
        let scheduler = hub.scheduler();
        // Made before the attempt, so room that appears in between is not missed.
        let room = scheduler.room();
        match scheduler.try_submit_detached(refused.into_invocation()) {
            Ok(_) => return true,
            Err(again) => refused = again,
        }
        // Bounded, so a hub that starts closing meanwhile is noticed.
        let _ = tokio::time::timeout(Duration::from_millis(250), room).await;
    }
}

/// Bridges a built hub to an MQTT broker: upstream messages on the config's inbound
/// filters are published in the hub as events from the cloud, and local events on its
/// outbound filters are published upstream (see [`fnhub_router::mqtt`]). With the remote
/// interface and the shadow deployment, which ride on the same connection. See the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct Bridge {
    config: MqttConfig,
    remote: Option<RemoteInvoke>,
    device_shadows: Vec<String>,
    #[cfg(feature = "config")]
    shadow: Option<String>,
}

impl Bridge {
    /// A bridge with `config`, and neither the remote interface nor the shadow deployment.
    pub fn new(config: MqttConfig) -> Bridge {
        Bridge {
            config,
            remote: None,
            device_shadows: Vec::new(),
            #[cfg(feature = "config")]
            shadow: None,
        }
    }

    /// Answers devices on the broker about the classic and named shadows of `things`
    /// (`"*"`: every thing) on AWS IoT's reserved topics, from the hub's shadow store (the
    /// one its functions use): a message on `$aws/things/{thing}/shadow/[name/{name}/]get`,
    /// `…/update` or `…/delete` is answered upstream on `…/get/accepted` (the document) or
    /// `…/{op}/rejected` (`{"code": 400|403|404|409|413, "message": …}`, with the
    /// request's `clientToken`). Every change to these shadows, by a device or a function,
    /// goes upstream on `…/update/accepted`, `…/update/delta`, `…/update/documents` and
    /// `…/delete/accepted`, as AWS IoT sends them.
    pub fn device_shadows(mut self, things: Vec<String>) -> Bridge {
        self.device_shadows = things;
        self
    }

    /// Takes invocation requests from the cloud: see [`RemoteInvoke`].
    pub fn remote_invoke(mut self, remote: RemoteInvoke) -> Bridge {
        self.remote = Some(remote);
        self
    }

    /// Lets the device shadow of `thing` drive the hub's deployment (feature `config`):
    /// see [`shadow`](crate::shadow).
    #[cfg(feature = "config")]
    pub fn shadow_deployment(mut self, thing: impl Into<String>) -> Bridge {
        self.shadow = Some(thing.into());
        self
    }

    /// Starts the bridge for `hub`; it stops with [`EdgeHub::shutdown`], after sending
    /// what the last invocations published (for up to two seconds). A hub has one bridge:
    /// a second is refused with [`HubError::BridgeAttached`].
    pub fn attach(self, hub: &EdgeHub) -> Result<(), HubError> {
        let mut slot = hub.bridge_slot().lock();
        if slot.is_some() {
            return Err(HubError::BridgeAttached);
        }
        let Bridge {
            mut config,
            remote,
            device_shadows,
            #[cfg(feature = "config")]
            shadow,
        } = self;
        let capacity = config.buffer.clamp(64, 65_536);
        #[cfg(feature = "config")]
        let deltas = shadow.as_ref().and_then(|thing| {
            // Deltas as they come, and the whole document asked for at every connect (what
            // changed while the hub was offline).
            for upstream in [
                format!("$aws/things/{thing}/shadow/update/delta"),
                format!("$aws/things/{thing}/shadow/get/accepted"),
            ] {
                let filter: TopicFilter = upstream.parse().ok()?;
                config
                    .inbound
                    .push(InboundRule::new(filter).with_local_prefix(crate::shadow::LOCAL_PREFIX));
            }
            let local: TopicFilter = format!(
                "{}$aws/things/{thing}/shadow/#",
                crate::shadow::LOCAL_PREFIX
            )
            .parse()
            .ok()?;
            Some(hub.subscribe_filter(local, 64))
        });
        let requests = remote.as_ref().and_then(|r| {
            let filter: TopicFilter = format!("{}/#", r.requests).parse().ok()?;
            config
                .inbound
                .push(InboundRule::new(filter).with_local_prefix(LOCAL_PREFIX));
            let local: TopicFilter = format!("{LOCAL_PREFIX}{}/#", r.requests).parse().ok()?;
            Some(hub.subscribe_filter(local, capacity))
        });
        let shadow_requests = if device_shadows.is_empty() {
            None
        } else {
            config
                .inbound
                .extend(crate::device_shadows::rules(&device_shadows));
            let requests =
                crate::device_shadows::local_filter().map(|f| hub.subscribe_filter(f, capacity));
            let changes =
                crate::device_shadows::announcements().map(|f| hub.subscribe_filter(f, capacity));
            requests.zip(changes)
        };
        if remote.is_some() && requests.is_none() {
            tracing::warn!("the remote interface's request topic is not a valid topic; it is off");
        }
        let subscriptions = config
            .outbound
            .iter()
            .map(|rule| hub.subscribe_filter(rule.local.clone(), capacity))
            .collect();
        let sink = Arc::new(HubSink(hub.downgrade()));
        let bridge = MqttBridge::start(config, sink, subscriptions);
        if let (Some(remote), Some(requests)) = (remote, requests) {
            tokio::spawn(serve_requests(
                hub.downgrade(),
                remote,
                requests,
                bridge.publisher(),
            ));
        }
        if let Some((shadow_requests, shadow_changes)) = shadow_requests {
            tokio::spawn(crate::device_shadows::serve(
                hub.services(),
                device_shadows,
                shadow_requests,
                shadow_changes,
                bridge.publisher(),
            ));
        }
        #[cfg(feature = "config")]
        if let (Some(thing), Some(deltas)) = (shadow, deltas) {
            tokio::spawn(crate::shadow::serve(
                hub.downgrade(),
                thing,
                deltas,
                bridge.publisher(),
                bridge.connections(),
            ));
        }
        *slot = Some(bridge);
        Ok(())
    }
}

/// Stops `hub`'s bridge, if it has one, once it has sent what it holds (or [`FLUSH`] has
/// passed, or it is not connected).
pub(crate) async fn stop(hub: &EdgeHub) {
    let bridge = hub.bridge_slot().lock().take();
    if let Some(bridge) = bridge {
        let _ = tokio::time::timeout(FLUSH, bridge.flushed()).await;
        bridge.shutdown().await;
    }
}

async fn serve_requests(
    hub: WeakHub,
    remote: RemoteInvoke,
    mut requests: fnhub_router::Subscription,
    publisher: BridgePublisher,
) {
    let prefix = format!("{LOCAL_PREFIX}{}/", remote.requests);
    let remote = Arc::new(remote);
    while let Some(event) = requests.recv().await {
        let Some(hub) = hub.upgrade() else { return };
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
    invocation.context.principal = remote.principal.clone();
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
