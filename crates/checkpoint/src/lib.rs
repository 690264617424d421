//! Checkpoints and the stores that keep them.
//!
//! - [`encode`] / [`decode`]: the checkpoint byte format, a versioned envelope (magic,
//!   format version, codec, compression, lengths, CRC32C of header and payload) around a
//!   postcard body, optionally LZ4-compressed. Format 1 is frozen by golden files in
//!   `tests/golden/`. Decoding any byte string gives a checkpoint or a typed
//!   [`DecodeError`], never a panic, and never allocates more than [`MAX_BODY`] for the
//!   body.
//! - [`DirStore`]: a durable store, two slot files per checkpoint: a save overwrites the
//!   slot that does not hold the latest acknowledged checkpoint and syncs it (slot files
//!   are made atomically: temporary file, sync, rename, directory sync), with group
//!   commit; a crash never leaves a torn checkpoint readable, nor loses an acknowledged
//!   one.
//! - [`MemoryStore`]: a bounded in-memory
//!   [`CheckpointStore`](fnhub_core::CheckpointStore).
//! - [`durable`]: durable execution — a context whose `step`, `invoke`, `sleep` and
//!   `wait_for` are journaled and replayed; suspension when a wait is predicted long, and
//!   of low-priority executions under sustained load; resumption by replay; recovery after
//!   a restart; export and import between hubs; restore hooks.
//!
//!
//! # Example
//!
//! ```
//! use fnhub_core::{Checkpoint, CheckpointStore, Clock, ExecutionId, FunctionName, SystemClock, Version};
//! use fnhub_checkpoint::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let id = ExecutionId::random();
//! let cp = Checkpoint::new(id, FunctionName::new("f")?, Version::FIRST,
//!                          "input".into(), "hub-a", SystemClock.system_time());
//! let bytes = fnhub_checkpoint::encode(&cp)?;
//! assert_eq!(fnhub_checkpoint::decode(&bytes)?, cp);
//!
//! let store = MemoryStore::new();
//! store.save(&cp).await?;
//! assert_eq!(store.load(id).await?, Some(cp));
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `zstd` (off by default): [`Compression::Zstd`] for writing, and reading of zstd
//!   checkpoints (without it they are refused as an unsupported compression).
//! - `nats` (off by default): [`nats::NatsStore`], checkpoints in a NATS JetStream object
//!   store, for the cloud runtime.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod dir;
pub mod durable;
mod format;
mod memory;
#[cfg(feature = "nats")]
pub mod nats;

pub use dir::{DirStore, OpenReport};
pub use format::{
    Compression, DecodeError, EncodeError, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_BODY, decode,
    decode_shared, encode, encode_with,
};
pub use memory::MemoryStore;
