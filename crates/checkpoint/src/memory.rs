//! A checkpoint store in memory.

use std::collections::HashMap;
use std::sync::Arc;

use fnhub_core::{BoxFuture, Checkpoint, CheckpointStore, ExecutionId, StoreError};
use parking_lot::RwLock;

/// Keeps checkpoints in memory: fast, bounded, and gone when the process ends.
///
/// Clones share the same contents.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    map: Arc<RwLock<HashMap<ExecutionId, Checkpoint>>>,
    capacity: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store holding at most 65 536 checkpoints.
    pub fn new() -> MemoryStore {
        MemoryStore::with_capacity(65_536)
    }

    /// An empty store holding at most `capacity` checkpoints; one more is
    /// [`StoreError::Full`].
    pub fn with_capacity(capacity: usize) -> MemoryStore {
        MemoryStore {
            map: Arc::default(),
            capacity,
        }
    }

    /// Number of checkpoints held.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    fn save_now(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut map = self.map.write();
        if map.len() >= self.capacity && !map.contains_key(&checkpoint.execution_id) {
            return Err(StoreError::Full {
                capacity: self.capacity,
            });
        }
        map.insert(checkpoint.execution_id, checkpoint.clone());
        Ok(())
    }
}

impl CheckpointStore for MemoryStore {
    fn save<'a>(&'a self, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.save_now(checkpoint)))
    }

    fn load(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.map.read().get(&id).cloned())))
    }

    fn remove(&self, id: ExecutionId) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(self
            .map
            .write()
            .remove(&id)
            .is_some())))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ExecutionId>, StoreError>> {
        Box::pin(std::future::ready(Ok(self
            .map
            .read()
            .keys()
            .copied()
            .collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fnhub_core::{FunctionName, JournalEntry, Operation, Version};
    use std::time::SystemTime;

    fn checkpoint() -> Checkpoint {
        Checkpoint::new(
            ExecutionId::random(),
            FunctionName::new("f").unwrap(),
            Version::FIRST,
            Bytes::from_static(b"in"),
            "hub-a",
            SystemTime::UNIX_EPOCH,
        )
    }

    #[tokio::test]
    async fn save_replace_load_remove_list() {
        let store = MemoryStore::new();
        let mut cp = checkpoint();
        store.save(&cp).await.unwrap();
        cp.journal.push(JournalEntry::new(
            0,
            "read",
            Operation::Step,
            Ok("21".into()),
        ));
        store.save(&cp).await.unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.load(cp.execution_id).await.unwrap(), Some(cp.clone()));
        assert_eq!(store.list().await.unwrap(), vec![cp.execution_id]);
        assert!(store.remove(cp.execution_id).await.unwrap());
        assert!(!store.remove(cp.execution_id).await.unwrap());
        assert_eq!(store.load(cp.execution_id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn full_store_refuses_new_but_accepts_updates() {
        let store = MemoryStore::with_capacity(1);
        let first = checkpoint();
        store.save(&first).await.unwrap();
        assert!(matches!(
            store.save(&checkpoint()).await,
            Err(StoreError::Full { capacity: 1 })
        ));
        store.save(&first).await.unwrap();
    }
}
