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
//! - A node whose hub does not admit an invocation (its queue is full, or it is shutting
//!   down) hands it back to JetStream with a short delay (a NAK), so that it comes again,
//!   here or on another node, rather than ending in an error. The replay a wake starts
//!   (below) is admitted the same way: it runs on one of the hub's workers, as an
//!   invocation of [`RESUME_FUNCTION`](crate::RESUME_FUNCTION), so the hub's load counts it.
//!
//! - The function registry is the KV bucket `FNHUB_FUNCTIONS`: each node records the
//!   functions its hub has deployed (name → versions and the nodes that run it) when it
//!   starts, and [`CloudClient::submit`] refuses a function no node has recorded.
//!
//! ## Durable executions across nodes
//!
//! Give every node's hub the same [`fnhub_checkpoint::nats::NatsStore`] (the JetStream
//! object store) as its checkpoint store, and a durable execution resumes on whichever node
//! takes its next piece of work:
//!
//! - A first run that suspends publishes no result (the caller's result comes when the
//!   execution finishes, from the node that finishes it) and is acknowledged: the
//!   checkpoint holds it.
//! - A durable sleep becomes a *wake* on `fnhub.work.fnhub-resume`, with the execution, the
//!   journal position of the sleep and the time it is due. A node that takes it early hands
//!   it back with a delay (a NAK with delay), so the timer survives the node that set it.
//! - A child runs through the work stream like any invocation, carrying its parent. The
//!   node that finishes the child publishes its result and a wake of the parent with that
//!   outcome, so a parent suspended on a slow child resumes wherever the wake lands. A
//!   parent still waiting for the child inline simply reads the child's result.
//! - Only an execution suspended on the woken operation runs ([`Engine::wake`]). A wake
//!   that finds it still running is dropped: that run reads the child's result itself, or
//!   suspends and then finds the result already published and wakes itself. One that finds
//!   it suspended on a later operation asks again for that operation's wake.
//! - A start or a wake delivered again after the ack wait means the node that took it
//!   died, perhaps in the middle of the run: the execution continues from its journal
//!   ([`Engine::take_over`]), so completed steps are not run again.
//! - While a node runs a piece of work, it tells JetStream it is in progress every third
//!   of the ack wait, so a long run is not delivered to a second node while its node lives.
//! - A [`wait_for`](fnhub_checkpoint::durable::DurableContext::wait_for) is recorded in
//!   the KV bucket `FNHUB_WAITS` (execution → topic filter and journal position). Every
//!   node follows that bucket with a watch, and matches against it the events published
//!   on its hub ([`EdgeHub::publish`]) and those sent to the deployment
//!   ([`CloudClient::publish`], taken by one node). A met wait becomes a wake carrying the
//!   event's payload, with the wait's message id, so two events that meet one wait at
//!   once wake it once; the wait is then removed. An event reaches the waits that the node
//!   matching it has seen: those recorded before it, give or take the watch's delay of a
//!   few milliseconds.
//! - An execution shed under load (see
//!   [`EdgeHubBuilder::load_policy`](crate::EdgeHubBuilder::load_policy)) becomes a wake at
//!   once. A node that is itself shedding hands such a wake back (200 ms), so shed work
//!   moves to the nodes with room.
//!
//! [`Engine::wake`]: fnhub_checkpoint::durable::Engine::wake
//! [`Engine::take_over`]: fnhub_checkpoint::durable::Engine::take_over

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use fnhub_checkpoint::durable::{RunResult, Woken};
use fnhub_core::{
    ErrorKind, ExecutionId, FunctionError, FunctionRef, Invocation, InvocationId, Outcome,
    PendingDependency,
};
use fnhub_router::topic::{TopicFilter, TopicName};
use fnhub_router::{SubscriptionId, SubscriptionTable};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::EdgeHub;
use crate::durable::DurableEnd;

