//! The AWS Lambda Runtime API, served on loopback to one environment's process.
//!
//! Four endpoints, as the AWS documentation describes them (version `2018-06-01`):
//!
//! - `GET  /2018-06-01/runtime/invocation/next` long-polls for the next event; the answer
//!   carries `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`, and
//!   `Lambda-Runtime-Client-Context` when the invocation came from an event (its `custom`
//!   map carries `topic`, `principal` and `traceparent`), and `Lambda-Runtime-Aws-Tenant-Id`
//!   with the principal the call runs for (unless anonymous).
//! - `POST /2018-06-01/runtime/invocation/{id}/response` hands back the result: `202`, or
//!   `400` for an unknown request id and `413` for a response over the size limit.
//! - `POST /2018-06-01/runtime/invocation/{id}/error` reports a handler error: `202`.
//! - `POST /2018-06-01/runtime/init/error` reports a failed initialisation: `202`.
//!
//! Anything else gets `404` (unknown path) or `405` (known path, wrong method), with the
//! JSON error body the real API uses (`errorMessage`, `errorType`).
//!
//! A warm process waits in `GET /next` between invocations. Its connection is then parked
//! with the API, read by no task; the invocation's caller takes it, writes the event and
//! reads the process's `POST .../response` on its own task (see [`Api::exchange`]), then
//! gives the connection back to a task of its own, which writes the `202` and reads the
//! next `GET /next`. An invocation that comes before the process asks is queued for it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionError, Outcome};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};

use super::http1::{BodyError, Connection, Head, Method, Reply};

const PREFIX: &str = "/2018-06-01/runtime/";

/// The most bytes of an error report that are read; the rest is refused with `413`.
const MAX_ERROR_BODY: usize = 1 << 20;

/// How an invocation handed to the server ends.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The process took it and answered, or died while running it.
    Outcome(Outcome),
    /// The process went away before it asked for this invocation: it never saw it, so it
    /// can be delivered to the next process without running twice.
    Undelivered,
}

/// One invocation on its way to the process.
pub(crate) struct Delivery {
    pub(crate) request_id: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) deadline_ms: u64,
    pub(crate) trace_id: String,
    pub(crate) client_context: Option<String>,
    /// `Lambda-Runtime-Aws-Tenant-Id`: the principal (tenant) the call runs for, as
    /// Lambda's tenant isolation names it (`context.tenant_id` in the runtime clients).
    pub(crate) tenant: Option<String>,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// What the process said about its initialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started, not yet asking for work.
    Starting,
    /// It asked for its first invocation: initialised.
    Ready,
    /// It reported an init error.
    InitFailed(FunctionError),
}

/// The answers a process that went away still owed.
pub(crate) struct Owed {
    /// Invocations it had taken: they end with its exit.
    pub(crate) running: Vec<oneshot::Sender<Answer>>,
    /// Invocations waiting for it that it never asked for.
    pub(crate) undelivered: Vec<oneshot::Sender<Answer>>,
}

impl Owed {
    /// Ends what the process ran with `error`, and hands the rest back undelivered.
    pub(crate) fn settle(self, error: &FunctionError) {
        for reply in self.running {
            let _ = reply.send(Answer::Outcome(Err(error.clone())));
        }
        for reply in self.undelivered {
            let _ = reply.send(Answer::Undelivered);
        }
    }
}

/// Where an invocation meets the process: whichever of the two comes first waits for the
/// other.
enum Meeting {
    Empty,
    /// Connections whose `GET /next` waits for an invocation, the newest last, each with
    /// the generation of the process that made it. Normally one; a process that gave up a
    /// connection and opened another leaves the first behind until it is seen closed.
    Parked(Vec<(Connection, u64)>),
    /// An invocation that came before the process asked for it.
    Queued(Delivery),
}

