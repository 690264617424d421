//! The client of a deployment: submits invocations, publishes events, reads results.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use fnhub_core::{Invocation, InvocationId, Outcome};
use fnhub_router::topic::TopicName;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::wire::{INVOCATION, NODE, TOPIC, VERSION, header, outcome_of};
use super::{CloudConfig, CloudError, Wire, bucket, js_err};

/// Callers of [`CloudClient::call`] waiting for their result, by invocation.
type Waiting = Arc<parking_lot::Mutex<HashMap<InvocationId, oneshot::Sender<CloudResult>>>>;

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
    /// The version that ran, when the node said.
    pub version: Option<u32>,
}

impl CloudResult {
    fn of(id: InvocationId, headers: Option<&HeaderMap>, payload: &Bytes) -> CloudResult {
        CloudResult {
            id,
            node: header(headers, NODE).unwrap_or_default(),
            outcome: outcome_of(headers, payload),
            version: header(headers, VERSION).and_then(|v| v.parse().ok()),
        }
    }
}

/// Submits invocations to the cloud runtime and reads their results.
pub struct CloudClient {
    pub(super) js: Wire,
    /// The results stream, looked up once.
    pub(super) results: jetstream::stream::Stream,
    registry: jetstream::kv::Store,
    /// Functions found in the registry, so that each is looked up once.
    known: parking_lot::Mutex<HashSet<String>>,
    waiting: Waiting,
    /// The bucket of live nodes, and what it said of each lately (node → when asked,
    /// whether it lived).
    nodes: jetstream::kv::Store,
    live: parking_lot::Mutex<HashMap<String, (std::time::Instant, bool)>>,
    /// Affinity key → the node (its subject token) that answered its last call.
    affinity: parking_lot::Mutex<HashMap<String, String>>,
    /// Follows every result of the deployment for [`call`](CloudClient::call); started by
    /// the first call.
    listener: tokio::sync::OnceCell<JoinHandle<()>>,
}

impl Drop for CloudClient {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudClient").finish_non_exhaustive()
    }
}

impl CloudClient {
    /// Connects to NATS at `url` (one server, or several of one cluster separated by
    /// commas), to the deployment `config` names, which a node must have set up
    /// ([`CloudError::UnknownDeployment`] otherwise).
    pub async fn connect(url: &str, config: &CloudConfig) -> Result<CloudClient, CloudError> {
        let client = super::connect(url).await?;
        CloudClient::connect_with(client, config).await
    }

    /// [`connect`](CloudClient::connect) on a connection made with the caller's options.
    pub async fn connect_with(
        client: async_nats::Client,
        config: &CloudConfig,
    ) -> Result<CloudClient, CloudError> {
        let js = Wire {
            context: jetstream::new(client),
            names: config.names()?,
        };
        if js.get_stream(js.names.work_stream()).await.is_err() {
            return Err(CloudError::UnknownDeployment(
                js.names.deployment().to_owned(),
            ));
        }
        CloudClient::with_wire(js).await
    }

    /// A client of a deployment whose streams are set up.
    pub(super) async fn with_wire(js: Wire) -> Result<CloudClient, CloudError> {
        let registry = bucket(&js, &js.names.registry(), 1).await?;
        let nodes = super::bucket_with(&js, &js.names.nodes(), 1, super::wire::NODE_TTL).await?;
        let results = js
            .get_stream(js.names.result_stream())
            .await
            .map_err(js_err)?;
        Ok(CloudClient {
            js,
            results,
            registry,
            known: parking_lot::Mutex::new(HashSet::new()),
            waiting: Waiting::default(),
            nodes,
            live: parking_lot::Mutex::new(HashMap::new()),
            affinity: parking_lot::Mutex::new(HashMap::new()),
            listener: tokio::sync::OnceCell::new(),
        })
    }

