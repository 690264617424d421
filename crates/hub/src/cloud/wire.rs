//! The wire format of a deployment: the streams, buckets and subjects its nodes and clients
//! agree on, and the `Fnhub-*` headers that carry an invocation, a wake or an outcome
//! through NATS. The format is documented in the [module docs](super#the-wire-format) so
//! that a client in another language can submit work.

use async_nats::HeaderMap;
use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionError, Outcome};

/// The invocation's id (a UUID): its result carries it, and it is the submission's
/// `Nats-Msg-Id`, so a submission sent twice is stored once.
pub const INVOCATION: &str = "Fnhub-Invocation";
/// The function, as `name`, `name:version` or `name:alias`.
pub const FUNCTION: &str = "Fnhub-Function";
/// On a result: the node that ran it.
pub const NODE: &str = "Fnhub-Node";
/// On a result: the version that ran.
pub const VERSION: &str = "Fnhub-Version";
/// On a result that is an error: its kind (`handled`, `unhandled`, `timeout`, ...); the
/// payload is then the message.
pub const ERROR_KIND: &str = "Fnhub-Error-Kind";
/// On an error result: the error's type, when it has one.
pub const ERROR_TYPE: &str = "Fnhub-Error-Type";
/// The W3C `traceparent` of the call (a new root when absent).
pub const TRACEPARENT: &str = "Fnhub-Traceparent";
/// The W3C `tracestate`, passed through untouched.
pub const TRACESTATE: &str = "Fnhub-Tracestate";
/// When the caller needs the outcome by: Unix milliseconds. A node refuses one more than
/// [`MAX_DEADLINE_AHEAD`] ahead of its clock.
pub const DEADLINE: &str = "Fnhub-Deadline";
/// The principal (tenant) the call runs for; `anonymous` when absent.
pub const PRINCIPAL: &str = "Fnhub-Principal";
/// The scheduling priority, 0–255 (128 when absent).
pub const PRIORITY: &str = "Fnhub-Priority";
/// How many calls led to this one (0 when absent); a node refuses one deeper than its hub's
/// limit.
pub const DEPTH: &str = "Fnhub-Depth";
/// The affinity key: calls with the same key prefer the same warm environment.
pub const AFFINITY: &str = "Fnhub-Affinity";
/// Lambda's client context (a JSON object, as `X-Amz-Client-Context` decodes to).
pub const CLIENT_CONTEXT: &str = "Fnhub-Client-Context";
/// The parent durable execution of a child invocation.
pub const PARENT: &str = "Fnhub-Parent";
/// A wake: the execution to wake...
pub(crate) const WAKE: &str = "Fnhub-Wake";
/// ...the journal position of the operation that has its result...
pub(crate) const AT: &str = "Fnhub-At";
/// ...and, for a timer, when it is due (Unix milliseconds).
pub(crate) const NOT_BEFORE: &str = "Fnhub-Not-Before";
/// The topic of an event published through [`CloudClient::publish`](super::CloudClient::publish).
pub(crate) const TOPIC: &str = "Fnhub-Topic";
/// Why a wake was sent, when it is not for a result: `load` for an execution shed
/// under load.
pub(crate) const CAUSE: &str = "Fnhub-Cause";

/// The furthest ahead a submitted deadline may be: a day.
pub const MAX_DEADLINE_AHEAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The longest deployment name.
pub const MAX_DEPLOYMENT: usize = crate::MAX_DEPLOYMENT;

/// The names of one deployment's streams, buckets, consumers and subjects, all derived
/// from the deployment's name (`prod` → the stream `FNHUB_prod_WORK`, subjects
/// `fnhub.prod.work.{function}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    deployment: String,
}

impl Names {
    /// The names of deployment `name`: 1 to [`MAX_DEPLOYMENT`] letters, digits, `-` or `_`
    /// (it is part of stream names and subjects).
    pub(crate) fn new(name: &str) -> Result<Names, String> {
        crate::check_deployment(name)?;
        Ok(Names {
            deployment: name.to_owned(),
        })
    }

    pub(crate) fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The work-queue stream every invocation, wake and event goes through.
    pub(crate) fn work_stream(&self) -> String {
        format!("FNHUB_{}_WORK", self.deployment)
    }

    pub(crate) fn result_stream(&self) -> String {
        format!("FNHUB_{}_RESULTS", self.deployment)
    }

    /// The function registry: name → versions and the nodes that run it.
    pub(crate) fn registry(&self) -> String {
        format!("FNHUB_{}_FUNCTIONS", self.deployment)
    }

