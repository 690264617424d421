//! The HTTP front door (feature `http`): the AWS Lambda Invoke API, so existing clients —
//! the AWS CLI, the AWS SDKs — invoke the hub's functions unchanged, given the hub's
//! address as their endpoint.
//!
//! `POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=…]`
//!
//! - `FunctionName`: a name, `name:qualifier`, or a function ARN
//!   (`arn:aws:lambda:REGION:ACCOUNT:function:name[:qualifier]`); `Qualifier` a version,
//!   an alias or `$LATEST`.
//! - `X-Amz-Invocation-Type`: `RequestResponse` (the default) waits and answers `200` with
//!   the function's output; `Event` queues it and answers `202`; `DryRun` checks that the
//!   function exists and may be called and answers `204`.
//! - A function that fails answers `200` with `X-Amz-Function-Error: Unhandled` and
//!   Lambda's `{"errorType","errorMessage"}` body; `X-Amz-Executed-Version` names the
//!   version that ran; `x-amzn-RequestId` the invocation id. A `traceparent` header
//!   continues the caller's trace.
//! - Errors answer as Lambda does, with `x-amzn-ErrorType` and a JSON `message`:
//!
//! | status | type | when |
//! | --- | --- | --- |
//! | 400 | `InvalidRequestContentException` | the payload is not JSON |
//! | 400 | `InvalidParameterValueException` | a bad name, qualifier or invocation type |
//! | 403 | `MissingAuthenticationTokenException`, `IncompleteSignatureException`, `UnrecognizedClientException`, `InvalidSignatureException` | SigV4 missing, malformed, unknown key, bad or expired signature |
//! | 403 | `AccessDeniedException` | the principal may not invoke this function |
//! | 404 | `ResourceNotFoundException` | no such function, version or alias |
//! | 413 | `RequestTooLargeException` | the payload is over 6 MiB |
//! | 429 | `TooManyRequestsException` | admission refused (queue, function or tenant limit) |
//! | 502 | `ServiceException` | the function's environment could not run it |
//! | 503 | `ServiceException` | the hub is shutting down |
//!
//! # Authentication
//!
//! [`HttpAuth::SigV4`]: every request must carry an AWS Signature Version 4 made with one
//! of the configured access keys (any region, service `lambda`); the principal configured
//! with that key is the invocation's principal, which the scheduler's fair share and
//! per-tenant limits see, and which the allow-list checks. [`HttpAuth::None`] turns
//! authentication off for development: every request is the anonymous principal, and
//! [`EdgeHub::serve_http`] refuses to listen anywhere but on a loopback address.

pub mod sigv4;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fnhub_core::{ErrorKind, FunctionRef, Invocation, Principal, Qualifier, TraceParent};
use fnhub_scheduler::SubmitError;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::EdgeHub;

/// Lambda's limit on a synchronous request payload: 6 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// One access key the front door accepts, and who it stands for.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credentials {
    /// The access key id (`AKIA…`).
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// Whom requests signed with it run for.
    pub principal: Principal,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("principal", &self.principal)
            .finish()
    }
}

impl Credentials {
    /// An access key and its secret, standing for `principal`.
    pub fn new(
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
        principal: Principal,
    ) -> Credentials {
        Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            principal,
        }
    }
}

/// How requests prove who sent them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HttpAuth {
    /// AWS Signature Version 4 with one of these keys.
    SigV4(Vec<Credentials>),
    /// No authentication: for development on loopback only.
    None,
}

/// How the front door behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Authentication.
    pub auth: HttpAuth,
    /// Which principal may invoke what: `None` lets every authenticated principal invoke
    /// every function. Entries are `*`, a function name (any version or alias), or
    /// `name:qualifier` (that version or alias only).
    pub allow: Option<BTreeMap<Principal, Vec<String>>>,
    /// The largest payload taken. Default 6 MiB.
    pub max_payload: usize,
}

impl HttpConfig {
    /// Requests must be signed with one of `credentials`.
    pub fn sigv4(credentials: Vec<Credentials>) -> HttpConfig {
        HttpConfig {
            auth: HttpAuth::SigV4(credentials),
            allow: None,
            max_payload: MAX_PAYLOAD_BYTES,
        }
    }

    /// No authentication, for development: serving it is refused on any address but
    /// loopback.
    pub fn unauthenticated_loopback() -> HttpConfig {
        HttpConfig {
            auth: HttpAuth::None,
            allow: None,
            max_payload: MAX_PAYLOAD_BYTES,
        }
    }

    /// Lets `principal` invoke `target` (`*`, `name` or `name:qualifier`). The first call
    /// turns the allow-list on: principals not named in it may invoke nothing.
    pub fn allow(mut self, principal: Principal, target: impl Into<String>) -> HttpConfig {
        self.allow
            .get_or_insert_with(BTreeMap::new)
            .entry(principal)
            .or_default()
            .push(target.into());
        self
    }

    /// Sets the largest payload taken.
    pub fn with_max_payload(mut self, bytes: usize) -> HttpConfig {
        self.max_payload = bytes;
        self
    }