const WORK_STREAM: &str = "FNHUB_WORK";
const RESULT_STREAM: &str = "FNHUB_RESULTS";
const WORKERS: &str = "fnhub-workers";
const FUNCTION: &str = "Fnhub-Function";
const INVOCATION: &str = "Fnhub-Invocation";
const NODE: &str = "Fnhub-Node";
const ERROR_KIND: &str = "Fnhub-Error-Kind";
const ERROR_TYPE: &str = "Fnhub-Error-Type";
const REGISTRY: &str = "FNHUB_FUNCTIONS";
/// The invocation's priority (0–255), when it is not the default.
const PRIORITY: &str = "Fnhub-Priority";
/// The parent execution of a child invocation.
const PARENT: &str = "Fnhub-Parent";
/// A wake: the execution to wake...
const WAKE: &str = "Fnhub-Wake";
/// ...the journal position of the operation that has its result...
const AT: &str = "Fnhub-At";
/// ...and, for a timer, when it is due (Unix milliseconds).
const NOT_BEFORE: &str = "Fnhub-Not-Before";
/// The KV bucket of event waits: execution → `{"filter", "at"}`.
const WAITS: &str = "FNHUB_WAITS";
/// The topic of an event published through [`CloudClient::publish`].
const TOPIC: &str = "Fnhub-Topic";
/// Why a wake was sent, when it is not for a result: `load` for an execution shed
/// under load.
const CAUSE: &str = "Fnhub-Cause";
/// The subject of events published through [`CloudClient::publish`].
const EVENT_SUBJECT: &str = "fnhub.work.fnhub-event";
/// How soon a node that is itself shedding hands back the wake of a shed execution.
const SHED_RETRY: Duration = Duration::from_millis(200);
/// How soon a wake that could not run (on a node without the function) comes again.
const RETRY: Duration = Duration::from_secs(1);
/// How soon an invocation that a full hub handed back comes again.
const HAND_BACK: Duration = Duration::from_millis(50);
/// Deliveries after which a wake that cannot run anywhere is given up, with a warning.
const MAX_WAKE_DELIVERIES: i64 = 300;

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
    /// The hub already serves another cloud runtime node.
    #[error("this hub already serves a cloud runtime node")]
    AlreadyAttached,
    /// An event's topic is not a valid MQTT topic name.
    #[error("invalid topic {0}")]
    InvalidTopic(String),
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
    /// Invocations one node takes at once. Default 64. Children of durable executions
    /// are not counted (their parents may hold every slot while they wait for them); the
    /// hub's own admission bounds them.
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

    /// Sets how many invocations one node takes at once (at least 1).
    pub fn with_in_flight(mut self, in_flight: usize) -> CloudConfig {
        self.in_flight = in_flight.max(1);
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

/// The KV bucket `name`, made when it is not there.
async fn bucket(js: &jetstream::Context, name: &str) -> Result<jetstream::kv::Store, CloudError> {
    if let Ok(kv) = js.get_key_value(name).await {
        return Ok(kv);
    }
    // The bucket's stream, made by hand: `create_key_value` first asks for the account's
    // info, which async-nats 0.51 cannot read from the nats-server 2.9 of these machines.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    js.get_key_value(name).await.map_err(js_err)
}

/// Records in the registry that `node` runs every function `hub` has deployed.
async fn register(js: &jetstream::Context, node: &str, hub: &EdgeHub) -> Result<(), CloudError> {
    let kv = bucket(js, REGISTRY).await?;
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

/// One execution's wait for an event, as the bucket holds it.
#[derive(Debug, Clone)]
struct Wait {
    execution: ExecutionId,
    /// The journal position of the `wait_for`.
    at: u32,
    /// The entry's revision in the bucket: only that entry is deleted once it is met.
    revision: u64,
}

/// The event waits of every node's durable executions, read from the bucket
/// [`WAITS`] and kept current by a watch, so that an event is matched here without a round
/// trip: in a subscription table, at a cost that does not grow with the number of waits.
#[derive(Clone, Default)]
struct Waits(Arc<WaitsInner>);

#[derive(Default)]
struct WaitsInner {
    table: SubscriptionTable<Wait>,
    /// Each execution's entry in the table, and its revision.
    entries: parking_lot::Mutex<HashMap<ExecutionId, (SubscriptionId, u64)>>,
}

impl Waits {
    /// Applies an entry of the bucket; an older revision than the one held is ignored.
    fn apply(&self, key: &str, value: Option<&[u8]>, revision: u64) {
        let Ok(execution) = key.parse::<ExecutionId>() else {
            return;
        };
        let mut entries = self.0.entries.lock();
        if entries.get(&execution).is_some_and(|(_, r)| *r > revision) {
            return;
        }
        if let Some((id, _)) = entries.remove(&execution) {
            self.0.table.remove(id);
        }
        let parsed = value.and_then(|v| {
            let v: serde_json::Value = serde_json::from_slice(v).ok()?;
            let filter: TopicFilter = v.get("filter")?.as_str()?.parse().ok()?;
            let at = u32::try_from(v.get("at")?.as_u64()?).ok()?;
            Some((filter, at))
        });
        if let Some((filter, at)) = parsed {
            let wait = Wait {
                execution,
                at,
                revision,
            };
            let id = self.0.table.insert(filter, wait);
            entries.insert(execution, (id, revision));
        }
    }

    /// The waits an event on `topic` meets.
    fn matching(&self, topic: &TopicName) -> Vec<Wait> {
        let mut out = Vec::new();
        if !self.0.table.is_empty() {
            self.0
                .table
                .for_each_match(topic, |_, w| out.push(w.clone()));
        }
        out
    }

    /// Forgets a wait that was met (unless a newer one replaced it meanwhile).
    fn forget(&self, execution: ExecutionId, revision: u64) {
        let mut entries = self.0.entries.lock();
        if let Some((id, held)) = entries.get(&execution).copied()
            && held <= revision
        {
            entries.remove(&execution);
            self.0.table.remove(id);
        }
    }

    /// Reads the whole bucket, then follows its changes until the task is aborted. The
    /// watch starts first, so that nothing written while the bucket is read is missed.
    async fn follow(&self, kv: jetstream::kv::Store) -> Result<JoinHandle<()>, CloudError> {
        let mut watch = kv.watch_all().await.map_err(js_err)?;
        let mut keys = kv.keys().await.map_err(js_err)?;
        let mut listed = Vec::new();
        while let Some(key) = keys.next().await {
            listed.push(key.map_err(js_err)?);
        }
        for key in listed {
            if let Some(entry) = kv.entry(key.as_str()).await.map_err(js_err)? {
                let value =
                    (entry.operation == jetstream::kv::Operation::Put).then_some(&entry.value[..]);
                self.apply(&entry.key, value, entry.revision);
            }
        }
        let waits = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(entry) => {
                            let value = (entry.operation == jetstream::kv::Operation::Put)
                                .then_some(&entry.value[..]);
                            waits.apply(&entry.key, value, entry.revision);
                        }
                        Err(error) => tracing::warn!(%error, "watching event waits failed"),
                    }
                }
                // The watch ended (the connection is being re-established): follow again
                // from the start, which replays the bucket's current entries.
                tokio::time::sleep(RETRY).await;
                match kv.watch_with_history(">").await {
                    Ok(w) => watch = w,
                    Err(error) => tracing::warn!(%error, "cannot watch event waits"),
                }
            }
        }))
    }
}

