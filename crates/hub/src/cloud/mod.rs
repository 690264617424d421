//! The cloud runtime (feature `nats`): hub nodes sharing invocations through NATS
//! JetStream.
//!
//! Nodes and clients of one *deployment* ([`CloudConfig::deployment`], `default` unless
//! set; `deployment = "prod"` in a config file's `[cloud]`) share its streams and buckets,
//! all named after it; two deployments on one NATS never see each other's work.
//!
//! - Callers publish invocations on `fnhub.{deployment}.work.{function}` into the
//!   work-queue stream `FNHUB_{deployment}_WORK`, with the invocation id as `Nats-Msg-Id`:
//!   a submission sent twice is stored once.
//! - Each function has one durable consumer (`workers-{function}`), shared by the nodes
//!   that run it, so each invocation goes to one node at a time and a node never sees the
//!   work of a function it lacks (it neither takes it nor rejects it). A node runs it on
//!   its own [`EdgeHub`], publishes the outcome on `fnhub.{deployment}.results.{invocation}`
//!   into the stream `FNHUB_{deployment}_RESULTS`, and acknowledges the work only then.
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
//!   invocation of the execution's own function (read from its checkpoint), so the hub's
//!   load, the function's limits and its stats count it.
//!
//! - The function registry is the KV bucket `FNHUB_{deployment}_FUNCTIONS`: each node
//!   records the functions its hub has deployed (name → versions and the nodes that run
//!   it) when it starts, and [`CloudClient::submit`] refuses a function no node has
//!   recorded. A client of a deployment no node has set up gets
//!   [`CloudError::UnknownDeployment`].
//!
//! - A node started from a config file with `[cloud]` ([`crate::config::CloudNode`]) also
//!   serves the Lambda Invoke API, `/metrics` and `/healthz`: a call of a function it
//!   lacks, or one its hub has no room for, goes to the deployment ([`CloudClient::call`])
//!   and runs on a node that has the function; a function's own call of a function its
//!   node lacks goes there too. `/healthz` reports the node's link to NATS; a node that
//!   lost it keeps serving what it runs itself, and reconnects.
//! - A call with an affinity key ([`Fnhub-Affinity`](wire::AFFINITY)) prefers the node
//!   that answered the key's last call, while that node lives and has room: see
//!   [`affinity`] for how a client sends it there, how a full node spills it and how the
//!   others take what a node that is gone left behind.
//! - With `replicas = 3` on a three-server JetStream cluster, the streams and buckets keep
//!   three copies, and the deployment loses no invocation and stores no result twice when
//!   a server dies (tested with SIGKILL and a restart, as is a single server's restart).
//!   Run nats-server 2.10 or later in a cluster: on 2.9.10 (Debian 12's package), a
//!   cluster whose server was SIGKILLed and restarted once lost the recent messages of a
//!   replicated stream (the checkpoints of suspended durable executions, which then never
//!   resumed), 1 run in 11 of the test; 2.10.26, which the tests run, kept them in 33 runs
//!   of 34 (the other did not set up in time).
//!
//! ## The wire format
//!
//! Any NATS client can submit work: publish the payload (the function's event, as JSON or
//! any bytes) to `fnhub.{deployment}.work.{function}` with JetStream (so the publish is
//! acknowledged once stored) and these headers, then read the result from
//! `fnhub.{deployment}.results.{invocation}` (a core subscription, or the result stream,
//! which keeps results an hour).
//!
//! | header | | meaning |
//! | --- | --- | --- |
//! | `Nats-Msg-Id` | required | the invocation id again: a repeated submission is stored once |
//! | [`Fnhub-Invocation`](wire::INVOCATION) | required | the invocation id, a UUID (`67e55044-10b1-426f-9247-bb680e5fe0c8`) |
//! | [`Fnhub-Function`](wire::FUNCTION) | required | `name`, `name:version` or `name:alias` |
//! | [`Fnhub-Traceparent`](wire::TRACEPARENT) | optional | W3C `traceparent` of the caller; the run is a child span of it |
//! | [`Fnhub-Tracestate`](wire::TRACESTATE) | optional | W3C `tracestate`, passed through |
//! | [`Fnhub-Deadline`](wire::DEADLINE) | optional | Unix milliseconds by which the caller needs the outcome; at most a day ahead |
//! | [`Fnhub-Principal`](wire::PRINCIPAL) | optional | the principal (tenant) the call runs for (a process function reads it as `context.tenant_id`) |
//! | [`Fnhub-Priority`](wire::PRIORITY) | optional | 0–255, default 128 |
//! | [`Fnhub-Depth`](wire::DEPTH) | optional | calls that led to this one, default 0; at most the hub's depth limit |
//! | [`Fnhub-Affinity`](wire::AFFINITY) | optional | calls with the same key prefer the same warm environment |
//! | [`Fnhub-Client-Context`](wire::CLIENT_CONTEXT) | optional | Lambda's client context, a JSON object |
//! | [`Fnhub-Parent`](wire::PARENT) | optional | the durable execution this call is a child of |
//!
//! A result carries [`Fnhub-Invocation`](wire::INVOCATION), [`Fnhub-Node`](wire::NODE)
//! (where it ran) and [`Fnhub-Version`](wire::VERSION); its payload is the function's
//! output, or, when [`Fnhub-Error-Kind`](wire::ERROR_KIND) is present (`handled`,
//! `unhandled`, `timeout`, `deadline_exceeded`, `rejected`, ...), the error's message, with
//! [`Fnhub-Error-Type`](wire::ERROR_TYPE) when it has one.
//!
//! A work message a node cannot run is refused ([`WireError`]), counted in
//! [`NodeStats::refused`] and `fnhub_cloud_refused_total{reason}`, and never delivered
//! again: one without an id is dropped with a warning; one with an id gets a `rejected`
//! result naming the header (a missing function, a header that does not parse, a deadline
//! more than a day ahead, a depth over the limit). A deadline already past is no lie: the
//! call ends as `deadline_exceeded`.
//!
//! ## Toward more machines
//!
//! **A fleet of edge hubs joining a cloud deployment.** The natural way is NATS leaf
//! nodes: each edge site runs its own `nats-server` with a `leafnodes` remote to the cloud
//! cluster (credentials and TLS as for any client), and its hub connects locally. Core
//! subjects cross the leaf link, so an edge hub's `CloudClient` reaches the deployment
//! through it and results come back the same way, and while the link is down the site's
//! own server still serves the site. What must change first: the streams live in the
//! cloud's JetStream domain, and fnhub does not yet take a domain (or an API prefix) in
//! [`CloudConfig`]: an edge hub would today need its leaf server to share the cloud's
//! JetStream, which defeats working offline. Edge hubs should also be clients of a
//! deployment (submitting, not taking work), or nodes of a deployment of their own, so
//! that the cloud never waits on a site behind a slow link.
//!
//! **The work stream at 100 nodes**, measured here with `cargo bench -p fnhub-benches
//! --features nats --bench cloud_fleet` (100 nodes in one process, one `nats-server`, two
//! cores):
//!
//! - The shared consumers do not grow with nodes: a deployment has one per function, plus
//!   one for wakes and one for events, shared by every node that runs them; affinity adds
//!   one per node and function (the calls that prefer that node). 100 nodes of one
//!   function are 103 consumers and 400 pull subscriptions. Starting the 100 took 0.78 s
//!   (7.8 ms a node: streams and buckets looked up, the registry written, four
//!   subscriptions, its entry among the live nodes).
//! - Idle, the 100 nodes and their server exchange about 160 messages a second in all
//!   (1.6 a node: each node renews its live entry every 2 s, and lists the work stream's
//!   consumers every 4 s to find calls a gone node left). A first version looked every
//!   live entry up from every node, 4,240 messages a second for 100 nodes, growing with
//!   the square of the nodes; now only a consumer with calls waiting and no pull request
//!   from its node is looked up.
//! - Busy, the 100 shared the work evenly (each ran 508 to 510 of 50,900 invocations) at
//!   235 µs an invocation end to end, 1.82× raw JetStream's publish, pull and ack on the
//!   same server (129 µs). Two nodes do the same at 1.3–2.3× raw's time (`--bench
//!   cloud`, from machine to machine): with two cores shared by the server, the client and
//!   the nodes, what limits the rate is the server's work per invocation (the submission,
//!   its delivery and acknowledgement, the result's publication, deduplicated by message
//!   id, and its delivery), not the number of nodes. Raw JetStream made to hand back a
//!   stored result per message the same way is no faster: two nodes ran at 0.82–1.22×
//!   its rate, on one server and on a cluster. The cost is the result's, not fnhub's.
//!
//! What holds: the consumer count, the idle cost, the spread of work, and at-least-once
//! with one result per invocation whatever the number of nodes. What must change before
//! hundreds of busy nodes: every result has a subject of its own
//! (`fnhub.{deployment}.results.{invocation}`) kept for an hour, so at thousands of
//! invocations a second the result stream indexes millions of subjects (a shorter
//! `max_age`, or results sent to the caller's own inbox, would bound it); one consumer per
//! function is one server-side sequence for all of that function's work (a very busy
//! function would be split over several subjects and consumers); and the registry's
//! entry of a function is rewritten by every node that starts, last writer winning (it is
//! only read to refuse unknown functions, but a node list there can miss a node).
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