    fn allows(&self, principal: &Principal, function: &FunctionRef) -> bool {
        let Some(allow) = &self.allow else {
            return true;
        };
        let Some(targets) = allow.get(principal) else {
            return false;
        };
        let full = function.to_string();
        targets
            .iter()
            .any(|t| t == "*" || t == function.name.as_str() || *t == full)
    }
}

/// The front door could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Unauthenticated serving was asked for on an address that is not loopback.
    #[error("refusing to serve without authentication on {0}, which is not a loopback address")]
    NotLoopback(SocketAddr),
}

/// A running front door. Dropping it leaves it running until the hub's runtime ends;
/// [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections and waits for requests in progress.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Front {
    hub: EdgeHub,
    config: HttpConfig,
    keys: BTreeMap<String, (String, Principal)>,
}

impl EdgeHub {
    /// The front door as an axum router, to serve with the application's own server or to
    /// nest in its own routes.
    pub fn http_router(&self, config: HttpConfig) -> axum::Router {
        let keys = match &config.auth {
            HttpAuth::SigV4(creds) => creds
                .iter()
                .map(|c| {
                    (
                        c.access_key.clone(),
                        (c.secret_key.clone(), c.principal.clone()),
                    )
                })
                .collect(),
            HttpAuth::None => BTreeMap::new(),
        };
        let front = Arc::new(Front {
            hub: self.clone(),
            config,
            keys,
        });
        axum::Router::new()
            .route("/2015-03-31/functions/{function}/invocations", post(invoke))
            .with_state(front)
    }