/// State shared between the environment and the server.
pub(crate) struct Api {
    meeting: Mutex<Meeting>,
    /// Invocations handed out and not yet answered, by request id.
    inflight: Mutex<HashMap<Arc<str>, oneshot::Sender<Answer>>>,
    /// The request id now running (or that ran last), for log lines.
    pub(crate) current: Mutex<Option<Arc<str>>>,
    phase: Mutex<Phase>,
    phase_changed: Notify,
    /// The last init error reported, kept past the reset that follows the process's exit.
    init_error: Mutex<Option<FunctionError>>,
    arn: String,
    max_response: usize,
    /// Bumped when the process goes away: connections of the old process are closed.
    generation: watch::Sender<u64>,
}

impl Api {
    pub(crate) fn new(arn: String, max_response: usize) -> Arc<Api> {
        Arc::new(Api {
            meeting: Mutex::new(Meeting::Empty),
            inflight: Mutex::new(HashMap::new()),
            current: Mutex::new(None),
            phase: Mutex::new(Phase::Starting),
            phase_changed: Notify::new(),
            init_error: Mutex::new(None),
            arn,
            max_response,
            generation: watch::Sender::new(0),
        })
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.lock().clone()
    }

    /// Takes the init error the process reported, if any.
    pub(crate) fn take_init_error(&self) -> Option<FunctionError> {
        self.init_error.lock().take()
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock() = phase;
        self.phase_changed.notify_waiters();
    }

    /// Waits until the phase leaves `Starting`.
    pub(crate) async fn initialised(&self) -> Phase {
        loop {
            let changed = self.phase_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let phase = self.phase();
            if phase != Phase::Starting {
                return phase;
            }
            changed.await;
        }
    }

    /// Forgets the process that served so far: its connections are closed and the next
    /// process starts from `Starting`. Returns the answers still owed: for what it was
    /// running, and for what was waiting for it and was never taken. The caller sends them
    /// once it has recorded the exit, so a caller that sees the error finds the process gone.
    pub(crate) async fn reset(&self) -> Owed {
        self.generation.send_modify(|g| *g += 1);
        let running: Vec<_> = self.inflight.lock().drain().map(|(_, r)| r).collect();
        let undelivered = match std::mem::replace(&mut *self.meeting.lock(), Meeting::Empty) {
            Meeting::Queued(delivery) => vec![delivery.reply],
            // Parked connections of the old process close as they drop.
            Meeting::Empty | Meeting::Parked(_) => Vec::new(),
        };
        *self.current.lock() = None;
        self.set_phase(Phase::Starting);
        Owed {
            running,
            undelivered,
        }
    }

    /// Hands `delivery` to the process: to the caller, with the connection whose
    /// `GET /next` waits for it, so that the caller writes the event and reads the answer
    /// itself ([`exchange`](Api::exchange)), no task between them; or, when no connection
    /// waits, queued for the next `GET /next`, whose answer comes through the delivery's
    /// reply.
    pub(crate) fn hand(&self, delivery: Delivery) -> Option<(Connection, Delivery)> {
        let generation = *self.generation.borrow();
        let mut meeting = self.meeting.lock();
        if let Meeting::Parked(parked) = &mut *meeting {
            while let Some((conn, of)) = parked.pop() {
                // One of an old process, or that its process closed while it waited,
                // would take the event to no one.
                if of == generation && !conn.closed_now() {
                    if parked.is_empty() {
                        *meeting = Meeting::Empty;
                    }
                    return Some((conn, delivery));
                }
            }
        }
        if let Meeting::Queued(stale) = std::mem::replace(&mut *meeting, Meeting::Queued(delivery))
        {
            // One invocation at a time is handed over; one left queued was given up.
            let _ = stale.reply.send(Answer::Undelivered);
        }
        None
    }