/// Wakes every execution whose wait an event on `topic` meets, with the event's payload,
/// and removes those waits. Two events that meet one wait at once wake it once (the wake's
/// message id is the wait's). False if a wake was not stored.
async fn wake_waiting(
    js: &jetstream::Context,
    kv: &jetstream::kv::Store,
    waits: &Waits,
    topic: &TopicName,
    payload: &Bytes,
) -> bool {
    let mut all = true;
    for wait in waits.matching(topic) {
        let execution = wait.execution;
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("wake-{execution}-{}", wait.at).as_str(),
        );
        if !publish_wake(js, execution, wait.at, headers, payload.clone()).await {
            all = false;
            continue;
        }
        waits.forget(execution, wait.revision);
        // A newer wait of the same execution (it was woken and waits again) stays.
        if let Err(error) = kv
            .delete_expect_revision(execution.to_string(), Some(wait.revision))
            .await
        {
            tracing::debug!(%execution, %error, "a met wait was not removed (replaced or gone)");
        }
    }
    all
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
    /// Runs of durable executions (first runs and replays) that suspended here.
    pub suspended: u64,
    /// Wakes of durable executions that ran a replay here.
    pub resumed: u64,
    /// Wakes that came before they could run: a timer not due (handed back with a
    /// delay), or an execution still running (dropped: its run reads the result itself).
    pub early_wakes: u64,
    /// Invocations its hub did not admit (full, or shutting down), handed back to
    /// JetStream to come again, here or on another node.
    pub handed_back: u64,
}

#[derive(Default)]
struct Counters {
    ran: AtomicU64,
    duplicates: AtomicU64,
    redelivered: AtomicU64,
    suspended: AtomicU64,
    resumed: AtomicU64,
    early: AtomicU64,
    handed_back: AtomicU64,
}

