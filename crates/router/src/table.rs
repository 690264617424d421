//! A subscription table: topic filters to values, read without locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::topic::{TopicFilter, TopicName};

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

/// One level of the trie.
struct Node<T> {
    /// Entries whose filter ends at this level.
    here: Vec<Entry<T>>,
    /// Entries whose filter ends with `#` right below this level: they match whatever
    /// follows, including nothing (`a/#` matches `a`).
    hash: Vec<Entry<T>>,
    /// The `+` child: any one level.
    plus: Option<Arc<Node<T>>>,
    /// Literal children.
    children: HashMap<Box<str>, Arc<Node<T>>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            here: Vec::new(),
            hash: Vec::new(),
            plus: None,
            children: HashMap::new(),
        }
    }
}

impl<T: Clone> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node {
            here: self.here.clone(),
            hash: self.hash.clone(),
            plus: self.plus.clone(),
            children: self.children.clone(),
        }
    }
}

impl<T: Clone> Node<T> {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.hash.is_empty()
            && self.plus.is_none()
            && self.children.is_empty()
    }

    /// Adds `entry` at the end of `levels`, copying only the nodes it must change.
    fn insert(&mut self, mut levels: std::str::Split<'_, char>, entry: Entry<T>) {
        match levels.next() {
            None => self.here.push(entry),
            Some("#") => self.hash.push(entry),
            Some("+") => {
                Arc::make_mut(self.plus.get_or_insert_with(Arc::default)).insert(levels, entry)
            }
            Some(literal) => Arc::make_mut(self.children.entry(Box::from(literal)).or_default())
                .insert(levels, entry),
        }
    }

    /// Removes entry `id` found at the end of `levels`, and the nodes left empty.
    fn remove(
        &mut self,
        mut levels: std::str::Split<'_, char>,
        id: SubscriptionId,
    ) -> Option<Entry<T>> {
        fn take<T>(list: &mut Vec<Entry<T>>, id: SubscriptionId) -> Option<Entry<T>> {
            let at = list.iter().position(|e| e.id == id)?;
            Some(list.remove(at))
        }
        match levels.next() {
            None => take(&mut self.here, id),
            Some("#") => take(&mut self.hash, id),
            Some("+") => {
                let child = self.plus.as_mut()?;
                let removed = Arc::make_mut(child).remove(levels, id);
                if child.is_empty() {
                    self.plus = None;
                }
                removed
            }
            Some(literal) => {
                let child = self.children.get_mut(literal)?;
                let removed = Arc::make_mut(child).remove(levels, id);
                if child.is_empty() {
                    self.children.remove(literal);
                }
                removed
            }
        }
    }
}

impl<T> Node<T> {
    /// Visits the entries matching the rest of a topic (`levels`). `first`: this is the
    /// root, where wildcards do not match a system (`$`) topic.
    fn visit(
        &self,
        mut levels: std::str::Split<'_, char>,
        wildcards: bool,
        visit: &mut impl FnMut(SubscriptionId, &T),
    ) {
        if wildcards {
            for e in &self.hash {
                visit(e.id, &e.value);
            }
        }
        match levels.next() {
            None => {
                for e in &self.here {
                    visit(e.id, &e.value);
                }
            }
            Some(level) => {
                if wildcards && let Some(plus) = &self.plus {
                    plus.visit(levels.clone(), true, visit);
                }
                if let Some(child) = self.children.get(level) {
                    child.visit(levels, true, visit);
                }
            }
        }
    }

    fn collect(&self, out: &mut Vec<(SubscriptionId, TopicFilter, T)>)
    where
        T: Clone,
    {
        for e in self.here.iter().chain(&self.hash) {
            out.push((e.id, e.filter.clone(), e.value.clone()));
        }
        if let Some(p) = &self.plus {
            p.collect(out);
        }
        for c in self.children.values() {
            c.collect(out);
        }
    }
}

struct Snapshot<T> {
    root: Arc<Node<T>>,
    len: usize,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot {
            root: Arc::new(Node::default()),
            len: 0,
        }
    }
}

/// Maps topic filters to values: a trie of topic levels, with `+` and `#` as children of
/// their own. Lookups read an immutable snapshot without taking a lock; a change copies
/// only the nodes on its filter's path and swaps the new root in, so it never stalls a
/// lookup, and a lookup sees the table either wholly before or wholly after a change.
///
/// A lookup costs a hash per topic level per live branch (the literal child, and the `+`
/// child when there is one), whatever the number of entries. A change costs a copy of each
/// node on its path (their child maps included); [`extend`](Self::extend) applies many at
/// the cost of one.
pub struct SubscriptionTable<T> {
    snapshot: ArcSwap<Snapshot<T>>,
    /// The writers' side: the filter of every entry, to find it again on removal.
    writer: Mutex<HashMap<SubscriptionId, TopicFilter>>,
    next_id: AtomicU64,
}

