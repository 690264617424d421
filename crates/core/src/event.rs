//! Events: what devices, functions and the cloud publish on topics.

use bytes::Bytes;

use crate::name::FunctionName;
use crate::trace::TraceParent;

/// Where an event came from. Flows match on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EventSource {
    /// A device, by its id (an MQTT client id, a serial number...).
    Device(String),
    /// The output of a function.
    Function(FunctionName),
    /// A message from the cloud side of a bridge.
    Cloud,
    /// The application embedding the hub, a timer, or the hub itself.
    Local,
}

/// Small ordered header map carried by events (MQTT 5 user properties, HTTP headers).
///
/// Names compare case-insensitively. Kept as a vector: events carry a handful of headers,
/// where a scan beats hashing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The header carrying W3C trace context.
    pub const TRACEPARENT: &'static str = "traceparent";
    /// The header carrying the causal depth of an event (see
    /// [`InvocationContext::depth`](crate::InvocationContext::depth)).
    pub const DEPTH: &'static str = "fnhub-depth";
    /// The W3C `tracestate` header, passed through untouched.
    pub const TRACESTATE: &'static str = "tracestate";

    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self
            .0
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let at = self
            .0
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))?;
        Some(self.0.remove(at).1)
    }

    /// All headers in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trace context header, when present and valid.
    pub fn trace(&self) -> Option<TraceParent> {
        self.get(Self::TRACEPARENT)?.parse().ok()
    }

    /// The causal depth header; 0 when absent. A value that is not a number counts as
    /// `u32::MAX`, so a forged header cannot reset a loop's count.
    pub fn depth(&self) -> u32 {
        self.get(Self::DEPTH)
            .map_or(0, |v| v.parse().unwrap_or(u32::MAX))
    }
}

/// A message on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Event {
    /// The topic name (MQTT syntax; validated by `fnhub-router`).
    pub topic: String,
    /// The body.
    pub payload: Bytes,
    /// Who published it.
    pub source: EventSource,
    /// Headers; trace context travels in `traceparent`.
    pub headers: Headers,
}

impl Event {
    /// An event on `topic` from `source` with no headers.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, source: EventSource) -> Event {
        Event {
            topic: topic.into(),
            payload: payload.into(),
            source,
            headers: Headers::new(),
        }
    }

    /// Sets the trace context header.
    pub fn with_trace(mut self, trace: TraceParent) -> Event {
        self.headers.insert(Headers::TRACEPARENT, trace.to_string());
        self
    }

    /// Sets the causal depth header.
    pub fn with_depth(mut self, depth: u32) -> Event {
        self.headers.insert(Headers::DEPTH, depth.to_string());
        self
    }

    /// Marks this event as caused by the invocation running with `context` (its output, a
    /// publish it made, a document the hub made for it): a new span of the invocation's
    /// trace, its `tracestate`, and one hop deeper, so that the depth limit stops an event
    /// that triggers the function that published it. The event's counterpart of
    /// [`InvocationContext::child`](crate::InvocationContext::child).
    pub fn caused_by(mut self, context: &crate::InvocationContext) -> Event {
        if let Some(state) = &context.tracestate {
            self.headers.insert(Headers::TRACESTATE, state.clone());
        }
        self.with_trace(context.trace.child())
            .with_depth(context.depth.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecutionId, InvocationContext, Principal, Priority, TraceParent};
    use std::time::{Duration, SystemTime};

    fn parent() -> InvocationContext {
        InvocationContext {
            trace: TraceParent::from_parts(7, 9, 1).unwrap_or_else(TraceParent::new_root),
            tracestate: Some("vendor=1".into()),
            deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100)),
            priority: Priority(200),
            principal: Principal::new("tenant-a"),
            affinity_key: Some("device-7".into()),
            parent: None,
            attempt: 2,
            topic: Some("sensors/7".into()),
            depth: 3,
            client_context: None,
        }
    }

    #[test]
    fn a_child_inherits_what_it_must_and_nothing_else() {
        let p = parent();
        let by = ExecutionId::random();
        let c = p.child(by);
        assert_eq!(c.trace.trace_id(), p.trace.trace_id(), "same trace");
        assert_ne!(c.trace.parent_id(), p.trace.parent_id(), "a new span");
        assert_eq!(c.tracestate, p.tracestate);
        assert_eq!(c.deadline, p.deadline);
        assert_eq!(c.priority, p.priority);
        assert_eq!(c.principal, p.principal);
        assert_eq!(c.parent, Some(by));
        assert_eq!(c.depth, 4, "one hop deeper");
        assert_eq!((c.affinity_key, c.topic, c.attempt), (None, None, 1));
        // A sooner deadline of the child's own is kept; a later one is not.
        let soon = SystemTime::UNIX_EPOCH + Duration::from_secs(50);
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(500);
        assert_eq!(
            p.child(by).with_deadline_at_most(Some(soon)).deadline,
            Some(soon)
        );
        assert_eq!(
            p.child(by).with_deadline_at_most(Some(later)).deadline,
            p.deadline
        );
        assert_eq!(p.child(by).with_deadline_at_most(None).deadline, p.deadline);
        let mut max = p.clone();
        max.depth = u32::MAX;
        assert_eq!(max.child(by).depth, u32::MAX, "saturates");
    }

    #[test]
    fn an_event_caused_by_an_invocation_continues_its_trace_a_hop_deeper() {
        let p = parent();
        let e = Event::new("out/7", "x", EventSource::Local).caused_by(&p);
        let trace = e.headers.trace().unwrap();
        assert_eq!(trace.trace_id(), p.trace.trace_id());
        assert_ne!(trace.parent_id(), p.trace.parent_id());
        assert_eq!(e.headers.get(Headers::TRACESTATE), Some("vendor=1"));
        assert_eq!(e.headers.depth(), 4);
        let mut plain = p;
        plain.tracestate = None;
        let e = Event::new("out/7", "x", EventSource::Local).caused_by(&plain);
        assert_eq!(e.headers.get(Headers::TRACESTATE), None);
    }

    #[test]
    fn headers_are_case_insensitive() {
        let mut h = Headers::new();
        h.insert("TraceParent", "x");
        h.insert("traceparent", "y");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("TRACEPARENT"), Some("y"));
        assert_eq!(h.remove("traceParent"), Some("y".to_owned()));
        assert!(h.is_empty());
    }

    #[test]
    fn trace_round_trips_through_headers() {
        let t = TraceParent::new_root();
        let e = Event::new("a/b", "x", EventSource::Local).with_trace(t);
        assert_eq!(e.headers.trace(), Some(t));
    }

    #[test]
    fn depth_defaults_to_zero_and_garbage_counts_as_deep() {
        let e = Event::new("a", "x", EventSource::Local);
        assert_eq!(e.headers.depth(), 0);
        assert_eq!(e.clone().with_depth(3).headers.depth(), 3);
        let mut forged = e;
        forged.headers.insert(Headers::DEPTH, "-1");
        assert_eq!(forged.headers.depth(), u32::MAX);
    }
}
