//! Checkpoints and the stores that keep them.
//!
//! Today this crate has one store, [`MemoryStore`], a bounded in-memory
//! [`CheckpointStore`](fnhub_core::CheckpointStore) for tests and for hubs that accept losing
//! suspended executions on restart. The versioned byte format, the durable `DirStore`, the
//! journal and durable execution come with the checkpoint issue; they are not built yet.
//!
//! # Example
//!
//! ```
//! use std::time::SystemTime;
//! use fnhub_core::{Checkpoint, CheckpointStore, ExecutionId, FunctionName, Version};
//! use fnhub_checkpoint::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let id = ExecutionId::random();
//! let cp = Checkpoint::new(id, FunctionName::new("f")?, Version::FIRST,
//!                          "input".into(), "hub-a", SystemTime::now());
//! store.save(&cp).await?;
//! assert_eq!(store.load(id).await?, Some(cp));
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! None yet.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod memory;

pub use memory::MemoryStore;
