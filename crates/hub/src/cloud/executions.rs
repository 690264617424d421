//! Lambda durable executions across nodes: every execution a node's hub runs is kept in
//! the deployment's bucket `FNHUB_{deployment}_EXECUTIONS`, so that when the node is gone
//! another node takes it up, and any node answers for it meanwhile.
//!
//! - `x.{id}`: the execution as saved (its operations, status, result) and its node's
//!   token. Each node writes its own with compare-and-set on the revision it last wrote:
//!   a write refused means another node took the execution up, and this one lets it go.
//! - `r.{id}`: present while the execution runs, holding its node's token; what the
//!   nodes scan to find executions whose node left the bucket of live nodes.
//! - A change is answered (a checkpoint acknowledged) only once it is in the bucket, so
//!   the node that takes an execution up replays from every acknowledged step.
//! - Every two heartbeats a node reads the `r.` entries; for a node that is gone, it
//!   claims each execution of a function it runs (compare-and-set of `x.{id}`: one node
//!   wins), and its hub invokes the function again, which replays.
//! - A request of the durable execution API for an execution another node runs goes to
//!   that node (`fnhub.{deployment}.executions.{node}`, NATS request and reply);
//!   `ListDurableExecutionsByFunction` lists every node's executions from the bucket.
//! - `n.{function}.{name}`: an execution name, reserved by the node that starts it, with
//!   the input and then the ARN: a start under that name on another node finds it (the
//!   same input) or is refused (another).
//! - Every ten minutes a node removes the finished executions of nodes that are gone, once
//!   past their retention (a live node's own sweep removes its own).

mod forward;

pub(super) use forward::answer_forwarded;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use fnhub_core::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::wire::{HEARTBEAT, Names};
use crate::EdgeHub;
use crate::dex::api::ApiError;
use crate::dex::replica::{Answer, Forwarded, Located, Named, Replica};
use crate::dex::{Dex, Execution};

/// The longest a change waits to be stored before its request is answered with an error.
const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// Every how many passes of the take-up (one every two heartbeats, 4 s) a node removes the
/// finished executions of nodes that are gone: ten minutes.
const SWEEP_EVERY: u32 = 150;
/// The longest a forwarded request waits for the node that runs its execution.
const FORWARD_WAIT: Duration = Duration::from_secs(10);

fn saved_key(id: &str) -> String {
    format!("x.{id}")
}

fn running_key(id: &str) -> String {
    format!("r.{id}")
}

fn name_key(function: &str, name: &str) -> String {
    format!("n.{function}.{name}")
}

/// What `n.{function}.{name}` holds: the node that reserved the name, the input, and once
/// started, the execution's ARN.
#[derive(serde::Serialize, serde::Deserialize)]
struct Reserved {
    node: String,
    input: String,
    #[serde(default)]
    arn: Option<String>,
}

/// What `x.{id}` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    node: String,
    exec: Execution,
}

enum Write {
    /// The execution as it is now; `ended` once it finished.
    Put {
        id: String,
        bytes: Bytes,
        ended: bool,
    },
    /// The execution and its name's reservation.
    Delete(String, String),
    /// This node wrote `x.{id}` at this revision (it claimed the execution).
    Known(String, u64),
}

/// A node's executions in the deployment's bucket.
pub(super) struct Executions {
    kv: kv::Store,
    nodes: kv::Store,
    client: async_nats::Client,
    names: Arc<Names>,
    /// This node's token.
    token: String,
    writes: mpsc::UnboundedSender<(u64, Write)>,
    queued: AtomicU64,
    stored: watch::Receiver<u64>,
}

