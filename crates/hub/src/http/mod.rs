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
//! The read-only operations around `Invoke` answer in Lambda's shapes: `GetFunction`,
//! `GetFunctionConfiguration` (`GET /2015-03-31/functions/{name}[/configuration]`),
//! `ListFunctions`, `ListVersionsByFunction`, `ListAliases`, `GetAlias`; a principal sees
//! only what it may invoke. Anything else answers `404` with a JSON
//! `UnknownOperationException`.
//!
//! # Authentication
//!
//! [`HttpAuth::SigV4`]: every request must carry an AWS Signature Version 4 made with one
//! of the configured access keys (any region, service `lambda`), checked on the headers
//! before the body is read (all of it when `X-Amz-Content-Sha256` is sent; the body is
//! then held to that hash); the principal configured
//! with that key is the invocation's principal, which the scheduler's fair share and
//! per-tenant limits see, and which the allow-list checks. [`HttpAuth::None`] turns
//! authentication off for development: every request is the anonymous principal, and
//! [`serve`] refuses to listen anywhere but on a loopback address.

//!
//! # Serving
//!
//! [`router`] gives the front door as an axum router; [`serve`] serves it on an address
//! until [`HttpServer::shutdown`]; [`serve_with_ops`] adds `/metrics` and `/healthz` (see
//! [`Ops`]). The front door uses the hub's public API only.

mod conn;
mod dispatch;
mod durable;
mod functions;
mod invoke;
mod ops;

pub use dispatch::{Dispatch, Dispatched, REMOTE_WAIT};
pub use durable::MAX_SYNC_WAIT;
pub use fnhub_sandbox::sigv4;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{any, post};
use fnhub_core::{FunctionRef, Principal};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::EdgeHub;
pub use conn::HttpLimits;
pub use ops::{Ops, RenderMetrics};

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
    /// Bounds on connections and how long clients may take.
    pub limits: HttpLimits,
}

impl HttpConfig {
    /// Requests must be signed with one of `credentials`.
    pub fn sigv4(credentials: Vec<Credentials>) -> HttpConfig {
        HttpConfig {
            auth: HttpAuth::SigV4(credentials),
            allow: None,
            max_payload: MAX_PAYLOAD_BYTES,
            limits: HttpLimits::default(),
        }
    }

    /// No authentication, for development: serving it is refused on any address but
    /// loopback.
    pub fn unauthenticated_loopback() -> HttpConfig {
        HttpConfig {
            auth: HttpAuth::None,
            allow: None,
            max_payload: MAX_PAYLOAD_BYTES,
            limits: HttpLimits::default(),
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

    /// Sets the bounds on connections and how long clients may take.
    pub fn with_limits(mut self, limits: HttpLimits) -> HttpConfig {
        self.limits = limits;
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
    /// A credential has an empty access key or secret (a request signed with an empty
    /// secret would pass), or an access key is listed twice (one would silently win).
    #[error("invalid credentials: {0}")]
    Credentials(String),
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

    /// Stops taking connections and waits for requests in progress, for at most
    /// [`SHUTDOWN_GRACE`]; then closes what is left (a half-sent request, a slow client).
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_GRACE).await;
    }

    /// [`shutdown`](Self::shutdown) with a grace period of `grace`.
    pub async fn shutdown_within(self, grace: std::time::Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!(
                ?grace,
                "HTTP connections outlasted the shutdown grace period; closed"
            );
            task.abort();
            let _ = task.await;
        }
    }
}

/// How long [`HttpServer::shutdown`] lets requests in progress finish. Without a bound,
/// one client that sends half a request would keep the hub from exiting.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The front door of `hub` as an axum router, to serve with the application's own server
/// or to nest in its own routes.
pub fn router(hub: &EdgeHub, config: HttpConfig) -> axum::Router {
    router_with(hub, config, None)
}

fn router_with(
    hub: &EdgeHub,
    config: HttpConfig,
    dispatch: Option<Arc<dyn Dispatch>>,
) -> axum::Router {
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
    let front = Arc::new(invoke::Front {
        hub: hub.clone(),
        config,
        keys,
        dispatch,
    });
    axum::Router::new()
        .route(
            "/2015-03-31/functions/{function}/invocations",
            post(invoke::invoke),
        )
        .route("/2025-12-01/{*rest}", any(durable::api))
        .fallback(functions::read)
        .with_state(front)
}

/// Serves the front door of `hub` on `addr` (port 0 picks a free one) until
/// [`HttpServer::shutdown`]. Without authentication, only on loopback.
pub async fn serve(
    hub: &EdgeHub,
    addr: SocketAddr,
    config: HttpConfig,
) -> Result<HttpServer, HttpError> {
    let listener = bind(addr, &config).await?;
    let limits = config.limits;
    Ok(spawn_server(listener, router(hub, config), limits))
}

/// [`serve`] plus the operator's routes: `GET /metrics` (the text `ops` renders; `503`
/// when it has none) and `GET /healthz` (`200` when every deployed function can start an
/// environment, else `503` naming those that cannot).
pub async fn serve_with_ops(
    hub: &EdgeHub,
    addr: SocketAddr,
    config: HttpConfig,
    ops: Ops,
) -> Result<HttpServer, HttpError> {
    let listener = bind(addr, &config).await?;
    let limits = config.limits;
    let app = router_with(hub, config, ops.dispatch.clone());
    let app = ops::routes(app, hub, ops);
    Ok(spawn_server(listener, app, limits))
}

/// Listens on `addr`, refusing unauthenticated serving off loopback.
async fn bind(
    addr: SocketAddr,
    config: &HttpConfig,
) -> Result<(TcpListener, SocketAddr), HttpError> {
    if matches!(config.auth, HttpAuth::None) && !addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback(addr));
    }
    if let HttpAuth::SigV4(creds) = &config.auth {
        let mut seen = std::collections::BTreeSet::new();
        for c in creds {
            if c.access_key.is_empty() || c.secret_key.is_empty() {
                return Err(HttpError::Credentials(
                    "an access key and its secret must not be empty".into(),
                ));
            }
            if !seen.insert(c.access_key.as_str()) {
                return Err(HttpError::Credentials(format!(
                    "access key {:?} is listed twice",
                    c.access_key
                )));
            }
        }
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok((listener, local))
}

fn spawn_server(
    (listener, addr): (TcpListener, SocketAddr),
    app: axum::Router,
    limits: HttpLimits,
) -> HttpServer {
    let app = app.layer(axum::middleware::from_fn(access));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(conn::serve(listener, app, limits, stopped));
    HttpServer { addr, stop, task }
}

/// The route a path belongs to, for the access log and `fnhub_http_requests_total`.
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/2015-03-31/functions/") && path.ends_with("/invocations") {
        "invoke"
    } else if path.starts_with("/2015-03-31/functions") {
        "functions"
    } else if path.starts_with("/2025-12-01/") {
        "durable"
    } else if path == "/metrics" {
        "metrics"
    } else if path == "/healthz" {
        "healthz"
    } else {
        "other"
    }
}

/// Every request: one access line (`fnhub::http`, at info; `/metrics` and `/healthz` at
/// debug) and `fnhub_http_requests_total` by route and status.
async fn access(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = route_of(request.uri().path());
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics::counter!(
        "fnhub_http_requests_total",
        "route" => route,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if matches!(route, "metrics" | "healthz") {
        tracing::debug!(target: "fnhub::http", %method, %path, status, ms, "request");
    } else {
        tracing::info!(target: "fnhub::http", %method, %path, status, ms, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