pub mod affinity;
mod client;
mod context;
mod decide;
mod executions;
mod node;
mod suspend;
mod waits;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::EdgeHub;
pub use client::{CloudClient, CloudResult};
pub use context::WireError;
use node::{Node, work_loop};
use suspend::Attached;
use waits::Waits;
use wire::Names;

/// A JetStream context and the names of the deployment it works in.
#[derive(Clone)]
pub(crate) struct Wire {
    pub(crate) context: jetstream::Context,
    pub(crate) names: Arc<Names>,
}

impl std::ops::Deref for Wire {
    type Target = jetstream::Context;
    fn deref(&self) -> &jetstream::Context {
        &self.context
    }
}

/// A cloud runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[source] BoxError),
    /// A JetStream operation failed.
    #[error("JetStream: {0}")]
    JetStream(#[source] BoxError),
    /// No node has registered the function.
    #[error("no node runs {0}")]
    UnknownFunction(String),
    /// The hub already serves another cloud runtime node.
    #[error("this hub already serves a cloud runtime node")]
    AlreadyAttached,
    /// An event's topic is not a valid MQTT topic name.
    #[error("invalid topic {0}")]
    InvalidTopic(String),
    /// A deployment name that cannot name streams and subjects.
    #[error("invalid deployment {0}")]
    InvalidDeployment(String),
    /// No node has set up this deployment's streams.
    #[error("no node serves deployment {0:?}")]
    UnknownDeployment(String),
    /// No result came in time.
    #[error("no result within {0:?}")]
    TimedOut(Duration),
}