impl Executions {
    /// The replica of `hub`'s executions in `kv`, with the task that writes it (aborted
    /// with the node).
    pub(super) fn start(
        hub: &EdgeHub,
        kv: kv::Store,
        nodes: kv::Store,
        client: async_nats::Client,
        names: Arc<Names>,
        token: String,
    ) -> (Arc<Executions>, tokio::task::JoinHandle<()>) {
        let (writes, rx) = mpsc::unbounded_channel();
        let (stored_tx, stored) = watch::channel(0);
        let executions = Arc::new(Executions {
            kv: kv.clone(),
            nodes,
            client,
            names,
            token: token.clone(),
            writes,
            queued: AtomicU64::new(0),
            stored,
        });
        let writer = tokio::spawn(writer(kv, token, Arc::downgrade(hub.dex()), rx, stored_tx));
        (executions, writer)
    }

    fn queue(&self, write: Write) {
        let seq = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.writes.send((seq, write));
    }

    fn encode(&self, exec: &Execution) -> Option<Bytes> {
        let saved = Saved {
            node: self.token.clone(),
            exec: exec.clone(),
        };
        serde_json::to_vec(&saved).ok().map(Bytes::from)
    }

    async fn alive(&self, token: &str) -> bool {
        token == self.token || matches!(self.nodes.get(token).await, Ok(Some(_)))
    }

    /// [`alive`](Self::alive), asked once per node a pass.
    async fn alive_in(&self, known: &mut HashMap<String, bool>, token: &str) -> bool {
        if let Some(lives) = known.get(token) {
            return *lives;
        }
        let lives = self.alive(token).await;
        known.insert(token.to_owned(), lives);
        lives
    }

