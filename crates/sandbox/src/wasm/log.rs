//! A guest's stdout and stderr, line by line into `tracing`, with a byte budget per
//! invocation.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where one stream of one invocation goes.
#[derive(Clone)]
pub(super) struct LogPipe {
    state: Arc<Mutex<State>>,
}

struct State {
    function: Arc<str>,
    version: u32,
    request_id: String,
    stream: &'static str,
    /// The line being written.
    partial: Vec<u8>,
    /// Bytes this invocation may still log; past it, output is counted and dropped.
    budget: usize,
    dropped: usize,
}

impl LogPipe {
    pub(super) fn new(
        function: Arc<str>,
        version: u32,
        request_id: String,
        stream: &'static str,
        budget: usize,
    ) -> LogPipe {
        LogPipe {
            state: Arc::new(Mutex::new(State {
                function,
                version,
                request_id,
                stream,
                partial: Vec::new(),
                budget,
                dropped: 0,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut s = self.state.lock();
        let keep = bytes.len().min(s.budget);
        s.budget -= keep;
        s.dropped += bytes.len() - keep;
        let mut rest = &bytes[..keep];
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            s.partial.extend_from_slice(&rest[..at]);
            s.emit();
            rest = &rest[at + 1..];
        }
        s.partial.extend_from_slice(rest);
    }

    /// Emits the last, unterminated line and reports what was dropped.
    pub(super) fn finish(&self) {
        let mut s = self.state.lock();
        if !s.partial.is_empty() {
            s.emit();
        }
        if s.dropped > 0 {
            tracing::warn!(
                target: "fnhub::function",
                function = %s.function,
                version = s.version,
                stream = s.stream,
                request_id = %s.request_id,
                dropped_bytes = s.dropped,
                "output past the per-invocation log budget was dropped"
            );
            s.dropped = 0;
        }
    }
}

impl State {
    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        tracing::info!(
            target: "fnhub::function",
            function = %self.function,
            version = self.version,
            stream = self.stream,
            request_id = %self.request_id,
            "{line}"
        );
        self.partial.clear();
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Never full: past the budget, output is dropped rather than blocking the guest.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
