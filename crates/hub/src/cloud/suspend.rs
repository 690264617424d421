//! Suspensions and outcomes on the wire: what wakes a suspended execution (a wake on the
//! work stream, a wait in the bucket), a finished invocation's result and its parent's
//! wake, and the hub's side of the runtime ([`Attached`]: its children, outcomes and
//! events go through the deployment).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use fnhub_core::{
    ErrorKind, ExecutionId, FunctionError, Invocation, InvocationId, Outcome, PendingDependency,
};
use fnhub_router::topic::TopicName;

use super::waits::{Waits, wake_waiting};
use super::wire::{
    AT, CAUSE, INVOCATION, NODE, NOT_BEFORE, VERSION, WAKE, outcome_headers, outcome_of, unix_ms,
};
use super::{CloudClient, CloudError, Counters, Wire};

/// A finished invocation whose result goes out: its id, its parent (for a child of a
/// durable execution) and the version that ran, when one did.
pub(super) struct Done {
    pub(super) id: InvocationId,
    pub(super) parent: Option<ExecutionId>,
    pub(super) version: Option<u32>,
}

/// After a run suspended (or a wake found it suspended): a sleep becomes a wake due
/// when it ends. A child wakes its parent from the node that runs it; but if the child
/// finished before the parent's suspension was saved, that wake found the parent still
/// running and was dropped, so the child's result, when it is already there, is sent
/// as a wake from here. A wait for an event goes into the bucket of waits, which every
/// node matches its events against. An execution shed under load becomes a wake at
/// once, which nodes that are shedding hand back. False if a wake or wait could not be
/// stored: then the work is not acknowledged and comes again (or, for an execution started
/// on the hub itself, it is tried again).
pub(super) async fn record_suspension(
    js: &Wire,
    results: &jetstream::stream::Stream,
    waits_kv: &jetstream::kv::Store,
    execution: ExecutionId,
    pending: &PendingDependency,
    at: u32,
) -> bool {
    tracing::debug!(%execution, at, ?pending, "recording a suspension");
    match pending {
        PendingDependency::Timer(due) => {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("wake-{execution}-{at}").as_str());
            headers.insert(NOT_BEFORE, unix_ms(*due).to_string().as_str());
            publish_wake(js, execution, at, headers, Bytes::new()).await
        }
        PendingDependency::Child(child) => match stored_result(results, js, *child).await {
            Ok(Some(result)) => {
                let outcome = outcome_of(Some(&result.headers), &result.payload);
                let (mut headers, payload) = outcome_headers(&outcome);
                headers.insert(
                    "Nats-Msg-Id",
                    format!("wake-{execution}-{at}-late").as_str(),
                );
                publish_wake(js, execution, at, headers, payload).await
            }
            Ok(None) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot read a child's result; the work will come again");
                false
            }
        },
        PendingDependency::Event { filter } => {
            let wait = serde_json::json!({ "filter": filter, "at": at }).to_string();
            match waits_kv.put(execution.to_string(), wait.into()).await {
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(%error, "cannot record an event wait; the work will come again");
                    false
                }
            }
        }
        // No message id: an execution may be shed at the same operation again.
        PendingDependency::Load => {
            let mut headers = HeaderMap::new();
            headers.insert(CAUSE, "load");
            publish_wake(js, execution, at, headers, Bytes::new()).await
        }
        _ => true,
    }
}

/// The result stored for invocation `id` in the results stream, `None` when there is none;
/// `Err` when the stream could not say.
pub(super) async fn stored_result(
    results: &jetstream::stream::Stream,
    js: &Wire,
    id: InvocationId,
) -> Result<Option<jetstream::message::StreamMessage>, jetstream::stream::LastRawMessageError> {
    match results
        .get_last_raw_message_by_subject(&js.names.result(id))
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Publishes the outcome of invocation `id` and, for a child of a durable execution, wakes
/// its parent with it. False if either was not stored (the work comes again).
pub(super) async fn publish_outcome(
    js: &Wire,
    node: &str,
    counters: &Counters,
    done: Done,
    outcome: &Outcome,
) -> bool {
    let Done {
        id,
        parent,
        version,
    } = done;
    let (error_headers, payload) = outcome_headers(outcome);
    let mut headers = error_headers.clone();
    headers.insert("Nats-Msg-Id", format!("result-{id}").as_str());
    headers.insert(INVOCATION, id.to_string().as_str());
    headers.insert(NODE, node);
    if let Some(v) = version {
        headers.insert(VERSION, v.to_string().as_str());
    }
    let published = match js
        .publish_with_headers(js.names.result(id), headers, payload.clone())
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => {
            tracing::warn!(error = %e, "publishing a result failed; the work will come again");
            return false;
        }
    };
    tracing::debug!(invocation = %id, ok = outcome.is_ok(), stored = published.is_ok(), "result published");
    match published {
        Ok(ack) if ack.duplicate => {
            counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "a result was not stored; the work will come again");
            return false;
        }
    }
    let Some((parent, at)) =
        parent.and_then(|p| Some((p, fnhub_checkpoint::durable::child_position(p, id)?)))
    else {
        return true;
    };
    let mut headers = error_headers;
    headers.insert("Nats-Msg-Id", format!("wake-{parent}-{at}").as_str());
    publish_wake(js, parent, at, headers, payload).await
}