    /// The process's `GET /next` on `conn`: the invocation queued for it, with the
    /// connection to answer on, or `None` when none is queued and the connection is parked
    /// until one comes (see [`hand`](Api::hand)).
    fn meet(&self, conn: Connection) -> Option<(Connection, Delivery)> {
        if self.phase() == Phase::Starting {
            self.set_phase(Phase::Ready);
        }
        let generation = *self.generation.borrow();
        let mut meeting = self.meeting.lock();
        match std::mem::replace(&mut *meeting, Meeting::Empty) {
            Meeting::Queued(delivery) => Some((conn, delivery)),
            Meeting::Empty => {
                *meeting = Meeting::Parked(vec![(conn, generation)]);
                None
            }
            Meeting::Parked(mut parked) => {
                parked.retain(|(c, of)| *of == generation && !c.closed_now());
                parked.push((conn, generation));
                *meeting = Meeting::Parked(parked);
                None
            }
        }
    }

    /// Writes the event of `delivery` on `conn`, whose `GET /next` asked for it, and
    /// serves what the process sends on that connection until `answer` (the delivery's
    /// reply) resolves: normally its `POST .../response`, read here on the caller's task.
    /// The connection then goes back to a task of its own, which writes the last reply
    /// (the `202`) off the caller's path and waits for the next `GET /next`. An answer
    /// that comes on another connection ends the exchange the same way.
    pub(crate) async fn exchange(
        self: &Arc<Self>,
        mut conn: Connection,
        delivery: Delivery,
        answer: &mut oneshot::Receiver<Answer>,
    ) -> Result<Answer, oneshot::error::RecvError> {
        let event = self.event(delivery);
        if !matches!(conn.answer(event).await, Ok(true)) {
            // The connection broke: the process's exit, or its next request elsewhere,
            // answers the invocation.
            return answer.await;
        }
        loop {
            let head = tokio::select! {
                biased;
                answer = &mut *answer => {
                    self.carry_on(conn, None);
                    return answer;
                }
                head = conn.read_head() => head,
            };
            let head = match head {
                Ok(head) => head,
                Err(error) => {
                    refuse(&mut conn, &error).await;
                    return answer.await;
                }
            };
            if is_next(&head) {
                // It asks for more here and answers elsewhere, or not at all.
                self.carry_on(conn, Some(Pending::Head(head)));
                return answer.await;
            }
            let reply = self.handle(&head, &mut conn).await;
            if let Ok(outcome) = answer.try_recv() {
                // Answered: the reply (the `202`) is written by the connection's task.
                self.carry_on(conn, Some(Pending::Reply(reply)));
                return Ok(outcome);
            }
            if !matches!(conn.answer(reply).await, Ok(true)) {
                return answer.await;
            }
        }
    }