    /// The event waits: execution → `{"filter", "at"}`.
    pub(crate) fn waits(&self) -> String {
        format!("FNHUB_{}_WAITS", self.deployment)
    }

    /// Every subject of the work stream.
    pub(crate) fn work_all(&self) -> String {
        format!("fnhub.{}.work.>", self.deployment)
    }

    /// Where invocations of `function` go (also [`RESUME_FUNCTION`](crate::RESUME_FUNCTION)
    /// for wakes, and `fnhub-event` for events).
    pub(crate) fn work(&self, function: &str) -> String {
        format!("fnhub.{}.work.{function}", self.deployment)
    }

    pub(crate) fn event_subject(&self) -> String {
        self.work("fnhub-event")
    }

    pub(crate) fn resume_subject(&self) -> String {
        self.work(crate::durable::RESUME_FUNCTION)
    }

    /// The durable consumer the nodes that run `function` share.
    pub(crate) fn consumer(&self, function: &str) -> String {
        format!("workers-{function}")
    }

    /// Where invocations of `function` go that prefer node `node` (a [`node_token`]).
    pub(crate) fn work_at(&self, function: &str, node: &str) -> String {
        format!("fnhub.{}.work.{function}.{node}", self.deployment)
    }

    /// The consumer of the invocations of `function` that prefer node `node`: that node
    /// takes them while it lives; the others, once it is gone.
    pub(crate) fn consumer_at(&self, function: &str, node: &str) -> String {
        format!("workers-{function}-at-{node}")
    }

    /// The bucket of live nodes: each node's [`node_token`], renewed every
    /// [`HEARTBEAT`], gone [`NODE_TTL`] after the node stops renewing it.
    pub(crate) fn nodes(&self) -> String {
        format!("FNHUB_{}_NODES", self.deployment)
    }

    /// The Lambda durable executions of the deployment's nodes (`x.{id}`: the execution
    /// and its node; `r.{id}`: its node, while it runs).
    pub(crate) fn executions(&self) -> String {
        format!("FNHUB_{}_EXECUTIONS", self.deployment)
    }

    /// Where requests for the durable executions node `node` runs are sent.
    pub(crate) fn executions_at(&self, node: &str) -> String {
        format!("fnhub.{}.executions.{node}", self.deployment)
    }

    pub(crate) fn results_all(&self) -> String {
        format!("fnhub.{}.results.>", self.deployment)
    }

    pub(crate) fn result(&self, id: impl std::fmt::Display) -> String {
        format!("fnhub.{}.results.{id}", self.deployment)
    }
}

/// How often a node renews its entry in the bucket of live nodes.
pub(crate) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a node's entry outlives its last renewal.
pub(crate) const NODE_TTL: std::time::Duration = std::time::Duration::from_secs(8);

/// A node's name as one subject token: letters, digits, `-` and `_` kept, anything else
/// `_`.
pub(crate) fn node_token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A header of a NATS message, as text.
pub(crate) fn header(headers: Option<&HeaderMap>, key: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(key))
        .map(|v| v.as_str().to_owned())
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The error headers and the payload that carry `outcome`.
pub(crate) fn outcome_headers(outcome: &Outcome) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    match outcome {
        Ok(output) => (headers, output.clone()),
        Err(e) => {
            headers.insert(ERROR_KIND, e.kind.as_str());
            if let Some(t) = &e.error_type {
                headers.insert(ERROR_TYPE, t.as_str());
            }
            (headers, Bytes::from(e.message.clone()))
        }
    }
}

/// The outcome a message carries (see [`outcome_headers`]).
pub(crate) fn outcome_of(headers: Option<&HeaderMap>, payload: &Bytes) -> Outcome {
    match header(headers, ERROR_KIND) {
        None => Ok(payload.clone()),
        Some(kind) => {
            let kind = ErrorKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .unwrap_or(ErrorKind::Unhandled);
            let mut e = FunctionError::new(kind, String::from_utf8_lossy(payload).into_owned());
            if let Some(t) = header(headers, ERROR_TYPE) {
                e = e.with_type(t);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deployment_names_are_checked_and_name_everything() {
        let n = Names::new("prod-1").unwrap();
        assert_eq!(n.work_stream(), "FNHUB_prod-1_WORK");
        assert_eq!(n.work("hello"), "fnhub.prod-1.work.hello");
        assert_eq!(n.result("x"), "fnhub.prod-1.results.x");
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(33), "ü"] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }
}
