//! A subscription table: topic filters to values, read without locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::topic::{TopicFilter, TopicName, matches_str};

/// Identifies one entry of a [`SubscriptionTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

struct Entry<T> {
    id: SubscriptionId,
    filter: TopicFilter,
    value: T,
}

impl<T: Clone> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            id: self.id,
            filter: self.filter.clone(),
            value: self.value.clone(),
        }
    }
}

struct Snapshot<T> {
    /// Filters without wildcards, by their text: one hash lookup per topic.
    exact: HashMap<Arc<str>, Vec<Entry<T>>>,
    /// Filters with wildcards, scanned in insertion order.
    wildcard: Vec<Entry<T>>,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot {
            exact: HashMap::new(),
            wildcard: Vec::new(),
        }
    }
}

impl<T: Clone> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
        }
    }
}

/// Maps topic filters to values. Lookups read an immutable snapshot without taking a lock;
/// changes copy the table and swap it in, so they never stall a lookup and a lookup sees
/// the table either wholly before or wholly after a change.
///
/// Exact filters are found by hashing; wildcard filters are scanned. (A trie for large
/// wildcard sets is planned with the router issue.)
pub struct SubscriptionTable<T> {
    snapshot: ArcSwap<Snapshot<T>>,
    writer: Mutex<()>,
    next_id: AtomicU64,
}

impl<T: Clone> Default for SubscriptionTable<T> {
    fn default() -> Self {
        SubscriptionTable::new()
    }
}

impl<T> std::fmt::Debug for SubscriptionTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot.load();
        f.debug_struct("SubscriptionTable")
            .field("exact", &s.exact.len())
            .field("wildcard", &s.wildcard.len())
            .finish()
    }
}

impl<T: Clone> SubscriptionTable<T> {
    /// An empty table.
    pub fn new() -> SubscriptionTable<T> {
        SubscriptionTable {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            writer: Mutex::new(()),
            next_id: AtomicU64::new(1),
        }
    }

    fn update<R>(&self, change: impl FnOnce(&mut Snapshot<T>) -> R) -> R {
        let _writer = self.writer.lock();
        let mut next = Snapshot::clone(&self.snapshot.load());
        let result = change(&mut next);
        self.snapshot.store(Arc::new(next));
        result
    }

    /// Adds `value` under `filter`.
    pub fn insert(&self, filter: TopicFilter, value: T) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.update(|s| {
            let entry = Entry {
                id,
                filter: filter.clone(),
                value,
            };
            if filter.has_wildcards() {
                s.wildcard.push(entry);
            } else {
                s.exact
                    .entry(Arc::from(filter.as_str()))
                    .or_default()
                    .push(entry);
            }
        });
        id
    }

    /// Removes the entry `id`, returning its filter and value.
    pub fn remove(&self, id: SubscriptionId) -> Option<(TopicFilter, T)> {
        self.update(|s| {
            if let Some(at) = s.wildcard.iter().position(|e| e.id == id) {
                let e = s.wildcard.remove(at);
                return Some((e.filter, e.value));
            }
            let key = s
                .exact
                .iter()
                .find(|(_, v)| v.iter().any(|e| e.id == id))
                .map(|(k, _)| k.clone())?;
            let list = s.exact.get_mut(&key)?;
            let at = list.iter().position(|e| e.id == id)?;
            let e = list.remove(at);
            if list.is_empty() {
                s.exact.remove(&key);
            }
            Some((e.filter, e.value))
        })
    }

    /// Calls `visit` with every entry whose filter matches `topic`: exact ones first, in
    /// insertion order, then wildcard ones in insertion order.
    pub fn for_each_match(&self, topic: &TopicName, mut visit: impl FnMut(SubscriptionId, &T)) {
        let s = self.snapshot.load();
        if let Some(list) = s.exact.get(topic.as_str()) {
            for e in list {
                visit(e.id, &e.value);
            }
        }
        for e in &s.wildcard {
            if matches_str(e.filter.as_str(), topic.as_str()) {
                visit(e.id, &e.value);
            }
        }
    }

    /// Every entry, exact ones first.
    pub fn entries(&self) -> Vec<(SubscriptionId, TopicFilter, T)> {
        let s = self.snapshot.load();
        let mut out: Vec<_> = s
            .exact
            .values()
            .flatten()
            .chain(&s.wildcard)
            .map(|e| (e.id, e.filter.clone(), e.value.clone()))
            .collect();
        out.sort_by_key(|(id, _, _)| *id);
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        let s = self.snapshot.load();
        s.exact.values().map(Vec::len).sum::<usize>() + s.wildcard.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(t: &SubscriptionTable<u32>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.for_each_match(&TopicName::new(topic).unwrap(), |_, v| out.push(*v));
        out.sort();
        out
    }

    #[test]
    fn exact_and_wildcard_entries() {
        let t = SubscriptionTable::new();
        let a = t.insert("sensors/d1/temperature".parse().unwrap(), 1);
        t.insert("sensors/+/temperature".parse().unwrap(), 2);
        t.insert("sensors/#".parse().unwrap(), 3);
        t.insert("sensors/d1/temperature".parse().unwrap(), 4);
        assert_eq!(matches(&t, "sensors/d1/temperature"), [1, 2, 3, 4]);
        assert_eq!(matches(&t, "sensors/d2/temperature"), [2, 3]);
        assert_eq!(matches(&t, "other"), Vec::<u32>::new());
        assert_eq!(t.remove(a).map(|(_, v)| v), Some(1));
        assert_eq!(t.remove(a), None);
        assert_eq!(matches(&t, "sensors/d1/temperature"), [2, 3, 4]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn readers_keep_their_snapshot_while_writers_change_it() {
        let t = Arc::new(SubscriptionTable::new());
        let id = t.insert("a".parse().unwrap(), 1u32);
        let reader = {
            let t = t.clone();
            std::thread::spawn(move || {
                let topic = TopicName::new("a").unwrap();
                for _ in 0..10_000 {
                    let mut n = 0;
                    t.for_each_match(&topic, |_, _| n += 1);
                    assert!(n <= 2);
                }
            })
        };
        for _ in 0..200 {
            let extra = t.insert("a".parse().unwrap(), 2);
            t.remove(extra);
        }
        reader.join().unwrap();
        assert_eq!(t.remove(id).map(|(_, v)| v), Some(1));
    }

    proptest! {
        /// The table finds exactly what a scan of all (filter, value) pairs finds.
        #[test]
        fn table_agrees_with_a_scan(
            filters in proptest::collection::vec(proptest::sample::select(vec!["a/b", "a/+", "+/b", "#", "a/#", "$s/b", "a", "+"]), 0..12),
            removals in proptest::collection::vec(any::<bool>(), 12),
            topic in proptest::sample::select(vec!["a/b", "a", "b/b", "$s/b", "a/b/c", "a/"]),
        ) {
            let t = SubscriptionTable::new();
            let mut kept = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                let id = t.insert(f.parse().unwrap(), i as u32);
                if removals[i] { t.remove(id); } else { kept.push((*f, i as u32)); }
            }
            let name = TopicName::new(topic).unwrap();
            let mut expected: Vec<u32> = kept.iter()
                .filter(|(f, _)| TopicFilter::new(f).unwrap().matches(&name))
                .map(|(_, v)| *v).collect();
            expected.sort();
            prop_assert_eq!(matches(&t, topic), expected);
        }
    }
}