    /// Takes up execution `id` when the node that ran it is gone (or is this node, started
    /// again), and its function runs here. True if this node runs it now.
    pub(super) async fn claim(&self, hub: &EdgeHub, id: &str) -> bool {
        let dex = hub.dex();
        let entry = match self.kv.entry(saved_key(id)).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => {
                // Deleted, or never written: only the running mark is left.
                let _ = self.kv.delete(running_key(id)).await;
                return false;
            }
            Err(error) => {
                tracing::debug!(execution = %id, %error, "cannot read an execution to take it up");
                return false;
            }
        };
        let Ok(mut saved) = serde_json::from_slice::<Saved>(&entry.value) else {
            tracing::warn!(execution = %id, "an execution in the bucket does not parse; left as it is");
            return false;
        };
        if saved.exec.status.is_terminal() {
            let _ = self.kv.delete(running_key(id)).await;
            return false;
        }
        if dex.config_of(&saved.exec.function).is_none() {
            return false; // a node that runs the function takes it up
        }
        if saved.node != self.token && self.alive(&saved.node).await {
            return false;
        }
        let from = std::mem::replace(&mut saved.node, self.token.clone());
        let Ok(bytes) = serde_json::to_vec(&saved) else {
            return false;
        };
        let Ok(revision) = self
            .kv
            .update(saved_key(id), bytes.into(), entry.revision)
            .await
        else {
            return false; // another node claimed it first
        };
        if let Err(error) = self
            .kv
            .put(running_key(id), self.token.clone().into())
            .await
        {
            tracing::debug!(execution = %id, %error, "cannot mark an execution taken up as running here");
        }
        self.queue(Write::Known(id.to_owned(), revision));
        tracing::info!(execution = %id, function = %saved.exec.function, from = %from, "took up a durable execution whose node is gone");
        metrics::counter!("fnhub_cloud_executions_taken_up_total").increment(1);
        if dex.adopt(saved.exec) {
            dex.kick(id);
        }
        true
    }

    /// At start: the executions this hub took up from its checkpoint store are claimed (a
    /// node started again under its name keeps them; one another node took up meanwhile is
    /// let go); each one the bucket lacks is written.
    pub(super) async fn adopt_local(&self, hub: &EdgeHub) {
        let dex = hub.dex();
        // The hub takes them up from its store on a task of its own when it is built.
        dex.ready().await;
        for id in dex.running() {
            match self.kv.entry(saved_key(&id)).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                    let node = serde_json::from_slice::<Saved>(&entry.value)
                        .map(|s| s.node)
                        .unwrap_or_default();
                    if node == self.token || !self.alive(&node).await {
                        self.queue(Write::Known(id.clone(), entry.revision));
                        if let Some(exec) = dex.snapshot(&id) {
                            self.saved(&exec);
                        }
                        let _ = self
                            .kv
                            .put(running_key(&id), self.token.clone().into())
                            .await;
                    } else {
                        tracing::info!(execution = %id, node = %node, "another node runs this execution now");
                        dex.forget(&id);
                    }
                }
                _ => {
                    if let Some(exec) = dex.snapshot(&id) {
                        self.saved(&exec);
                    }
                }
            }
        }
        // Those the hub held for this claim (see `EdgeHubBuilder::hold_lambda_drivers`)
        // and kept: their functions are invoked again now.
        for id in dex.unhold() {
            dex.kick(&id);
        }
    }

    /// Every two heartbeats, takes up the executions whose node is gone.
    pub(super) async fn take_up(self: Arc<Self>, hub: crate::edge::WeakHub) {
        let stream_name = format!("KV_{}", self.names.executions());
        let mut passes = 0u32;
        loop {
            tokio::time::sleep(HEARTBEAT * 2).await;
            let Some(hub) = hub.upgrade() else { return };
            passes = passes.wrapping_add(1);
            if passes.is_multiple_of(SWEEP_EVERY) {
                let removed = self.sweep_orphans(hub.dex().now_ms()).await;
                if removed > 0 {
                    tracing::info!(
                        removed,
                        "removed finished durable executions of nodes that are gone, past their retention"
                    );
                }
            }
            let Ok(stream) = self.kv_stream(&stream_name).await else {
                continue;
            };
            let filter = format!("$KV.{}.r.>", self.names.executions());
            let scan = fnhub_checkpoint::nats::last_per_subject(&stream, &filter);
            let Ok(Ok(marks)) = tokio::time::timeout(Duration::from_secs(30), scan).await else {
                continue;
            };
            let mut alive: HashMap<String, bool> = HashMap::new();
            for mark in marks {
                let deleted = is_deleted(&mark);
                let Some(id) = mark.subject.rsplit('.').next() else {
                    continue;
                };
                let node = String::from_utf8_lossy(&mark.payload).into_owned();
                if deleted || node == self.token {
                    continue;
                }
                if !self.alive_in(&mut alive, &node).await {
                    self.claim(&hub, id).await;
                }
            }
        }
    }

    /// Removes the finished executions past their retention whose node is gone (a live
    /// node's own sweep removes its own), with their names: how many.
    pub(super) async fn sweep_orphans(&self, now_ms: u64) -> usize {
        let Some(all) = saved_all(&self.client, &self.names.executions()).await else {
            return 0;
        };
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut removed = 0;
        for saved in all {
            let e = &saved.exec;
            let expired = e.status.is_terminal()
                && e.end_ms
                    .is_some_and(|end| end.saturating_add(e.retention_ms) <= now_ms);
            if !expired {
                continue;
            }
            if self.alive_in(&mut alive, &saved.node).await {
                continue;
            }
            let _ = self.kv.delete(saved_key(&e.id)).await;
            let _ = self.kv.delete(name_key(&e.function, &e.name)).await;
            removed += 1;
        }
        removed
    }

    async fn kv_stream(
        &self,
        name: &str,
    ) -> Result<async_nats::jetstream::stream::Stream, async_nats::jetstream::context::GetStreamError>
    {
        async_nats::jetstream::new(self.client.clone())
            .get_stream(name)
            .await
    }
}

impl Replica for Executions {
    fn saved(&self, exec: &Execution) {
        if let Some(bytes) = self.encode(exec) {
            self.queue(Write::Put {
                id: exec.id.clone(),
                bytes,
                ended: exec.status.is_terminal(),
            });
        }
    }

    fn deleted(&self, exec: &Execution) {
        self.queue(Write::Delete(
            exec.id.clone(),
            name_key(&exec.function, &exec.name),
        ));
    }