/// One node of the cloud runtime: takes invocations from JetStream and runs them on its
/// hub. Dropping it stops taking work.
pub struct CloudRuntime {
    name: String,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
    /// Follows the event waits of the whole deployment.
    watch: JoinHandle<()>,
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
        self.watch.abort();
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
        let counters = Arc::new(Counters::default());
        let client = Arc::new(CloudClient::with_context(js.clone()).await?);
        let results = client.results.clone();
        let waits_kv = bucket(&js, WAITS).await?;
        let waits = Waits::default();
        let watch = waits.follow(waits_kv.clone()).await?;
        let attached = Attached {
            client,
            node: name.clone(),
            counters: counters.clone(),
            waits: waits.clone(),
            waits_kv: waits_kv.clone(),
        };
        if !hub.attach_remote(Arc::new(attached)) {
            watch.abort();
            return Err(CloudError::AlreadyAttached);
        }
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
        let node = Node {
            name: name.clone(),
            hub,
            js,
            results,
            waits,
            waits_kv,
            counters: counters.clone(),
            progress_every: (config.ack_wait / 3).max(Duration::from_millis(10)),
        };
        let task = tokio::spawn(work_loop(node, messages, config.in_flight.max(1)));
        Ok(CloudRuntime {
            name,
            counters,
            task,
            watch,
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
            suspended: self.counters.suspended.load(Ordering::Relaxed),
            resumed: self.counters.resumed.load(Ordering::Relaxed),
            early_wakes: self.counters.early.load(Ordering::Relaxed),
            handed_back: self.counters.handed_back.load(Ordering::Relaxed),
        }
    }
}

/// What every piece of work a node takes needs.
#[derive(Clone)]
struct Node {
    name: String,
    hub: EdgeHub,
    js: jetstream::Context,
    /// The results stream, looked up once.
    results: jetstream::stream::Stream,
    /// The event waits of every node, and their bucket.
    waits: Waits,
    waits_kv: jetstream::kv::Store,
    counters: Arc<Counters>,
    progress_every: Duration,
}

async fn work_loop(node: Node, mut messages: consumer::pull::Stream, in_flight: usize) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "pulling work failed");
                continue;
            }
        };
        // A child of a durable execution does not wait for a slot: its parent may hold one
        // while it waits for the child, and parents holding every slot would wait forever.
        // The hub's own admission still bounds it (a full hub hands it back).
        let permit = if header(message.headers.as_ref(), PARENT).is_some() {
            None
        } else {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            Some(permit)
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if header(message.headers.as_ref(), WAKE).is_some() {
                node.wake(message).await;
            } else if header(message.headers.as_ref(), TOPIC).is_some() {
                node.event(message).await;
            } else {
                node.run(message).await;
            }
        });
    }
}

