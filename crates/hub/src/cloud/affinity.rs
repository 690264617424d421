//! Affinity across nodes: a call with an affinity key prefers the node that served the
//! key last, while that node lives and has room.
//!
//! - A [`CloudClient`](super::CloudClient) remembers, per key, the node that answered its
//!   last call, and sends the next call with that key to the node's own subject
//!   (`fnhub.{deployment}.work.{function}.{node}`) while the node is in the bucket of live
//!   nodes. Any NATS client can do the same.
//! - The node takes those calls first (a consumer of its own per function). One its hub
//!   has no room for is spilled to the function's shared subject, for any node.
//! - Every node renews its entry in the bucket of live nodes `FNHUB_{deployment}_NODES`
//!   every 2 s; a node that stops renewing (killed) leaves the bucket 8 s later, and one
//!   dropped leaves it at once. Every 4 s the other nodes take what was left on the subject
//!   of a node that is gone, so a call sent to a node that died is not lost.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;

use super::node::Node;
use super::wire::{self, HEARTBEAT};
use super::{CloudConfig, work_consumer};

/// Renews `token` in the bucket of live nodes until aborted.
pub(super) async fn heartbeat(nodes: jetstream::kv::Store, token: String) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(error) = nodes.put(token.as_str(), Bytes::new()).await {
            tracing::debug!(%error, "cannot renew this node's entry among the live nodes");
        }
    }
}

/// Every two heartbeats: takes the calls left on the subjects of nodes that are gone from
/// the bucket of live nodes, for the `functions` this node runs. One listing of the work
/// stream's consumers a pass finds the candidates (a node's consumer with calls waiting and
/// no pull request from its node); only those are looked up among the live nodes, so an
/// idle deployment's cost does not grow with the square of its nodes.
pub(super) async fn rescue(
    node: Node,
    work: jetstream::stream::Stream,
    nodes: jetstream::kv::Store,
    functions: Vec<String>,
    config: CloudConfig,
) {
    let names = node.js.names.clone();
    let mine = wire::node_token(&node.name);
    loop {
        tokio::time::sleep(HEARTBEAT * 2).await;
        let mut stranded = Vec::new();
        let mut infos = work.consumers();
        while let Some(Ok(info)) = infos.next().await {
            let waiting = info.num_pending > 0 || info.num_ack_pending > 0;
            if !waiting || info.num_waiting > 0 {
                continue;
            }
            for function in &functions {
                let prefix = names.consumer_at(function, "");
                if let Some(owner) = info.name.strip_prefix(&prefix)
                    && owner != mine
                {
                    stranded.push((function.clone(), owner.to_owned()));
                }
            }
        }
        for (function, owner) in stranded {
            if matches!(nodes.get(owner.as_str()).await, Ok(Some(_))) {
                continue; // alive, only busy
            }
            let durable = names.consumer_at(&function, &owner);
            let Ok(consumer) =
                work_consumer(&work, &durable, names.work_at(&function, &owner), &config).await
            else {
                continue;
            };
            let batch = consumer
                .fetch()
                .max_messages(config.in_flight.max(1))
                .expires(Duration::from_millis(300))
                .messages()
                .await;
            let Ok(mut batch) = batch else { continue };
            while let Some(Ok(message)) = batch.next().await {
                tracing::debug!(subject = %message.subject, "taking a call left by a node that is gone");
                let node = node.clone();
                tokio::spawn(async move { node.run(message).await });
            }
        }
    }
}
