//! A node's work loop: it pulls messages from the work stream, runs each on its hub, and
//! answers JetStream as [`decide`](super::decide) says.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use fnhub_core::{ExecutionId, PendingDependency};
use fnhub_router::topic::TopicName;
use futures_util::{Stream, StreamExt};
use tokio::sync::Semaphore;

use super::context::{self, WireError};
use super::decide::{self, AfterRun, AfterWake, BeforeWake, RETRY, Work};
use super::suspend::{Done, publish_outcome, record_suspension, stored_result};
use super::waits::{Waits, wake_waiting};
use super::wire::{self, header};
use super::{Counters, Wire};
use crate::EdgeHub;

/// What every piece of work a node takes needs.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) hub: EdgeHub,
    pub(super) js: Wire,
    /// The results stream, looked up once.
    pub(super) results: jetstream::stream::Stream,
    /// The event waits of every node, and their bucket.
    pub(super) waits: Waits,
    pub(super) waits_kv: jetstream::kv::Store,
    pub(super) counters: Arc<Counters>,
    pub(super) progress_every: Duration,
}

pub(super) async fn work_loop<E: std::fmt::Display>(
    node: Node,
    messages: impl Stream<Item = Result<jetstream::Message, E>>,
    in_flight: usize,
) {
    let mut messages = std::pin::pin!(messages);
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "pulling work failed");
                continue;
            }
        };
        let has = |key: &str| header(message.headers.as_ref(), key).is_some();
        let permit = if decide::takes_slot(has(wire::PARENT)) {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            Some(permit)
        } else {
            None
        };
        let work = decide::work(has(wire::WAKE), has(wire::TOPIC));
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match work {
                Work::Wake => node.wake(message).await,
                Work::Event => node.event(message).await,
                Work::Run => node.run(message).await,
            }
        });
    }
}

/// Leaves `message` to come again after `delay` (not counted as handed back: it could not
/// run, rather than found no room).
async fn retry(message: &jetstream::Message, delay: Duration) {
    let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
}

