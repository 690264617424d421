//! The server side of one HTTP/1.1 connection of the Lambda Runtime API: request heads read
//! with `httparse`, bodies by `Content-Length` or chunked, answers written in one `write`.
//!
//! Its own, not hyper's, because a warm invocation is two exchanges on this connection and
//! little else: with hyper's dispatcher between the socket and the handlers an idle warm
//! invocation cost 2.5× a raw loopback round trip, where a tokio server's floor is 1.2×
//! (`benches/benches/process.rs`). The process on the other end is untrusted, so every
//! limit is checked before anything is allocated for it: a head is at most [`MAX_HEAD`]
//! bytes, a body at most what the handler allows (the rest is read and thrown away up to
//! [`MAX_DRAIN`], then the connection is closed), a chunk-size line at most 64 bytes.
//! Garbage is a typed [`HeadError`] or [`BodyError`], answered `400`/`431`/`413`, never a
//! panic.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request head read; a longer one is answered `431` and the connection closed.
pub(crate) const MAX_HEAD: usize = 64 << 10;

/// The most headers a request may have.
const MAX_HEADERS: usize = 64;

/// The most bytes of a refused body that are read and thrown away; past them the connection
/// is closed.
pub(crate) const MAX_DRAIN: usize = 64 << 20;

/// The longest chunk-size line (with its extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 64;

/// A request's method, as far as the Runtime API cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Other(String),
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Other(m) => m,
        })
    }
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// A request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// `Lambda-Runtime-Function-Error-Type`, when sent.
    pub(crate) error_type: Option<String>,
    framing: Framing,
    /// The client asked for the connection to close after this request (or spoke HTTP/1.0
    /// without asking to keep it).
    close: bool,
    /// `Expect: 100-continue`: the client waits for a `100` before it sends the body.
    expect_continue: bool,
}

/// Why no request head could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// The connection ended between requests.
    #[error("the connection closed")]
    Closed,
    #[error("reading the connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not an HTTP/1.x request head (`400`).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers (`431`).
    #[error("the request head is too large")]
    TooLarge,
}

impl HeadError {
    /// The status line to answer with before closing, for a head that was read but
    /// refused; `None` when the connection is gone.
    pub(crate) fn status(&self) -> Option<&'static str> {
        match self {
            HeadError::Closed | HeadError::Io(_) => None,
            HeadError::Malformed(_) => Some("400 Bad Request"),
            HeadError::TooLarge => Some("431 Request Header Fields Too Large"),
        }
    }
}

/// Why a request's body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Over the handler's limit; as much of it as [`MAX_DRAIN`] allows was read and thrown
    /// away (`413`).
    #[error("the body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// Cut short or badly framed (`400`); the connection closes after the answer.
    #[error("{0}")]
    Read(String),
}

/// An answer, written in one piece.
pub(crate) struct Reply {
    head: Vec<u8>,
    body: Bytes,
}

impl Reply {
    /// An answer with `status` (a status line's code and reason, `"202 Accepted"`) and a
    /// JSON body.
    pub(crate) fn json(status: &str, body: Bytes) -> Reply {
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_bytes());
        head.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
        Reply { head, body }
    }

    /// Adds a header, unless its value could not be sent as one (a control character or a
    /// byte outside visible ASCII, spaces and tabs): values come from callers, and a line
    /// break in one would write a header of the caller's choosing.
    pub(crate) fn header(&mut self, name: &str, value: &str) {
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return;
        }
        self.head.extend_from_slice(name.as_bytes());
        self.head.extend_from_slice(b": ");
        self.head.extend_from_slice(value.as_bytes());
        self.head.extend_from_slice(b"\r\n");
    }

    /// The status code, for tests.
    #[cfg(test)]
    fn status(&self) -> &[u8] {
        &self.head[9..12]
    }
}