    fn reserve_name(
        &self,
        function: &str,
        name: &str,
        input: &str,
    ) -> BoxFuture<'static, Result<Option<Named>, ApiError>> {
        let (kv, nodes, token) = (self.kv.clone(), self.nodes.clone(), self.token.clone());
        let key = name_key(function, name);
        let wanted = input.to_owned();
        let mine = Reserved {
            node: token.clone(),
            input: input.to_owned(),
            arn: None,
        };
        Box::pin(async move {
            let unavailable = |message: String| ApiError {
                status: 503,
                kind: "ServiceException",
                message,
            };
            let mine = Bytes::from(serde_json::to_vec(&mine).unwrap_or_default());
            for _ in 0..3 {
                let entry = kv
                    .entry(key.as_str())
                    .await
                    .map_err(|e| unavailable(format!("the execution names cannot be read: {e}")))?;
                let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                    match kv.create(key.as_str(), mine.clone()).await {
                        Ok(_) => return Ok(None),
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => {
                            return Err(unavailable(format!("the name cannot be reserved: {e}")));
                        }
                    }
                };
                let Ok(held) = serde_json::from_slice::<Reserved>(&entry.value) else {
                    return Err(unavailable("a name's reservation does not parse".into()));
                };
                if held.node == token {
                    return Ok(None); // this node's: its hub finds the execution by name
                }
                match held.arn {
                    Some(arn) => {
                        return Ok(Some(Named {
                            same_input: held.input == wanted,
                            arn,
                        }));
                    }
                    // Reserved by a node that went before it started the execution.
                    None if !matches!(nodes.get(held.node.as_str()).await, Ok(Some(_))) => {
                        if kv
                            .update(key.as_str(), mine.clone(), entry.revision)
                            .await
                            .is_ok()
                        {
                            return Ok(None);
                        }
                    }
                    None => {
                        return Err(unavailable(
                            "another node is starting an execution of this name; retry".into(),
                        ));
                    }
                }
            }
            Err(unavailable(
                "the name's reservation kept changing; retry".into(),
            ))
        })
    }

    fn named(&self, function: &str, name: &str, arn: &str) -> BoxFuture<'static, ()> {
        let kv = self.kv.clone();
        let key = name_key(function, name);
        let (token, arn) = (self.token.clone(), arn.to_owned());
        Box::pin(async move {
            let Ok(Some(entry)) = kv.entry(key.as_str()).await else {
                return;
            };
            let Ok(mut held) = serde_json::from_slice::<Reserved>(&entry.value) else {
                return;
            };
            if held.node != token || held.arn.is_some() {
                return;
            }
            held.arn = Some(arn);
            if let Ok(bytes) = serde_json::to_vec(&held) {
                let _ = kv.update(key.as_str(), bytes.into(), entry.revision).await;
            }
        })
    }

    fn flushed(&self) -> BoxFuture<'static, bool> {
        let target = self.queued.load(Ordering::SeqCst);
        let mut stored = self.stored.clone();
        Box::pin(async move {
            tokio::time::timeout(FLUSH_WAIT, stored.wait_for(|s| *s >= target))
                .await
                .is_ok_and(|r| r.is_ok())
        })
    }

    fn locate(&self, id: &str) -> BoxFuture<'static, Option<Located>> {
        let kv = self.kv.clone();
        let key = saved_key(id);
        Box::pin(async move {
            let value = kv.get(key).await.ok()??;
            let saved: Saved = serde_json::from_slice(&value).ok()?;
            Some(Located {
                function: saved.exec.function.clone(),
                node: saved.node,
                exec: saved.exec,
            })
        })
    }

    fn executions_of(&self, function: &str) -> BoxFuture<'static, Option<Vec<Execution>>> {
        let (client, function) = (self.client.clone(), function.to_owned());
        let bucket = self.names.executions();
        Box::pin(async move {
            let all = saved_all(&client, &bucket).await?;
            Some(
                all.into_iter()
                    .map(|s| s.exec)
                    .filter(|e| e.function == function)
                    .collect(),
            )
        })
    }

    fn forward(&self, node: String, request: Forwarded) -> BoxFuture<'static, Answer> {
        let client = self.client.clone();
        let subject = self.names.executions_at(&node);
        Box::pin(async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Fnhub-Method", request.method.as_str());
            headers.insert("Fnhub-Path", request.rest.as_str());
            headers.insert("Fnhub-Query", request.query.as_str());
            let asked = client.request_with_headers(subject, headers, request.body);
            match tokio::time::timeout(FORWARD_WAIT, asked).await {
                Ok(Ok(reply)) => forward::decode_answer(&reply.payload),
                _ => Err(ApiError {
                    status: 503,
                    kind: "ServiceException",
                    message: format!(
                        "the node running this execution ({node}) did not answer; when a node is gone another takes its executions up within {}s: retry",
                        (super::wire::NODE_TTL + HEARTBEAT * 2).as_secs()
                    ),
                }),
            }
        })
    }
}

