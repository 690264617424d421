//! The Lambda Invoke API: one request, from its signature to the function's answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fnhub_core::{
    ErrorKind, FunctionRef, Invocation, InvocationContext, InvocationId, Principal, Qualifier,
    TraceParent,
};
use fnhub_scheduler::SubmitError;
use serde_json::json;

use super::{HttpAuth, HttpConfig, sigv4};
use crate::EdgeHub;

pub(super) struct Front {
    pub(super) hub: EdgeHub,
    pub(super) config: HttpConfig,
    pub(super) keys: BTreeMap<String, (String, Principal)>,
    /// Where calls go that this hub cannot run (a cloud runtime node's deployment).
    pub(super) dispatch: Option<Arc<dyn super::Dispatch>>,
}

pub(super) fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (
        status,
        json!({ "Type": "User", "message": message }).to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(kind) {
        headers.insert("x-amzn-errortype", v);
    }
    response
}

fn throttled(reason: &str, message: &str) -> Response {
    let mut response = aws_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequestsException",
        message,
    );
    *response.body_mut() =
        Body::from(json!({ "Type": "User", "message": message, "Reason": reason }).to_string());
    response
}

/// The function a path segment names: a name, `name:qualifier`, or an ARN.
/// `text` for an error message: whole when short, else its first 64 characters and its
/// length, so a request cannot make the answer echo megabytes.
fn clipped(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

pub(super) fn function_ref(segment: &str, qualifier: Option<&str>) -> Result<FunctionRef, String> {
    let parts: Vec<&str> = segment.split(':').collect();
    let (name, from_name) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        ["arn", _, "lambda", _, _, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
        [_, "function", name] => (*name, None),
        [_, "function", name, q] => (*name, Some(*q)),
        _ => {
            return Err(format!(
                "{} is not a function name or ARN",
                clipped(segment)
            ));
        }
    };
    let qualifier = match (from_name, qualifier) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "the qualifier in the name ({}) does not match the Qualifier ({})",
                clipped(a),
                clipped(b)
            ));
        }
        (Some(q), _) | (None, Some(q)) => Some(q),
        (None, None) => None,
    };
    let text = match qualifier {
        Some(q) => format!("{name}:{q}"),
        None => name.to_owned(),
    };
    text.parse::<FunctionRef>()
        .map_err(|e| format!("{}: {e}", clipped(segment)))
}

pub(super) fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl Front {
    /// Checks what can be checked of the signature before the body is read: `Ok(None)`
    /// when authentication is off.
    pub(super) fn check_headers(
        &self,
        request: &sigv4::SignedRequest<'_>,
    ) -> Result<Option<sigv4::HeadersChecked>, Response> {
        if matches!(self.config.auth, HttpAuth::None) {
            return Ok(None);
        }
        let checked = sigv4::check_headers(request, self.hub.clock().system_time(), |k| {
            self.keys.get(k).map(|(secret, _)| secret.as_str())
        })
        .map_err(refused_signature)?;
        checked
            .expect_service("lambda")
            .map_err(refused_signature)?;
        Ok(Some(checked))
    }

    /// Authenticates a request without a body (the read-only operations).
    pub(super) fn authenticate_empty(
        &self,
        parts: &axum::http::request::Parts,
    ) -> Result<Principal, Response> {
        let path = parts.uri.path();
        let query = parts.uri.query().unwrap_or("");
        let headers = header_pairs(&parts.headers);
        let signed = sigv4::SignedRequest {
            method: parts.method.as_str(),
            path,
            query,
            headers: &headers,
            body: b"",
        };
        match self.check_headers(&signed)? {
            None => Ok(Principal::anonymous()),
            Some(checked) => checked
                .finish(&signed, &sigv4::BodyHash::new().finish())
                .map_err(refused_signature)
                .and_then(|key| self.principal_of(&key)),
        }
    }

    pub(super) fn principal_of(&self, access_key: &str) -> Result<Principal, Response> {
        self.keys
            .get(access_key)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                aws_error(
                    StatusCode::FORBIDDEN,
                    "UnrecognizedClientException",
                    "unknown key",
                )
            })
    }
}

/// The headers a signature covers, as text (a header that is not is left out, and a
/// signature naming it fails).
pub(super) fn header_pairs(headers: &axum::http::HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect()
}