    /// Submits `invocation` and waits up to `timeout` for its result, from whichever node
    /// runs it. One subscription to the deployment's results serves every call; a result
    /// that it missed (while the connection was down) is read from the result stream.
    pub async fn call(
        &self,
        invocation: &Invocation,
        timeout: Duration,
    ) -> Result<CloudResult, CloudError> {
        let id = invocation.id;
        let rx = self.expect_result(id).await?;
        let _gone = Gone(self.waiting.clone(), id);
        let until = tokio::time::Instant::now() + timeout;
        self.submit_until(invocation, until).await?;
        let result = self
            .await_result(id, rx, Some(until), false)
            .await
            .map_err(|e| match e {
                CloudError::TimedOut(_) => CloudError::TimedOut(timeout),
                e => e,
            })?;
        self.served(invocation, &result);
        Ok(result)
    }

    /// Waits for the result of invocation `id`, however long ago it came (while the result
    /// stream keeps it, an hour). JetStream's passing failures (a server restarting, a
    /// cluster electing a leader) are waited out: bound the wait with a timeout.
    pub async fn result_of(&self, id: InvocationId) -> Result<CloudResult, CloudError> {
        let rx = self.expect_result(id).await?;
        let _gone = Gone(self.waiting.clone(), id);
        self.await_result(id, rx, None, true).await
    }

