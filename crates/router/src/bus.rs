//! The local bus: in-process subscribers with bounded queues.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use fnhub_core::Event;
use tokio::sync::mpsc;

use crate::table::{SubscriptionId, SubscriptionTable};
use crate::topic::{TopicFilter, TopicName};

struct Subscriber {
    tx: mpsc::Sender<Event>,
    /// Shared with the [`Subscription`], which must not hold the sender.
    dropped: Arc<AtomicU64>,
}

/// Delivers events to in-process subscribers (devices attached in-process, the embedding
/// application, tests). Each subscriber has a bounded queue; when it is full the event is
/// not delivered to that subscriber and the miss is counted on both sides: in the
/// publisher's [`Delivery`] and in [`Subscription::dropped`].
#[derive(Clone, Default)]
pub struct LocalBus {
    table: Arc<SubscriptionTable<Arc<Subscriber>>>,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("subscribers", &self.table.len())
            .finish()
    }
}

/// What a publish to the bus did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Subscribers that got the event.
    pub delivered: usize,
    /// Subscribers whose queue was full, so they did not.
    pub full: usize,
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> LocalBus {
        LocalBus::default()
    }

    /// Subscribes to `filter` with a queue of `capacity` events (at least 1).
    /// Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(&self, filter: TopicFilter, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let subscriber = Arc::new(Subscriber {
            tx,
            dropped: dropped.clone(),
        });
        let id = self.table.insert(filter, subscriber);
        Subscription {
            id,
            rx,
            dropped,
            table: Arc::downgrade(&self.table),
        }
    }

    /// Offers `event` (whose topic is `topic`) to every matching subscriber without
    /// waiting.
    pub fn deliver(&self, topic: &TopicName, event: &Event) -> Delivery {
        let mut d = Delivery::default();
        self.table.for_each_match(topic, |_, sub| {
            match sub.tx.try_send(event.clone()) {
                Ok(()) => d.delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.dropped.fetch_add(1, Ordering::Relaxed);
                    d.full += 1;
                }
                // The receiver is being dropped; its entry goes with it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        });
        d
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Events on a subscribed filter, in publish order. Unsubscribes when dropped; ends
/// (`recv` gives `None`) when the bus is dropped.
pub struct Subscription {
    id: SubscriptionId,
    rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
    /// Weak, so that dropping the bus closes every subscription.
    table: Weak<SubscriptionTable<Arc<Subscriber>>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    /// The next event; `None` once the bus is dropped and the queue is empty.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Events not delivered to this subscription because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Its id in the bus.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.remove(self.id);
        }
    }
}
