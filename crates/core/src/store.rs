//! Where checkpoints are kept.

use crate::checkpoint::Checkpoint;
use crate::function::BoxFuture;
use crate::ids::ExecutionId;

/// A checkpoint store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the medium failed.
    #[error("checkpoint store I/O failed")]
    Io(#[from] std::io::Error),
    /// A stored checkpoint is damaged; it is never returned as if it were whole.
    #[error("checkpoint {id} is corrupt")]
    Corrupt {
        /// The execution.
        id: ExecutionId,
        /// What was wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store is full.
    #[error("checkpoint store is full ({capacity} checkpoints)")]
    Full {
        /// How many it holds at most.
        capacity: usize,
    },
    /// Another backend error.
    #[error("checkpoint store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Keeps checkpoints of suspended executions. A `dyn` plug-in (memory, directory, NATS).
///
/// `save` returns only once the checkpoint is durable for this store's medium; a later
/// `load` returns it whole or an error, never a torn copy.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Stores `checkpoint`, replacing an earlier one of the same execution.
    fn save<'a>(&'a self, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The checkpoint of `id`, if stored.
    fn load(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>>;

    /// Removes the checkpoint of `id`; returns whether there was one.
    fn remove(&self, id: ExecutionId) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// The ids of all stored checkpoints.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ExecutionId>, StoreError>>;

    /// Whether other processes may use this store at the same time (a NATS object store
    /// that a cloud runtime's nodes share). A hub takes up the executions of a store that
    /// is its own when it starts; on a shared one, that is left to whoever runs them (the
    /// cloud runtime's wakes and take-overs). Default: `false`.
    fn is_shared(&self) -> bool {
        false
    }
}