    /// Accepts connections on `listener` until the returned task is aborted.
    pub(crate) fn serve(self: &Arc<Self>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "runtime API accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                api.carry_on(Connection::new(stream), None);
            }
        })
    }

    /// Serves `conn` on a task of its own, starting with what the caller left `pending`,
    /// until it closes, it parks with its `GET /next`, or the process goes away.
    fn carry_on(self: &Arc<Self>, conn: Connection, pending: Option<Pending>) {
        let api = self.clone();
        let mut generation = api.generation.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = api.serve_connection(conn, pending) => {}
                _ = generation.changed() => {}
            }
        });
    }

    /// Answers the requests of one connection, one after another, until it closes or
    /// parks with a `GET /next` that finds no invocation.
    async fn serve_connection(&self, mut conn: Connection, mut pending: Option<Pending>) {
        loop {
            let head = match pending.take() {
                Some(Pending::Head(head)) => head,
                Some(Pending::Reply(reply)) => {
                    if !matches!(conn.answer(reply).await, Ok(true)) {
                        return;
                    }
                    continue;
                }
                None => match conn.read_head().await {
                    Ok(head) => head,
                    Err(error) => {
                        refuse(&mut conn, &error).await;
                        return;
                    }
                },
            };
            let reply = if is_next(&head) {
                match self.meet(conn) {
                    Some((back, delivery)) => {
                        conn = back;
                        self.event(delivery)
                    }
                    None => return,
                }
            } else {
                self.handle(&head, &mut conn).await
            };
            if !matches!(conn.answer(reply).await, Ok(true)) {
                return;
            }
        }
    }

    async fn handle(&self, head: &Head, conn: &mut Connection) -> Reply {
        let path = head.path.as_str();
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return not_found(path);
        };
        let mut parts = rest.split('/');
        let route = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("invocation"), Some("next"), None, _) => Route::Next,
            (Some("init"), Some("error"), None, _) => Route::InitError,
            (Some("invocation"), Some(id), Some("response"), None) if !id.is_empty() => {
                Route::Response(id)
            }
            (Some("invocation"), Some(id), Some("error"), None) if !id.is_empty() => {
                Route::Error(id)
            }
            _ => return not_found(path),
        };
        let method_ok = match route {
            Route::Next => head.method == Method::Get,
            _ => head.method == Method::Post,
        };
        if !method_ok {
            return error_reply(
                "405 Method Not Allowed",
                "MethodNotAllowed",
                &format!("{} is not allowed on {path}", head.method),
            );
        }
        match route {
            // Served by `meet` before the handler is asked.
            Route::Next => error_reply(
                "500 Internal Server Error",
                "ServiceException",
                "GET /next is not served here",
            ),
            Route::Response(id) => self.response(id, conn).await,
            Route::Error(id) => self.error(Some(id), head, conn).await,
            Route::InitError => self.error(None, head, conn).await,
        }
    }

    /// The answer to `GET /next` that carries `delivery`, which is now in flight.
    fn event(&self, delivery: Delivery) -> Reply {
        let Delivery {
            request_id,
            payload,
            deadline_ms,
            trace_id,
            client_context,
            tenant,
            reply,
        } = delivery;
        self.inflight.lock().insert(request_id.clone(), reply);
        *self.current.lock() = Some(request_id.clone());
        // Header names as the real service writes them, for clients that match them by
        // their exact case.
        let mut response = Reply::json("200 OK", payload);
        response.header("Lambda-Runtime-Aws-Request-Id", &request_id);
        response.header("Lambda-Runtime-Deadline-Ms", &deadline_ms.to_string());
        response.header("Lambda-Runtime-Invoked-Function-Arn", &self.arn);
        for (name, value) in [
            ("Lambda-Runtime-Trace-Id", Some(trace_id.as_str())),
            ("Lambda-Runtime-Client-Context", client_context.as_deref()),
            ("Lambda-Runtime-Aws-Tenant-Id", tenant.as_deref()),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                response.header(name, value);
            }
        }
        response
    }

    async fn response(&self, id: &str, conn: &mut Connection) -> Reply {
        if !self.inflight.lock().contains_key(id) {
            return invalid_request_id(id);
        }
        let body = match conn.read_body(self.max_response).await {
            Ok(body) => body,
            Err(BodyError::TooLarge(_)) => {
                let error = FunctionError::new(
                    ErrorKind::Unhandled,
                    format!(
                        "Response payload size exceeded maximum allowed payload size ({} bytes).",
                        self.max_response
                    ),
                )
                .with_type("Function.ResponseSizeTooLarge");
                self.finish(id, Err(error));
                return error_reply(
                    "413 Payload Too Large",
                    "RequestEntityTooLarge",
                    &format!(
                        "the response exceeds the limit of {} bytes",
                        self.max_response
                    ),
                );
            }
            Err(error @ BodyError::Read(_)) => {
                return error_reply("400 Bad Request", "InvalidRequest", &error.to_string());
            }
        };
        if self.finish(id, Ok(body)) {
            accepted()
        } else {
            invalid_request_id(id)
        }
    }

    async fn error(&self, id: Option<&str>, head: &Head, conn: &mut Connection) -> Reply {
        if let Some(id) = id
            && !self.inflight.lock().contains_key(id)
        {
            return invalid_request_id(id);
        }
        let body = match conn.read_body(MAX_ERROR_BODY).await {
            Ok(body) => body,
            Err(BodyError::TooLarge(_)) => {
                return error_reply(
                    "413 Payload Too Large",
                    "RequestEntityTooLarge",
                    "the error report is too large",
                );
            }
            Err(error @ BodyError::Read(_)) => {
                return error_reply("400 Bad Request", "InvalidRequest", &error.to_string());
            }
        };
        let error = parse_error_report(&body, head.error_type.clone(), id.is_none());
        match id {
            Some(id) => {
                if !self.finish(id, Err(error)) {
                    return invalid_request_id(id);
                }
            }
            None => {
                tracing::warn!(error = %error, "the function failed to initialise");
                *self.init_error.lock() = Some(error.clone());
                self.set_phase(Phase::InitFailed(error));
            }
        }
        accepted()
    }

    /// Answers the invocation `id`; false if it is not in flight.
    fn finish(&self, id: &str, outcome: Outcome) -> bool {
        // `current` keeps naming this request until the next one is handed out: output
        // written just before the answer is often read just after it.
        let reply = self.inflight.lock().remove(id);
        match reply {
            Some(reply) => {
                let _ = reply.send(Answer::Outcome(outcome));
                true
            }
            None => false,
        }
    }
}