pub(super) fn refused_signature(e: sigv4::AuthError) -> Response {
    aws_error(StatusCode::FORBIDDEN, e.aws_type(), &e.to_string())
}

/// Lambda's limit on a decoded `ClientContext`.
const MAX_CLIENT_CONTEXT: usize = 3583;

/// The JSON object `X-Amz-Client-Context` carries in base64, if it is one.
fn client_context(header: &str) -> Option<String> {
    let bytes = base64_decode(header.trim())?;
    if bytes.len() > MAX_CLIENT_CONTEXT {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.is_object().then(|| value.to_string())
}

/// Standard base64 with padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

/// Why a body was not read whole.
enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads the body as it streams in, hashing it, up to `max` bytes and within `timeout`.
async fn read_body(
    body: Body,
    max: usize,
    timeout: std::time::Duration,
) -> Result<(Bytes, String), BodyError> {
    use http_body_util::BodyExt;
    let read = async move {
        let mut body = body;
        let mut hash = sigv4::BodyHash::new();
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > max {
                    return Err(BodyError::TooLarge);
                }
                hash.update(&data);
                out.extend_from_slice(&data);
            }
        }
        Ok((out.freeze(), hash.finish()))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

pub(super) async fn invoke(
    State(front): State<Arc<Front>>,
    Path(function): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let max = front.config.max_payload;
    let too_large = || {
        aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {max} bytes for the InvokeFunction operation"),
        )
    };
    // Given back once this request proves who sent it (absent under a caller's own server).
    let unverified = parts.extensions.get::<super::conn::Unverified>().cloned();
    let headers = header_pairs(&parts.headers);
    let signed = sigv4::SignedRequest {
        method: parts.method.as_str(),
        path: &path,
        query: &query,
        headers: &headers,
        body: b"",
    };
    // Everything but the body's hash is checked before a byte of the body is read, and
    // all of it when the client declared the hash: an unsigned or forged request is
    // refused without the hub holding its body.
    let checked = match front.check_headers(&signed) {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    if let Some(c) = checked.as_ref().filter(|c| c.hash_declared())
        && let Err(e) = c.verify_declared(&signed)
    {
        return refused_signature(e);
    }
    let declared_length = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (body, body_hash) = match read_body(body, max, front.config.limits.body_timeout).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::TimedOut) => {
            return aws_error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                "the request body did not arrive in time",
            );
        }
        Err(BodyError::Broken) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                "the request body was cut short",
            );
        }
    };
    let principal = match checked {
        None => Principal::anonymous(),
        Some(checked) => match checked
            .finish(&signed, &body_hash)
            .map_err(refused_signature)
            .and_then(|key| front.principal_of(&key))
        {
            Ok(p) => p,
            Err(response) => return response,
        },
    };
    if let Some(unverified) = &unverified {
        unverified.authenticated();
    }
    let invalid = |m: &str| aws_error(StatusCode::BAD_REQUEST, "InvalidParameterValueException", m);
    let qualifier = query_param(&query, "Qualifier").map(|q| q.replace("%24", "$"));
    let target = match function_ref(&function, qualifier.as_deref()) {
        Ok(t) => t,
        Err(m) => return invalid(&m),
    };
    if !front.config.allows(&principal, &target) {
        return aws_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            &format!("{principal} is not authorized to invoke {target}"),
        );
    }
    let kind = parts
        .headers
        .get("x-amz-invocation-type")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| "RequestResponse".to_owned());
    if !matches!(kind.as_str(), "RequestResponse" | "Event" | "DryRun") {
        return invalid(&format!(
            "X-Amz-Invocation-Type {kind:?} is not RequestResponse, Event or DryRun"
        ));
    }
    if !body.is_empty() && serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json",
        );
    }
    let Some(spec) = front.hub.resolve(&target) else {
        // Not on this node: on a cloud runtime node, a node that has it runs it.
        return match &front.dispatch {
            Some(d) if d.runs(&target.name).await => {
                let mut invocation = Invocation::new(target.clone(), body);
                invocation.context = call_context(&parts.headers, principal);
                if kind == "DryRun" {
                    return StatusCode::NO_CONTENT.into_response();
                }
                let id = invocation.id.to_string();
                let (response, version) = super::dispatch::remote(d, &kind, invocation).await;
                let response = match version {
                    Some(v) => with_version(response, &target, v),
                    None => response,
                };
                request_id(response, &id)
            }
            _ => not_found(&target),
        };
    };
    if front.hub.dex().config_of(target.name.as_str()).is_some() && kind != "DryRun" {
        let name = parts
            .headers
            .get("x-amz-durable-execution-name")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let response = super::durable::invoke(&front, &target, &kind, name, body).await;
        let version = spec.version.get();
        return request_id(
            with_version(response, &target, version),
            &crate::dex::random_id(),
        );
    }
    if kind == "DryRun" {
        return with_version(
            StatusCode::NO_CONTENT.into_response(),
            &target,
            spec.version.get(),
        );
    }
    let client_context = match parts.headers.get("x-amz-client-context") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(client_context) {
            Some(json) => Some(json),
            None => {
                return invalid(&format!(
                    "X-Amz-Client-Context must be base64 of a JSON object of at most \
                     {MAX_CLIENT_CONTEXT} bytes"
                ));
            }
        },
    };
    let mut invocation = Invocation::new(target.clone(), body);
    invocation.context = call_context(&parts.headers, principal);
    invocation.context.client_context = client_context;
    let id = invocation.id;
    // A durable Rust function (the engine's): its execution's ARN on the answer, and a call
    // that suspends waits for the execution to end, as one of a Lambda durable function does.
    let durable_arn = front
        .hub
        .engine()
        .registered(&target.name, spec.version)
        .then(|| crate::dex::journal::arn(id.into(), target.name.as_str(), spec.version.get()));
    if durable_arn.is_some() && parts.headers.contains_key("x-amz-durable-execution-name") {
        return invalid(
            "X-Amz-Durable-Execution-Name names executions of Lambda durable functions; an \
             execution of a Rust durable function is named by its invocation's id",
        );
    }
    let with_arn = |mut r: Response| {
        if let Some(v) = durable_arn
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            r.headers_mut().insert("x-amz-durable-execution-arn", v);
        }
        r
    };
    let tail = match parts
        .headers
        .get("x-amz-log-type")
        .map(HeaderValue::as_bytes)
    {
        None | Some(b"None") => false,
        Some(b"Tail") => true,
        Some(_) => return invalid("X-Amz-Log-Type must be None or Tail"),
    };
    if kind == "Event" {
        return match front.hub.submit_event(invocation).await {
            Ok(_) => with_arn(request_id(
                StatusCode::ACCEPTED.into_response(),
                &id.to_string(),
            )),
            Err(crate::EventError::Refused(e)) => refused(e),
            Err(e) => aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                &e.to_string(),
            ),
        };
    }
    let tail = tail.then(|| LogTail::watch(&front.hub, id, spec.version.get()));
    let called = match durable_arn {
        Some(_) => front.hub.call_tracked(invocation).await,
        None => front.hub.call(invocation).await.map(|c| (c, None)),
    };
    let (completion, ended) = match called {
        Ok(c) => c,
        Err(e) => {
            if let Some(tail) = tail {
                tail.finish(&front.hub);
            }
            // No room here: a node of the deployment with room runs it.
            if let (Some(d), SubmitError::Full(_) | SubmitError::TenantLimit(_)) =
                (&front.dispatch, &e)
            {
                let invocation = e.into_invocation();
                let (response, version) = super::dispatch::remote(d, &kind, invocation).await;
                let response =
                    with_version(response, &target, version.unwrap_or(spec.version.get()));
                return request_id(response, &id.to_string());
            }
            return refused(e);
        }
    };
    let log_result = tail.map(|t| t.finish(&front.hub));
    let response = match ended {
        Some(crate::durable::DurableEnd::Suspended(..)) => {
            let outcome = durable_end(&front.hub, id.into()).await;
            // A durable execution's error is the function's, whatever its kind.
            match outcome {
                Ok(output) => outcome_response(Ok(output), &id.to_string()),
                Err(e) => function_error(&e, &id.to_string()),
            }
        }
        _ => outcome_response(completion.outcome, &completion.id.to_string()),
    };
    let response = with_arn(response);
    let mut response = request_id(
        with_version(response, &target, completion.version.get()),
        &completion.id.to_string(),
    );
    if let Some(v) = log_result.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert("x-amz-log-result", v);
    }
    response
}