/// How many times `message` has been delivered.
fn deliveries(message: &jetstream::Message) -> i64 {
    message.info().map(|i| i.delivered).unwrap_or(1)
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
        // The work is polled first, and the timer only after it: most calls end at their
        // first poll, and then no timer is registered (on a multi-thread runtime a timer
        // that becomes the earliest wakes the thread parked on the driver).
        let next = tokio::time::sleep(self.progress_every);
        let mut next = std::pin::pin!(next);
        loop {
            tokio::select! {
                biased;
                out = &mut work => return out,
                () = &mut next => {
                    let _ = message.ack_with(jetstream::AckKind::Progress).await;
                    next.as_mut().reset(tokio::time::Instant::now() + self.progress_every);
                }
            }
        }
    }

    /// Hands `message` back to JetStream, to come again after `delay`, here or elsewhere.
    async fn hand_back(&self, message: jetstream::Message, delay: Duration) {
        self.counters.handed_back.fetch_add(1, Ordering::Relaxed);
        let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
    }

    /// Acknowledges `message` once the suspension is recorded (else it comes again).
    async fn ack_once_recorded(
        &self,
        message: &jetstream::Message,
        execution: ExecutionId,
        pending: &PendingDependency,
        at: u32,
    ) {
        if self.suspended(execution, pending, at).await {
            let _ = message.ack().await;
        }
    }

    /// An invocation: runs it on the hub and publishes its result, unless it started a
    /// durable execution that suspended.
    pub(super) async fn run(&self, message: jetstream::Message) {
        let now = self.hub.clock().system_time();
        let decoded = context::decode(
            message.headers.as_ref(),
            message.payload.clone(),
            now,
            self.hub.max_depth(),
        );
        let invocation = match decoded {
            Ok(invocation) => invocation,
            Err(error) => return self.refuse(message, error).await,
        };
        if deliveries(&message) > 1 {
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("fnhub_cloud_redelivered_total").increment(1);
        }
        let (id, parent) = (invocation.id, invocation.context.parent);
        let called = self
            .in_progress(&message, self.hub.call_tracked(invocation))
            .await;
        self.counters.ran.fetch_add(1, Ordering::Relaxed);
        let version = called.as_ref().ok().map(|(c, _)| c.version.get());
        let after = decide::after_run(called.map(|(c, end)| (c.outcome, end)));
        tracing::debug!(invocation = %id, ?parent, ?after, "ran");
        match after {
            AfterRun::Publish(outcome) => {
                let done = Done {
                    id,
                    parent,
                    version,
                };
                if publish_outcome(&self.js, &self.name, &self.counters, done, &outcome).await
                    && let Err(error) = message.ack().await
                {
                    tracing::warn!(%error, "acknowledging work failed");
                }
            }
            AfterRun::Suspended(pending, at) => {
                self.counters.suspended.fetch_add(1, Ordering::Relaxed);
                self.ack_once_recorded(&message, id.into(), &pending, at)
                    .await;
            }
            AfterRun::Ack => {
                let _ = message.ack().await;
            }
            AfterRun::Retry(delay) => retry(&message, delay).await,
            AfterRun::HandBack(delay) => self.hand_back_or_spill(message, delay).await,
        }
    }

    /// A call its hub had no room for: one that preferred this node (sent to its own
    /// subject) is spilled to the function's shared subject, for any node with room;
    /// another is handed back.
    async fn hand_back_or_spill(&self, message: jetstream::Message, delay: Duration) {
        let tokens: Vec<&str> = message.subject.split('.').collect();
        let [_, _, _, function, _] = tokens.as_slice() else {
            return self.hand_back(message, delay).await;
        };
        let mut headers = message.headers.clone().unwrap_or_default();
        let id = header(Some(&headers), wire::INVOCATION).unwrap_or_default();
        headers.insert("Nats-Msg-Id", format!("{id}-spill").as_str());
        let spilled = match self
            .js
            .publish_with_headers(
                self.js.names.work(function),
                headers,
                message.payload.clone(),
            )
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if spilled {
            self.counters.handed_back.fetch_add(1, Ordering::Relaxed);
            let _ = message.ack().await;
        } else {
            self.hand_back(message, delay).await;
        }
    }

    /// A work message that cannot run: counted and logged; one with an id gets a
    /// `Rejected` result naming the header, so its caller is not left waiting. Never
    /// delivered again.
    async fn refuse(&self, message: jetstream::Message, error: WireError) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("fnhub_cloud_refused_total", "reason" => error.reason()).increment(1);
        tracing::warn!(subject = %message.subject, %error, "work message refused");
        let id = header(message.headers.as_ref(), wire::INVOCATION)
            .and_then(|v| v.parse::<fnhub_core::InvocationId>().ok());
        if let Some(id) = id {
            let outcome = Err(fnhub_core::FunctionError::new(
                fnhub_core::ErrorKind::Rejected,
                format!("refused by node {}: {error}", self.name),
            )
            .with_type("WireError"));
            let done = Done {
                id,
                parent: None,
                version: None,
            };
            if !publish_outcome(&self.js, &self.name, &self.counters, done, &outcome).await {
                return retry(&message, RETRY).await;
            }
        }
        let _ = message.ack_with(jetstream::AckKind::Term).await;
    }

    /// A wake of a durable execution: a timer that is due, or a child's outcome.
    async fn wake(&self, message: jetstream::Message) {
        let header = |k: &str| header(message.headers.as_ref(), k);
        let execution = header(wire::WAKE).and_then(|v| v.parse::<ExecutionId>().ok());
        let at = header(wire::AT).and_then(|v| v.parse::<u32>().ok());
        let (Some(execution), Some(at)) = (execution, at) else {
            tracing::warn!(subject = %message.subject, "malformed wake dropped");
            let _ = message.ack().await;
            return;
        };
        let shed = header(wire::CAUSE).as_deref() == Some("load");
        let due = header(wire::NOT_BEFORE).and_then(|v| v.parse::<u64>().ok());
        let now = wire::unix_ms(self.hub.clock().system_time());
        match decide::before_wake(shed, self.hub.is_shedding(), due, now) {
            BeforeWake::Run => {}
            BeforeWake::HandBack(delay) => return self.hand_back(message, delay).await,
            BeforeWake::Early(wait) => {
                self.counters.early.fetch_add(1, Ordering::Relaxed);
                let _ = message.ack_with(jetstream::AckKind::Nak(Some(wait))).await;
                return;
            }
        }
        let result = wire::outcome_of(message.headers.as_ref(), &message.payload);
        // Delivered again after the ack wait: the node that took it died, maybe in the
        // middle of the run it started. A run found going is then continued.
        let mut wake = fnhub_core::Wake::new(execution, at, result);
        if deliveries(&message) > 1 {
            wake = wake.taking_over();
        }
        let woken = self.in_progress(&message, self.hub.wake(wake)).await;
        if let Ok(Err(error)) = &woken {
            tracing::debug!(%execution, %error, "a wake could not run here");
        }
        let mut after = decide::after_wake(woken, deliveries(&message));
        if let AfterWake::Finished = after {
            let stored = self.result_stored(execution).await;
            if stored != Some(true) {
                self.counters.unfound.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("fnhub_cloud_wakes_without_checkpoint_total").increment(1);
                tracing::debug!(%execution, ?stored, "no checkpoint, and no result stored");
            }
            after = decide::after_finished(stored, deliveries(&message));
        }
        tracing::debug!(%execution, at, ?after, deliveries = deliveries(&message), "wake");
        match after {
            AfterWake::Ran => {
                self.counters.resumed.fetch_add(1, Ordering::Relaxed);
                let _ = message.ack().await;
            }
            AfterWake::RanAndSuspended(pending, at) => {
                self.counters.resumed.fetch_add(1, Ordering::Relaxed);
                self.counters.suspended.fetch_add(1, Ordering::Relaxed);
                self.ack_once_recorded(&message, execution, &pending, at)
                    .await;
            }
            AfterWake::StillWaiting(pending, at) => {
                self.ack_once_recorded(&message, execution, &pending, at)
                    .await;
            }
            AfterWake::Running => {
                self.counters.early.fetch_add(1, Ordering::Relaxed);
                let _ = message.ack().await;
            }
            AfterWake::Ack | AfterWake::Finished => {
                let _ = message.ack().await;
            }
            AfterWake::Retry(delay) => retry(&message, delay).await,
            AfterWake::GiveUp => {
                tracing::warn!(%execution, "a wake kept failing; given up");
                let _ = message.ack_with(jetstream::AckKind::Term).await;
            }
            AfterWake::HandBack(delay) => self.hand_back(message, delay).await,
        }
    }

    /// Whether the results stream holds the result of `execution` (its invocation's id):
    /// `None` when the stream could not say.
    async fn result_stored(&self, execution: ExecutionId) -> Option<bool> {
        let id = fnhub_core::InvocationId::from_u128(execution.as_u128());
        stored_result(&self.results, &self.js, id)
            .await
            .ok()
            .map(|found| found.is_some())
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

    /// An event published through [`CloudClient::publish`](super::CloudClient::publish):
    /// wakes the executions waiting for it.
    async fn event(&self, message: jetstream::Message) {
        let topic =
            header(message.headers.as_ref(), wire::TOPIC).and_then(|t| t.parse::<TopicName>().ok());
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