/// What a connection's task does first when it takes a connection over.
enum Pending {
    /// Writes the reply to the request the caller served.
    Reply(Reply),
    /// Serves the request whose head the caller read.
    Head(Head),
}

/// Answers a head that could not be read with its status, if the connection is still
/// there, and closes it.
async fn refuse(conn: &mut Connection, error: &super::http1::HeadError) {
    if let Some(status) = error.status() {
        let reply = error_reply(status, "InvalidRequest", &error.to_string());
        let _ = conn.answer_and_close(reply).await;
    }
}

/// Whether `head` is the process's `GET /next` (a wrong method on that path is answered
/// by the handler with `405`).
fn is_next(head: &Head) -> bool {
    head.method == Method::Get && head.path.strip_prefix(PREFIX) == Some("invocation/next")
}

enum Route<'a> {
    Next,
    Response(&'a str),
    Error(&'a str),
    InitError,
}

/// Turns a runtime client's error report (`{"errorMessage", "errorType", "stackTrace"}`)
/// into a [`FunctionError`]. A body that is not such JSON becomes the message as text.
pub(crate) fn parse_error_report(
    body: &[u8],
    header_type: Option<String>,
    init: bool,
) -> FunctionError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let message = match (&json, field("errorMessage")) {
        (_, Some(m)) => m,
        (Some(_), None) => String::new(),
        (None, None) => String::from_utf8_lossy(body).into_owned(),
    };
    let stack_trace: Vec<String> = match json.as_ref().and_then(|j| j.get("stackTrace")) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.trim_end().to_owned(),
                other => other.to_string(),
            })
            .collect(),
        Some(serde_json::Value::String(s)) => s.lines().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let error_type = field("errorType").or(header_type).unwrap_or_else(|| {
        if init {
            "Runtime.InitError"
        } else {
            "Unhandled"
        }
        .to_owned()
    });
    let kind = if error_type == "MemoryError" || error_type == "Runtime.OutOfMemory" {
        ErrorKind::OutOfMemory
    } else {
        ErrorKind::Unhandled
    };
    FunctionError::new(kind, message)
        .with_type(error_type)
        .with_stack_trace(stack_trace)
}

