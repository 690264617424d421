//! The client of a deployment: submits invocations, publishes events, reads results.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use fnhub_core::{Invocation, InvocationId, Outcome};
use fnhub_router::topic::TopicName;
use futures_util::StreamExt;

use super::wire::{
    EVENT_SUBJECT, FUNCTION, INVOCATION, NODE, PARENT, PRIORITY, REGISTRY, RESULT_STREAM, TOPIC,
    header, outcome_of,
};
use super::{CloudConfig, CloudError, bucket, js_err, streams};

/// One outcome, as a caller receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloudResult {
    /// The invocation.
    pub id: InvocationId,
    /// The node that ran it.
    pub node: String,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Submits invocations to the cloud runtime and reads their results.
pub struct CloudClient {
    pub(super) js: jetstream::Context,
    /// The results stream, looked up once.
    pub(super) results: jetstream::stream::Stream,
    registry: jetstream::kv::Store,
    /// Functions found in the registry, so that each is looked up once.
    known: parking_lot::Mutex<HashSet<String>>,
}

impl std::fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudClient").finish_non_exhaustive()
    }
}

impl CloudClient {
    /// Connects to NATS at `url`, creating the streams when they are not there.
    pub async fn connect(url: &str, config: &CloudConfig) -> Result<CloudClient, CloudError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| CloudError::Connect(e.into()))?;
        let js = jetstream::new(client);
        streams(&js, config).await?;
        CloudClient::with_context(js).await
    }

    /// A client on an existing JetStream context whose streams are set up.
    pub(super) async fn with_context(js: jetstream::Context) -> Result<CloudClient, CloudError> {
        let registry = bucket(&js, REGISTRY).await?;
        let results = js.get_stream(RESULT_STREAM).await.map_err(js_err)?;
        Ok(CloudClient {
            js,
            results,
            registry,
            known: parking_lot::Mutex::new(HashSet::new()),
        })
    }

    /// Waits for the result of invocation `id`, however long ago it came (while the result
    /// stream keeps it, an hour).
    pub async fn result_of(&self, id: InvocationId) -> Result<CloudResult, CloudError> {
        let consumer = self
            .results
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("fnhub.results.{id}"),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(js_err)?;
        let mut messages = consumer.messages().await.map_err(js_err)?;
        let m = messages
            .next()
            .await
            .ok_or_else(|| CloudError::JetStream("the result stream ended".into()))?
            .map_err(js_err)?;
        Ok(CloudResult {
            id,
            node: header(m.headers.as_ref(), NODE).unwrap_or_default(),
            outcome: outcome_of(m.headers.as_ref(), &m.payload),
        })
    }

    /// Publishes an event to the deployment: every durable execution waiting for a topic
    /// filter that `topic` matches (with
    /// [`wait_for`](fnhub_checkpoint::durable::DurableContext::wait_for), on any node)
    /// resumes with `payload`. Delivered at least once to some node; an execution waiting
    /// when two events arrive resumes once, with one of them.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), CloudError> {
        if let Err(e) = topic.parse::<TopicName>() {
            return Err(CloudError::InvalidTopic(format!("{topic:?}: {e}")));
        }
        // It travels in a header, where a line break would end it.
        if topic.chars().any(char::is_control) {
            return Err(CloudError::InvalidTopic(format!(
                "{topic:?}: control characters cannot be sent"
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert(TOPIC, topic);
        self.js
            .publish_with_headers(EVENT_SUBJECT, headers, payload.into())
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(())
    }

    /// The functions some node has registered, by name.
    pub async fn functions(&self) -> Result<Vec<String>, CloudError> {
        let mut keys = self.registry.keys().await.map_err(js_err)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            out.push(k.map_err(js_err)?);
        }
        out.sort();
        Ok(out)
    }

    /// Submits an invocation; its id, which its result carries. Its priority and parent go
    /// with it. Submitting the same invocation again (same id) within the duplicate window
    /// stores it once. A function no node has registered is refused
    /// ([`CloudError::UnknownFunction`]).
    pub async fn submit(&self, invocation: &Invocation) -> Result<InvocationId, CloudError> {
        let name = invocation.function.name.to_string();
        if !self.known.lock().contains(&name) {
            if self
                .registry
                .get(name.as_str())
                .await
                .map_err(js_err)?
                .is_none()
            {
                return Err(CloudError::UnknownFunction(name));
            }
            self.known.lock().insert(name);
        }
        let id = invocation.id;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        headers.insert(INVOCATION, id.to_string().as_str());
        headers.insert(FUNCTION, invocation.function.to_string().as_str());
        if let Some(parent) = invocation.context.parent {
            headers.insert(PARENT, parent.to_string().as_str());
        }
        if invocation.context.priority != fnhub_core::Priority::default() {
            headers.insert(PRIORITY, invocation.context.priority.0.to_string().as_str());
        }
        self.js
            .publish_with_headers(
                format!("fnhub.work.{}", invocation.function.name),
                headers,
                invocation.payload.clone(),
            )
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(id)
    }

    /// Every result from now on (and those still in the stream), each invocation once:
    /// a second result for an id already seen is dropped and counted in `duplicates`.
    pub async fn results(
        &self,
        duplicates: Arc<AtomicU64>,
    ) -> Result<impl futures_util::Stream<Item = CloudResult> + use<>, CloudError> {
        let consumer: consumer::PullConsumer = self
            .results
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(js_err)?;
        let messages = consumer.messages().await.map_err(js_err)?;
        let mut seen = HashSet::new();
        Ok(messages.filter_map(move |m| {
            let out = m.ok().and_then(|m| {
                let header = |k: &str| header(m.headers.as_ref(), k);
                let id: InvocationId = header(INVOCATION)?.parse().ok()?;
                if !seen.insert(id) {
                    duplicates.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                let outcome = outcome_of(m.headers.as_ref(), &m.payload);
                Some(CloudResult {
                    id,
                    node: header(NODE).unwrap_or_default(),
                    outcome,
                })
            });
            std::future::ready(out)
        }))
    }
}