/// Connects to `url`: one server, or the servers of one cluster separated by commas.
pub(crate) async fn connect(url: &str) -> Result<async_nats::Client, CloudError> {
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    async_nats::connect(servers)
        .await
        .map_err(|e| CloudError::Connect(e.into()))
}

/// The error a [`CloudError`] wraps, kept whole (its own source chain included).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn js_err(e: impl Into<BoxError>) -> CloudError {
    CloudError::JetStream(e.into())
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
    /// The deployment: nodes and clients with the same one share one work stream.
    /// Default `default`.
    pub deployment: String,
    /// Copies of each stream and bucket in a JetStream cluster (1 to 5). Default 1; 3 on a
    /// three-server cluster keeps every invocation through the loss of one server.
    pub replicas: usize,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            ack_wait: Duration::from_secs(10),
            in_flight: 64,
            duplicate_window: Duration::from_secs(120),
            deployment: "default".into(),
            replicas: 1,
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

    /// Sets the deployment (checked when a node or client connects).
    pub fn with_deployment(mut self, deployment: impl Into<String>) -> CloudConfig {
        self.deployment = deployment.into();
        self
    }

    /// Sets how many copies a JetStream cluster keeps of each stream and bucket (1 to 5).
    pub fn with_replicas(mut self, replicas: usize) -> CloudConfig {
        self.replicas = replicas.clamp(1, 5);
        self
    }

    pub(crate) fn names(&self) -> Result<Arc<Names>, CloudError> {
        Names::new(&self.deployment)
            .map(Arc::new)
            .map_err(CloudError::InvalidDeployment)
    }
}