/// Stores what is queued, in order, and says how far it got. A compare-and-set refused
/// means another node took the execution up: the hub lets it go.
async fn writer(
    kv: kv::Store,
    token: String,
    dex: Weak<Dex>,
    mut writes: mpsc::UnboundedReceiver<(u64, Write)>,
    stored: watch::Sender<u64>,
) {
    let mut revisions: HashMap<String, u64> = HashMap::new();
    while let Some((seq, write)) = writes.recv().await {
        match write {
            Write::Known(id, revision) => {
                revisions.insert(id, revision);
            }
            Write::Put { id, bytes, ended } => {
                let mut delay = Duration::from_millis(50);
                loop {
                    let written = match revisions.get(&id) {
                        Some(&revision) => kv
                            .update(saved_key(&id), bytes.clone(), revision)
                            .await
                            .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                        None => kv
                            .create(saved_key(&id), bytes.clone())
                            .await
                            .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
                    };
                    match written {
                        Ok(revision) => {
                            let first = revisions.insert(id.clone(), revision).is_none();
                            if ended {
                                let _ = kv.delete(running_key(&id)).await;
                            } else if first {
                                let _ = kv.put(running_key(&id), token.clone().into()).await;
                            }
                            break;
                        }
                        Err(true) => {
                            tracing::warn!(execution = %id, "another node took this durable execution up; letting it go");
                            revisions.remove(&id);
                            if let Some(dex) = dex.upgrade() {
                                dex.forget(&id);
                            }
                            break;
                        }
                        Err(false) => {
                            tracing::debug!(execution = %id, "cannot store a durable execution yet; trying again");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
            Write::Delete(id, name) => {
                revisions.remove(&id);
                let _ = kv.delete(saved_key(&id)).await;
                let _ = kv.delete(running_key(&id)).await;
                let _ = kv.delete(name).await;
            }
        }
        stored.send_replace(seq);
    }
}

/// Every execution in the bucket (`None` if it could not be read in 30 s).
async fn saved_all(client: &async_nats::Client, bucket: &str) -> Option<Vec<Saved>> {
    let stream = async_nats::jetstream::new(client.clone())
        .get_stream(format!("KV_{bucket}"))
        .await
        .ok()?;
    let filter = format!("$KV.{bucket}.x.>");
    let scan = fnhub_checkpoint::nats::last_per_subject(&stream, &filter);
    let messages = tokio::time::timeout(Duration::from_secs(30), scan)
        .await
        .ok()?
        .ok()?;
    Some(
        messages
            .iter()
            .filter(|m| !is_deleted(m))
            .filter_map(|m| serde_json::from_slice::<Saved>(&m.payload).ok())
            .collect(),
    )
}

/// A key-value entry's message that deletes or purges its key.
fn is_deleted(message: &async_nats::jetstream::Message) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some()
}

#[cfg(test)]
mod tests;
