//! Taking connections: how many at once, how many not yet authenticated, how long a
//! client may take over its headers, and closing them all on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// Bounds on what clients may hold of the front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers. Default 10 s.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in.
    /// Default 30 s; past it the request answers `408`.
    pub body_timeout: Duration,
    /// Connections open at once; further clients wait in the listen backlog. Default 1024.
    pub max_connections: usize,
    /// Connections open at once that have not yet carried an authenticated request (all of
    /// a connection's life without authentication). Default 128. With the header size
    /// bound (64 KiB) and the signature checked before any body is read, this bounds what
    /// unauthenticated clients can make the hub hold.
    pub max_unauthenticated: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_unauthenticated: 128,
        }
    }
}

/// The largest request head (request line and headers) read; hyper's smallest allowed
/// buffer is 8 KiB.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A connection's hold on the unauthenticated allowance, given back when a request on it
/// authenticates (or the connection ends).
#[derive(Debug, Clone, Default)]
pub(super) struct Unverified(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Unverified {
    /// The connection has proved who it is: it no longer counts as unauthenticated.
    pub(super) fn authenticated(&self) {
        self.0.lock().take();
    }
}

/// Serves `app` on `listener` until `stopped` turns true; then closes idle connections,
/// lets requests in progress finish and returns when every connection has ended.
/// (The caller bounds that wait with its grace period and aborts this task after it,
/// which closes what is left.)
pub(super) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated.max(1)));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let taken = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => break,
            taken = take(&listener, &open, &unauthenticated) => taken,
        };
        let Some((stream, slot, unverified)) = taken else {
            // accept failed (out of descriptors, say): back off a moment, then go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let gate = Unverified(Arc::new(Mutex::new(Some(unverified))));
        let app = app.clone();
        let mut stop = stopped.clone();
        connections.spawn(async move {
            let _slot = slot;
            let per_request = gate.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(per_request.clone());
                    let mut app = app.clone();
                    async move {
                        let request = request.map(Body::new);
                        let response = tower_service::Service::call(&mut app, request).await;
                        Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                    }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    // Idle keep-alive connections close now; one in a request closes
                    // once it is answered.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(gate);
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Waits for room for one more connection, then accepts it.
async fn take(
    listener: &TcpListener,
    open: &Arc<Semaphore>,
    unauthenticated: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    OwnedSemaphorePermit,
    OwnedSemaphorePermit,
)> {
    let slot = open.clone().acquire_owned().await.ok()?;
    let unverified = unauthenticated.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, slot, unverified))
        }
        Err(error) => {
            tracing::warn!(%error, "the HTTP front door could not accept a connection");
            None
        }
    }
}
