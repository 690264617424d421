//! How the binaries log (a library never installs a subscriber; these programs do):
//! `tracing-subscriber` filtered by `RUST_LOG` (default `info`), as text or one JSON object
//! a line, to stderr through a bounded queue. A writer thread drains the queue, so logging
//! never blocks the hub's work on a slow terminal or pipe: under a flood the lines that do
//! not fit are dropped and counted (`fnhub_log_lines_dropped_total`, and a count at exit).
//!
//! A function's stdout and stderr lines are events of target `fnhub::function` with its
//! name, version and request id; HTTP access lines are `fnhub::http`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines held for the writer thread, at most.
const QUEUE_LINES: usize = 8192;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("--log-format {other:?}: text or json")),
        }
    }
}

enum Msg {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// The bounded writer: each event's bytes are one message.
#[derive(Clone)]
struct Queue {
    tx: mpsc::SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// One event's bytes, queued when the event is written out.
struct Line {
    buf: Vec<u8>,
    queue: Queue,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        if self.queue.tx.try_send(Msg::Line(line)).is_err() {
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("fnhub_log_lines_dropped_total").increment(1);
        }
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            queue: self.clone(),
        }
    }
}

/// Keeps the writer; [`Logs::finish`] writes what is queued and says what was dropped.
pub struct Logs {
    queue: Queue,
}

impl Logs {
    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most a second) for the queued lines to be written, then says on stderr
    /// how many were dropped, if any.
    pub fn finish(&self) {
        let (done, wait) = mpsc::channel();
        if self.queue.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
        let dropped = self.dropped();
        if dropped > 0 {
            eprintln!("logs: {dropped} lines dropped under load");
        }
    }
}

/// Installs the process's subscriber: `RUST_LOG` (default `info`), `format`, stderr
/// through the bounded queue.
pub fn init(format: LogFormat) -> Logs {
    let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_LINES);
    std::thread::Builder::new()
        .name("logs".into())
        .spawn(move || {
            let mut err = std::io::stderr();
            for msg in rx {
                match msg {
                    Msg::Line(line) => {
                        let _ = err.write_all(&line);
                    }
                    Msg::Flush(done) => {
                        let _ = err.flush();
                        let _ = done.send(());
                    }
                }
            }
        })
        .expect("the log thread starts");
    let queue = Queue {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(queue.clone());
    let installed = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("logs: a subscriber was already installed: {e}");
    }
    Logs { queue }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, rx) = mpsc::sync_channel::<Msg>(2);
        let queue = Queue {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for i in 0..5 {
            let mut line = queue.make_writer();
            writeln!(line, "line {i}").unwrap();
        }
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 3);
        let kept: Vec<String> = rx
            .try_iter()
            .filter_map(|m| match m {
                Msg::Line(l) => Some(String::from_utf8(l).unwrap()),
                Msg::Flush(_) => None,
            })
            .collect();
        assert_eq!(kept, vec!["line 0\n", "line 1\n"]);
        assert!("json".parse::<LogFormat>().is_ok() && "xml".parse::<LogFormat>().is_err());
    }
}
