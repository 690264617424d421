//! Where a hub's durable executions are also kept when the hub is a node of the cloud
//! runtime, so that another node takes an execution up when its node is gone, and answers
//! for it meanwhile (see `cloud::executions`).

use fnhub_core::BoxFuture;
use serde_json::Value;

use super::Execution;
use super::api::ApiError;

/// A copy of a hub's executions outside it, and the way to the node that runs one.
pub(crate) trait Replica: Send + Sync + 'static {
    /// `exec` changed (called under the hub's lock of its executions: it only queues).
    fn saved(&self, exec: &Execution);

    /// `exec` was deleted.
    fn deleted(&self, exec: &Execution);

    /// Reserves the name `name` of `function`'s executions in the whole deployment for
    /// an execution of `input` this node is about to start: `None` when it is this node's
    /// to start (or find), else the execution another node started under it.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn reserve_name(
        &self,
        function: &str,
        name: &str,
        input: &str,
    ) -> BoxFuture<'static, Result<Option<Named>, ApiError>>;

    /// The execution this node started under a name it reserved.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn named(&self, function: &str, name: &str, arn: &str) -> BoxFuture<'static, ()>;

    /// Resolves once everything queued so far is stored; `false` if it could not be
    /// stored in time (the caller answers with an error instead of an acknowledgement).
    fn flushed(&self) -> BoxFuture<'static, bool>;

    /// The function, the node and the saved copy of execution `id`, if another node runs
    /// it (or ran it).
    fn locate(&self, id: &str) -> BoxFuture<'static, Option<Located>>;

    /// Every execution of `function` the replica holds, of every node (`None` if it could
    /// not be read).
    fn executions_of(&self, function: &str) -> BoxFuture<'static, Option<Vec<Execution>>>;

    /// `request` answered by `node`, which runs the execution.
    fn forward(&self, node: String, request: Forwarded) -> BoxFuture<'static, Answer>;
}

/// Where an execution is, and its saved copy.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) function: String,
    pub(crate) node: String,
    pub(crate) exec: Execution,
}

/// An execution another node started under a name.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) struct Named {
    pub(crate) arn: String,
    /// Whether it was started with the same input.
    pub(crate) same_input: bool,
}

/// A request under `/2025-12-01/` sent on to the node that runs its execution.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Forwarded {
    pub(crate) method: String,
    pub(crate) rest: String,
    pub(crate) query: String,
    pub(crate) body: bytes::Bytes,
}

/// What a forwarded request got.
pub(crate) type Answer = Result<(u16, Value), ApiError>;

/// The execution a request under `/2025-12-01/` names: the id at the end of its ARN, or
/// the execution part of a callback id (`{execution id}-{random}`).
pub(crate) fn execution_named(rest: &str) -> Option<String> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match &segments[..] {
        ["durable-executions", arn, ..] => {
            let arn = fnhub_core::percent_decode(arn)?;
            let id = arn.rsplit('/').next()?;
            is_id(id).then(|| id.to_owned())
        }
        ["durable-execution-callbacks", callback, _] => {
            let callback = fnhub_core::percent_decode(callback)?;
            let (id, _) = callback.split_once('-')?;
            is_id(id).then(|| id.to_owned())
        }
        _ => None,
    }
}

/// An execution id: 32 lowercase hex digits.
fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::execution_named;

    #[test]
    fn requests_name_their_execution_by_arn_or_callback() {
        let id = "0123456789abcdef0123456789abcdef";
        let arn =
            format!("arn:aws:lambda:us-east-1:000000000000:function:f:1/durable-execution/n/{id}");
        let encoded = arn.replace(':', "%3A").replace('/', "%2F");
        assert_eq!(
            execution_named(&format!("durable-executions/{encoded}/history")),
            Some(id.to_owned())
        );
        assert_eq!(
            execution_named(&format!("durable-execution-callbacks/{id}-abc/succeed")),
            Some(id.to_owned())
        );
        for garbage in [
            "",
            "durable-executions",
            "durable-executions/not-an-arn",
            "durable-execution-callbacks/xyz/succeed",
            "durable-execution-callbacks/%FF%FE-1/succeed",
            "functions/f/durable-executions",
        ] {
            assert_eq!(execution_named(garbage), None, "{garbage}");
        }
    }
}