/// The end of a durable Rust function's execution whose first run suspended, waited for as
/// long as a Lambda durable function's is ([`super::MAX_SYNC_WAIT`]).
async fn durable_end(hub: &EdgeHub, execution: fnhub_core::ExecutionId) -> fnhub_core::Outcome {
    let waited = tokio::time::timeout(super::MAX_SYNC_WAIT, hub.engine().outcome(execution)).await;
    match waited {
        Ok(Some(outcome)) => outcome,
        Ok(None) => Err(fnhub_core::FunctionError::new(
            ErrorKind::Cancelled,
            "the hub closed before the execution ended",
        )),
        Err(_) => Err(fnhub_core::FunctionError::new(
            ErrorKind::Timeout,
            format!(
                "the execution is still running after {}s; follow it with GetDurableExecution",
                super::MAX_SYNC_WAIT.as_secs()
            ),
        )
        .with_type("Durable.SynchronousWaitExceeded")),
    }
}

/// The context of a call from outside: its principal, and the caller's trace (W3C
/// `traceparent`, else the X-Ray `X-Amzn-Trace-Id` that AWS's SDKs send from inside a
/// Lambda function), continued in a new span.
fn call_context(headers: &axum::http::HeaderMap, principal: Principal) -> InvocationContext {
    let mut context = InvocationContext::default();
    context.principal = principal;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let trace = text("traceparent")
        .and_then(|v| v.parse::<TraceParent>().ok())
        .or_else(|| text("x-amzn-trace-id").and_then(from_xray));
    if let Some(trace) = trace {
        context.trace = trace.child();
    }
    context
}

