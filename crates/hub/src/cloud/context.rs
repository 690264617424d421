//! An invocation's context on the wire: written into `Fnhub-*` headers by whoever submits
//! work, read back (and checked) by the node that takes it.

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use fnhub_core::{
    FunctionRef, Invocation, InvocationContext, InvocationId, Principal, TraceParent,
};

use super::wire::{
    AFFINITY, CLIENT_CONTEXT, DEADLINE, DEPTH, FUNCTION, INVOCATION, MAX_DEADLINE_AHEAD, PARENT,
    PRINCIPAL, PRIORITY, TRACEPARENT, TRACESTATE, header, unix_ms,
};

/// Why a work message was refused: each names the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A header every invocation needs is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A header does not parse.
    #[error("header {header}: {value:?} is not valid")]
    Invalid {
        /// The header.
        header: &'static str,
        /// What it held (cut to 64 bytes).
        value: String,
    },
    /// The deadline is further ahead than [`MAX_DEADLINE_AHEAD`](super::wire::MAX_DEADLINE_AHEAD).
    #[error("header Fnhub-Deadline is {0:?} ahead, more than a day")]
    DeadlineTooFar(Duration),
    /// The depth is over the hub's limit.
    #[error("header Fnhub-Depth {depth} is over the limit {limit}")]
    TooDeep {
        /// What the header said.
        depth: u32,
        /// The hub's limit.
        limit: u32,
    },
}

impl WireError {
    /// A short label for metrics: `missing`, `invalid`, `deadline`, `depth`.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Missing(_) => "missing",
            WireError::Invalid { .. } => "invalid",
            WireError::DeadlineTooFar(_) => "deadline",
            WireError::TooDeep { .. } => "depth",
        }
    }
}

/// The headers that carry `invocation` (its id, function and context) to a node.
pub(crate) fn encode(invocation: &Invocation) -> HeaderMap {
    let c = &invocation.context;
    let mut h = HeaderMap::new();
    let id = invocation.id.to_string();
    h.insert("Nats-Msg-Id", id.as_str());
    h.insert(INVOCATION, id.as_str());
    h.insert(FUNCTION, invocation.function.to_string().as_str());
    h.insert(TRACEPARENT, c.trace.to_string().as_str());
    let text_ok = |s: &str| !s.chars().any(char::is_control);
    if let Some(state) = c.tracestate.as_deref().filter(|s| text_ok(s)) {
        h.insert(TRACESTATE, state);
    }
    if let Some(deadline) = c.deadline {
        h.insert(DEADLINE, unix_ms(deadline).to_string().as_str());
    }
    if c.principal.as_str() != Principal::ANONYMOUS && text_ok(c.principal.as_str()) {
        h.insert(PRINCIPAL, c.principal.as_str());
    }
    if c.priority != fnhub_core::Priority::default() {
        h.insert(PRIORITY, c.priority.0.to_string().as_str());
    }
    if c.depth > 0 {
        h.insert(DEPTH, c.depth.to_string().as_str());
    }
    if let Some(key) = c.affinity_key.as_deref().filter(|s| text_ok(s)) {
        h.insert(AFFINITY, key);
    }
    if let Some(cc) = c.client_context.as_deref().filter(|s| text_ok(s)) {
        h.insert(CLIENT_CONTEXT, cc);
    }
    if let Some(parent) = c.parent {
        h.insert(PARENT, parent.to_string().as_str());
    }
    h
}