impl<T: Clone> Default for SubscriptionTable<T> {
    fn default() -> Self {
        SubscriptionTable::new()
    }
}

impl<T> std::fmt::Debug for SubscriptionTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionTable")
            .field("len", &self.snapshot.load().len)
            .finish()
    }
}

impl<T: Clone> SubscriptionTable<T> {
    /// An empty table.
    pub fn new() -> SubscriptionTable<T> {
        SubscriptionTable {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            writer: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Adds `value` under `filter`.
    pub fn insert(&self, filter: TopicFilter, value: T) -> SubscriptionId {
        self.extend([(filter, value)])[0]
    }

    /// Adds many entries in one change (one copy of the nodes they share); their ids, in
    /// order.
    pub fn extend(
        &self,
        entries: impl IntoIterator<Item = (TopicFilter, T)>,
    ) -> Vec<SubscriptionId> {
        let mut filters = self.writer.lock();
        let current = self.snapshot.load_full();
        let mut root = Node::clone(&current.root);
        let mut ids = Vec::new();
        for (filter, value) in entries {
            let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
            root.insert(
                filter.pattern().split('/'),
                Entry {
                    id,
                    filter: filter.clone(),
                    value,
                },
            );
            filters.insert(id, filter);
            ids.push(id);
        }
        self.snapshot.store(Arc::new(Snapshot {
            root: Arc::new(root),
            len: current.len + ids.len(),
        }));
        ids
    }

    /// Removes the entry `id`, returning its filter and value.
    pub fn remove(&self, id: SubscriptionId) -> Option<(TopicFilter, T)> {
        let mut filters = self.writer.lock();
        let filter = filters.remove(&id)?;
        let current = self.snapshot.load_full();
        let mut root = Node::clone(&current.root);
        let removed = root.remove(filter.pattern().split('/'), id)?;
        self.snapshot.store(Arc::new(Snapshot {
            root: Arc::new(root),
            len: current.len.saturating_sub(1),
        }));
        Some((removed.filter, removed.value))
    }

    /// Calls `visit` with every entry whose filter matches `topic` (in no set order).
    pub fn for_each_match(&self, topic: &TopicName, mut visit: impl FnMut(SubscriptionId, &T)) {
        let s = self.snapshot.load();
        // A leading wildcard does not match a system topic.
        s.root
            .visit(topic.as_str().split('/'), !topic.is_system(), &mut visit);
    }

    /// Every entry, in insertion order.
    pub fn entries(&self) -> Vec<(SubscriptionId, TopicFilter, T)> {
        let s = self.snapshot.load();
        let mut out = Vec::with_capacity(s.len);
        s.root.collect(&mut out);
        out.sort_by_key(|(id, _, _)| *id);
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.snapshot.load().len
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
            filters in proptest::collection::vec(proptest::sample::select(vec![
                "a/b", "a/+", "+/b", "#", "a/#", "$s/b", "a", "+", "+/+", "+/#", "$s/#", "$s/+",
                "a/+/c", "a//b", "/#", "+/", "a/b/#", "a/+/#", "/", "//", "a/b/c",
            ]), 0..16),
            removals in proptest::collection::vec(any::<bool>(), 16),
            topic in proptest::sample::select(vec![
                "a/b", "a", "b/b", "$s/b", "a/b/c", "a/", "/", "//", "a//b", "$s", "b", "/a", "a/x/c",
            ]),
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

        /// The same with filters and topics built level by level (empty levels, `$` levels,
        /// `+` anywhere, `#` at the end), against the split-based matcher.
        #[test]
        fn table_agrees_with_split_matching_on_generated_topics(
            filters in proptest::collection::vec(
                (proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "+", "$s"]), 1..5), any::<bool>()),
                0..24,
            ),
            topics in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(vec!["a", "b", "", "$s"]), 1..6),
                1..8,
            ),
        ) {
            let t = SubscriptionTable::new();
            let mut all = Vec::new();
            for (i, (levels, hash)) in filters.iter().enumerate() {
                let mut text = levels.join("/");
                if *hash { text.push_str("/#"); }
                let Ok(filter) = TopicFilter::new(&text) else { continue };
                t.insert(filter.clone(), i as u32);
                all.push((filter, i as u32));
            }
            for levels in &topics {
                let Ok(name) = TopicName::new(&levels.join("/")) else { continue };
                let mut expected: Vec<u32> = all.iter()
                    .filter(|(f, _)| crate::topic::matches_str(f.as_str(), name.as_str()))
                    .map(|(_, v)| *v).collect();
                expected.sort();
                prop_assert_eq!(matches(&t, name.as_str()), expected, "topic {}", name);
            }
        }
    }
}