    /// Serves the front door on `addr` (port 0 picks a free one) until
    /// [`HttpServer::shutdown`]. Without authentication, only on loopback.
    pub async fn serve_http(
        &self,
        addr: SocketAddr,
        config: HttpConfig,
    ) -> Result<HttpServer, HttpError> {
        let listener = bind(addr, &config).await?;
        Ok(spawn_server(listener, self.http_router(config)))
    }
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    metrics::counter!("fnhub_http_requests_total", "code" => status.as_str().to_owned())
        .increment(1);
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
fn function_ref(segment: &str, qualifier: Option<&str>) -> Result<FunctionRef, String> {
    let parts: Vec<&str> = segment.split(':').collect();
    let (name, from_name) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        ["arn", _, "lambda", _, _, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
        [_, "function", name] => (*name, None),
        [_, "function", name, q] => (*name, Some(*q)),
        _ => return Err(format!("{segment:?} is not a function name or ARN")),
    };
    let qualifier = match (from_name, qualifier) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "the qualifier in the name ({a}) does not match the Qualifier ({b})"
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
        .map_err(|e| format!("{segment:?}: {e}"))
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl Front {
    fn authenticate(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Principal, Response> {
        if matches!(self.config.auth, HttpAuth::None) {
            return Ok(Principal::anonymous());
        }
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let request = sigv4::SignedRequest {
            method,
            path,
            query,
            headers: &pairs,
            body,
        };
        let key = sigv4::verify(&request, SystemTime::now(), |k| {
            self.keys.get(k).map(|(secret, _)| secret.as_str())
        })
        .map_err(|e| aws_error(StatusCode::FORBIDDEN, e.aws_type(), &e.to_string()))?;
        self.keys.get(&key).map(|(_, p)| p.clone()).ok_or_else(|| {
            aws_error(
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "unknown key",
            )
        })
    }
}

async fn invoke(
    State(front): State<Arc<Front>>,
    Path(function): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let max = front.config.max_payload;
    let body: Bytes = match axum::body::to_bytes(body, max.saturating_add(1)).await {
        Ok(b) if b.len() <= max => b,
        _ => {
            return aws_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                &format!(
                    "Request must be smaller than {max} bytes for the InvokeFunction operation"
                ),
            );
        }
    };
    let principal =
        match front.authenticate(parts.method.as_str(), &path, &query, &parts.headers, &body) {
            Ok(p) => p,
            Err(response) => return response,
        };
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
    let Some(spec) = front.hub.inner.scheduler.resolve(&target) else {
        return not_found(&target);
    };
    if kind == "DryRun" {
        return with_version(StatusCode::NO_CONTENT.into_response(), spec.version.get());
    }
    let mut invocation = Invocation::new(target.clone(), body);
    invocation.context.principal = principal;
    if let Some(trace) = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceParent>().ok())
    {
        invocation.context.trace = trace.child();
    }
    let id = invocation.id;
    if kind == "Event" {
        return match front.hub.submit(invocation) {
            Ok(_) => request_id(StatusCode::ACCEPTED.into_response(), &id.to_string()),
            Err(e) => refused(e),
        };
    }
    let completion = match front.hub.call(invocation).await {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let response = match completion.outcome {
        Ok(output) => {
            metrics::counter!("fnhub_http_requests_total", "code" => "200").increment(1);
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
        Err(e) => {
            metrics::counter!("fnhub_http_requests_total", "code" => "200").increment(1);
            let error_type = e.error_type.clone().unwrap_or_else(|| {
                match e.kind {
                    ErrorKind::Timeout | ErrorKind::DeadlineExceeded => "Sandbox.Timedout",
                    ErrorKind::OutOfMemory => "Runtime.OutOfMemory",
                    ErrorKind::Crashed => "Runtime.ExitError",
                    _ => "Error",
                }
                .to_owned()
            });
            let body = json!({ "errorType": error_type, "errorMessage": e.message });
            let mut r = (StatusCode::OK, body.to_string()).into_response();
            let h = r.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert(
                "x-amz-function-error",
                HeaderValue::from_static("Unhandled"),
            );
            r
        }
    };
    request_id(
        with_version(response, completion.version.get()),
        &completion.id.to_string(),
    )
}

fn with_version(mut r: Response, version: u32) -> Response {
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
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

fn not_found(target: &FunctionRef) -> Response {
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

/// The process's Prometheus recorder, installed by the first front door that serves
/// `/metrics` (`None` when another recorder was installed first).
static PROMETHEUS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .inspect_err(|error| tracing::warn!(%error, "/metrics is off: a metrics recorder is installed already"))
                .ok()
        })
        .as_ref()
}

/// Why a deployed function could not start an environment now, if it could not.
fn cannot_start(spec: &fnhub_core::FunctionSpec) -> Option<String> {
    match &spec.runtime {
        fnhub_core::Runtime::Process {
            command, workdir, ..
        } => {
            let program = command.first()?;
            let found = if program.contains('/') {
                let p = std::path::Path::new(program);
                let p = match (p.is_relative(), workdir) {
                    (true, Some(dir)) => dir.join(p),
                    _ => p.to_owned(),
                };
                p.exists()
            } else {
                std::env::var_os("PATH").is_some_and(|paths| {
                    std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
                })
            };
            (!found).then(|| format!("program {program:?} not found"))
        }
        fnhub_core::Runtime::Wasm { module, .. } => {
            (!module.exists()).then(|| format!("module {} not found", module.display()))
        }
        _ => None,
    }
}

impl EdgeHub {
    /// [`serve_http`](Self::serve_http) plus `GET /metrics` (Prometheus text, through
    /// `metrics-exporter-prometheus`, installed as the process's recorder on first use) and
    /// `GET /healthz` (`200` when every deployed function can start an environment, else
    /// `503` naming those that cannot).
    pub async fn serve_http_with_ops(
        &self,
        addr: SocketAddr,
        config: HttpConfig,
    ) -> Result<HttpServer, HttpError> {
        let listener = bind(addr, &config).await?;
        let metrics = prometheus();
        let hub = self.clone();
        let app = self
            .http_router(config)
            .route(
                "/metrics",
                axum::routing::get(move || async move {
                    match metrics {
                        Some(h) => (StatusCode::OK, h.render()).into_response(),
                        None => (StatusCode::SERVICE_UNAVAILABLE, "no Prometheus recorder")
                            .into_response(),
                    }
                }),
            )
            .route(
                "/healthz",
                axum::routing::get(move || {
                    let hub = hub.clone();
                    async move {
                        let closing = hub.inner.scheduler.is_closed();
                        let failing: BTreeMap<String, String> = hub
                            .inner
                            .scheduler
                            .deployed()
                            .iter()
                            .filter_map(|s| {
                                cannot_start(s)
                                    .map(|why| (format!("{}:{}", s.name, s.version), why))
                            })
                            .collect();
                        let ready = !closing && failing.is_empty();
                        let body = json!({
                            "status": if ready { "ready" } else { "unavailable" },
                            "closing": closing,
                            "cannot_start": failing,
                        });
                        let status = if ready {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (status, body.to_string()).into_response()
                    }
                }),
            );
        Ok(spawn_server(listener, app))
    }
}

/// Listens on `addr`, refusing unauthenticated serving off loopback.
async fn bind(
    addr: SocketAddr,
    config: &HttpConfig,
) -> Result<(TcpListener, SocketAddr), HttpError> {
    if matches!(config.auth, HttpAuth::None) && !addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok((listener, local))
}

fn spawn_server((listener, addr): (TcpListener, SocketAddr), app: axum::Router) -> HttpServer {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        if let Err(error) = serve.await {
            tracing::warn!(%error, "the HTTP front door stopped");
        }
    });
    HttpServer { addr, stop, task }
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
    }

    #[test]
    fn the_allow_list_is_closed_once_used() {
        let open = HttpConfig::unauthenticated_loopback();
        let f: FunctionRef = "hello:prod".parse().unwrap();
        assert!(open.allows(&Principal::new("anyone"), &f));
        let c = HttpConfig::unauthenticated_loopback()
            .allow(Principal::new("a"), "hello")
            .allow(Principal::new("b"), "hello:prod")
            .allow(Principal::new("c"), "*");
        assert!(c.allows(&Principal::new("a"), &f));
        assert!(c.allows(&Principal::new("b"), &f));
        assert!(!c.allows(&Principal::new("b"), &"hello:1".parse().unwrap()));
        assert!(c.allows(&Principal::new("c"), &"other".parse().unwrap()));
        assert!(!c.allows(&Principal::new("d"), &f));
    }
}