/// How many times `message` has been delivered.
fn deliveries(message: &jetstream::Message) -> i64 {
    message.info().map(|i| i.delivered).unwrap_or(1)
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Runs `work`, telling JetStream every `progress_every` that `message` is still being
    /// worked on, so that it is not delivered to another node meanwhile.
    async fn in_progress<F: std::future::Future>(
        &self,
        message: &jetstream::Message,
        work: F,
    ) -> F::Output {
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval(self.progress_every);
        tick.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    let _ = message.ack_with(jetstream::AckKind::Progress).await;
                }
            }
        }
    }

    /// Hands `message` back to JetStream, to come again after `delay`, here or elsewhere.
    async fn hand_back(&self, message: jetstream::Message, delay: Duration) {
        self.counters.handed_back.fetch_add(1, Ordering::Relaxed);
        let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
    }

    /// An invocation: runs it on the hub and publishes its result, unless it started a
    /// durable execution that suspended.
    async fn run(&self, message: jetstream::Message) {
        let header = |k: &str| header(message.headers.as_ref(), k);
        let id = header(INVOCATION).and_then(|v| v.parse::<InvocationId>().ok());
        let function = header(FUNCTION).and_then(|v| v.parse::<FunctionRef>().ok());
        let (Some(id), Some(function)) = (id, function) else {
            tracing::warn!(subject = %message.subject, "malformed work message dropped");
            let _ = message.ack().await;
            return;
        };
        if deliveries(&message) > 1 {
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let mut invocation = Invocation::new(function, message.payload.clone());
        invocation.id = id;
        invocation.context.parent = header(PARENT).and_then(|v| v.parse().ok());
        if let Some(priority) = header(PRIORITY).and_then(|v| v.parse::<u8>().ok()) {
            invocation.context.priority = fnhub_core::Priority(priority);
        }
        let parent = invocation.context.parent;
        let called = self
            .in_progress(&message, self.hub.call_tracked(invocation))
            .await;
        self.counters.ran.fetch_add(1, Ordering::Relaxed);
        let outcome = match called {
            Ok((_, Some(DurableEnd::Suspended(pending, at)))) => {
                self.counters.suspended.fetch_add(1, Ordering::Relaxed);
                if self.suspended(id.into(), &pending, at).await {
                    let _ = message.ack().await;
                }
                return;
            }
            // Its result went out before its checkpoint was removed.
            Ok((_, Some(DurableEnd::Completed))) => {
                let _ = message.ack().await;
                return;
            }
            // Kept in the store: it runs again from its journal when this comes again.
            Ok((_, Some(DurableEnd::Failed))) => {
                let _ = message.ack_with(jetstream::AckKind::Nak(Some(RETRY))).await;
                return;
            }
            Ok((completion, None)) => completion.outcome,
            Err(e @ crate::SubmitError::UnknownFunction(_)) => {
                Err(FunctionError::new(ErrorKind::Rejected, e.to_string()))
            }
            // Full (or closing): handed back, for this node a little later or another.
            Err(_) => return self.hand_back(message, HAND_BACK).await,
        };
        if publish_outcome(&self.js, &self.name, &self.counters, id, parent, &outcome).await
            && let Err(error) = message.ack().await
        {
            tracing::warn!(%error, "acknowledging work failed");
        }
    }

    /// A wake of a durable execution: a timer that is due, or a child's outcome.
    async fn wake(&self, message: jetstream::Message) {
        let header = |k: &str| header(message.headers.as_ref(), k);
        let execution = header(WAKE).and_then(|v| v.parse::<ExecutionId>().ok());
        let at = header(AT).and_then(|v| v.parse::<u32>().ok());
        let (Some(execution), Some(at)) = (execution, at) else {
            tracing::warn!(subject = %message.subject, "malformed wake dropped");
            let _ = message.ack().await;
            return;
        };
        // An execution shed under load goes to a node that is not shedding.
        if header(CAUSE).as_deref() == Some("load") && self.hub.is_shedding() {
            return self.hand_back(message, SHED_RETRY).await;
        }
        if let Some(due) = header(NOT_BEFORE).and_then(|v| v.parse::<u64>().ok()) {
            let now = unix_ms(std::time::SystemTime::now());
            if due > now {
                self.counters.early.fetch_add(1, Ordering::Relaxed);
                let wait = Duration::from_millis(due - now);
                let _ = message.ack_with(jetstream::AckKind::Nak(Some(wait))).await;
                return;
            }
        }
        let result = outcome_of(message.headers.as_ref(), &message.payload);
        // Delivered again after the ack wait: the node that took it died, maybe in the
        // middle of the run it started. A run found going is then continued.
        let take_over = deliveries(&message) > 1;
        let woken = self
            .in_progress(&message, self.hub.wake(execution, at, result, take_over))
            .await;
        let woken = match woken {
            Ok(woken) => woken,
            // A hub without durable functions: another node may have them.
            Err(crate::SubmitError::UnknownFunction(_)) => {
                Err(fnhub_checkpoint::durable::EngineError::Interrupted(
                    "this node runs no durable functions".into(),
                ))
            }
            // Full (or closing): handed back, for this node a little later or another.
            Err(_) => return self.hand_back(message, HAND_BACK).await,
        };
        let reply = match woken {
            Ok(Woken::Ran { run }) => {
                self.counters.resumed.fetch_add(1, Ordering::Relaxed);
                let done = match run {
                    // Its result went out before its checkpoint was removed.
                    RunResult::Completed(_) => true,
                    RunResult::Suspended {
                        waiting_for, at, ..
                    } => {
                        self.counters.suspended.fetch_add(1, Ordering::Relaxed);
                        self.suspended(execution, &waiting_for, at).await
                    }
                    _ => true,
                };
                done.then_some(jetstream::AckKind::Ack)
            }
            // An old wake: ask again for the one it waits for now (the node that
            // suspended it may have died before it could).
            Ok(Woken::Waiting { waiting_for, at }) => self
                .suspended(execution, &waiting_for, at)
                .await
                .then_some(jetstream::AckKind::Ack),
            // Whoever runs it reads the result itself (a parent still waiting for its child
            // inline), or will suspend on it and then find it (see `suspended`).
            Ok(Woken::Running) => {
                self.counters.early.fetch_add(1, Ordering::Relaxed);
                Some(jetstream::AckKind::Ack)
            }
            Ok(_) => Some(jetstream::AckKind::Ack),
            // Perhaps a node without this function: another may have it.
            Err(error) if deliveries(&message) < MAX_WAKE_DELIVERIES => {
                tracing::debug!(%execution, %error, "a wake could not run here");
                Some(jetstream::AckKind::Nak(Some(RETRY)))
            }
            Err(error) => {
                tracing::warn!(%execution, %error, "a wake kept failing; given up");
                Some(jetstream::AckKind::Term)
            }
        };
        if let Some(reply) = reply {
            let _ = message.ack_with(reply).await;
        }
    }

    /// After a run suspended (or a wake found it suspended): see [`record_suspension`].
    async fn suspended(
        &self,
        execution: ExecutionId,
        pending: &PendingDependency,
        at: u32,
    ) -> bool {
        record_suspension(
            &self.js,
            &self.results,
            &self.waits_kv,
            execution,
            pending,
            at,
        )
        .await
    }

    /// An event published through [`CloudClient::publish`]: wakes the executions waiting
    /// for it.
    async fn event(&self, message: jetstream::Message) {
        let topic =
            header(message.headers.as_ref(), TOPIC).and_then(|t| t.parse::<TopicName>().ok());
        let Some(topic) = topic else {
            tracing::warn!(subject = %message.subject, "event with an invalid topic dropped");
            let _ = message.ack().await;
            return;
        };
        let reply = if wake_waiting(
            &self.js,
            &self.waits_kv,
            &self.waits,
            &topic,
            &message.payload,
        )
        .await
        {
            jetstream::AckKind::Ack
        } else {
            jetstream::AckKind::Nak(Some(RETRY))
        };
        let _ = message.ack_with(reply).await;
    }
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
async fn record_suspension(
    js: &jetstream::Context,
    results: &jetstream::stream::Stream,
    waits_kv: &jetstream::kv::Store,
    execution: ExecutionId,
    pending: &PendingDependency,
    at: u32,
) -> bool {
    match pending {
        PendingDependency::Timer(due) => {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("wake-{execution}-{at}").as_str());
            headers.insert(NOT_BEFORE, unix_ms(*due).to_string().as_str());
            publish_wake(js, execution, at, headers, Bytes::new()).await
        }
        PendingDependency::Child(child) => {
            let subject = format!("fnhub.results.{child}");
            match results.get_last_raw_message_by_subject(&subject).await {
                Ok(result) => {
                    let outcome = outcome_of(Some(&result.headers), &result.payload);
                    let (mut headers, payload) = outcome_headers(&outcome);
                    headers.insert("Nats-Msg-Id", format!("wake-{execution}-{at}-late").as_str());
                    publish_wake(js, execution, at, headers, payload).await
                }
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read a child's result; the work will come again");
                    false
                }
            }
        }
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

/// Publishes the outcome of invocation `id` and, for a child of a durable execution, wakes
/// its parent with it. False if either was not stored (the work comes again).
async fn publish_outcome(
    js: &jetstream::Context,
    node: &str,
    counters: &Counters,
    id: InvocationId,
    parent: Option<ExecutionId>,
    outcome: &Outcome,
) -> bool {
    let (error_headers, payload) = outcome_headers(outcome);
    let mut headers = error_headers.clone();
    headers.insert("Nats-Msg-Id", format!("result-{id}").as_str());
    headers.insert(INVOCATION, id.to_string().as_str());
    headers.insert(NODE, node);
    let published = match js
        .publish_with_headers(format!("fnhub.results.{id}"), headers, payload.clone())
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => {
            tracing::warn!(error = %e, "publishing a result failed; the work will come again");
            return false;
        }
    };
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
async fn publish_wake(
    js: &jetstream::Context,
    execution: ExecutionId,
    at: u32,
    mut headers: HeaderMap,
    payload: Bytes,
) -> bool {
    headers.insert(WAKE, execution.to_string().as_str());
    headers.insert(AT, at.to_string().as_str());
    let subject = format!("fnhub.work.{}", crate::durable::RESUME_FUNCTION);
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

/// The error headers and the payload that carry `outcome`.
fn outcome_headers(outcome: &Outcome) -> (HeaderMap, Bytes) {
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
fn outcome_of(headers: Option<&HeaderMap>, payload: &Bytes) -> Outcome {
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
    /// The results stream, looked up once.
    results: jetstream::stream::Stream,
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
        CloudClient::with_context(js).await
    }

    /// A client on an existing JetStream context whose streams are set up.
    async fn with_context(js: jetstream::Context) -> Result<CloudClient, CloudError> {
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

/// What a node's hub sends to the cloud runtime: its durable executions' children (run
/// through the work stream, on any node; the parent waits for the child's result or,
/// suspended, is woken by the node that ran it), their outcomes, and its events (matched
/// against the waits of every node).
struct Attached {
    client: Arc<CloudClient>,
    node: String,
    counters: Arc<Counters>,
    waits: Waits,
    waits_kv: jetstream::kv::Store,
}

impl crate::durable::Remote for Attached {
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
            if let Err(e) = client.submit(&child).await {
                return failed(e);
            }
            match client.result_of(child.id).await {
                Ok(result) => result.outcome,
                Err(e) => failed(e),
            }
        })
    }

    /// The caller's result (and the parent's wake), published before the checkpoint goes.
    fn completed(
        &self,
        finished: &fnhub_checkpoint::durable::Finished,
    ) -> fnhub_core::BoxFuture<'static, Result<(), String>> {
        let (client, node, counters) = (
            self.client.clone(),
            self.node.clone(),
            self.counters.clone(),
        );
        let id = InvocationId::from_u128(finished.execution.as_u128());
        let (parent, outcome) = (finished.context.parent, finished.outcome.clone());
        Box::pin(async move {
            if publish_outcome(&client.js, &node, &counters, id, parent, &outcome).await {
                Ok(())
            } else {
                Err("the result was not stored".into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wait(filter: &str, at: u32) -> Vec<u8> {
        serde_json::json!({ "filter": filter, "at": at })
            .to_string()
            .into_bytes()
    }

    fn woken(waits: &Waits, topic: &str) -> Vec<(ExecutionId, u32)> {
        let mut out: Vec<_> = waits
            .matching(&topic.parse().unwrap())
            .into_iter()
            .map(|w| (w.execution, w.at))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn waits_follow_the_bucket_by_revision() {
        let waits = Waits::default();
        let (a, b) = (ExecutionId::random(), ExecutionId::random());
        waits.apply(&a.to_string(), Some(&wait("orders/+/paid", 1)), 10);
        waits.apply(&b.to_string(), Some(&wait("orders/#", 3)), 11);
        assert_eq!(woken(&waits, "orders/7/paid").len(), 2);
        assert_eq!(woken(&waits, "orders/7"), vec![(b, 3)]);
        assert!(woken(&waits, "doors/7/paid").is_empty());

        // An older revision (a watch entry behind the listing) changes nothing; a newer one
        // replaces the wait.
        waits.apply(&a.to_string(), Some(&wait("doors/+", 0)), 9);
        assert!(woken(&waits, "doors/x").is_empty());
        waits.apply(&a.to_string(), Some(&wait("doors/+", 2)), 12);
        assert_eq!(woken(&waits, "doors/x"), vec![(a, 2)]);
        assert!(!woken(&waits, "orders/7/paid").contains(&(a, 1)));

        // Forgetting an older revision keeps the newer wait; a delete removes it.
        waits.forget(a, 10);
        assert_eq!(woken(&waits, "doors/x"), vec![(a, 2)]);
        waits.forget(a, 12);
        assert!(woken(&waits, "doors/x").is_empty());
        waits.apply(&b.to_string(), None, 13);
        assert!(woken(&waits, "orders/7").is_empty());

        // Garbage in the bucket is passed over.
        waits.apply("not-an-execution", Some(&wait("x", 1)), 14);
        waits.apply(&a.to_string(), Some(b"not json"), 15);
        waits.apply(&a.to_string(), Some(&wait("bad/#/filter", 1)), 16);
        assert!(woken(&waits, "x").is_empty());
        assert!(waits.0.table.is_empty());
    }
}
