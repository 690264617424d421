//! A durable checkpoint store: one file per checkpoint in a directory, with a second slot
//! so that updates overwrite in place.

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
/// The second slot's file name ends with this.
const SECOND_SUFFIX: &str = ".ckpt.1";
const TEMP_PREFIX: &str = ".tmp-";
/// Saves one commit may carry.
const MAX_BATCH: usize = 256;
/// The slot header: magic; a CRC32C binding the sequence number to the envelope's header
/// (which holds the payload's own CRC), so that a new number over an old checkpoint (a
/// save cut between its writes) is seen as torn; the save's sequence number. Little
/// endian.
const SLOT_MAGIC: [u8; 4] = *b"FNSL";
const SLOT_HEADER_LEN: usize = 16;

/// The slot header for sequence `seq` in front of `envelope`.
fn slot_header(seq: u64, envelope: &[u8]) -> [u8; SLOT_HEADER_LEN] {
    let mut h = [0u8; SLOT_HEADER_LEN];
    h[..4].copy_from_slice(&SLOT_MAGIC);
    h[4..8].copy_from_slice(&slot_crc(seq, envelope).to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

/// CRC32C of the envelope's header without its last four bytes, then of `seq`. The last
/// four bytes are the header's own CRC: a CRC over a message followed by its CRC is the
/// same for every message, so including them would bind nothing.
fn slot_crc(seq: u64, envelope: &[u8]) -> u32 {
    let head = &envelope[..envelope.len().min(format::HEADER_LEN - 4)];
    crc32c::crc32c_append(crc32c::crc32c(head), &seq.to_le_bytes())
}

/// What the commit thread is asked to do.
enum Op {
    Save {
        id: ExecutionId,
        bytes: bytes::Bytes,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Remove {
        id: ExecutionId,
        reply: oneshot::Sender<io::Result<bool>>,
    },
}

/// Where an execution's latest checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slots {
    /// The slot holding the latest acknowledged save (0 or 1).
    current: usize,
    /// Its sequence number.
    seq: u64,
    /// Which slot files exist.
    exists: [bool; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Good(Slots),
    /// Neither slot holds a whole checkpoint: kept on disk, refused on load.
    Corrupt,
}

type Index = Arc<RwLock<HashMap<ExecutionId, Entry>>>;

/// Keeps checkpoints durably in a directory.
///
/// Each execution has up to two slot files, `<execution id>.ckpt` and
/// `<execution id>.ckpt.1`; each holds a small header with a sequence number, then the
/// checkpoint's envelope (see [`encode`](crate::encode)). A save writes the slot that does
/// *not* hold the latest acknowledged checkpoint, makes it durable, and only then is
/// acknowledged, so a crash at any point leaves the previous acknowledged checkpoint
/// intact in the other slot; when the store is opened, each execution's newest slot that
/// passes the format's checksums wins. A slot file is made once, atomically (temporary
/// file, sync, rename, directory sync); after that, a save overwrites it in place and
/// needs a single `fdatasync`, which is what makes the journal of a durable execution,
/// saved at every step, cheap. Saves that arrive together are committed together (group
/// commit): one filesystem sync, and at most one directory sync, for the whole batch.
///
/// The store keeps the index in memory: [`DirStore::open`] builds it from the directory,
/// removing temporaries of interrupted saves. Files written by earlier versions (the
/// envelope alone, in `<id>.ckpt`) are read as the first slot.
pub struct DirStore {
    dir: PathBuf,
    ops: mpsc::Sender<Op>,
    index: Index,
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
    /// Slots holding an interrupted overwrite, passed over for the execution's other
    /// slot (which holds its latest acknowledged checkpoint).
    pub interrupted_overwrites: usize,
    /// Checkpoint files of executions none of whose slots holds a whole checkpoint; kept
    /// on disk for inspection, not listed, and refused by `load`.
    pub corrupt: Vec<PathBuf>,
}

fn path_of(dir: &Path, id: ExecutionId, slot: usize) -> PathBuf {
    if slot == 0 {
        dir.join(format!("{id}{SUFFIX}"))
    } else {
        dir.join(format!("{id}{SECOND_SUFFIX}"))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Splits a slot file into its sequence number and envelope, checking the envelope
/// fully. A file without a slot header (an earlier version's) is sequence 0.
fn read_slot(bytes: &bytes::Bytes) -> Result<(u64, Checkpoint), DecodeError> {
    let (seq, envelope) = if bytes.starts_with(&SLOT_MAGIC) {
        let header = bytes.get(..SLOT_HEADER_LEN).ok_or(DecodeError::Truncated {
            have: bytes.len(),
            need: SLOT_HEADER_LEN,
        })?;
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let seq = u64::from(word(8)) | (u64::from(word(12)) << 32);
        let envelope = bytes.slice(SLOT_HEADER_LEN..);
        if word(4) != slot_crc(seq, &envelope) {
            return Err(DecodeError::HeaderChecksum);
        }
        (seq, envelope)
    } else {
        (0, bytes.clone())
    };
    // A slot overwritten by a shorter checkpoint keeps the older tail: the envelope's own
    // header says where it ends.
    let header = envelope
        .get(..format::HEADER_LEN)
        .ok_or(DecodeError::Truncated {
            have: envelope.len(),
            need: format::HEADER_LEN,
        })?;
    let total = format::read_header(header)?.total_len();
    if envelope.len() < total {
        return Err(DecodeError::Truncated {
            have: envelope.len(),
            need: total,
        });
    }
    // The checkpoint's large fields stay in the buffer read from the file: no copy.
    Ok((seq, format::decode_shared(&envelope.slice(..total))?))
}

impl DirStore {
    /// Opens (creating it if needed) the store in `dir`: removes temporaries left by
    /// interrupted saves, and finds each execution's newest whole checkpoint.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<(DirStore, OpenReport)> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let mut report = OpenReport::default();
        let mut found: HashMap<ExecutionId, [bool; 2]> = HashMap::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                fs::remove_file(entry.path())?;
                report.leftovers_removed += 1;
                continue;
            }
            let (stem, slot) = match name.strip_suffix(SECOND_SUFFIX) {
                Some(stem) => (stem, 1),
                None => match name.strip_suffix(SUFFIX) {
                    Some(stem) => (stem, 0),
                    None => continue,
                },
            };
            let Ok(id) = stem.parse::<ExecutionId>() else {
                continue;
            };
            found.entry(id).or_default()[slot] = true;
        }
        if report.leftovers_removed > 0 {
            sync_dir(&dir)?;
        }
        let mut index = HashMap::new();
        for (id, exists) in found {
            let mut best: Option<(u64, usize)> = None;
            let mut torn = 0;
            for slot in (0..2).filter(|s| exists[*s]) {
                let good = fs::read(path_of(&dir, id, slot))
                    .ok()
                    .and_then(|b| read_slot(&b.into()).ok())
                    .filter(|(_, c)| c.execution_id == id);
                match good {
                    Some((seq, _)) if best.is_none_or(|(b, _)| seq > b) => {
                        best = Some((seq, slot));
                    }
                    Some(_) => {}
                    None => torn += 1,
                }
            }
            match best {
                Some((seq, current)) => {
                    report.interrupted_overwrites += torn;
                    index.insert(
                        id,
                        Entry::Good(Slots {
                            current,
                            seq,
                            exists,
                        }),
                    );
                }
                None => {
                    report
                        .corrupt
                        .extend((0..2).filter(|s| exists[*s]).map(|s| path_of(&dir, id, s)));
                    index.insert(id, Entry::Corrupt);
                }
            }
        }
        report.corrupt.sort();
        report.checkpoints = index
            .values()
            .filter(|e| matches!(e, Entry::Good(_)))
            .count();
        let index = Arc::new(RwLock::new(index));
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let committer = Committer {
            dir: dir.clone(),
            index: index.clone(),
            commits: commits.clone(),
            counter: 0,
        };
        std::thread::Builder::new()
            .name("fnhub-dirstore".into())
            .spawn(move || committer.run(rx))?;
        Ok((
            DirStore {
                dir,
                ops: tx,
                index,
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

/// The commit thread: the only writer of the directory and of the index.
struct Committer {
    dir: PathBuf,
    index: Index,
    commits: Arc<AtomicU64>,
    /// Names temporaries uniquely.
    counter: u64,
}

/// One save of a batch, planned.
struct Planned {
    id: ExecutionId,
    slot: usize,
    seq: u64,
    /// The slot file does not exist yet: it is made through a temporary and a rename.
    fresh: Option<PathBuf>,
}

impl Committer {
    fn run(mut self, ops: mpsc::Receiver<Op>) {
        let mut next = ops.recv().ok();
        while let Some(op) = next.take() {
            match op {
                Op::Remove { id, reply } => {
                    let _ = reply.send(self.remove(id));
                    next = ops.recv().ok();
                }
                Op::Save { id, bytes, reply } => {
                    // Every save waiting, up to the next remove.
                    let mut batch = vec![(id, bytes, reply)];
                    while batch.len() < MAX_BATCH {
                        match ops.try_recv() {
                            Ok(Op::Save { id, bytes, reply }) => batch.push((id, bytes, reply)),
                            Ok(remove) => {
                                next = Some(remove);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_batch(batch);
                    if next.is_none() {
                        next = ops.recv().ok();
                    }
                }
            }
        }
    }

    fn commit_batch(
        &mut self,
        batch: Vec<(ExecutionId, bytes::Bytes, oneshot::Sender<io::Result<()>>)>,
    ) {
        // Two saves of one execution in a batch: only the later is written (both slots
        // must not be in flight at once), and both are acknowledged with it.
        let mut last: HashMap<ExecutionId, usize> = HashMap::new();
        for (at, (id, _, _)) in batch.iter().enumerate() {
            last.insert(*id, at);
        }
        let writes: Vec<(ExecutionId, &bytes::Bytes)> = batch
            .iter()
            .enumerate()
            .filter(|(at, (id, _, _))| last[id] == *at)
            .map(|(_, (id, bytes, _))| (*id, bytes))
            .collect();
        let result = self.commit(&writes);
        self.commits.fetch_add(1, Ordering::Relaxed);
        for (_, _, reply) in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = reply.send(r);
        }
    }

    /// Writes each checkpoint to its execution's other slot, syncs once, renames fresh
    /// slot files into place and syncs the directory once, then updates the index.
    fn commit(&mut self, writes: &[(ExecutionId, &bytes::Bytes)]) -> io::Result<()> {
        let mut planned = Vec::with_capacity(writes.len());
        {
            let index = self.index.read();
            for (id, _) in writes {
                let (slot, seq, exists) = match index.get(id) {
                    Some(Entry::Good(s)) => (1 - s.current, s.seq + 1, s.exists),
                    // New, or whatever is there is unreadable: the first slot, made afresh.
                    _ => (0, 1, [false; 2]),
                };
                let fresh = (!exists[slot]).then(|| {
                    self.counter += 1;
                    self.dir.join(format!("{TEMP_PREFIX}{id}-{}", self.counter))
                });
                planned.push(Planned {
                    id: *id,
                    slot,
                    seq,
                    fresh,
                });
            }
        }
        let result = (|| {
            for (plan, (_, bytes)) in planned.iter().zip(writes) {
                let mut file = match &plan.fresh {
                    Some(temp) => OpenOptions::new().write(true).create_new(true).open(temp)?,
                    // Overwritten from the start; a longer old tail stays and is ignored.
                    None => OpenOptions::new()
                        .write(true)
                        .open(path_of(&self.dir, plan.id, plan.slot))?,
                };
                file.write_all(&slot_header(plan.seq, bytes))?;
                file.write_all(bytes)?;
                if writes.len() == 1 {
                    file.sync_data()?;
                }
            }
            if writes.len() > 1 {
                // One sync for every file of the batch.
                let d = File::open(&self.dir)?;
                rustix::fs::syncfs(&d)?;
            }
            let mut renamed = false;
            for plan in &planned {
                if let Some(temp) = &plan.fresh {
                    fs::rename(temp, path_of(&self.dir, plan.id, plan.slot))?;
                    renamed = true;
                }
            }
            if renamed {
                sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                let mut index = self.index.write();
                for plan in &planned {
                    let mut exists = match index.get(&plan.id) {
                        Some(Entry::Good(s)) => s.exists,
                        _ => [false; 2],
                    };
                    exists[plan.slot] = true;
                    index.insert(
                        plan.id,
                        Entry::Good(Slots {
                            current: plan.slot,
                            seq: plan.seq,
                            exists,
                        }),
                    );
                }
                Ok(())
            }
            Err(e) => {
                for temp in planned.iter().filter_map(|p| p.fresh.as_ref()) {
                    let _ = fs::remove_file(temp);
                }
                // An overwrite may have been torn: the index still names the other slot,
                // which is intact.
                Err(e)
            }
        }
    }

    fn remove(&mut self, id: ExecutionId) -> io::Result<bool> {
        self.index.write().remove(&id);
        let mut removed = false;
        for slot in 0..2 {
            match fs::remove_file(path_of(&self.dir, id, slot)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
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

fn stopped() -> StoreError {
    StoreError::Io(io::Error::other("the commit thread stopped"))
}

impl CheckpointStore for DirStore {
    fn save<'a>(&'a self, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let bytes = format::encode(checkpoint).map_err(|e| StoreError::Backend(Box::new(e)))?;
            let (reply, done) = oneshot::channel();
            self.ops
                .send(Op::Save {
                    id: checkpoint.execution_id,
                    bytes,
                    reply,
                })
                .map_err(|_| stopped())?;
            done.await.map_err(|_| stopped())??;
            Ok(())
        })
    }

    fn load(&self, id: ExecutionId) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        if !self.index.read().contains_key(&id) {
            // The index knows every checkpoint: no need to look on disk.
            return Box::pin(std::future::ready(Ok(None)));
        }
        let (dir, index) = (self.dir.clone(), self.index.clone());
        blocking(move || {
            for _ in 0..8 {
                let entry = index.read().get(&id).copied();
                let slot = match entry {
                    None => return Ok(None),
                    Some(Entry::Good(s)) => s.current,
                    Some(Entry::Corrupt) => 0,
                };
                let read = fs::read(path_of(&dir, id, slot))
                    .map_err(StoreError::Io)
                    .and_then(|b| match read_slot(&b.into()) {
                        Ok((_, c)) if c.execution_id == id => Ok(c),
                        Ok(_) => Err(corrupt(
                            id,
                            DecodeError::Invalid("the file holds another execution"),
                        )),
                        Err(e) => Err(corrupt(id, e)),
                    });
                match read {
                    Ok(c) => return Ok(Some(c)),
                    // A save may overwrite the slot being read only after a later save
                    // moved the index on, and a remove takes the file: read again, as
                    // the index says now.
                    Err(_) if index.read().get(&id).copied() != entry => continue,
                    Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Io(io::Error::other(
                "the checkpoint kept changing while it was read",
            )))
        })
    }

    fn remove(&self, id: ExecutionId) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let (reply, done) = oneshot::channel();
            self.ops
                .send(Op::Remove { id, reply })
                .map_err(|_| stopped())?;
            Ok(done.await.map_err(|_| stopped())??)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ExecutionId>, StoreError>> {
        let mut ids: Vec<_> = self
            .index
            .read()
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Good(_)))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        Box::pin(std::future::ready(Ok(ids)))
    }
}
