//! The durable queue of `Event` invocations: an invocation answered `202` is on disk first,
//! as Lambda's asynchronous queue holds it, and a hub killed before running it runs it after
//! a restart (at least once).
//!
//! An append-only log of segment files (`NNNNNNNNNNNNNNNN.log`) in one folder. A record is
//! `kind (1 byte) | length (u32 LE) | CRC-32C of the body (u32 LE) | body`: kind 1 is an
//! accepted invocation, kind 2 says one has ended (run, or refused after all). Appends are
//! group-committed by one writer thread: every waiting append goes out in one write and one
//! `fdatasync`. An end is written without a sync of its own (losing it only runs the
//! invocation again). A segment whose every invocation has ended is deleted once a newer
//! one is being written. On open, a torn or corrupt tail (a crash mid-write) ends the
//! segment's reading and is cut off.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, UNIX_EPOCH};

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{
    ErrorKind, FunctionRef, Invocation, InvocationId, Principal, Priority, TraceParent,
};
use fnhub_scheduler::{Completion, Start, SubmitError, Ticket};
use tokio::sync::oneshot;

use crate::edge::WeakHub;

/// Why an `Event` invocation was not accepted (see [`EdgeHub::submit_event`](crate::EdgeHub::submit_event)).
// The refusal hands the invocation back, as `SubmitError` does: boxing it would allocate on
// the overload path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Admission refused it; the invocation is handed back.
    #[error(transparent)]
    Refused(#[from] SubmitError),
    /// It could not be put in the durable queue; it was not accepted.
    #[error("the durable event queue could not take the invocation: {0}")]
    Storage(#[source] io::Error),
}

/// Whether a completion means the invocation will not run again: it ran (whatever its
/// outcome), rather than being torn down before it started.
fn settled(c: &Completion) -> bool {
    !(c.start == Start::NotStarted
        && matches!(&c.outcome, Err(e) if e.kind == ErrorKind::Cancelled))
}

/// Marks `id` ended in `log` once `ticket` completes, unless the hub went away first.
pub(crate) fn end_when_done(log: Arc<EventLog>, ticket: Ticket) {
    log.watching
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    tokio::spawn(async move {
        let id = ticket.id();
        let completion = ticket.await;
        if settled(&completion) {
            log.ended(id);
        }
        if log
            .watching
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            log.unwatched.notify_waiters();
        }
    });
}

/// Runs what a previous life of the hub accepted and did not finish, oldest first, each
/// admitted as room frees up.
pub(crate) async fn replay(hub: WeakHub, log: Arc<EventLog>, pending: Vec<Invocation>) {
    let total = pending.len();
    for invocation in pending {
        let mut invocation = invocation;
        loop {
            let Some(hub) = hub.upgrade() else { return };
            let scheduler = hub.scheduler();
            let room = scheduler.room();
            match scheduler.try_submit(invocation) {
                Ok(ticket) => {
                    end_when_done(log.clone(), ticket);
                    break;
                }
                Err(
                    SubmitError::Full(back)
                    | SubmitError::FunctionLimit(back)
                    | SubmitError::TenantLimit(back),
                ) => {
                    invocation = back;
                    room.await;
                }
                Err(SubmitError::ShuttingDown(_)) => return,
                Err(error) => {
                    let id = error.invocation().id;
                    tracing::warn!(%error, %id, "event log: an accepted invocation can no longer run; dropped");
                    log.ended(id);
                    break;
                }
            }
        }
    }
    if total > 0 {
        tracing::info!(
            invocations = total,
            "event log: accepted invocations from before the restart admitted again"
        );
    }
}

