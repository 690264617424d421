//! The admission queue: bounded; priority first, then earliest deadline, then arrival.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fnhub_core::{FunctionSpec, Invocation, Priority};
use tokio::sync::oneshot;

use crate::Completion;

/// One admitted invocation waiting for a worker.
pub(crate) struct Job {
    pub(crate) seq: u64,
    pub(crate) invocation: Invocation,
    pub(crate) spec: Arc<FunctionSpec>,
    pub(crate) admitted_at: Instant,
    pub(crate) reply: Option<oneshot::Sender<Completion>>,
}

impl Job {
    fn key(&self) -> (Priority, Option<SystemTime>, u64) {
        (
            self.invocation.context.priority,
            self.invocation.context.deadline,
            self.seq,
        )
    }
}

/// "Greater" runs first: higher priority, then an earlier deadline (any deadline before
/// none), then the earlier arrival.
fn run_order(
    a: (Priority, Option<SystemTime>, u64),
    b: (Priority, Option<SystemTime>, u64),
) -> Ordering {
    let deadline = match (a.1, b.1) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    };
    a.0.cmp(&b.0).then(deadline).then(b.2.cmp(&a.2))
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for Job {}

impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Job {
    fn cmp(&self, other: &Self) -> Ordering {
        run_order(self.key(), other.key())
    }
}

/// Admitted jobs, bounded by `capacity`.
pub(crate) struct Queue {
    heap: BinaryHeap<Job>,
    capacity: usize,
    next_seq: u64,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            heap: BinaryHeap::with_capacity(capacity.min(4096)),
            capacity,
            next_seq: 0,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.heap.len() >= self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The sequence number the next job gets.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Adds a job. The caller checked [`Queue::is_full`] under the same lock.
    pub(crate) fn push(&mut self, job: Job) {
        debug_assert!(!self.is_full());
        self.heap.push(job);
    }

    pub(crate) fn pop(&mut self) -> Option<Job> {
        self.heap.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    type Key = (Priority, Option<SystemTime>, u64);

    proptest! {
        /// Popping the heap gives the same order as sorting by the stated rule.
        #[test]
        fn heap_order_matches_sort(items in proptest::collection::vec((0u8..4, proptest::option::of(0u64..50)), 0..200)) {
            let base = SystemTime::UNIX_EPOCH;
            let keys: Vec<Key> = items.iter().enumerate().map(|(seq, (p, d))| {
                (Priority(*p), d.map(|s| base + Duration::from_secs(s)), seq as u64)
            }).collect();

            struct K(Key);
            impl PartialEq for K { fn eq(&self, o: &Self) -> bool { self.0.2 == o.0.2 } }
            impl Eq for K {}
            impl PartialOrd for K { fn partial_cmp(&self, o: &Self) -> Option<Ordering> { Some(self.cmp(o)) } }
            impl Ord for K { fn cmp(&self, o: &Self) -> Ordering { run_order(self.0, o.0) } }

            let mut heap: BinaryHeap<K> = keys.iter().copied().map(K).collect();
            let mut popped = Vec::new();
            while let Some(K(k)) = heap.pop() { popped.push(k); }

            // Reference: sort by priority desc, deadline asc with None last, seq asc.
            let mut expected = keys.clone();
            expected.sort_by_key(|&(p, d, s)| (std::cmp::Reverse(p), d.is_none(), d, s));
            prop_assert_eq!(popped, expected);
        }
    }
}