/// Sets up the deployment's streams (a node does; they are kept if they are there).
pub(super) async fn streams(js: &Wire, config: &CloudConfig) -> Result<(), CloudError> {
    js.get_or_create_stream(stream::Config {
        name: js.names.work_stream(),
        subjects: vec![js.names.work_all()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: config.duplicate_window,
        num_replicas: config.replicas,
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    js.get_or_create_stream(stream::Config {
        name: js.names.result_stream(),
        subjects: vec![js.names.results_all()],
        duplicate_window: config.duplicate_window,
        max_age: Duration::from_secs(3600),
        num_replicas: config.replicas,
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    for name in [js.names.registry(), js.names.waits()] {
        bucket(js, &name, config.replicas).await?;
    }
    bucket_with(js, &js.names.nodes(), config.replicas, wire::NODE_TTL).await?;
    Ok(())
}

/// The KV bucket `name`, made (with `replicas` copies) when it is not there.
pub(super) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<jetstream::kv::Store, CloudError> {
    bucket_with(js, name, replicas, Duration::ZERO).await
}

/// [`bucket`], whose entries go `max_age` after they were written (never when zero).
pub(super) async fn bucket_with(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<jetstream::kv::Store, CloudError> {
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
        num_replicas: replicas,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(js_err)?;
    js.get_key_value(name).await.map_err(js_err)
}

/// Records in the registry that `node` runs every function `hub` has deployed.
async fn register(js: &Wire, node: &str, hub: &EdgeHub) -> Result<(), CloudError> {
    let kv = bucket(js, &js.names.registry(), 1).await?;
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
    /// Work messages refused: garbage (no invocation id or function), or headers that
    /// lie (a deadline more than a day ahead, a depth over the limit). Each is logged; a
    /// refused invocation with an id gets a `Rejected` result naming the header.
    pub refused: u64,
    /// Wakes that found no checkpoint of their execution and no result of it either (a
    /// replica that has not caught up after a server's loss, say): each comes again a
    /// second later rather than being taken for the execution's end.
    pub wakes_without_checkpoint: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) ran: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) redelivered: AtomicU64,
    pub(super) suspended: AtomicU64,
    pub(super) resumed: AtomicU64,
    pub(super) early: AtomicU64,
    pub(super) handed_back: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) unfound: AtomicU64,
}

/// One node of the cloud runtime: takes invocations from JetStream and runs them on its
/// hub. Dropping it stops taking work.
pub struct CloudRuntime {
    name: String,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
    /// Follows the event waits of the whole deployment.
    watch: JoinHandle<()>,
    client: async_nats::Client,
    front: Arc<CloudClient>,
    /// Renews this node's entry in the bucket of live nodes.
    alive: JoinHandle<()>,
    /// Takes the calls that preferred nodes now gone.
    rescue: JoinHandle<()>,
    /// Lambda durable executions: the bucket's writer, the take-up of those whose node is
    /// gone, and the answers to requests forwarded here.
    executions: [JoinHandle<()>; 3],
    nodes_kv: jetstream::kv::Store,
    token: String,
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
        self.alive.abort();
        self.rescue.abort();
        for task in &self.executions {
            task.abort();
        }
        // Gone now, not when the entry expires: calls that preferred it go elsewhere.
        let (kv, token) = (self.nodes_kv.clone(), self.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = kv.purge(token).await;
            });
        }
    }
}

/// Keeps the Lambda durable executions of `node`'s hub in the deployment's bucket, claims
/// those it took up from its folder, and starts taking up those of nodes that are gone and
/// answering requests for its own (see [`executions`]).
async fn executions_of(
    node: &Node,
    nodes_kv: &jetstream::kv::Store,
    client: &async_nats::Client,
    config: &CloudConfig,
    token: &str,
) -> Result<[JoinHandle<()>; 3], CloudError> {
    let names = &node.js.names;
    let kv = bucket(&node.js, &names.executions(), config.replicas).await?;
    let (replica, writer) = executions::Executions::start(
        &node.hub,
        kv,
        nodes_kv.clone(),
        client.clone(),
        names.clone(),
        token.to_owned(),
    );
    if !node.hub.dex().set_replica(replica.clone()) {
        writer.abort();
        return Err(CloudError::AlreadyAttached);
    }
    replica.adopt_local(&node.hub).await;
    let take_up = tokio::spawn(replica.take_up(node.hub.downgrade()));
    let answer = tokio::spawn(executions::answer_forwarded(
        client.clone(),
        names.executions_at(token),
        node.hub.downgrade(),
    ));
    Ok([writer, take_up, answer])
}

