//! The cloud runtime (feature `nats`): hub nodes sharing invocations through NATS
//! JetStream.
//!
//! - Callers publish invocations on `fnhub.work.{function}` into the work-queue stream
//!   `FNHUB_WORK`, with the invocation id as `Nats-Msg-Id`: a submission sent twice is
//!   stored once.
//! - Every [`CloudRuntime`] node pulls from the one durable consumer of that stream, so
//!   each invocation goes to one node at a time. A node runs it on its own [`EdgeHub`],
//!   publishes the outcome on `fnhub.results.{invocation}` into the stream
//!   `FNHUB_RESULTS`, and acknowledges the work only then.
//! - At least once, with one result: a node that dies (even by SIGKILL) before its
//!   acknowledgement leaves the invocation to be delivered again after the ack wait; a
//!   node that runs it again publishes its result under the same `Nats-Msg-Id`
//!   (`result-{invocation}`), which JetStream drops as a duplicate (counted in
//!   [`NodeStats::duplicates_suppressed`]). [`CloudClient::results`] also drops any
//!   result for an invocation it has seen.
//!
//! - The function registry is the KV bucket `FNHUB_FUNCTIONS`: each node records the
//!   functions its hub has deployed (name → versions and the nodes that run it) when it
//!   starts, and [`CloudClient::submit`] refuses a function no node has recorded.
//!
//! Checkpoints of suspended executions can live in the JetStream object store
//! ([`fnhub_checkpoint::nats::NatsStore`], a `CheckpointStore` every node reads), but the
//! nodes do not yet resume one another's durable executions.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionError, FunctionRef, Invocation, InvocationId, Outcome};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::EdgeHub;

const WORK_STREAM: &str = "FNHUB_WORK";
const RESULT_STREAM: &str = "FNHUB_RESULTS";
const WORKERS: &str = "fnhub-workers";
const FUNCTION: &str = "Fnhub-Function";
const INVOCATION: &str = "Fnhub-Invocation";
const NODE: &str = "Fnhub-Node";
const ERROR_KIND: &str = "Fnhub-Error-Kind";
const ERROR_TYPE: &str = "Fnhub-Error-Type";
const REGISTRY: &str = "FNHUB_FUNCTIONS";

/// A cloud runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// A JetStream operation failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// No node has registered the function.
    #[error("no node runs {0}")]
    UnknownFunction(String),
}

/// A header of a NATS message, as text.
fn header(headers: Option<&HeaderMap>, key: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(key))
        .map(|v| v.as_str().to_owned())
}

fn js_err(e: impl std::fmt::Display) -> CloudError {
    CloudError::JetStream(e.to_string())
}

/// How the streams and the consumer are set up. Every node and client of one deployment
/// must agree.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloudConfig {
    /// How long a node has to acknowledge an invocation before it is delivered again.
    /// Default 10 s.
    pub ack_wait: Duration,
    /// Invocations one node runs at once. Default 64.
    pub in_flight: usize,
    /// How long JetStream remembers message ids to drop duplicates. Default 2 min.
    pub duplicate_window: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            ack_wait: Duration::from_secs(10),
            in_flight: 64,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl CloudConfig {
    /// Sets the ack wait.
    pub fn with_ack_wait(mut self, wait: Duration) -> CloudConfig {
        self.ack_wait = wait;
        self
    }
}

