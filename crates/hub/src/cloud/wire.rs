//! The names a deployment's nodes and clients agree on: streams, buckets, subjects, and
//! the `Fnhub-*` headers that carry an invocation, a wake or an outcome through NATS; and
//! the outcome's encoding in a message.

use async_nats::HeaderMap;
use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionError, Outcome};

/// The work-queue stream every invocation, wake and event goes through.
pub(crate) const WORK_STREAM: &str = "FNHUB_WORK";
pub(crate) const RESULT_STREAM: &str = "FNHUB_RESULTS";
pub(crate) const WORKERS: &str = "fnhub-workers";
pub(crate) const FUNCTION: &str = "Fnhub-Function";
pub(crate) const INVOCATION: &str = "Fnhub-Invocation";
pub(crate) const NODE: &str = "Fnhub-Node";
pub(crate) const ERROR_KIND: &str = "Fnhub-Error-Kind";
pub(crate) const ERROR_TYPE: &str = "Fnhub-Error-Type";
pub(crate) const REGISTRY: &str = "FNHUB_FUNCTIONS";
/// The invocation's priority (0–255), when it is not the default.
pub(crate) const PRIORITY: &str = "Fnhub-Priority";
/// The parent execution of a child invocation.
pub(crate) const PARENT: &str = "Fnhub-Parent";
/// A wake: the execution to wake...
pub(crate) const WAKE: &str = "Fnhub-Wake";
/// ...the journal position of the operation that has its result...
pub(crate) const AT: &str = "Fnhub-At";
/// ...and, for a timer, when it is due (Unix milliseconds).
pub(crate) const NOT_BEFORE: &str = "Fnhub-Not-Before";
/// The KV bucket of event waits: execution → `{"filter", "at"}`.
pub(crate) const WAITS: &str = "FNHUB_WAITS";
/// The topic of an event published through [`CloudClient::publish`](super::CloudClient::publish).
pub(crate) const TOPIC: &str = "Fnhub-Topic";
/// Why a wake was sent, when it is not for a result: `load` for an execution shed
/// under load.
pub(crate) const CAUSE: &str = "Fnhub-Cause";
/// The subject of events published through [`CloudClient::publish`](super::CloudClient::publish).
pub(crate) const EVENT_SUBJECT: &str = "fnhub.work.fnhub-event";

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