    /// Registers a wait for the result of `id` with the one subscription to every result
    /// of the deployment (started by the first wait).
    async fn expect_result(
        &self,
        id: InvocationId,
    ) -> Result<oneshot::Receiver<CloudResult>, CloudError> {
        self.listener
            .get_or_try_init(|| async {
                let mut sub = self
                    .js
                    .context
                    .client()
                    .subscribe(self.js.names.results_all())
                    .await
                    .map_err(|e| CloudError::Connect(e.into()))?;
                let waiting = self.waiting.clone();
                Ok::<_, CloudError>(tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        let id = header(m.headers.as_ref(), INVOCATION)
                            .and_then(|v| v.parse::<InvocationId>().ok());
                        let Some(id) = id else { continue };
                        if let Some(tx) = waiting.lock().remove(&id) {
                            let _ = tx.send(CloudResult::of(id, m.headers.as_ref(), &m.payload));
                        }
                    }
                }))
            })
            .await?;
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        Ok(rx)
    }

    /// The result of `id`: from the subscription, or from the result stream (every second,
    /// in case the subscription missed it while the connection was down, and at once when
    /// `may_be_there`: a result that came before the wait was registered); until `until`,
    /// or for as long as it takes. A call registers its wait before it submits, so it
    /// skips the first look: one request less per call.
    async fn await_result(
        &self,
        id: InvocationId,
        mut rx: oneshot::Receiver<CloudResult>,
        until: Option<tokio::time::Instant>,
        may_be_there: bool,
    ) -> Result<CloudResult, CloudError> {
        let subject = self.js.names.result(id);
        let mut look = may_be_there;
        loop {
            if look && let Ok(m) = self.results.get_last_raw_message_by_subject(&subject).await {
                return Ok(CloudResult::of(id, Some(&m.headers), &m.payload));
            }
            look = true;
            let now = tokio::time::Instant::now();
            if let Some(until) = until
                && now >= until
            {
                return Err(CloudError::TimedOut(Duration::ZERO));
            }
            let wait = until.map_or(Duration::from_secs(1), |u| {
                (u - now).min(Duration::from_secs(1))
            });
            match tokio::time::timeout(wait, &mut rx).await {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(_)) => return Err(CloudError::JetStream("the client closed".into())),
                Err(_) => {}
            }
        }
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
            .publish_with_headers(self.js.names.event_subject(), headers, payload.into())
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(())
    }

    /// Whether some node has registered `function` (looked up once, then remembered).
    pub async fn registered(&self, function: &str) -> Result<bool, CloudError> {
        if self.known.lock().contains(function) {
            return Ok(true);
        }
        let found = self.registry.get(function).await.map_err(js_err)?.is_some();
        if found {
            self.known.lock().insert(function.to_owned());
        }
        Ok(found)
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

    /// Submits an invocation; its id, which its result carries. Its whole context goes
    /// with it (trace, deadline, principal, priority, depth, affinity key, client context,
    /// parent: see [the wire format](super#the-wire-format)). Submitting the same invocation again (same id) within the duplicate window
    /// stores it once. A function no node has registered is refused
    /// ([`CloudError::UnknownFunction`]).
    pub async fn submit(&self, invocation: &Invocation) -> Result<InvocationId, CloudError> {
        let name = invocation.function.name.as_str();
        if !self.registered(name).await? {
            return Err(CloudError::UnknownFunction(name.to_owned()));
        }
        let id = invocation.id;
        let headers = super::context::encode(invocation);
        let function = invocation.function.name.as_str();
        let subject = match self.preferred(invocation).await {
            Some(node) => self.js.names.work_at(function, &node),
            None => self.js.names.work(function),
        };
        self.js
            .publish_with_headers(subject, headers, invocation.payload.clone())
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(id)
    }

    /// [`submit`](CloudClient::submit), sent again until `until` while it fails (a server
    /// restarting, a cluster electing a leader, a connection coming back): under the same
    /// id, JetStream stores it once. A function no node runs is not tried again.
    pub(super) async fn submit_until(
        &self,
        invocation: &Invocation,
        until: tokio::time::Instant,
    ) -> Result<(), CloudError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.submit(invocation).await {
                Ok(_) => return Ok(()),
                Err(e @ CloudError::UnknownFunction(_)) => return Err(e),
                Err(e) if tokio::time::Instant::now() >= until => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, id = %invocation.id, "submitting again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The node a call with an affinity key prefers: the one that answered the key's last
    /// call, while it is among the live nodes (asked at most once a second per node).
    async fn preferred(&self, invocation: &Invocation) -> Option<String> {
        let key = invocation.context.affinity_key.as_deref()?;
        let node = self.affinity.lock().get(key).cloned()?;
        let now = std::time::Instant::now();
        if let Some((asked, live)) = self.live.lock().get(&node)
            && now.duration_since(*asked) < Duration::from_secs(1)
        {
            return live.then_some(node);
        }
        let live = matches!(self.nodes.get(node.as_str()).await, Ok(Some(_)));
        self.live.lock().insert(node.clone(), (now, live));
        live.then_some(node)
    }

    /// Remembers which node answered a call with an affinity key.
    fn served(&self, invocation: &Invocation, result: &CloudResult) {
        let Some(key) = invocation.context.affinity_key.clone() else {
            return;
        };
        if result.node.is_empty() {
            return;
        }
        let mut map = self.affinity.lock();
        // Bounded: a client that saw too many keys starts over.
        if map.len() >= 65_536 {
            map.clear();
        }
        map.insert(key, super::wire::node_token(&result.node));
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
                Some(CloudResult::of(id, m.headers.as_ref(), &m.payload))
            });
            std::future::ready(out)
        }))
    }
}

/// Removes a caller's entry from the waiting map when its call ends, however it ends.
struct Gone(Waiting, InvocationId);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

#[cfg(feature = "http")]
impl crate::http::Dispatch for CloudClient {
    fn runs<'a>(
        &'a self,
        function: &'a fnhub_core::FunctionName,
    ) -> fnhub_core::BoxFuture<'a, bool> {
        Box::pin(async move { self.registered(function.as_str()).await.unwrap_or(false) })
    }

    fn call(
        &self,
        invocation: Invocation,
        wait: Duration,
    ) -> fnhub_core::BoxFuture<'_, Result<crate::http::Dispatched, String>> {
        Box::pin(async move {
            let r = CloudClient::call(self, &invocation, wait)
                .await
                .map_err(|e| e.to_string())?;
            Ok(crate::http::Dispatched::new(r.outcome, r.version, r.node))
        })
    }

    fn submit(&self, invocation: Invocation) -> fnhub_core::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            CloudClient::submit(self, &invocation)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