async fn streams(js: &jetstream::Context, config: &CloudConfig) -> Result<(), CloudError> {
    js.get_or_create_stream(stream::Config {
        name: WORK_STREAM.into(),
        subjects: vec!["fnhub.work.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    js.get_or_create_stream(stream::Config {
        name: RESULT_STREAM.into(),
        subjects: vec!["fnhub.results.>".into()],
        duplicate_window: config.duplicate_window,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    Ok(())
}

async fn registry(js: &jetstream::Context) -> Result<jetstream::kv::Store, CloudError> {
    if let Ok(kv) = js.get_key_value(REGISTRY).await {
        return Ok(kv);
    }
    // The bucket's stream, made by hand: `create_key_value` first asks for the account's
    // info, which async-nats 0.51 cannot read from the nats-server 2.9 of these machines.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{REGISTRY}"),
        subjects: vec![format!("$KV.{REGISTRY}.>")],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    js.get_key_value(REGISTRY).await.map_err(js_err)
}

/// Records in the registry that `node` runs every function `hub` has deployed.
async fn register(js: &jetstream::Context, node: &str, hub: &EdgeHub) -> Result<(), CloudError> {
    let kv = registry(js).await?;
    let mut by_name: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    for spec in hub.deployed() {
        by_name
            .entry(spec.name.to_string())
            .or_default()
            .push(spec.version.get());
    }
    for (name, versions) in by_name {
        // Merge with what other nodes recorded (last writer wins on a race; a node that
        // starts again records itself again).
        let mut entry: serde_json::Value = kv
            .get(name.as_str())
            .await
            .map_err(js_err)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({ "name": name, "nodes": {} }));
        entry["nodes"][node] = serde_json::json!(versions);
        kv.put(name.as_str(), Bytes::from(entry.to_string()))
            .await
            .map_err(js_err)?;
    }
    Ok(())
}

/// What a node has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Invocations it ran.
    pub ran: u64,
    /// Results it published that JetStream had already (the invocation ran elsewhere, or
    /// here, before a redelivery).
    pub duplicates_suppressed: u64,
    /// Invocations it took that had been delivered before (to a node that died or was too
    /// slow to acknowledge).
    pub redelivered: u64,
}

#[derive(Default)]
struct Counters {
    ran: AtomicU64,
    duplicates: AtomicU64,
    redelivered: AtomicU64,
}

/// One node of the cloud runtime: takes invocations from JetStream and runs them on its
/// hub. Dropping it stops taking work.
pub struct CloudRuntime {
    name: String,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for CloudRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudRuntime")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for CloudRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CloudRuntime {
    /// Connects to NATS at `url` as node `name` and starts taking invocations for `hub`.
    pub async fn start(
        url: &str,
        name: impl Into<String>,
        hub: EdgeHub,
        config: CloudConfig,
    ) -> Result<CloudRuntime, CloudError> {
        let name = name.into();
        let client = async_nats::connect(url)
            .await
            .map_err(|e| CloudError::Connect(e.to_string()))?;
        let js = jetstream::new(client);
        streams(&js, &config).await?;
        register(&js, &name, &hub).await?;
        let work = js.get_stream(WORK_STREAM).await.map_err(js_err)?;
        let consumer: consumer::PullConsumer = work
            .get_or_create_consumer(
                WORKERS,
                consumer::pull::Config {
                    durable_name: Some(WORKERS.into()),
                    ack_wait: config.ack_wait,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(js_err)?;
        let messages = consumer.messages().await.map_err(js_err)?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(work_loop(
            name.clone(),
            hub,
            js,
            messages,
            counters.clone(),
            config.in_flight.max(1),
        ));
        Ok(CloudRuntime {
            name,
            counters,
            task,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it has done.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            ran: self.counters.ran.load(Ordering::Relaxed),
            duplicates_suppressed: self.counters.duplicates.load(Ordering::Relaxed),
            redelivered: self.counters.redelivered.load(Ordering::Relaxed),
        }
    }
}

async fn work_loop(
    node: String,
    hub: EdgeHub,
    js: jetstream::Context,
    mut messages: consumer::pull::Stream,
    counters: Arc<Counters>,
    in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "pulling work failed");
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        if message.info().is_ok_and(|i| i.delivered > 1) {
            counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let (node, hub, js, counters) = (node.clone(), hub.clone(), js.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let header = |k: &str| header(message.headers.as_ref(), k);
            let id = header(INVOCATION).and_then(|v| v.parse::<InvocationId>().ok());
            let function = header(FUNCTION).and_then(|v| v.parse::<FunctionRef>().ok());
            let (Some(id), Some(function)) = (id, function) else {
                tracing::warn!(subject = %message.subject, "malformed work message dropped");
                let _ = message.ack().await;
                return;
            };
            let mut invocation = Invocation::new(function, message.payload.clone());
            invocation.id = id;
            let outcome = match hub.call(invocation).await {
                Ok(c) => c.outcome,
                Err(e) => Err(FunctionError::new(ErrorKind::Rejected, e.to_string())),
            };
            counters.ran.fetch_add(1, Ordering::Relaxed);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("result-{id}").as_str());
            headers.insert(INVOCATION, id.to_string().as_str());
            headers.insert(NODE, node.as_str());
            let payload = match outcome {
                Ok(output) => output,
                Err(e) => {
                    headers.insert(ERROR_KIND, e.kind.as_str());
                    if let Some(t) = &e.error_type {
                        headers.insert(ERROR_TYPE, t.as_str());
                    }
                    Bytes::from(e.message)
                }
            };
            let published = match js
                .publish_with_headers(format!("fnhub.results.{id}"), headers, payload)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => {
                    tracing::warn!(error = %e, "publishing a result failed; the work will come again");
                    return;
                }
            };
            match published {
                Ok(ack) => {
                    if ack.duplicate {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(error) = message.ack().await {
                        tracing::warn!(%error, "acknowledging work failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "a result was not stored; the work will come again");
                }
            }
        });
    }
}

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
    js: jetstream::Context,
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
            .map_err(|e| CloudError::Connect(e.to_string()))?;
        let js = jetstream::new(client);
        streams(&js, config).await?;
        let registry = registry(&js).await?;
        Ok(CloudClient {
            js,
            registry,
            known: parking_lot::Mutex::new(HashSet::new()),
        })
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

    /// Submits an invocation; its id, which its result carries. Submitting the same
    /// invocation again (same id) within the duplicate window stores it once. A function
    /// no node has registered is refused ([`CloudError::UnknownFunction`]).
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
        let stream = self.js.get_stream(RESULT_STREAM).await.map_err(js_err)?;
        let consumer: consumer::PullConsumer = stream
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
                let outcome = match header(ERROR_KIND) {
                    None => Ok(m.payload.clone()),
                    Some(kind) => {
                        let kind = ErrorKind::ALL
                            .into_iter()
                            .find(|k| k.as_str() == kind)
                            .unwrap_or(ErrorKind::Unhandled);
                        let mut e = FunctionError::new(
                            kind,
                            String::from_utf8_lossy(&m.payload).into_owned(),
                        );
                        if let Some(t) = header(ERROR_TYPE) {
                            e = e.with_type(t);
                        }
                        Err(e)
                    }
                };
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