/// A W3C trace context from X-Ray's `Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1}`.
fn from_xray(header: &str) -> Option<TraceParent> {
    let (mut root, mut parent, mut sampled) = (None, None, false);
    for part in header.split(';') {
        match part.trim().split_once('=')? {
            ("Root", v) => {
                let mut pieces = v.split('-');
                let (one, time, rest) = (pieces.next()?, pieces.next()?, pieces.next()?);
                if one != "1" || time.len() != 8 || rest.len() != 24 || pieces.next().is_some() {
                    return None;
                }
                root = Some(u128::from_str_radix(&format!("{time}{rest}"), 16).ok()?);
            }
            ("Parent", v) if v.len() == 16 => parent = Some(u64::from_str_radix(v, 16).ok()?),
            ("Sampled", v) => sampled = v == "1",
            _ => {}
        }
    }
    TraceParent::from_parts(root?, parent.unwrap_or(1), u8::from(sampled))
}

/// An outcome as Lambda's Invoke answers it: the output with `200`; a function's error
/// with `200` and `X-Amz-Function-Error`; a call that could not run with `502`.
pub(super) fn outcome_response(outcome: fnhub_core::Outcome, request_id: &str) -> Response {
    match outcome {
        Ok(output) => {
            let mut r = (StatusCode::OK, output).into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        Err(e) if matches!(e.kind, ErrorKind::Rejected | ErrorKind::Cancelled) => aws_error(
            StatusCode::BAD_GATEWAY,
            "ServiceException",
            &format!("the function could not run: {e}"),
        ),
        Err(e) => function_error(&e, request_id),
    }
}

/// A function's error as Lambda answers it: `200` with `X-Amz-Function-Error` and the error
/// object as the body.
fn function_error(e: &fnhub_core::FunctionError, request_id: &str) -> Response {
    let mut body = e.lambda_body(match e.kind {
        ErrorKind::Timeout | ErrorKind::DeadlineExceeded => "Sandbox.Timedout",
        ErrorKind::OutOfMemory => "Runtime.OutOfMemory",
        ErrorKind::Crashed => "Runtime.ExitError",
        _ => "Error",
    });
    body["requestId"] = request_id.into();
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-amz-function-error",
        HeaderValue::from_static("Unhandled"),
    );
    r
}

/// The log tail of one call, as Lambda returns it for `--log-type Tail`: `START`, the
/// function's lines, `END` and `REPORT`, the last 4 KB of it in base64.
struct LogTail {
    id: InvocationId,
    version: u32,
    started: std::time::Instant,
}

impl LogTail {
    fn watch(hub: &EdgeHub, id: InvocationId, version: u32) -> LogTail {
        #[cfg(feature = "process")]
        hub.log_tails().watch(id);
        #[cfg(not(feature = "process"))]
        let _ = hub;
        LogTail {
            id,
            version,
            started: std::time::Instant::now(),
        }
    }

