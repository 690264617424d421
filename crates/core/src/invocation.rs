//! Invocations and the context they carry.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::ids::{ExecutionId, InvocationId};
use crate::name::FunctionRef;
use crate::trace::TraceParent;

/// How urgent an invocation is. Higher runs first; within one priority, the earlier
/// deadline runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Priority(pub u8);

impl Priority {
    /// Background work that may wait (batch, retries).
    pub const LOW: Priority = Priority(64);
    /// The default.
    pub const NORMAL: Priority = Priority(128);
    /// Interactive work.
    pub const HIGH: Priority = Priority(192);
    /// Control traffic: health checks, shutdown hooks.
    pub const CRITICAL: Priority = Priority(255);
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// Who an invocation runs on behalf of: the tenant that fairness and access control see.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "String", into = "String"))]
pub struct Principal(Arc<str>);

impl Principal {
    /// The principal of unauthenticated local callers.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// A principal named `name`.
    pub fn new(name: impl AsRef<str>) -> Principal {
        Principal(Arc::from(name.as_ref()))
    }

    /// The principal of unauthenticated local callers.
    pub fn anonymous() -> Principal {
        Principal::new(Self::ANONYMOUS)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Principal {
    fn default() -> Self {
        Principal::anonymous()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({:?})", &*self.0)
    }
}

impl From<String> for Principal {
    fn from(s: String) -> Self {
        Principal(Arc::from(s))
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.0.to_string()
    }
}

/// What travels with an invocation besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct InvocationContext {
    /// W3C trace context of the caller; every call carries one.
    pub trace: TraceParent,
    /// W3C `tracestate`, passed through untouched.
    pub tracestate: Option<String>,
    /// Wall-clock time by which the caller needs the outcome. `None`: only the function's
    /// own timeout applies. Wall-clock so that it means the same on every machine.
    pub deadline: Option<SystemTime>,
    /// Scheduling priority.
    pub priority: Priority,
    /// The tenant the invocation runs for.
    pub principal: Principal,
    /// Invocations with the same key prefer the same warm environment.
    pub affinity_key: Option<String>,
    /// The durable execution that started this one, for child invocations.
    pub parent: Option<ExecutionId>,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The topic of the event that triggered this invocation, when an event did (the
    /// "subject" a handler reads to know which device spoke).
    pub topic: Option<String>,
    /// How many invocations and events led to this one: 0 for a call from outside. Hubs
    /// refuse chains deeper than their limit, which stops a function that triggers itself.
    pub depth: u32,
    /// The caller's client context (Lambda's `ClientContext`: a JSON object with `custom`,
    /// `env`, `client`), handed to the function as it came. Not inherited by children.
    pub client_context: Option<String>,
}

impl Default for InvocationContext {
    fn default() -> Self {
        InvocationContext {
            trace: TraceParent::new_root(),
            tracestate: None,
            deadline: None,
            priority: Priority::NORMAL,
            principal: Principal::anonymous(),
            affinity_key: None,
            parent: None,
            attempt: 1,
            topic: None,
            depth: 0,
            client_context: None,
        }
    }
}

impl InvocationContext {
    /// The context of an invocation that an invocation with this context makes: the one
    /// place where a child is derived from its parent, for every kind of child (a function
    /// calling another, a WebAssembly guest's `invoke`, a durable execution's child).
    ///
    /// The child continues the trace (a new span of the same trace) with the same
    /// `tracestate`, runs for the same principal at the same priority, has the parent's
    /// deadline (a child never outlives its parent's), records `parent` (the calling
    /// invocation or durable execution) and is one hop deeper, so the depth limit that stops
    /// loops counts it. Its affinity key, topic and attempt are its own.
    pub fn child(&self, parent: ExecutionId) -> InvocationContext {
        InvocationContext {
            trace: self.trace.child(),
            tracestate: self.tracestate.clone(),
            deadline: self.deadline,
            priority: self.priority,
            principal: self.principal.clone(),
            affinity_key: None,
            parent: Some(parent),
            attempt: 1,
            topic: None,
            depth: self.depth.saturating_add(1),
            client_context: None,
        }
    }

    /// Keeps the sooner of this context's deadline and `deadline`.
    pub fn with_deadline_at_most(mut self, deadline: Option<SystemTime>) -> InvocationContext {
        self.deadline = match (self.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

/// One request to run a function once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Invocation {
    /// The request id.
    pub id: InvocationId,
    /// The function, version or alias to run.
    pub function: FunctionRef,
    /// The input.
    pub payload: Bytes,
    /// Trace context, deadline, priority, principal, affinity and parent.
    pub context: InvocationContext,
    /// Set only on an invocation that resumes a suspended durable execution of the invoked
    /// function: the function's handler continues that execution instead of starting one.
    /// Only the host that keeps the execution sets it, in process: no wire, header or
    /// serialized form carries it, so no caller can make a function resume an execution.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub wake: Option<crate::checkpoint::Wake>,
}

impl Invocation {
    /// An invocation of `function` with a random id, a new root trace and default context.
    pub fn new(function: FunctionRef, payload: impl Into<Bytes>) -> Invocation {
        Invocation {
            id: InvocationId::random(),
            function,
            payload: payload.into(),
            context: InvocationContext::default(),
            wake: None,
        }
    }

    /// Replaces the context.
    pub fn with_context(mut self, context: InvocationContext) -> Invocation {
        self.context = context;
        self
    }

    /// An invocation of `function` that resumes its suspended durable execution with
    /// `wake` (see [`Invocation::wake`]); its payload is empty.
    pub fn resuming(function: FunctionRef, wake: crate::checkpoint::Wake) -> Invocation {
        Invocation {
            wake: Some(wake),
            ..Invocation::new(function, Bytes::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecutionId, FunctionName, Wake};

    fn resuming() -> Invocation {
        let function = FunctionRef::latest(FunctionName::new("order").unwrap());
        let wake = Wake::new(ExecutionId::random(), 3, Ok(Bytes::from_static(b"due")));
        Invocation::resuming(function, wake)
    }

    #[test]
    fn a_resuming_invocation_carries_its_wake_and_no_payload() {
        let invocation = resuming();
        let wake = invocation.wake.as_ref().expect("a wake");
        assert_eq!(wake.at, 3);
        assert!(!wake.take_over);
        assert!(invocation.payload.is_empty());
        assert!(
            Invocation::new(invocation.function.clone(), "x")
                .wake
                .is_none()
        );
    }

    /// No serialized form carries a wake, either way: a caller cannot make a function
    /// resume an execution by sending one.
    #[cfg(feature = "serde")]
    #[test]
    fn no_serialized_invocation_carries_a_wake() {
        let invocation = resuming();
        let json = serde_json::to_value(&invocation).unwrap();
        assert!(json.get("wake").is_none(), "{json}");
        let mut forged = json.clone();
        forged["wake"] = serde_json::json!({"execution": "x", "at": 0, "take_over": true});
        let read: Invocation = serde_json::from_value(forged).unwrap();
        assert!(read.wake.is_none());
        assert_eq!(read.id, invocation.id);
    }
}
