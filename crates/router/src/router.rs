//! The router: flows plus the local bus.

use std::sync::Arc;

use fnhub_core::{Event, FunctionRef, Headers};

use crate::bus::{LocalBus, Subscription};
use crate::flow::{Flow, Overflow, Target};
use crate::table::{SubscriptionId, SubscriptionTable};
use crate::topic::{TopicError, TopicFilter, TopicName, expand_template};

/// Identifies a flow in a [`Router`].
pub type FlowId = SubscriptionId;

/// An event could not be routed. The event is handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Its topic is not a valid topic name.
    #[error("invalid topic {:?}", .event.topic)]
    InvalidTopic {
        /// The event.
        event: Event,
        /// What is wrong with the topic.
        #[source]
        error: TopicError,
    },
    /// Its causal depth is over the router's limit: a loop, most likely.
    #[error("event on {:?} is {} hops deep; the limit is {limit}", .event.topic, .event.headers.depth())]
    TooDeep {
        /// The event.
        event: Event,
        /// The limit.
        limit: u32,
    },
}

impl RouteError {
    /// The event that was not routed.
    pub fn into_event(self) -> Event {
        match self {
            RouteError::InvalidTopic { event, .. } | RouteError::TooDeep { event, .. } => event,
        }
    }
}

/// A function invocation a flow asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Routed {
    /// The function.
    pub function: FunctionRef,
    /// The event that triggers it.
    pub event: Event,
    /// The flow that matched.
    pub flow: FlowId,
    /// What that flow does when the hub is full.
    pub overflow: Overflow,
}

/// What routing one event produced.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Dispatch {
    /// Function invocations to start.
    pub invocations: Vec<Routed>,
    /// Deliveries to local subscribers.
    pub delivered: usize,
    /// Local subscribers skipped because their queue was full.
    pub full: usize,
    /// Republished copies refused (over the depth limit, or a template that does not fit
    /// the topic). Each is logged.
    pub refused: usize,
}