    /// Stops watching; `X-Amz-Log-Result`.
    fn finish(self, hub: &EdgeHub) -> String {
        #[cfg(feature = "process")]
        let lines = hub.log_tails().take(self.id).unwrap_or_default();
        #[cfg(not(feature = "process"))]
        let lines: Vec<u8> = {
            let _ = hub;
            Vec::new()
        };
        let id = self.id;
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut log = format!("START RequestId: {id} Version: {}\n", self.version).into_bytes();
        log.extend_from_slice(&lines);
        log.extend_from_slice(
            format!("END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {ms:.2} ms\t\n")
                .as_bytes(),
        );
        let from = log.len().saturating_sub(LOG_TAIL_BYTES);
        base64_encode(&log[from..])
    }
}

/// The most of a log a tail returns: Lambda's 4 KB.
const LOG_TAIL_BYTES: usize = 4 * 1024;

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `X-Amz-Executed-Version`: `$LATEST` for an unqualified call (as Lambda answers), else
/// the version that ran.
fn with_version(mut r: Response, target: &FunctionRef, version: u32) -> Response {
    let version = match target.qualifier {
        Qualifier::Latest => "$LATEST".to_owned(),
        _ => version.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&version) {
        r.headers_mut().insert("x-amz-executed-version", v);
    }
    r
}

fn request_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

pub(super) fn not_found(target: &FunctionRef) -> Response {
    let what = match &target.qualifier {
        Qualifier::Latest => format!("Function not found: {}", target.name),
        _ => format!("Function not found: {target}"),
    };
    aws_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &what)
}

fn refused(e: SubmitError) -> Response {
    let message = e.to_string();
    match e {
        SubmitError::UnknownFunction(i) => not_found(&i.function),
        SubmitError::ShuttingDown(_) => aws_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            "the hub is shutting down",
        ),
        SubmitError::FunctionLimit(_) => throttled(
            "ReservedFunctionConcurrentInvocationLimitExceeded",
            &message,
        ),
        SubmitError::TenantLimit(_) => throttled("CallerRateLimitExceeded", &message),
        _ => throttled("ConcurrentInvocationLimitExceeded", &message),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_qualifiers_and_arns() {
        let ok = |s: &str, q: Option<&str>| function_ref(s, q).unwrap().to_string();
        assert_eq!(ok("hello", None), "hello");
        assert_eq!(ok("hello", Some("prod")), "hello:prod");
        assert_eq!(ok("hello:3", None), "hello:3");
        assert_eq!(ok("hello", Some("$LATEST")), "hello");
        assert_eq!(
            ok("arn:aws:lambda:us-east-1:123456789012:function:hello", None),
            "hello"
        );
        assert_eq!(
            ok(
                "arn:aws:lambda:eu-west-1:123456789012:function:hello:prod",
                None
            ),
            "hello:prod"
        );
        assert_eq!(ok("123456789012:function:hello", Some("2")), "hello:2");
        for (bad, q) in [
            ("hello:1", Some("2")),
            ("a:b:c:d:e", None),
            ("bad name", None),
            ("", None),
        ] {
            assert!(function_ref(bad, q).is_err(), "{bad}");
        }
        // A huge name is not echoed back whole.
        let huge = "x".repeat(65_000);
        for (name, q) in [
            (huge.as_str(), None),
            ("f", Some(huge.as_str())),
            (&format!("a:b:c:d:{huge}")[..], None),
        ] {
            let e = function_ref(name, q).unwrap_err();
            assert!(e.len() < 400, "{} bytes: {}", e.len(), &e[..200]);
        }
    }

    #[test]
    fn base64_round_trips() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "START\n\u{e9}",
        ] {
            let encoded = base64_encode(text.as_bytes());
            assert_eq!(encoded.len() % 4, 0);
            assert_eq!(
                base64_decode(&encoded).unwrap(),
                text.as_bytes(),
                "{encoded}"
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn client_contexts_are_base64_json_objects() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        for bad in ["aGk", "a===", "aG=k", "a$==", "aGk=aGk="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
        // {"custom":{"k":"v"}}
        assert_eq!(
            client_context("eyJjdXN0b20iOnsiayI6InYifX0=").as_deref(),
            Some(r#"{"custom":{"k":"v"}}"#)
        );
        assert!(client_context("WzFd").is_none(), "[1] is not an object");
        assert!(client_context("not base64!").is_none());
    }
}
