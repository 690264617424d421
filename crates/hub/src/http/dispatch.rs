//! Calls the front door sends elsewhere: on a cloud runtime node, a call of a function this
//! node lacks, or one its hub has no room for, runs on whichever node of the deployment
//! has the function and room (see [`Ops::with_dispatch`](super::Ops::with_dispatch)).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fnhub_core::{BoxFuture, FunctionName, Invocation, Outcome};

use super::invoke::aws_error;

/// How long a `RequestResponse` call sent elsewhere waits for its result: Lambda's longest
/// function timeout.
pub const REMOTE_WAIT: Duration = Duration::from_secs(15 * 60);

/// The result of a call run elsewhere.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Dispatched {
    /// Its outcome.
    pub outcome: Outcome,
    /// The version that ran, when known.
    pub version: Option<u32>,
    /// Where it ran.
    pub node: String,
}

impl Dispatched {
    /// A result.
    pub fn new(outcome: Outcome, version: Option<u32>, node: impl Into<String>) -> Dispatched {
        Dispatched {
            outcome,
            version,
            node: node.into(),
        }
    }
}

/// Where a front door sends the calls its own hub cannot run: implemented by
/// [`CloudClient`](crate::cloud::CloudClient) (feature `nats`).
pub trait Dispatch: Send + Sync + 'static {
    /// Whether some node runs `function`.
    fn runs<'a>(&'a self, function: &'a FunctionName) -> BoxFuture<'a, bool>;
    /// Runs `invocation` elsewhere and waits up to `wait` for its result.
    fn call(
        &self,
        invocation: Invocation,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Dispatched, String>>;
    /// Submits `invocation` to run elsewhere without waiting (an `Event` call): stored
    /// once this answers.
    fn submit(&self, invocation: Invocation) -> BoxFuture<'_, Result<(), String>>;
}

/// The response to a call sent to `dispatch`: `kind` is `RequestResponse` or `Event`.
pub(super) async fn remote(
    dispatch: &Arc<dyn Dispatch>,
    kind: &str,
    invocation: Invocation,
) -> (Response, Option<u32>) {
    let unavailable = |e: String| {
        aws_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            &format!("the deployment could not take the call: {e}"),
        )
    };
    if kind == "Event" {
        return match dispatch.submit(invocation).await {
            Ok(()) => (StatusCode::ACCEPTED.into_response(), None),
            Err(e) => (unavailable(e), None),
        };
    }
    let id = invocation.id;
    let done = match dispatch.call(invocation, REMOTE_WAIT).await {
        Ok(done) => done,
        Err(e) => return (unavailable(e), None),
    };
    let response = super::invoke::outcome_response(done.outcome, &id.to_string());
    (response, done.version)
}
