//! A process's output: every line a `tracing` event (function, version, request id), and,
//! for the invocations whose log tail was asked for (Lambda's `--log-type Tail`), the last
//! [`LOG_TAIL_BYTES`] of what they wrote.
//!
//! The tail is exact: a function writes its lines before it posts its answer, and before
//! the answer is handed on, the environment waits until its readers have taken everything
//! that was in the pipes at that moment (the bytes read so far plus `FIONREAD`, counted
//! under the lock the reads take).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fnhub_core::InvocationId;
use parking_lot::Mutex;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::env::Inner;
use super::{MAX_LOG_LINE, STDERR_TAIL};

/// How much of an invocation's output its tail keeps: Lambda's 4 KB.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;

/// Invocations watched at once; past this, [`LogTails::watch`] declines.
const MAX_WATCHED: usize = 4096;

/// The log tails being collected, by invocation. Shared by a [`ProcessSandbox`] (see
/// [`ProcessSandbox::with_log_tails`]) and whoever asks for tails: watch an invocation
/// before it runs, take its tail once it has answered.
///
/// [`ProcessSandbox`]: super::ProcessSandbox
/// [`ProcessSandbox::with_log_tails`]: super::ProcessSandbox::with_log_tails
#[derive(Debug, Default)]
pub struct LogTails {
    watched: Mutex<HashMap<String, VecDeque<u8>>>,
}

impl LogTails {
    /// An empty set of tails.
    pub fn new() -> LogTails {
        LogTails::default()
    }

    /// Starts keeping the tail of `invocation`'s output; false when too many invocations
    /// are watched already (its tail will be empty).
    pub fn watch(&self, invocation: InvocationId) -> bool {
        let mut watched = self.watched.lock();
        if watched.len() >= MAX_WATCHED {
            return false;
        }
        watched.insert(invocation.to_string(), VecDeque::new());
        true
    }

    /// Stops watching `invocation`: the last [`LOG_TAIL_BYTES`] it wrote, lines ending in
    /// `\n`; `None` if it was not watched.
    pub fn take(&self, invocation: InvocationId) -> Option<Vec<u8>> {
        self.watched
            .lock()
            .remove(&invocation.to_string())
            .map(Vec::from)
    }

    /// Whether `invocation` is watched; no allocation while nothing is.
    pub(super) fn is_watched(&self, invocation: InvocationId) -> bool {
        let watched = self.watched.lock();
        !watched.is_empty() && watched.contains_key(&invocation.to_string())
    }

    fn append(&self, request_id: &str, line: &str) {
        let mut watched = self.watched.lock();
        let Some(tail) = watched.get_mut(request_id) else {
            return;
        };
        tail.extend(line.as_bytes());
        tail.push_back(b'\n');
        let over = tail.len().saturating_sub(LOG_TAIL_BYTES);
        tail.drain(..over);
    }
}

/// One output pipe of a process, as far as its reader has got.
pub(super) struct LogPipe {
    /// A duplicate of the read end, to ask how much is waiting.
    fd: OwnedFd,
    /// Bytes read from the pipe; the lock is held across each read.
    read: Mutex<u64>,
    /// Bytes read and split into lines.
    handled: watch::Sender<u64>,
}

impl LogPipe {
    /// Waits (at most a second) until the reader has handled everything written to the
    /// pipe before this call.
    pub(super) async fn settle(&self) {
        let target = {
            let read = self.read.lock();
            *read + rustix::io::ioctl_fionread(self.fd.as_fd()).unwrap_or(0)
        };
        let mut handled = self.handled.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(1), handled.wait_for(|h| *h >= target)).await;
    }
}

/// The reader of one output stream of a process: its pipe, and the task that reads it.
pub(super) fn read_output(
    stream: OwnedFd,
    name: &'static str,
    inner: &Arc<Inner>,
    stderr_tail: Option<Arc<Mutex<VecDeque<String>>>>,
    oom: Arc<AtomicBool>,
) -> std::io::Result<(Arc<LogPipe>, tokio::task::JoinHandle<()>)> {
    let pipe = Arc::new(LogPipe {
        fd: stream.try_clone()?,
        read: Mutex::new(0),
        handled: watch::Sender::new(0),
    });
    let receiver = pipe::Receiver::from_owned_fd(stream)?;
    let line_out = LineOut {
        function: inner.function.clone(),
        version: inner.version.clone(),
        api: inner.api.clone(),
        tails: inner.log_tails.clone(),
        name,
        stderr_tail,
        oom,
    };
    // The task holds no reference to the environment: its output does not keep it alive.
    let task = tokio::spawn(read_lines(receiver, pipe.clone(), line_out));
    Ok((pipe, task))
}

/// Where one stream's lines go.
struct LineOut {
    function: String,
    version: String,
    api: Arc<super::api::Api>,
    tails: Option<Arc<LogTails>>,
    name: &'static str,
    stderr_tail: Option<Arc<Mutex<VecDeque<String>>>>,
    oom: Arc<AtomicBool>,
}

impl LineOut {
    fn line(&self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.contains("memory allocation of") && line.contains("failed")
            || line.contains("MemoryError")
        {
            self.oom.store(true, Ordering::Relaxed);
        }
        let request_id = self.api.current.lock().clone();
        tracing::info!(
            target: "fnhub::function",
            function = %self.function,
            version = %self.version,
            stream = self.name,
            request_id = request_id.as_deref().unwrap_or("-"),
            "{line}"
        );
        if let (Some(tails), Some(id)) = (&self.tails, &request_id) {
            tails.append(id, line);
        }
        if let Some(tail) = &self.stderr_tail {
            let mut tail = tail.lock();
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }
}

async fn read_lines(receiver: pipe::Receiver, pipe: Arc<LogPipe>, out: LineOut) {
    let max_line = usize::try_from(MAX_LOG_LINE).unwrap_or(usize::MAX);
    let mut chunk = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if receiver.readable().await.is_err() {
            break;
        }
        let (n, total) = {
            let mut read = pipe.read.lock();
            match receiver.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    *read += n as u64;
                    (n, *read)
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            }
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(at) = pending[start..].iter().position(|b| *b == b'\n') {
            out.line(&pending[start..start + at]);
            start += at + 1;
        }
        pending.drain(..start);
        if pending.len() >= max_line {
            out.line(&pending);
            pending.clear();
        }
        pipe.handled.send_replace(total);
    }
    if !pending.is_empty() {
        out.line(&pending);
    }
    pipe.handled.send_replace(u64::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_four_kilobytes_of_a_watched_invocation() {
        let tails = LogTails::new();
        let id = InvocationId::random();
        let other = InvocationId::random();
        assert!(tails.watch(id));
        tails.append(&id.to_string(), "first");
        tails.append(&other.to_string(), "not watched");
        assert_eq!(tails.take(id).unwrap(), b"first\n");
        assert!(tails.take(id).is_none());
        assert!(tails.take(other).is_none());

        assert!(tails.watch(id));
        for i in 0..1000 {
            tails.append(&id.to_string(), &format!("line {i}"));
        }
        let tail = tails.take(id).unwrap();
        assert_eq!(tail.len(), LOG_TAIL_BYTES);
        assert!(tail.ends_with(b"line 999\n"));
    }

    #[test]
    fn watching_is_bounded() {
        let tails = LogTails::new();
        for _ in 0..MAX_WATCHED {
            assert!(tails.watch(InvocationId::random()));
        }
        assert!(!tails.watch(InvocationId::random()));
    }
}