/// Publishes a wake of `execution` at `at`, carrying `headers` and `payload`.
pub(super) async fn publish_wake(
    js: &Wire,
    execution: ExecutionId,
    at: u32,
    mut headers: HeaderMap,
    payload: Bytes,
) -> bool {
    headers.insert(WAKE, execution.to_string().as_str());
    headers.insert(AT, at.to_string().as_str());
    let subject = js.names.resume_subject();
    match js.publish_with_headers(subject, headers, payload).await {
        Ok(ack) => match ack.await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, %execution, "a wake was not stored; the work will come again");
                false
            }
        },
        Err(error) => {
            tracing::warn!(%error, %execution, "publishing a wake failed; the work will come again");
            false
        }
    }
}

/// How long a child's submission is tried while JetStream cannot store it (a server
/// restarting, a cluster electing a leader).
const CHILD_SUBMIT: Duration = Duration::from_secs(60);

/// What a node's hub sends to the cloud runtime: its durable executions' children (run
/// through the work stream, on any node; the parent waits for the child's result or,
/// suspended, is woken by the node that ran it), their outcomes, and its events (matched
/// against the waits of every node).
pub(super) struct Attached {
    pub(super) client: Arc<CloudClient>,
    pub(super) node: String,
    pub(super) counters: Arc<Counters>,
    pub(super) waits: Waits,
    pub(super) waits_kv: jetstream::kv::Store,
}

impl crate::durable::CloudLink for Attached {
    /// No work message will come again if this fails: it is tried until it is stored.
    fn suspended(&self, execution: ExecutionId, pending: PendingDependency, at: u32) {
        let (client, kv) = (self.client.clone(), self.waits_kv.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while !record_suspension(&client.js, &client.results, &kv, execution, &pending, at)
                .await
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }

    fn event(&self, event: &fnhub_core::Event) {
        let Ok(topic) = event.topic.parse::<TopicName>() else {
            return;
        };
        if self.waits.matching(&topic).is_empty() {
            return;
        }
        let (js, kv, waits) = (
            self.client.js.clone(),
            self.waits_kv.clone(),
            self.waits.clone(),
        );
        let payload = event.payload.clone();
        tokio::spawn(async move {
            if !wake_waiting(&js, &kv, &waits, &topic, &payload).await {
                tracing::warn!(%topic, "an event could not wake every execution waiting for it");
            }
        });
    }

    fn invoke(&self, child: Invocation) -> fnhub_core::BoxFuture<'static, Outcome> {
        let client = self.client.clone();
        Box::pin(async move {
            let failed = |e: CloudError| {
                Err(FunctionError::new(ErrorKind::Rejected, e.to_string())
                    .with_type("CloudRuntime"))
            };
            // A child submitted again (its parent's node died) is stored once and runs
            // once; its result is read from the stream however early it came.
            // Submitted on its own task: a parent that suspends while it waits drops this
            // future (the child's node wakes it), and the child must still be submitted,
            // however long a server restarting makes that take.
            let until = tokio::time::Instant::now() + CHILD_SUBMIT;
            let submitting = client.clone();
            let id = child.id;
            let submitted =
                tokio::spawn(async move { submitting.submit_until(&child, until).await });
            match submitted.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return failed(e),
                Err(e) => return failed(CloudError::JetStream(e.into())),
            }
            match client.result_of(id).await {
                Ok(result) => result.outcome,
                Err(e) => failed(e),
            }
        })
    }

    /// The caller's result (and the parent's wake), published before the checkpoint goes.
    fn completed(
        &self,
        finished: &fnhub_checkpoint::durable::Finished,
    ) -> fnhub_core::BoxFuture<'static, Result<(), fnhub_checkpoint::durable::DeliveryError>> {
        let (client, node, counters) = (
            self.client.clone(),
            self.node.clone(),
            self.counters.clone(),
        );
        let id = InvocationId::from_u128(finished.execution.as_u128());
        let (parent, outcome) = (finished.context.parent, finished.outcome.clone());
        Box::pin(async move {
            let done = Done {
                id,
                parent,
                version: None,
            };
            if publish_outcome(&client.js, &node, &counters, done, &outcome).await {
                Ok(())
            } else {
                Err("the result was not stored".into())
            }
        })
    }
}