fn invalid(header: &'static str, value: &str) -> WireError {
    let mut value = value.to_owned();
    if value.len() > 64 {
        let mut end = 64;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    WireError::Invalid { header, value }
}

/// The invocation `headers` and `payload` carry, checked against `now` and the hub's
/// depth limit `max_depth`. An absent optional header takes its default; one present but
/// wrong is refused, never guessed at.
pub(crate) fn decode(
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
    now: SystemTime,
    max_depth: u32,
) -> Result<Invocation, WireError> {
    let get = |k: &str| header(headers, k);
    fn parse<T: std::str::FromStr>(
        value: Option<String>,
        name: &'static str,
    ) -> Result<Option<T>, WireError> {
        value
            .map(|v| v.parse::<T>().map_err(|_| invalid(name, &v)))
            .transpose()
    }
    let id: InvocationId =
        parse(get(INVOCATION), INVOCATION)?.ok_or(WireError::Missing(INVOCATION))?;
    let function: FunctionRef =
        parse(get(FUNCTION), FUNCTION)?.ok_or(WireError::Missing(FUNCTION))?;
    let mut context = InvocationContext::default();
    if let Some(trace) = parse::<TraceParent>(get(TRACEPARENT), TRACEPARENT)? {
        // The caller's span is the parent of the run's own.
        context.trace = trace.child();
    }
    context.tracestate = get(TRACESTATE);
    if let Some(ms) = parse::<u64>(get(DEADLINE), DEADLINE)? {
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        if let Ok(ahead) = deadline.duration_since(now)
            && ahead > MAX_DEADLINE_AHEAD
        {
            return Err(WireError::DeadlineTooFar(ahead));
        }
        context.deadline = Some(deadline);
    }
    if let Some(p) = get(PRINCIPAL) {
        if p.is_empty() || p.len() > 256 {
            return Err(invalid(PRINCIPAL, &p));
        }
        context.principal = Principal::new(p);
    }
    if let Some(p) = parse::<u8>(get(PRIORITY), PRIORITY)? {
        context.priority = fnhub_core::Priority(p);
    }
    if let Some(depth) = parse::<u32>(get(DEPTH), DEPTH)? {
        if depth > max_depth {
            return Err(WireError::TooDeep {
                depth,
                limit: max_depth,
            });
        }
        context.depth = depth;
    }
    if let Some(key) = get(AFFINITY) {
        if key.len() > 256 {
            return Err(invalid(AFFINITY, &key));
        }
        context.affinity_key = Some(key);
    }
    if let Some(cc) = get(CLIENT_CONTEXT) {
        let object = serde_json::from_str::<serde_json::Value>(&cc).is_ok_and(|v| v.is_object());
        if !object || cc.len() > 3583 {
            return Err(invalid(CLIENT_CONTEXT, &cc));
        }
        context.client_context = Some(cc);
    }
    context.parent = parse(get(PARENT), PARENT)?;
    let mut invocation = Invocation::new(function, payload);
    invocation.id = id;
    invocation.context = context;
    Ok(invocation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sent() -> Invocation {
        let mut inv = Invocation::new("hello:2".parse().unwrap(), "{}");
        let c = &mut inv.context;
        c.deadline = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_123));
        c.principal = Principal::new("tenant-a");
        c.priority = fnhub_core::Priority(200);
        c.depth = 2;
        c.affinity_key = Some("cart-7".into());
        c.tracestate = Some("vendor=1".into());
        c.client_context = Some(r#"{"custom":{"k":"v"}}"#.into());
        inv
    }

    #[test]
    fn the_whole_context_goes_and_comes_back() {
        let inv = sent();
        let h = encode(&inv);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let got = decode(Some(&h), inv.payload.clone(), now, 8).unwrap();
        assert_eq!(got.id, inv.id);
        assert_eq!(got.function, inv.function);
        let (a, b) = (&got.context, &inv.context);
        assert_eq!(a.trace.trace_id(), b.trace.trace_id());
        assert_eq!(a.deadline, b.deadline);
        assert_eq!(a.principal, b.principal);
        assert_eq!(a.priority, b.priority);
        assert_eq!(a.depth, b.depth);
        assert_eq!(a.affinity_key, b.affinity_key);
        assert_eq!(a.tracestate, b.tracestate);
        assert_eq!(a.client_context, b.client_context);
        // A bare submission (id and function only) takes every default.
        let mut bare = HeaderMap::new();
        bare.insert(INVOCATION, inv.id.to_string().as_str());
        bare.insert(FUNCTION, "hello");
        let got = decode(Some(&bare), bytes::Bytes::new(), now, 8).unwrap();
        assert_eq!(got.context.principal, Principal::anonymous());
        assert_eq!(got.context.depth, 0);
        assert!(got.context.deadline.is_none());
    }

    #[test]
    fn lies_and_garbage_are_refused_by_header() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let with = |k: &'static str, v: &str| {
            let mut h = encode(&sent());
            h.insert(k, v);
            decode(Some(&h), bytes::Bytes::new(), now, 8)
        };
        assert!(matches!(
            with(DEADLINE, "99999999999999"),
            Err(WireError::DeadlineTooFar(_))
        ));
        assert_eq!(
            with(DEPTH, "9").unwrap_err(),
            WireError::TooDeep { depth: 9, limit: 8 }
        );
        for (k, v) in [
            (DEPTH, "-1"),
            (DEADLINE, "soon"),
            (PRIORITY, "256"),
            (TRACEPARENT, "00-zz"),
            (FUNCTION, "no/such"),
            (INVOCATION, "42"),
            (CLIENT_CONTEXT, "[1]"),
            (PARENT, "x"),
        ] {
            let e = with(k, v).unwrap_err();
            assert!(
                matches!(e, WireError::Invalid { header, .. } if header == k),
                "{k}: {e:?}"
            );
            assert_eq!(e.reason(), "invalid");
        }
        assert_eq!(
            decode(None, bytes::Bytes::new(), now, 8).unwrap_err(),
            WireError::Missing(INVOCATION)
        );
        // A deadline already past is not a lie: the run ends as DeadlineExceeded.
        assert!(with(DEADLINE, "5").is_ok());
    }
}
