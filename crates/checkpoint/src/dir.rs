//! A durable checkpoint store: one file per checkpoint in a directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use fnhub_core::{BoxFuture, Checkpoint, CheckpointStore, ExecutionId, StoreError};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::format::{self, DecodeError};

const SUFFIX: &str = ".ckpt";
const TEMP_PREFIX: &str = ".tmp-";
/// Saves one commit may carry.
const MAX_BATCH: usize = 256;

struct Save {
    id: ExecutionId,
    bytes: bytes::Bytes,
    reply: oneshot::Sender<io::Result<()>>,
}

/// Keeps checkpoints durably in a directory: `<execution id>.ckpt`, one file each.
///
/// A save writes a temporary file, makes it durable, renames it over the checkpoint's file
/// and makes the directory durable; only then is it acknowledged. A crash at any point
/// leaves either the previous acknowledged checkpoint or the new one, never a torn file:
/// temporaries are removed when the store is opened, and every load checks the format's
/// checksums. Saves that arrive together are committed together (group commit): one
/// filesystem sync and one directory sync for the whole batch.
///
/// The directory is the index: [`DirStore::open`] reads it, checking each file's header,
/// and the store keeps the list in memory.
pub struct DirStore {
    dir: PathBuf,
    saves: mpsc::Sender<Save>,
    index: Arc<RwLock<HashMap<ExecutionId, u64>>>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for DirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirStore")
            .field("dir", &self.dir)
            .field("checkpoints", &self.index.read().len())
            .finish()
    }
}

/// What [`DirStore::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Checkpoints listed.
    pub checkpoints: usize,
    /// Temporary files of interrupted saves, removed.
    pub leftovers_removed: usize,
    /// Checkpoint files whose header or length is wrong; kept on disk for inspection, not
    /// listed, and refused by `load`.
    pub corrupt: Vec<PathBuf>,
}

fn path_of(dir: &Path, id: ExecutionId) -> PathBuf {
    dir.join(format!("{id}{SUFFIX}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DirStore {
    /// Opens (creating it if needed) the store in `dir`: removes temporaries left by
    /// interrupted saves and lists the checkpoints.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<(DirStore, OpenReport)> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let mut report = OpenReport::default();
        let mut index = HashMap::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path())?;
                report.leftovers_removed += 1;
                continue;
            }
            let Some(id) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<ExecutionId>().ok())
            else {
                continue;
            };
            let len = entry.metadata()?.len();
            match check_file(&entry.path(), len) {
                Ok(()) => {
                    index.insert(id, len);
                }
                Err(_) => report.corrupt.push(entry.path()),
            }
        }
        if report.leftovers_removed > 0 {
            sync_dir(&dir)?;
        }
        report.checkpoints = index.len();
        let (tx, rx) = mpsc::channel();
        let committer_dir = dir.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("fnhub-dirstore".into())
            .spawn(move || committer(committer_dir, rx, &counted))?;
        Ok((
            DirStore {
                dir,
                saves: tx,
                index: Arc::new(RwLock::new(index)),
                commits,
            },
            report,
        ))
    }

    /// Commits made so far: with group commit, fewer than the saves when saves overlap.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Checks that a file holds a whole checkpoint envelope of the length its header announces.
fn check_file(path: &Path, len: u64) -> Result<(), DecodeError> {
    use std::io::Read;
    let mut header = [0u8; format::HEADER_LEN];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|_| DecodeError::Truncated {
            have: len as usize,
            need: format::HEADER_LEN,
        })?;
    let h = format::read_header(&header)?;
    if h.total_len() as u64 != len {
        return Err(DecodeError::Truncated {
            have: len as usize,
            need: h.total_len(),
        });
    }
    Ok(())
}

/// The commit thread: takes every save waiting, writes each to a temporary, syncs once,
/// renames each into place, syncs the directory once, then acknowledges the batch.
fn committer(dir: PathBuf, saves: mpsc::Receiver<Save>, commits: &AtomicU64) {
    let mut counter: u64 = 0;
    while let Ok(first) = saves.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match saves.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let result = commit(&dir, &batch, &mut counter);
        commits.fetch_add(1, Ordering::Relaxed);
        for save in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = save.reply.send(r);
        }
    }
}

fn commit(dir: &Path, batch: &[Save], counter: &mut u64) -> io::Result<()> {
    let mut written = Vec::with_capacity(batch.len());
    let result = (|| {
        for save in batch {
            *counter += 1;
            let temp = dir.join(format!("{TEMP_PREFIX}{}-{}", save.id, counter));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            written.push(temp);
            file.write_all(&save.bytes)?;
            if batch.len() == 1 {
                file.sync_data()?;
            }
        }
        if batch.len() > 1 {
            // One sync for every file of the batch.
            let d = File::open(dir)?;
            rustix::fs::syncfs(&d)?;
        }
        for (save, temp) in batch.iter().zip(&written) {
            fs::rename(temp, path_of(dir, save.id))?;
        }
        sync_dir(dir)
    })();
    if result.is_err() {
        for temp in &written {
            let _ = fs::remove_file(temp);
        }
    }
    result
}

fn corrupt(id: ExecutionId, e: DecodeError) -> StoreError {
    StoreError::Corrupt {
        id,
        source: Box::new(e),
    }
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async move {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(f)
                .await
                .map_err(|e| StoreError::Io(io::Error::other(e)))?,
            Err(_) => f(),
        }
    })
}

impl CheckpointStore for DirStore {
    fn save<'a>(&'a self, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let bytes = format::encode(checkpoint).map_err(|e| StoreError::Backend(Box::new(e)))?;
            let len = bytes.len() as u64;
            let id = checkpoint.execution_id;
            let (reply, done) = oneshot::channel();
            self.saves
                .send(Save { id, bytes, reply })
                .map_err(|_| StoreError::Io(io::Error::other("the commit thread stopped")))?;
            done.await
                .map_err(|_| StoreError::Io(io::Error::other("the commit thread stopped")))??;
            self.index.write().insert(id, len);
            Ok(())
        })
    }

    fn load(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        let path = path_of(&self.dir, id);
        blocking(move || {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::Io(e)),
            };
            let checkpoint = format::decode(&bytes).map_err(|e| corrupt(id, e))?;
            if checkpoint.execution_id != id {
                return Err(corrupt(
                    id,
                    DecodeError::Invalid("the file holds another execution"),
                ));
            }
            Ok(Some(checkpoint))
        })
    }

    fn remove(&self, id: ExecutionId) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (dir, index) = (self.dir.clone(), self.index.clone());
        blocking(move || {
            let removed = match fs::remove_file(path_of(&dir, id)) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(StoreError::Io(e)),
            };
            if removed {
                sync_dir(&dir)?;
            }
            index.write().remove(&id);
            Ok(removed)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ExecutionId>, StoreError>> {
        let mut ids: Vec<_> = self.index.read().keys().copied().collect();
        ids.sort();
        Box::pin(std::future::ready(Ok(ids)))
    }
}