/// The durable consumer `durable` of the work stream, taking the subject `filter`.
pub(super) async fn work_consumer(
    work: &jetstream::stream::Stream,
    durable: &str,
    filter: String,
    config: &CloudConfig,
) -> Result<consumer::PullConsumer, CloudError> {
    work.get_or_create_consumer(
        durable,
        consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: filter,
            ack_wait: config.ack_wait,
            max_ack_pending: 100_000,
            num_replicas: config.replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(js_err)
}

impl CloudRuntime {
    /// Connects to NATS at `url` (one server, or several of one cluster separated by
    /// commas) as node `name` and starts taking invocations for `hub`.
    pub async fn start(
        url: &str,
        name: impl Into<String>,
        hub: EdgeHub,
        config: CloudConfig,
    ) -> Result<CloudRuntime, CloudError> {
        let client = connect(url).await?;
        CloudRuntime::start_with(client, name, hub, config).await
    }

    /// [`start`](CloudRuntime::start) on a connection made with the caller's options
    /// (credentials, TLS, reconnection).
    ///
    /// The node sets up the deployment's streams and buckets, records the functions its
    /// hub runs in the registry, and takes work from one consumer per function it runs
    /// (shared with the other nodes that run it), plus those of wakes and events: the
    /// work of a function it lacks stays for the nodes that have it.
    pub async fn start_with(
        client: async_nats::Client,
        name: impl Into<String>,
        hub: EdgeHub,
        config: CloudConfig,
    ) -> Result<CloudRuntime, CloudError> {
        let name = name.into();
        let names = config.names()?;
        let js = Wire {
            context: jetstream::new(client.clone()),
            names: names.clone(),
        };
        streams(&js, &config).await?;
        register(&js, &name, &hub).await?;
        let counters = Arc::new(Counters::default());
        let cloud_client = Arc::new(CloudClient::with_wire(js.clone()).await?);
        let results = cloud_client.results.clone();
        let waits_kv = bucket(&js, &names.waits(), config.replicas).await?;
        let waits = Waits::default();
        let watch = waits.follow(waits_kv.clone()).await?;
        let attached = Attached {
            client: cloud_client.clone(),
            node: name.clone(),
            counters: counters.clone(),
            waits: waits.clone(),
            waits_kv: waits_kv.clone(),
        };
        if !hub.attach_cloud(Arc::new(attached)) {
            watch.abort();
            return Err(CloudError::AlreadyAttached);
        }
        let work = js.get_stream(names.work_stream()).await.map_err(js_err)?;
        let mut functions: Vec<String> =
            hub.deployed().iter().map(|s| s.name.to_string()).collect();
        functions.push(crate::durable::RESUME_FUNCTION.to_owned());
        functions.push("fnhub-event".to_owned());
        functions.sort();
        functions.dedup();
        let batch = config.in_flight.max(1);
        let token = wire::node_token(&name);
        // Each function's shared consumer, and the one of its calls that prefer this node
        // (an affinity key it served last).
        let mut subjects = Vec::new();
        for function in &functions {
            subjects.push((names.consumer(function), names.work(function)));
            if function != crate::durable::RESUME_FUNCTION && function != "fnhub-event" {
                subjects.push((
                    names.consumer_at(function, &token),
                    names.work_at(function, &token),
                ));
            }
        }
        let mut streams = Vec::new();
        for (durable, filter) in subjects {
            let consumer = work_consumer(&work, &durable, filter, &config).await?;
            // At most a slot's worth held unstarted: what a node holds but has not begun
            // is not reported in progress, and would come again after the ack wait.
            let messages = consumer
                .stream()
                .max_messages_per_batch(batch)
                .messages()
                .await
                .map_err(js_err)?;
            streams.push(messages);
        }
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
        let nodes_kv =
            bucket_with(&node.js, &names.nodes(), config.replicas, wire::NODE_TTL).await?;
        nodes_kv
            .put(token.as_str(), Bytes::from(name.clone()))
            .await
            .map_err(js_err)?;
        let executions = executions_of(&node, &nodes_kv, &client, &config, &token).await?;
        let alive = tokio::spawn(affinity::heartbeat(nodes_kv.clone(), token.clone()));
        let rescue = tokio::spawn(affinity::rescue(
            node.clone(),
            work,
            nodes_kv.clone(),
            functions,
            config.clone(),
        ));
        let messages = futures_util::stream::select_all(streams);
        let task = tokio::spawn(work_loop(node, messages, batch));
        Ok(CloudRuntime {
            name,
            counters,
            task,
            watch,
            client,
            front: cloud_client,
            alive,
            rescue,
            executions,
            nodes_kv,
            token,
        })
    }

    /// Whether the node's connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Says whether the node's connection to NATS is up, for as long as it is kept (a
    /// health check's view of the node).
    pub fn connection_probe(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let client = self.client.clone();
        Arc::new(move || client.connection_state() == async_nats::connection::State::Connected)
    }

    /// The client the node submits through: what its front door sends calls to, so they
    /// run on whichever node has room and the function.
    pub fn client(&self) -> Arc<CloudClient> {
        self.front.clone()
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
            refused: self.counters.refused.load(Ordering::Relaxed),
            wakes_without_checkpoint: self.counters.unfound.load(Ordering::Relaxed),
        }
    }
}
