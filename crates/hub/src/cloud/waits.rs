//! Event waits across the deployment: the deployment's bucket of waits (execution → topic
//! filter and journal position), followed by every node, and matched against events.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use fnhub_core::ExecutionId;
use fnhub_router::topic::{TopicFilter, TopicName};
use fnhub_router::{SubscriptionId, SubscriptionTable};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::decide::RETRY;
use super::suspend::publish_wake;
use super::{CloudError, js_err};

/// One execution's wait for an event, as the bucket holds it.
#[derive(Debug, Clone)]
pub(super) struct Wait {
    execution: ExecutionId,
    /// The journal position of the `wait_for`.
    at: u32,
    /// The entry's revision in the bucket: only that entry is deleted once it is met.
    revision: u64,
}

/// The event waits of every node's durable executions, read from the bucket of waits
/// and kept current by a watch, so that an event is matched here without a round
/// trip: in a subscription table, at a cost that does not grow with the number of waits.
#[derive(Clone, Default)]
pub(super) struct Waits(Arc<WaitsInner>);

#[derive(Default)]
struct WaitsInner {
    table: SubscriptionTable<Wait>,
    /// Each execution's entry in the table, and its revision.
    entries: parking_lot::Mutex<HashMap<ExecutionId, (SubscriptionId, u64)>>,
}

impl Waits {
    /// Applies an entry of the bucket; an older revision than the one held is ignored.
    pub(super) fn apply(&self, key: &str, value: Option<&[u8]>, revision: u64) {
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
    pub(super) fn matching(&self, topic: &TopicName) -> Vec<Wait> {
        let mut out = Vec::new();
        if !self.0.table.is_empty() {
            self.0
                .table
                .for_each_match(topic, |_, w| out.push(w.clone()));
        }
        out
    }

    /// Forgets a wait that was met (unless a newer one replaced it meanwhile).
    pub(super) fn forget(&self, execution: ExecutionId, revision: u64) {
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
    pub(super) async fn follow(
        &self,
        kv: jetstream::kv::Store,
    ) -> Result<JoinHandle<()>, CloudError> {
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
pub(super) async fn wake_waiting(
    js: &super::Wire,
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