/// Routes events: to local subscribers whose filter matches, and along the flows whose
/// source and filter match. Flows change at run time; a lookup sees the flow table either
/// wholly before or wholly after a change.
pub struct Router {
    flows: SubscriptionTable<Arc<Flow>>,
    bus: LocalBus,
    max_depth: u32,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("flows", &self.flows.len())
            .field("bus", &self.bus)
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl Router {
    /// Default for [`Router::with_max_depth`].
    pub const DEFAULT_MAX_DEPTH: u32 = 16;

    /// A router with no flows and an empty bus.
    pub fn new() -> Router {
        Router {
            flows: SubscriptionTable::new(),
            bus: LocalBus::new(),
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }

    /// Refuses events more than `max_depth` hops from an outside publisher (each republish
    /// and each function output is a hop). Default 16. This is what stops a function whose
    /// output triggers itself.
    pub fn with_max_depth(mut self, max_depth: u32) -> Router {
        self.max_depth = max_depth;
        self
    }

    /// The depth limit.
    pub fn max_depth(&self) -> u32 {
        self.max_depth
    }

    /// Adds a flow.
    pub fn add_flow(&self, flow: Flow) -> FlowId {
        self.flows.insert(flow.filter.clone(), Arc::new(flow))
    }

    /// Removes a flow, returning it.
    pub fn remove_flow(&self, id: FlowId) -> Option<Flow> {
        self.flows.remove(id).map(|(_, f)| Flow::clone(&f))
    }

    /// Every flow, in the order added.
    pub fn flows(&self) -> Vec<(FlowId, Flow)> {
        self.flows
            .entries()
            .into_iter()
            .map(|(id, _, f)| (id, Flow::clone(&f)))
            .collect()
    }

    /// Subscribes to events on `filter`; see [`LocalBus::subscribe`].
    pub fn subscribe(&self, filter: TopicFilter, capacity: usize) -> Subscription {
        self.bus.subscribe(filter, capacity)
    }

    /// The local bus.
    pub fn bus(&self) -> &LocalBus {
        &self.bus
    }

    /// Routes `event`: delivers it to local subscribers, follows republish flows (each a
    /// hop deeper), and returns the function invocations to start.
    pub fn dispatch(&self, event: Event) -> Result<Dispatch, RouteError> {
        let topic = match TopicName::new(&event.topic) {
            Ok(t) => t,
            Err(error) => return Err(RouteError::InvalidTopic { event, error }),
        };
        if event.headers.depth() > self.max_depth {
            return Err(RouteError::TooDeep {
                event,
                limit: self.max_depth,
            });
        }
        let mut out = Dispatch::default();
        let mut pending = vec![(topic, event)];
        while let Some((topic, event)) = pending.pop() {
            let d = self.bus.deliver(&topic, &event);
            out.delivered += d.delivered;
            out.full += d.full;
            self.flows.for_each_match(&topic, |id, flow| {
                if !flow.source.admits(&event.source) {
                    return;
                }
                match &flow.target {
                    Target::Function(function) => {
                        out.invocations.push(Routed {
                            function: function.clone(),
                            event: event.clone(),
                            flow: id,
                            overflow: flow.overflow,
                        });
                    }
                    Target::Republish(template) => match self.republish(&event, template) {
                        Ok(next) => pending.push(next),
                        Err(reason) => {
                            out.refused += 1;
                            tracing::warn!(flow = %id, topic = %event.topic, %reason, "republish refused");
                        }
                    },
                }
            });
        }
        if out.full > 0 {
            metrics::counter!("fnhub_events_dropped_total", "reason" => "subscriber_full")
                .increment(out.full as u64);
        }
        if out.refused > 0 {
            metrics::counter!("fnhub_events_dropped_total", "reason" => "republish_refused")
                .increment(out.refused as u64);
        }
        Ok(out)
    }

    fn republish(&self, event: &Event, template: &str) -> Result<(TopicName, Event), String> {
        let depth = event.headers.depth().saturating_add(1);
        if depth > self.max_depth {
            return Err(format!(
                "depth {depth} is over the limit {}",
                self.max_depth
            ));
        }
        let topic = expand_template(template, &event.topic).map_err(|e| e.to_string())?;
        let mut next = event.clone();
        next.topic = topic.as_str().to_owned();
        next.headers.insert(Headers::DEPTH, depth.to_string());
        Ok((topic, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhub_core::EventSource;

    fn device(topic: &str) -> Event {
        Event::new(topic, "21.5", EventSource::Device("d1".into()))
    }

    #[tokio::test]
    async fn flows_and_subscribers() {
        let r = Router::new();
        r.add_flow(Flow::parse("device:*", "sensors/+/temperature", "function:smoother").unwrap());
        r.add_flow(Flow::parse("cloud", "sensors/#", "function:audit").unwrap());
        let mut sub = r.subscribe("sensors/#".parse().unwrap(), 8);

        let d = r.dispatch(device("sensors/d1/temperature")).unwrap();
        assert_eq!(d.invocations.len(), 1);
        assert_eq!(d.invocations[0].function.to_string(), "smoother");
        assert_eq!(d.delivered, 1);
        assert_eq!(sub.recv().await.unwrap().topic, "sensors/d1/temperature");

        let d = r.dispatch(device("sensors/d1/humidity")).unwrap();
        assert!(d.invocations.is_empty());
    }

    #[tokio::test]
    async fn republish_follows_templates_and_stops_loops() {
        let r = Router::new().with_max_depth(4);
        r.add_flow(Flow::parse("any", "sensors/+/temperature", "topic:readings/{1}").unwrap());
        r.add_flow(Flow::parse("any", "readings/+", "function:store").unwrap());
        let d = r.dispatch(device("sensors/d9/temperature")).unwrap();
        assert_eq!(d.invocations.len(), 1);
        assert_eq!(d.invocations[0].event.topic, "readings/d9");
        assert_eq!(d.invocations[0].event.headers.depth(), 1);

        // a -> b -> a -> ... stops at the depth limit.
        r.add_flow(Flow::parse("any", "loop/a", "topic:loop/b").unwrap());
        r.add_flow(Flow::parse("any", "loop/b", "topic:loop/a").unwrap());
        let mut sub = r.subscribe("loop/+".parse().unwrap(), 64);
        let d = r.dispatch(device("loop/a")).unwrap();
        assert_eq!(d.refused, 1);
        assert_eq!(d.delivered, 5, "depths 0 through 4 are delivered");
        let mut seen = 0;
        while sub.try_recv().is_some() {
            seen += 1;
        }
        assert_eq!(seen, 5);
    }

    #[test]
    fn bad_events_are_handed_back() {
        let r = Router::new();
        match r.dispatch(device("a/+")) {
            Err(RouteError::InvalidTopic { event, .. }) => assert_eq!(event.topic, "a/+"),
            other => panic!("{other:?}"),
        }
        let deep = device("a").with_depth(17);
        assert!(matches!(
            r.dispatch(deep),
            Err(RouteError::TooDeep { limit: 16, .. })
        ));
    }

    #[tokio::test]
    async fn full_subscriber_is_counted_not_blocking() {
        let r = Router::new();
        let sub = r.subscribe("a".parse().unwrap(), 1);
        assert_eq!(r.dispatch(device("a")).unwrap().delivered, 1);
        let d = r.dispatch(device("a")).unwrap();
        assert_eq!((d.delivered, d.full), (0, 1));
        assert_eq!(sub.dropped(), 1);
        drop(sub);
        assert!(r.bus().is_empty());
    }

    #[tokio::test]
    async fn dropping_the_router_ends_subscriptions() {
        let r = Router::new();
        let mut sub = r.subscribe("a".parse().unwrap(), 4);
        r.dispatch(device("a")).unwrap();
        drop(r);
        assert!(
            sub.recv().await.is_some(),
            "queued events are still delivered"
        );
        assert!(sub.recv().await.is_none());
    }

    #[test]
    fn flows_change_at_run_time() {
        let r = Router::new();
        let id = r.add_flow(Flow::parse("any", "x", "function:f").unwrap());
        assert_eq!(r.flows().len(), 1);
        assert_eq!(r.dispatch(device("x")).unwrap().invocations.len(), 1);
        assert!(r.remove_flow(id).is_some());
        assert_eq!(r.dispatch(device("x")).unwrap().invocations.len(), 0);
    }
}