fn accepted() -> Reply {
    Reply::json("202 Accepted", Bytes::from_static(br#"{"status":"OK"}"#))
}

fn invalid_request_id(id: &str) -> Reply {
    error_reply(
        "400 Bad Request",
        "InvalidRequestID",
        &format!("no invocation {id:?} is waiting for an answer"),
    )
}

fn not_found(path: &str) -> Reply {
    error_reply(
        "404 Not Found",
        "NotFound",
        &format!("no such endpoint: {path}"),
    )
}

/// An answer with `status` and the JSON error body the real API uses.
fn error_reply(status: &str, error_type: &str, message: &str) -> Reply {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    Reply::json(status, Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `request` on a new connection to `addr` and returns the answer's text, read
    /// until the body's `Content-Length` is in.
    async fn send(stream: &mut tokio::net::TcpStream, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
        }
    }

    fn delivery(id: &str, trace_id: &str) -> (Delivery, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let delivery = Delivery {
            request_id: id.into(),
            payload: Bytes::from_static(b"{\"n\":1}"),
            deadline_ms: 1,
            trace_id: trace_id.into(),
            client_context: None,
            tenant: Some("t1".into()),
            reply,
        };
        (delivery, answer)
    }

    const NEXT: &str = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n";

    fn respond(id: &str, body: &str) -> String {
        format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn an_event_goes_to_the_runtime_that_still_waits_not_to_one_that_left() {
        use tokio::io::AsyncWriteExt;
        let api = Api::new("arn:aws:lambda:local:0:function:f".into(), 1 << 20);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api.serve(listener);
        // A first connection asks for work, is parked, and goes away before any comes.
        let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
        gone.write_all(NEXT.as_bytes()).await.unwrap();
        api.initialised().await;
        drop(gone);
        let mut stays = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (event, answer) = delivery("r-1", "Root=1-2-3\r\nX-Injected: 1");
        assert!(
            api.hand(event).is_none(),
            "the event went to the connection that left"
        );
        // Queued: the next `GET /next` takes it.
        let event =
            tokio::time::timeout(std::time::Duration::from_secs(10), send(&mut stays, NEXT))
                .await
                .expect("the queued event did not come");
        assert!(event.starts_with("HTTP/1.1 200 OK\r\n"), "{event}");
        assert!(
            event.contains("Lambda-Runtime-Aws-Request-Id: r-1\r\n"),
            "{event}"
        );
        assert!(
            event.contains("Lambda-Runtime-Aws-Tenant-Id: t1\r\n"),
            "{event}"
        );
        assert!(!event.contains("Injected"), "{event}");
        assert!(event.ends_with("{\"n\":1}"), "{event}");
        let done = send(&mut stays, &respond("r-1", "ok")).await;
        assert!(done.starts_with("HTTP/1.1 202 Accepted\r\n"), "{done}");
        match answer.await.unwrap() {
            Answer::Outcome(Ok(body)) => assert_eq!(&body[..], b"ok"),
            other => panic!("{other:?}"),
        }
        server.abort();
    }

    /// A process that waits for work gets its event from the caller, who reads the answer
    /// itself; the `202` and the next `GET /next` are the connection's task's again. An
    /// answer sent on another connection ends the caller's exchange too.
    #[tokio::test]
    async fn the_caller_writes_the_event_to_a_waiting_process_and_reads_its_answer() {
        use tokio::io::AsyncWriteExt;
        let api = Api::new("arn:aws:lambda:local:0:function:f".into(), 1 << 20);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api.serve(listener);
        let mut runtime = tokio::net::TcpStream::connect(addr).await.unwrap();
        runtime.write_all(NEXT.as_bytes()).await.unwrap();
        api.initialised().await;
        for (id, other_connection) in [("r-1", false), ("r-2", true), ("r-3", false)] {
            // Its task parks the connection once it has read the `GET /next`.
            for _ in 0..1000 {
                if matches!(&*api.meeting.lock(), Meeting::Parked(p) if !p.is_empty()) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let (event, mut answer) = delivery(id, "Root=1-2-3");
            let (conn, event) = api.hand(event).expect("no connection waited");
            let caller = {
                let api = api.clone();
                tokio::spawn(async move { api.exchange(conn, event, &mut answer).await })
            };
            // The runtime reads its event.
            let mut head = Vec::new();
            loop {
                use tokio::io::AsyncReadExt;
                let mut chunk = [0u8; 4096];
                let n = runtime.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&chunk[..n]);
                if head.ends_with(b"{\"n\":1}") {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            assert!(
                text.contains(&format!("Lambda-Runtime-Aws-Request-Id: {id}\r\n")),
                "{text}"
            );
            let accepted = if other_connection {
                let mut other = tokio::net::TcpStream::connect(addr).await.unwrap();
                send(&mut other, &respond(id, id)).await
            } else {
                send(&mut runtime, &respond(id, id)).await
            };
            assert!(
                accepted.starts_with("HTTP/1.1 202 Accepted\r\n"),
                "{accepted}"
            );
            match caller.await.unwrap().unwrap() {
                Answer::Outcome(Ok(body)) => assert_eq!(&body[..], id.as_bytes()),
                other => panic!("{other:?}"),
            }
            // The connection is its task's again: it serves the next `GET /next`.
            runtime.write_all(NEXT.as_bytes()).await.unwrap();
        }
        server.abort();
    }

    #[test]
    fn error_reports_keep_type_message_and_stack() {
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":["  File \"app.py\", line 3\n","    raise ValueError\n"]}"#;
        let e = parse_error_report(body, None, false);
        assert_eq!(e.kind, ErrorKind::Unhandled);
        assert_eq!(e.error_type.as_deref(), Some("ValueError"));
        assert_eq!(e.message, "boom");
        assert_eq!(
            e.stack_trace,
            vec!["  File \"app.py\", line 3", "    raise ValueError"]
        );
        assert_eq!(e.lambda_body("x")["stackTrace"][1], "    raise ValueError");
    }

    #[test]
    fn error_reports_that_are_not_json_become_text() {
        let e = parse_error_report(b"plain words", Some("Runtime.Custom".into()), false);
        assert_eq!(e.message, "plain words");
        assert_eq!(e.error_type.as_deref(), Some("Runtime.Custom"));
        let e = parse_error_report(&[0xff, 0xfe], None, true);
        assert_eq!(e.error_type.as_deref(), Some("Runtime.InitError"));
    }

    #[test]
    fn memory_errors_are_out_of_memory() {
        let e = parse_error_report(
            br#"{"errorType":"MemoryError","errorMessage":""}"#,
            None,
            false,
        );
        assert_eq!(e.kind, ErrorKind::OutOfMemory);
    }

    proptest::proptest! {
        #[test]
        fn any_error_report_becomes_an_error(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            header in proptest::option::of("\\PC{0,20}"),
            init in proptest::bool::ANY,
        ) {
            let e = parse_error_report(&body, header, init);
            proptest::prop_assert!(e.error_type.is_some());
        }

        #[test]
        fn json_error_reports_of_any_shape_become_errors(
            message in proptest::option::of(proptest::prelude::any::<i64>()),
            trace in proptest::option::of(proptest::collection::vec("\\PC{0,10}", 0..4)),
            error_type in proptest::option::of("\\PC{0,10}"),
        ) {
            let mut doc = serde_json::Map::new();
            if let Some(m) = message {
                doc.insert("errorMessage".into(), m.into());
            }
            if let Some(t) = trace {
                doc.insert("stackTrace".into(), t.into());
            }
            if let Some(t) = &error_type {
                doc.insert("errorType".into(), t.clone().into());
            }
            let body = serde_json::Value::Object(doc).to_string();
            let e = parse_error_report(body.as_bytes(), None, false);
            proptest::prop_assert_eq!(
                e.error_type.as_deref(),
                Some(error_type.as_deref().unwrap_or("Unhandled"))
            );
        }
    }
}