const ACCEPTED: u8 = 1;
const ENDED: u8 = 2;
const HEADER: usize = 9;
/// A new segment is started past this size.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// The largest record body read back; bigger ones are corrupt (payloads are capped at
/// 6 MiB by the front door; this leaves room for the rest).
const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RecordError {
    /// The bytes end inside the record.
    #[error("the record is cut short")]
    Short,
    /// The CRC does not match the body.
    #[error("the record's checksum does not match")]
    Checksum,
    /// A length past the largest record.
    #[error("a record of {0} bytes is past the limit")]
    TooLarge(usize),
    /// A kind other than accepted (1) or ended (2).
    #[error("unknown record kind {0}")]
    Kind(u8),
    /// The body does not decode.
    #[error("the record's body is malformed: {0}")]
    Body(&'static str),
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    Accepted(Box<Invocation>),
    Ended(InvocationId),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn encode_accepted(inv: &Invocation) -> Vec<u8> {
    let mut b = Vec::with_capacity(128 + inv.payload.len());
    b.extend_from_slice(&inv.id.as_u128().to_le_bytes());
    put_str(&mut b, &inv.function.to_string());
    put_str(&mut b, inv.context.principal.as_str());
    put_str(&mut b, &inv.context.trace.to_string());
    put_str(&mut b, inv.context.tracestate.as_deref().unwrap_or(""));
    let deadline = inv
        .context
        .deadline
        .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    b.extend_from_slice(&deadline.to_le_bytes());
    b.push(inv.context.priority.0);
    b.extend_from_slice(&(inv.payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&inv.payload);
    frame(ACCEPTED, &b)
}

fn encode_ended(id: InvocationId) -> Vec<u8> {
    frame(ENDED, &id.as_u128().to_le_bytes())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Body("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn u128(&mut self) -> Result<u128, RecordError> {
        let mut a = [0; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<&'a str, RecordError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| RecordError::Body("not UTF-8"))
    }
}

/// Decodes the record at the start of `bytes`: the record and how many bytes it took.
fn decode(bytes: &[u8]) -> Result<(Record, usize), RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::Short);
    }
    let kind = bytes[0];
    let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if len > MAX_RECORD {
        return Err(RecordError::TooLarge(len));
    }
    let crc = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    let body = bytes.get(HEADER..HEADER + len).ok_or(RecordError::Short)?;
    if crc32c::crc32c(body) != crc {
        return Err(RecordError::Checksum);
    }
    let mut r = Reader(body);
    let record = match kind {
        ACCEPTED => {
            let id = InvocationId::from_u128(r.u128()?);
            let function: FunctionRef = r
                .str()?
                .parse()
                .map_err(|_| RecordError::Body("bad function"))?;
            let principal = Principal::new(r.str()?);
            let trace: TraceParent = r
                .str()?
                .parse()
                .map_err(|_| RecordError::Body("bad trace"))?;
            let tracestate = Some(r.str()?.to_owned()).filter(|s| !s.is_empty());
            let deadline = r.u64()?;
            let priority = Priority(r.take(1)?[0]);
            let n = r.u32()? as usize;
            let payload = Bytes::copy_from_slice(r.take(n)?);
            if !r.0.is_empty() {
                return Err(RecordError::Body("trailing bytes"));
            }
            let mut inv = Invocation::new(function, payload);
            inv.id = id;
            inv.context.principal = principal;
            inv.context.trace = trace;
            inv.context.tracestate = tracestate;
            inv.context.priority = priority;
            inv.context.deadline =
                (deadline > 0).then(|| UNIX_EPOCH + Duration::from_millis(deadline));
            Record::Accepted(Box::new(inv))
        }
        ENDED => {
            let id = InvocationId::from_u128(r.u128()?);
            if !r.0.is_empty() {
                return Err(RecordError::Body("trailing bytes"));
            }
            Record::Ended(id)
        }
        other => return Err(RecordError::Kind(other)),
    };
    Ok((record, HEADER + len))
}

enum Op {
    Append(Vec<u8>, InvocationId, oneshot::Sender<io::Result<()>>),
    End(InvocationId),
    Flush(oneshot::Sender<()>),
}

/// The durable queue of one hub.
#[derive(Debug)]
pub(crate) struct EventLog {
    ops: mpsc::Sender<Op>,
    /// Admitted invocations whose end is still to be recorded.
    watching: std::sync::atomic::AtomicUsize,
    unwatched: tokio::sync::Notify,
}

/// What opening the log found.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Accepted and not ended, oldest first: to run again.
    pub(crate) pending: Vec<Invocation>,
    /// Bytes cut off torn or corrupt segment tails.
    pub(crate) cut_bytes: u64,
}

struct Segment {
    seq: u64,
    open: HashSet<InvocationId>,
}

struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    /// Oldest first; the last is the one being written.
    segments: Vec<Segment>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.log"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl EventLog {
    /// Opens (or makes) the log in `dir` and returns what is left to run.
    pub(crate) fn open(dir: &Path) -> io::Result<(EventLog, Recovered)> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut recovered = Recovered::default();
        let mut accepted: BTreeMap<InvocationId, (u64, usize)> = BTreeMap::new();
        let mut order: Vec<Invocation> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut at = 0;
            let mut segment = Segment {
                seq,
                open: HashSet::new(),
            };
            while at < bytes.len() {
                match decode(&bytes[at..]) {
                    Ok((Record::Accepted(inv), used)) => {
                        segment.open.insert(inv.id);
                        accepted.insert(inv.id, (seq, order.len()));
                        order.push(*inv);
                        at += used;
                    }
                    Ok((Record::Ended(id), used)) => {
                        if let Some((s, _)) = accepted.remove(&id) {
                            if s == seq {
                                segment.open.remove(&id);
                            } else if let Some(old) = segments.iter_mut().find(|g| g.seq == s) {
                                old.open.remove(&id);
                            }
                        }
                        at += used;
                    }
                    Err(error) => {
                        tracing::warn!(segment = %path.display(), offset = at, %error, "event log: cutting off a torn or corrupt tail");
                        recovered.cut_bytes += (bytes.len() - at) as u64;
                        let file = OpenOptions::new().write(true).open(&path)?;
                        file.set_len(at as u64)?;
                        file.sync_all()?;
                        break;
                    }
                }
            }
            segments.push(segment);
        }
        let mut keep: Vec<(usize, Invocation)> = order
            .into_iter()
            .enumerate()
            .filter(|(i, inv)| accepted.get(&inv.id).is_some_and(|(_, at)| at == i))
            .collect();
        keep.sort_by_key(|(i, _)| *i);
        recovered.pending = keep.into_iter().map(|(_, inv)| inv).collect();

        // The settled oldest segments go (only a prefix: a settled segment after an
        // unsettled one may hold the ends of the older one's invocations); writing goes
        // on in a new one.
        let settled = segments.iter().take_while(|g| g.open.is_empty()).count();
        for g in segments.drain(..settled) {
            let _ = std::fs::remove_file(segment_path(dir, g.seq));
        }
        let seq = seqs.last().map_or(0, |s| s + 1);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, seq))?;
        sync_dir(dir)?;
        segments.push(Segment {
            seq,
            open: HashSet::new(),
        });
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            size: 0,
            segments,
        };
        let (ops, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("fnhub-events".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            EventLog {
                ops,
                watching: Default::default(),
                unwatched: Default::default(),
            },
            recovered,
        ))
    }

    /// Puts `invocation` on disk; returns once it is there (synced).
    pub(crate) async fn append(&self, invocation: &Invocation) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Append(encode_accepted(invocation), invocation.id, tx))
            .map_err(|_| io::Error::other("the event log's writer has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the event log's writer has stopped"))?
    }

    /// Records that `id` has ended: it will not run again after a restart.
    pub(crate) fn ended(&self, id: InvocationId) {
        let _ = self.ops.send(Op::End(id));
    }

    /// Waits until the end of every admitted invocation is recorded and on disk (after
    /// the scheduler has finished them: at shutdown).
    pub(crate) async fn settle(&self) {
        loop {
            let unwatched = self.unwatched.notified();
            if self.watching.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
            unwatched.await;
        }
        self.flush().await;
    }

    /// Waits until everything sent before is written and synced.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 4096 {
                    break;
                }
            }
            let mut bytes = Vec::new();
            let mut waiting = Vec::new();
            let mut flushes = Vec::new();
            let mut ended = Vec::new();
            for op in batch {
                match op {
                    Op::Append(record, id, reply) => {
                        bytes.extend_from_slice(&record);
                        if let Some(current) = self.segments.last_mut() {
                            current.open.insert(id);
                        }
                        waiting.push(reply);
                    }
                    Op::End(id) => {
                        bytes.extend_from_slice(&encode_ended(id));
                        ended.push(id);
                    }
                    Op::Flush(reply) => flushes.push(reply),
                }
            }
            let result = self.write(&bytes, !waiting.is_empty() || !flushes.is_empty());
            for reply in waiting {
                let _ = reply.send(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| io::Error::new(e.kind(), e.to_string())),
                );
            }
            for reply in flushes {
                let _ = reply.send(());
            }
            if let Err(error) = &result {
                tracing::error!(%error, "event log: writing failed");
            }
            for id in ended {
                for segment in &mut self.segments {
                    if segment.open.remove(&id) {
                        break;
                    }
                }
            }
            if let Err(error) = self.roll() {
                tracing::error!(%error, "event log: starting a new segment failed");
            }
        }
    }

    fn write(&mut self, bytes: &[u8], sync: bool) -> io::Result<()> {
        if !bytes.is_empty() {
            self.file.write_all(bytes)?;
            self.size += bytes.len() as u64;
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Starts a new segment past the size bound, and deletes older settled ones.
    fn roll(&mut self) -> io::Result<()> {
        if self.size >= SEGMENT_BYTES {
            self.file.sync_data()?;
            let seq = self.segments.last().map_or(0, |s| s.seq + 1);
            self.file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            self.size = 0;
            self.segments.push(Segment {
                seq,
                open: HashSet::new(),
            });
            sync_dir(&self.dir)?;
        }
        // The oldest settled segments, never the one being written (see `open`).
        let last = self.segments.len().saturating_sub(1);
        let settled = self.segments[..last]
            .iter()
            .take_while(|g| g.open.is_empty())
            .count();
        let mut removed = false;
        for g in self.segments.drain(..settled) {
            removed |= std::fs::remove_file(segment_path(&self.dir, g.seq)).is_ok();
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn invocation(n: u8) -> Invocation {
        let mut inv = Invocation::new("hello:2".parse().unwrap(), vec![n; 3]);
        inv.context.principal = Principal::new("tenant-a");
        inv.context.priority = Priority::HIGH;
        inv.context.deadline = Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_123));
        inv
    }

    #[test]
    fn records_round_trip() {
        let inv = invocation(7);
        let bytes = encode_accepted(&inv);
        let (Record::Accepted(back), used) = decode(&bytes).unwrap() else {
            panic!("not an accepted record");
        };
        assert_eq!(used, bytes.len());
        assert_eq!(back.id, inv.id);
        assert_eq!(back.function, inv.function);
        assert_eq!(back.payload, inv.payload);
        assert_eq!(back.context.principal, inv.context.principal);
        assert_eq!(back.context.trace, inv.context.trace);
        assert_eq!(back.context.priority, inv.context.priority);
        assert_eq!(back.context.deadline, inv.context.deadline);
        let ended = encode_ended(inv.id);
        assert_eq!(
            decode(&ended).unwrap(),
            (Record::Ended(inv.id), ended.len())
        );
    }

    #[test]
    fn damaged_records_are_typed_errors() {
        let bytes = encode_accepted(&invocation(1));
        assert_eq!(decode(&bytes[..5]), Err(RecordError::Short));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(RecordError::Short));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped), Err(RecordError::Checksum));
        let mut kind = bytes.clone();
        kind[0] = 9;
        assert_eq!(decode(&kind), Err(RecordError::Kind(9)));
        let mut huge = bytes;
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_was_not_ended_comes_back_after_a_restart_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (invocation(1), invocation(2), invocation(3));
        {
            let (log, recovered) = EventLog::open(dir.path()).unwrap();
            assert!(recovered.pending.is_empty());
            for inv in [&a, &b, &c] {
                log.append(inv).await.unwrap();
            }
            log.ended(b.id);
            log.flush().await;
        }
        // A crash in the middle of the next append.
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let torn = encode_accepted(&invocation(4));
        let mut f = OpenOptions::new().append(true).open(&segment).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);

        let (log, recovered) = EventLog::open(dir.path()).unwrap();
        let ids: Vec<_> = recovered.pending.iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![a.id, c.id]);
        assert_eq!(recovered.cut_bytes, (torn.len() / 2) as u64);
        log.ended(a.id);
        log.ended(c.id);
        log.flush().await;
        drop(log);
        let (_log, recovered) = EventLog::open(dir.path()).unwrap();
        assert!(recovered.pending.is_empty());
        // Settled segments were removed: only the one being written is left.
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(segments, 1, "settled segments are deleted");
    }
}
