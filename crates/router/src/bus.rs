//! The local bus: in-process subscribers with bounded queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use fnhub_core::Event;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::table::{SubscriptionId, SubscriptionTable};
use crate::topic::{TopicFilter, TopicName};

struct Subscriber {
    tx: mpsc::Sender<Event>,
    /// Shared with the [`Subscription`], which must not hold the sender.
    dropped: Arc<AtomicU64>,
    /// The group of a shared subscription.
    share: Option<Arc<ShareGroup>>,
}

/// The subscribers of one `$share/{group}/{filter}`: each event goes to one of them.
#[derive(Default)]
struct ShareGroup {
    /// Round-robin position.
    next: AtomicUsize,
}

impl Subscriber {
    fn offer(&self, event: &Event) -> Result<(), bool> {
        match self.tx.try_send(event.clone()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(true),
            // The receiver is being dropped; its entry goes with it.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(false),
        }
    }
}

/// Delivers events to in-process subscribers (devices attached in-process, the embedding
/// application, tests). Each subscriber has a bounded queue; when it is full the event is
/// not delivered to that subscriber and the miss is counted on both sides: in the
/// publisher's [`Delivery`] and in [`Subscription::dropped`].
///
/// A shared subscription (`$share/{group}/{filter}`) gets each matching event only if it is
/// its group's turn: the group's subscribers take turns (round-robin), and a subscriber
/// whose queue is full passes its turn to the next.
#[derive(Clone, Default)]
pub struct LocalBus {
    table: Arc<SubscriptionTable<Arc<Subscriber>>>,
    shares: Arc<Mutex<HashMap<TopicFilter, Weak<ShareGroup>>>>,
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
        let share = filter.share_group().map(|_| {
            let mut shares = self.shares.lock();
            shares.retain(|_, group| group.strong_count() > 0);
            match shares.get(&filter).and_then(Weak::upgrade) {
                Some(group) => group,
                None => {
                    let group = Arc::new(ShareGroup::default());
                    shares.insert(filter.clone(), Arc::downgrade(&group));
                    group
                }
            }
        });
        let subscriber = Arc::new(Subscriber {
            tx,
            dropped: dropped.clone(),
            share,
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
        let mut shared: Vec<(SubscriptionId, Arc<Subscriber>)> = Vec::new();
        self.table.for_each_match(topic, |id, sub| {
            if sub.share.is_some() {
                shared.push((id, sub.clone()));
                return;
            }
            match sub.offer(event) {
                Ok(()) => d.delivered += 1,
                Err(true) => {
                    sub.dropped.fetch_add(1, Ordering::Relaxed);
                    d.full += 1;
                }
                Err(false) => {}
            }
        });
        if !shared.is_empty() {
            Self::deliver_shared(shared, event, &mut d);
        }
        d
    }

    /// One event per group: to the subscriber whose turn it is, or the next with room.
    fn deliver_shared(
        mut shared: Vec<(SubscriptionId, Arc<Subscriber>)>,
        event: &Event,
        d: &mut Delivery,
    ) {
        let group_of =
            |s: &Arc<Subscriber>| s.share.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize);
        shared.sort_by_key(|(id, s)| (group_of(s), *id));
        for members in shared.chunk_by(|a, b| group_of(&a.1) == group_of(&b.1)) {
            let Some(group) = &members[0].1.share else {
                continue;
            };
            let n = members.len();
            let start = group.next.fetch_add(1, Ordering::Relaxed) % n;
            let mut full = None;
            let mut sent = false;
            for k in 0..n {
                let sub = &members[(start + k) % n].1;
                match sub.offer(event) {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(true) => {
                        full.get_or_insert(sub);
                    }
                    Err(false) => {}
                }
            }
            if sent {
                d.delivered += 1;
            } else if let Some(sub) = full {
                sub.dropped.fetch_add(1, Ordering::Relaxed);
                d.full += 1;
            }
        }
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

    /// Polls for the next event (as [`recv`](Self::recv) does), for a loop that reads
    /// several subscriptions at once.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fnhub_core::EventSource;

    fn event(topic: &str, n: u32) -> (TopicName, Event) {
        (
            TopicName::new(topic).unwrap(),
            Event::new(topic, n.to_string(), EventSource::Local),
        )
    }

    #[test]
    fn a_shared_group_takes_turns_and_plain_subscribers_get_everything() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe("$share/workers/jobs/+".parse().unwrap(), 100);
        let mut b = bus.subscribe("$share/workers/jobs/+".parse().unwrap(), 100);
        let mut other = bus.subscribe("$share/audit/jobs/#".parse().unwrap(), 100);
        let mut plain = bus.subscribe("jobs/+".parse().unwrap(), 100);
        for n in 0..10 {
            let (t, e) = event("jobs/x", n);
            let d = bus.deliver(&t, &e);
            // One for the group, one for the other group, one for the plain subscriber.
            assert_eq!(d.delivered, 3);
        }
        let drain = |s: &mut Subscription| {
            let mut v = Vec::new();
            while let Some(e) = s.try_recv() {
                v.push(String::from_utf8(e.payload.to_vec()).unwrap());
            }
            v
        };
        let (got_a, got_b) = (drain(&mut a), drain(&mut b));
        assert_eq!(got_a.len(), 5, "{got_a:?} {got_b:?}");
        assert_eq!(got_b.len(), 5);
        let mut all: Vec<String> = got_a.into_iter().chain(got_b).collect();
        all.sort_by_key(|s| s.parse::<u32>().unwrap());
        assert_eq!(all, (0..10).map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(drain(&mut other).len(), 10);
        assert_eq!(drain(&mut plain).len(), 10);
    }

    #[test]
    fn a_full_member_passes_its_turn_and_a_full_group_counts_one_miss() {
        let bus = LocalBus::new();
        let mut small = bus.subscribe("$share/g/t".parse().unwrap(), 1);
        let mut roomy = bus.subscribe("$share/g/t".parse().unwrap(), 100);
        for n in 0..5 {
            let (t, e) = event("t", n);
            assert_eq!(bus.deliver(&t, &e).delivered, 1);
        }
        // `small` took one; the rest went to `roomy`, with nothing lost.
        let mut n = 0;
        while small.try_recv().is_some() {
            n += 1;
        }
        while roomy.try_recv().is_some() {
            n += 1;
        }
        assert_eq!(n, 5);
        drop(roomy);
        let (t, e) = event("t", 9);
        assert_eq!(bus.deliver(&t, &e).delivered, 1);
        let (t, e) = event("t", 10);
        let d = bus.deliver(&t, &e);
        assert_eq!((d.delivered, d.full), (0, 1));
        assert_eq!(small.dropped(), 1);
    }
}