/// One connection from the process.
pub(crate) struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    /// The body of the last head, not yet read: it is thrown away before the next head.
    unread: Option<Framing>,
    /// The last head asked for `100 Continue` and has not had it.
    awaiting_continue: bool,
    /// The connection closes after the answer being written.
    close: bool,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buf: BytesMut::with_capacity(8 << 10),
            unread: None,
            awaiting_continue: false,
            close: false,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 << 10);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Whether the process has closed the connection (or it failed), asked of the socket
    /// now, without waiting: a connection parked with its `GET /next` is read by no one
    /// until an invocation comes for it, and tokio's view of its readiness may not have
    /// caught up with a close that just happened. Bytes it sent meanwhile say it is open.
    pub(crate) fn closed_now(&self) -> bool {
        use rustix::net::{RecvFlags, recv};
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match recv(
            &self.stream,
            &mut probe[..],
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Ok((n, _)) => n == 0,
            Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
        }
    }

    /// The next request's head.
    pub(crate) async fn read_head(&mut self) -> Result<Head, HeadError> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut headers);
                match request.parse(&self.buf) {
                    Ok(httparse::Status::Complete(length)) => {
                        if length > MAX_HEAD {
                            return Err(HeadError::TooLarge);
                        }
                        let head = head_of(&request)?;
                        self.buf.advance(length);
                        self.unread = Some(head.framing);
                        self.awaiting_continue = head.expect_continue;
                        self.close = head.close;
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                    Err(e) => return Err(HeadError::Malformed(e.to_string())),
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(HeadError::TooLarge);
                }
            }
            if self.fill().await? == 0 {
                return Err(if self.buf.is_empty() {
                    HeadError::Closed
                } else {
                    HeadError::Malformed("the connection closed inside a request head".into())
                });
            }
        }
    }

    /// The body of the last head, if it is at most `limit` bytes.
    pub(crate) async fn read_body(&mut self, limit: usize) -> Result<Bytes, BodyError> {
        let Some(framing) = self.unread.take() else {
            return Ok(Bytes::new());
        };
        if framing == Framing::Length(0) {
            return Ok(Bytes::new());
        }
        if self.awaiting_continue {
            self.awaiting_continue = false;
            if matches!(framing, Framing::Length(n) if n > limit as u64) {
                // Refused before it is sent: the client sends nothing more on this
                // connection until it has an answer, so the answer closes it.
                self.close = true;
                return Err(BodyError::TooLarge(limit));
            }
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|e| self.cut(e.to_string()))?;
        }
        let mut body = BytesMut::new();
        let result = match framing {
            Framing::Length(n) => self.length_body(n, limit, &mut body).await,
            Framing::Chunked => self.chunked_body(limit, &mut body).await,
        };
        result.map(|()| body.freeze())
    }

    /// Marks the connection to close after its answer, and says why.
    fn cut(&mut self, why: String) -> BodyError {
        self.close = true;
        BodyError::Read(why)
    }

    /// Takes `n` bytes of the stream into `into` (or throws them away when `into` is
    /// `None`).
    async fn take(&mut self, mut n: u64, mut into: Option<&mut BytesMut>) -> Result<(), BodyError> {
        while n > 0 {
            if self.buf.is_empty() {
                match self.fill().await {
                    Ok(0) => return Err(self.cut("the connection closed inside a body".into())),
                    Ok(_) => {}
                    Err(e) => return Err(self.cut(e.to_string())),
                }
            }
            let here = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let part = self.buf.split_to(here);
            if let Some(into) = into.as_deref_mut() {
                into.extend_from_slice(&part);
            }
            n -= here as u64;
        }
        Ok(())
    }

    async fn length_body(
        &mut self,
        n: u64,
        limit: usize,
        body: &mut BytesMut,
    ) -> Result<(), BodyError> {
        if n > limit as u64 {
            if n > MAX_DRAIN as u64 {
                self.close = true;
            } else {
                self.take(n, None).await?;
            }
            return Err(BodyError::TooLarge(limit));
        }
        body.reserve(n as usize);
        self.take(n, Some(body)).await
    }

    /// One line (a chunk size or a trailer), without its CRLF, of at most
    /// [`MAX_CHUNK_LINE`] bytes unless `long` (trailers may be longer: up to [`MAX_HEAD`]).
    async fn line(&mut self, long: bool) -> Result<Bytes, BodyError> {
        let most = if long { MAX_HEAD } else { MAX_CHUNK_LINE };
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(at).freeze();
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > most {
                return Err(self.cut("a chunked body's line is too long".into()));
            }
            match self.fill().await {
                Ok(0) => return Err(self.cut("the connection closed inside a body".into())),
                Ok(_) => {}
                Err(e) => return Err(self.cut(e.to_string())),
            }
        }
    }

    async fn chunked_body(&mut self, limit: usize, body: &mut BytesMut) -> Result<(), BodyError> {
        let mut total: u64 = 0;
        let mut too_large = false;
        loop {
            let line = self.line(false).await?;
            let size = std::str::from_utf8(&line)
                .ok()
                .map(|l| l.split(';').next().unwrap_or_default().trim())
                .filter(|s| !s.is_empty() && s.len() <= 16)
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            let Some(size) = size else {
                return Err(self.cut("a chunked body's chunk size is not hexadecimal".into()));
            };
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line(true).await?.is_empty() {}
                break;
            }
            total = total.saturating_add(size);
            if total > limit as u64 {
                too_large = true;
                if total > MAX_DRAIN as u64 {
                    self.close = true;
                    return Err(BodyError::TooLarge(limit));
                }
            }
            if too_large {
                self.take(size, None).await?;
            } else {
                self.take(size, Some(body)).await?;
            }
            if !self.line(false).await?.is_empty() {
                return Err(self.cut("a chunk is longer than its size".into()));
            }
        }
        if too_large {
            return Err(BodyError::TooLarge(limit));
        }
        Ok(())
    }

    /// Writes `reply` and ends the connection (after a head that could not be read).
    pub(crate) async fn answer_and_close(&mut self, reply: Reply) -> std::io::Result<bool> {
        self.close = true;
        self.answer(reply).await
    }

    /// Writes `reply`; then, unless the connection is to close, throws away what the
    /// handler left unread of the request's body. `Ok(false)` when the connection is done.
    pub(crate) async fn answer(&mut self, reply: Reply) -> std::io::Result<bool> {
        if self.unread.is_some() && self.awaiting_continue {
            // The client waits for a `100` that will not come, with its body unsent.
            self.close = true;
        }
        let Reply { mut head, body } = reply;
        head.extend_from_slice(b"Content-Length: ");
        head.extend_from_slice(body.len().to_string().as_bytes());
        if self.close {
            head.extend_from_slice(b"\r\nConnection: close");
        }
        head.extend_from_slice(b"\r\n\r\n");
        if body.len() <= 16 << 10 {
            head.extend_from_slice(&body);
            self.stream.write_all(&head).await?;
        } else {
            self.stream.write_all(&head).await?;
            self.stream.write_all(&body).await?;
        }
        if self.close {
            return Ok(false);
        }
        if let Some(framing) = self.unread.take() {
            let drained = match framing {
                Framing::Length(n) if n <= MAX_DRAIN as u64 => self.take(n, None).await.is_ok(),
                Framing::Length(_) => false,
                // Over a limit of 0, every chunk is read and thrown away.
                Framing::Chunked => matches!(
                    self.chunked_body(0, &mut BytesMut::new()).await,
                    Ok(()) | Err(BodyError::TooLarge(_))
                ),
            };
            if !drained || self.close {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The parts of `request` the API reads, checked.
fn head_of(request: &httparse::Request<'_, '_>) -> Result<Head, HeadError> {
    let malformed = |m: &str| HeadError::Malformed(m.to_owned());
    let method = match request.method.ok_or_else(|| malformed("no method"))? {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => Method::Other(other.to_owned()),
    };
    let path = request.path.ok_or_else(|| malformed("no path"))?.to_owned();
    let http10 = request.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    let mut expect_continue = false;
    let mut error_type = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = || String::from_utf8_lossy(header.value);
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| malformed("Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed("two different Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let value = value();
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(malformed("a Transfer-Encoding other than chunked"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value().split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value().trim().eq_ignore_ascii_case("100-continue") {
                return Err(malformed("an Expect other than 100-continue"));
            }
            expect_continue = true;
        } else if name.eq_ignore_ascii_case("lambda-runtime-function-error-type") {
            error_type = Some(value().into_owned());
        }
    }
    if chunked && length.is_some() {
        return Err(malformed("both Content-Length and Transfer-Encoding"));
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    Ok(Head {
        method,
        path,
        error_type,
        framing,
        close,
        expect_continue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one connection with a test handler (`/echo` answers its body, up to 16
    /// bytes; any other path answers without reading it) until it ends, and returns all
    /// the client was sent back for `input` (written at once, then the write half shut).
    async fn exchange(input: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Connection::new(stream);
            loop {
                let head = match conn.read_head().await {
                    Ok(head) => head,
                    Err(e) => {
                        if let Some(status) = e.status() {
                            let reply = Reply::json(status, e.to_string().into());
                            let _ = conn.answer_and_close(reply).await;
                        }
                        return;
                    }
                };
                let reply = if head.path == "/echo" {
                    match conn.read_body(16).await {
                        Ok(body) => Reply::json("200 OK", body),
                        Err(BodyError::TooLarge(_)) => Reply::json("413 Too Large", Bytes::new()),
                        Err(BodyError::Read(_)) => Reply::json("400 Bad Request", Bytes::new()),
                    }
                } else {
                    Reply::json("200 OK", Bytes::from(head.path.clone()))
                };
                if !matches!(conn.answer(reply).await, Ok(true)) {
                    return;
                }
            }
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(&input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        server.await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn statuses(out: &str) -> Vec<&str> {
        out.match_indices("HTTP/1.1 ")
            .map(|(at, _)| &out[at + 9..at + 12])
            .collect()
    }

    #[tokio::test]
    async fn pipelined_requests_get_their_answers_in_order() {
        let out = exchange(
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /a HTTP/1.1\r\n\r\n\
              POST /echo HTTP/1.1\r\ncontent-length: 3\r\n\r\nbye"
                .to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["200", "200", "200"]);
        let bodies: Vec<&str> = out.split("\r\n\r\n").skip(1).collect();
        assert!(bodies[0].starts_with("hello"), "{out}");
        assert!(bodies[1].starts_with("/a"), "{out}");
        assert_eq!(bodies[2], "bye");
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_with_extensions_and_trailers() {
        let out = exchange(
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;name=x\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n\
              GET /after HTTP/1.1\r\n\r\n"
                .to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["200", "200"]);
        assert!(out.contains("\r\n\r\nwikipedia"), "{out}");
        assert!(out.ends_with("/after"), "{out}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_and_the_connection_goes_on() {
        let out = exchange(
            b"POST /echo HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234567890123456789\
              POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              10\r\n0123456789abcdef\r\n1\r\nX\r\n0\r\n\r\n\
              GET /after HTTP/1.1\r\n\r\n"
                .to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["413", "413", "200"], "{out}");
        assert!(out.ends_with("/after"), "{out}");
    }

    #[tokio::test]
    async fn an_unread_body_is_skipped_before_the_next_request() {
        let out = exchange(
            b"POST /skip HTTP/1.1\r\nContent-Length: 10\r\n\r\nGET /x HTTP\
              POST /skip HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /after HTTP/1.1\r\n\r\n"
                .to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["200", "200", "200"], "{out}");
        assert!(out.ends_with("/after"), "{out}");
    }

    #[tokio::test]
    async fn garbage_and_oversized_heads_are_answered_and_the_connection_closed() {
        let out = exchange(b"\x00\x01garbage\r\n\r\nGET /after HTTP/1.1\r\n\r\n".to_vec()).await;
        assert_eq!(statuses(&out), ["400"], "{out}");
        assert!(out.contains("Connection: close"), "{out}");

        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(statuses(&exchange(big).await), ["431"]);

        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("H{i}: v\r\n"))
            .collect();
        let out = exchange(format!("GET / HTTP/1.1\r\n{many}\r\n").into_bytes()).await;
        assert_eq!(statuses(&out), ["431"]);
    }

    #[tokio::test]
    async fn bodies_that_lie_about_their_framing_are_refused() {
        for request in [
            &b"POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..],
            b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nExpect: teapot\r\n\r\n",
        ] {
            let out = exchange(request.to_vec()).await;
            assert_eq!(statuses(&out), ["400"], "{out}");
        }
        // Framing errors inside a body: answered 400, then the connection closes.
        for request in [
            &b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        ] {
            let mut request = request.to_vec();
            request.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
            let out = exchange(request).await;
            assert_eq!(statuses(&out)[0], "400", "{out}");
            assert!(!out.ends_with("/after"), "{out}");
        }
        // A body cut short by the end of the connection.
        let out = exchange(b"POST /echo HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort".to_vec()).await;
        assert_eq!(statuses(&out), ["400"], "{out}");
    }

    #[tokio::test]
    async fn expect_continue_gets_a_100_before_the_body_is_read() {
        let out = exchange(
            b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["100", "200"], "{out}");
        // Too large to be sent at all: no 100, a 413 that closes the connection.
        let out = exchange(
            b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["413"], "{out}");
        assert!(out.contains("Connection: close"), "{out}");
    }

    #[tokio::test]
    async fn http_1_0_and_connection_close_end_after_their_answer() {
        let out = exchange(b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\n\r\n".to_vec()).await;
        assert_eq!(statuses(&out), ["200"], "{out}");
        let out = exchange(
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["200"], "{out}");
        let out = exchange(
            b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(statuses(&out), ["200", "200"], "{out}");
    }

    #[test]
    fn header_values_that_would_break_the_head_are_left_out() {
        let mut reply = Reply::json("200 OK", Bytes::new());
        reply.header("Lambda-Runtime-Trace-Id", "Root=1\r\nX-Injected: yes");
        reply.header("Lambda-Runtime-Client-Context", "caf\u{e9}");
        reply.header("Lambda-Runtime-Aws-Tenant-Id", "tenant 1\tA");
        let head = String::from_utf8(reply.head.clone()).unwrap();
        assert!(!head.contains("Injected"), "{head}");
        assert!(!head.contains("Client-Context"), "{head}");
        assert!(
            head.contains("Lambda-Runtime-Aws-Tenant-Id: tenant 1\tA\r\n"),
            "{head}"
        );
        assert_eq!(reply.status(), b"200");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a process sends, the connection ends without a panic, and every answer
        /// it got is a whole HTTP/1.1 status line.
        #[test]
        fn any_bytes_end_in_answers_or_a_close(
            prefix in proptest::sample::select(vec![
                &b""[..],
                b"POST /echo HTTP/1.1\r\n",
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
            ]),
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let mut input = prefix.to_vec();
            input.extend_from_slice(&bytes);
            let out = rt.block_on(exchange(input));
            for status in statuses(&out) {
                proptest::prop_assert!(status.bytes().all(|b| b.is_ascii_digit()), "{}", out);
            }
        }
    }
}
