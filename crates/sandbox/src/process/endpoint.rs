//! The function endpoint: AWS's own APIs, served to one environment's process where it can
//! reach them (on the loopback of its network namespace), so the AWS SDK inside the
//! function (boto3, the AWS SDKs for JavaScript and Rust) talks to the hub unchanged.
//!
//! The process gets `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_LAMBDA`,
//! `AWS_ENDPOINT_URL_IOT_DATA_PLANE`) pointing here, and credentials minted for this
//! environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, from the
//! operating system's random source, new for every process started, held in memory only.
//! Every request must be SigV4-signed with them (for service `lambda`, or `iotdata` /
//! `iotdevicegateway` for IoT) and carry the session token.
//!
//! | API | request | maps to |
//! | --- | --- | --- |
//! | Lambda `Invoke` | `POST /2015-03-31/functions/{name}/invocations` | [`LocalServices::invoke`]: a child of the invocation in progress (trace, principal, deadline, depth + 1); `Event` runs it without waiting (`202`), `DryRun` answers `204` |
//! | IoT `Publish` | `POST /topics/{topic}?qos=N` | [`LocalServices::publish`] |
//! | IoT `GetThingShadow` | `GET /things/{thing}/shadow[?name=…]` | [`LocalServices::shadow_get`] |
//! | IoT `UpdateThingShadow` | `POST /things/{thing}/shadow[?name=…]` | [`LocalServices::shadow_update`] (`409` on a version conflict, `413` over 8 KB) |
//! | IoT `DeleteThingShadow` | `DELETE /things/{thing}/shadow[?name=…]` | [`LocalServices::shadow_delete`] |
//! | Lambda durable execution API (`CheckpointDurableExecution`, `GetDurableExecutionState`, callbacks, …) | `/2025-12-01/…` | [`LocalServices::lambda_api`] |
//! | IoT `ListNamedShadowsForThing` | `GET /api/things/shadow/ListNamedShadowsForThing/{thing}` | [`LocalServices::shadow_list`], paged by `pageSize` (1 to 100) and `nextToken` |
//!
//! What the function may call is its profile's [`ServiceAccess`]: anything else answers
//! `AccessDeniedException` (Lambda) or `ForbiddenException` (IoT), and is logged. Errors
//! are AWS-shaped: a JSON `message` and the `x-amzn-ErrorType` header.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{
    FunctionName, InvocationContext, InvocationId, LocalServices, ServiceAccess, ServiceCaller,
    ServiceError, ShadowRef, Version, percent_decode,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::sigv4;

/// The largest request body taken (Lambda's synchronous payload limit).
const MAX_BODY: usize = 6 * 1024 * 1024;

/// Credentials minted for one environment.
#[derive(Clone)]
pub(crate) struct Minted {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) token: String,
    /// From then on the environment takes no more invocations.
    pub(crate) retire_at: std::time::SystemTime,
    /// From then on every call with them is refused.
    pub(crate) expires_at: std::time::SystemTime,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

fn random_text(bytes: usize, alphabet: &[u8]) -> std::io::Result<String> {
    let mut raw = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    Ok(raw
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect())
}

impl Minted {
    /// New credentials from the operating system's random source, used for `lifetime`
    /// from `now` and valid for `grace` past that.
    pub(crate) fn new(
        now: std::time::SystemTime,
        lifetime: std::time::Duration,
        grace: std::time::Duration,
    ) -> std::io::Result<Minted> {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        Ok(Minted {
            access_key: format!("ASIA{}", random_text(16, UPPER)?),
            secret_key: random_text(40, ANY)?,
            token: random_text(96, ANY)?,
            retire_at: now + lifetime,
            expires_at: now + lifetime + grace,
        })
    }
}

/// What the endpoint of one environment knows.
pub(crate) struct Shared {
    pub(crate) services: Arc<dyn LocalServices>,
    pub(crate) access: ServiceAccess,
    pub(crate) function: FunctionName,
    pub(crate) version: Version,
    pub(crate) clock: Arc<dyn fnhub_core::Clock>,
    /// The credentials of this environment's processes.
    pub(crate) minted: Minted,
    /// The invocation in progress, whose children calls make.
    pub(crate) current: Mutex<Option<(InvocationId, InvocationContext)>>,
}

/// Serves `shared` on `listener` until the returned task is aborted.
pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "function endpoint accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let shared = shared.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message, "Type": "User" }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        h.insert("x-amzn-errortype", v);
    }
    r
}

fn ok(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The route a request asks for, and the SigV4 service it must be signed for.
enum Route {
    Invoke(String),
    Publish(String),
    Shadow(String),
    ShadowList(String),
    /// The Lambda control plane under `/2025-12-01/`: the rest of the path.
    LambdaApi(String),
}

fn route(path: &str) -> Option<(Route, &'static str)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts[..] {
        ["2015-03-31", "functions", name, "invocations"] => {
            Some((Route::Invoke(percent_decode(name)?), "lambda"))
        }
        ["topics", ..] => {
            let topic = path.strip_prefix("/topics/")?;
            Some((Route::Publish(percent_decode(topic)?), "iotdata"))
        }
        ["things", thing, "shadow"] => Some((Route::Shadow(percent_decode(thing)?), "iotdata")),
        ["2025-12-01", ..] => Some((
            Route::LambdaApi(path.strip_prefix("/2025-12-01/")?.to_owned()),
            "lambda",
        )),
        ["api", "things", "shadow", "ListNamedShadowsForThing", thing] => {
            Some((Route::ShadowList(percent_decode(thing)?), "iotdata"))
        }
        _ => None,
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let Some((route, service)) = route(&path) else {
        return aws_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!(
                "{} {path} is not an operation this endpoint serves",
                parts.method
            ),
        );
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return aws_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                &format!("request bodies are at most {MAX_BODY} bytes"),
            );
        }
    };
    // Who is calling: the signature must be made with this process's credentials.
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let signed = sigv4::SignedRequest {
        method: parts.method.as_str(),
        path: &path,
        query: &query,
        headers: &headers,
        body: &body,
    };
    let minted = &shared.minted;
    let now = shared.clock.system_time();
    let verified = sigv4::check_headers(&signed, now, |k| {
        (k == minted.access_key).then_some(minted.secret_key.as_str())
    })
    .and_then(|checked| {
        // botocore signs IoT data calls as `iotdata`; some SDKs as `iotdevicegateway`.
        if service != "iotdata" || checked.expect_service("iotdevicegateway").is_err() {
            checked.expect_service(service)?;
        }
        let mut hash = sigv4::BodyHash::new();
        hash.update(&body);
        checked.finish(&signed, &hash.finish())
    });
    if let Err(e) = verified {
        tracing::warn!(function = %shared.function, error = %e, "function endpoint: a request with bad credentials");
        return aws_error(StatusCode::FORBIDDEN, e.aws_type(), &e.to_string());
    }
    let token = parts
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if token != Some(minted.token.as_str()) {
        return aws_error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "the security token included in the request is invalid",
        );
    }
    if now >= minted.expires_at {
        return aws_error(
            StatusCode::FORBIDDEN,
            "ExpiredTokenException",
            "the security token included in the request is expired",
        );
    }
    let caller = {
        let current = shared.current.lock().clone();
        let (invocation, context) =
            current.unwrap_or_else(|| (InvocationId::random(), InvocationContext::default()));
        ServiceCaller::new(shared.function.clone(), shared.version, invocation, context)
    };
    match route {
        Route::Invoke(target) => invoke(shared, &caller, &parts.headers, target, body).await,
        Route::Publish(topic) => {
            if parts.method != Method::POST {
                return method_not_allowed(&parts.method, &path);
            }
            if !shared.access.may_publish(&topic) {
                return denied(
                    shared,
                    "ForbiddenException",
                    &format!("publish on {topic:?}"),
                );
            }
            if topic.contains(['+', '#']) || topic.chars().any(char::is_control) {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestException",
                    &format!("{topic:?} is not a topic name (no wildcards or control characters)"),
                );
            }
            match shared.services.publish(&caller, &topic, body).await {
                Ok(()) => ok(StatusCode::OK, Bytes::new()),
                Err(e) => service_error(e, false),
            }
        }
        Route::Shadow(thing) => {
            let name = match query_param(&query, "name").map(percent_decode) {
                None => None,
                Some(Some(name)) => Some(name),
                Some(None) => {
                    return aws_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestException",
                        "the shadow name is not UTF-8",
                    );
                }
            };
            let shadow = match ShadowRef::new(&thing, name.as_deref()) {
                Ok(shadow) => shadow,
                Err(e) => return service_error(e, false),
            };
            if !shared.access.may_use_shadow(&thing) {
                return denied(shared, "ForbiddenException", &shadow.to_string());
            }
            let s = &shared.services;
            let done = match parts.method {
                Method::GET => s.shadow_get(&caller, &shadow).await,
                Method::POST => s.shadow_update(&caller, &shadow, body).await,
                Method::DELETE => s.shadow_delete(&caller, &shadow).await,
                _ => return method_not_allowed(&parts.method, &path),
            };
            match done {
                Ok(document) => ok(StatusCode::OK, document),
                Err(e) => service_error(e, false),
            }
        }
        Route::LambdaApi(rest) => {
            // A chained invoke is an invoke: held to the function's allow-list.
            if let Some(target) = chained_invokes(&body).find(|t| !shared.access.may_invoke(t)) {
                return denied(
                    shared,
                    "AccessDeniedException",
                    &format!("invoking {target:?} from a durable execution"),
                );
            }
            let request = fnhub_core::ApiRequest::new(parts.method.as_str(), &rest, &query, &body);
            match shared.services.lambda_api(&caller, request).await {
                Ok((status, body)) => {
                    ok(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body)
                }
                Err(e) => service_error(e, true),
            }
        }
        Route::ShadowList(thing) => {
            if parts.method != Method::GET {
                return method_not_allowed(&parts.method, &path);
            }
            if !shared.access.may_use_shadow(&thing) {
                return denied(
                    shared,
                    "ForbiddenException",
                    &format!("the shadows of {thing:?}"),
                );
            }
            match shared.services.shadow_list(&caller, &thing).await {
                Ok(names) => match shadow_page(&names, &query, shared.clock.system_time()) {
                    Ok(page) => ok(StatusCode::OK, Bytes::from(page.to_string())),
                    Err(message) => {
                        aws_error(StatusCode::BAD_REQUEST, "InvalidRequestException", &message)
                    }
                },
                Err(e) => service_error(e, false),
            }
        }
    }
}

/// The functions a checkpoint's `CHAINED_INVOKE` updates name.
fn chained_invokes(body: &[u8]) -> impl Iterator<Item = String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let targets: Vec<String> = v
        .get("Updates")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("ChainedInvokeOptions")?.get("FunctionName")?.as_str())
        .map(str::to_owned)
        .collect();
    targets.into_iter()
}

/// One page of `ListNamedShadowsForThing`: `pageSize` names (1 to 100, 25 when not given)
/// after `nextToken` (the last name of the page before).
fn shadow_page(
    names: &[String],
    query: &str,
    now: std::time::SystemTime,
) -> Result<serde_json::Value, String> {
    let size = match query_param(query, "pageSize") {
        None => 25,
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=100) => n,
            _ => return Err(format!("pageSize {v:?} is not 1 to 100")),
        },
    };
    let start = match query_param(query, "nextToken") {
        None => 0,
        Some(token) => {
            let after = percent_decode(token).ok_or("the nextToken is not UTF-8")?;
            names.partition_point(|n| n.as_str() <= after.as_str())
        }
    };
    let page = &names[start.min(names.len())..(start + size).min(names.len())];
    let mut out = serde_json::json!({
        "results": page,
        "timestamp": now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    });
    if start + size < names.len()
        && let Some(last) = page.last()
    {
        out["nextToken"] = serde_json::Value::String(last.clone());
    }
    Ok(out)
}

async fn invoke(
    shared: &Shared,
    caller: &ServiceCaller,
    headers: &hyper::HeaderMap,
    target: String,
    payload: Bytes,
) -> Response<Full<Bytes>> {
    if !shared.access.may_invoke(&target) {
        return denied(
            shared,
            "AccessDeniedException",
            &format!("invoking {target:?}"),
        );
    }
    let kind = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match kind {
        "DryRun" => return ok(StatusCode::NO_CONTENT, Bytes::new()),
        "Event" => {
            let services = shared.services.clone();
            let caller = caller.clone();
            tokio::spawn(async move {
                if let Err(error) = services.invoke(&caller, &target, payload).await {
                    tracing::warn!(function = %caller.function, %target, %error, "an Event invocation from a function failed");
                }
            });
            return ok(StatusCode::ACCEPTED, Bytes::new());
        }
        "RequestResponse" => {}
        other => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!("X-Amz-Invocation-Type {other:?} is not RequestResponse, Event or DryRun"),
            );
        }
    }
    match shared.services.invoke(caller, &target, payload).await {
        Ok(output) => {
            let mut r = ok(StatusCode::OK, output);
            r.headers_mut().insert(
                "x-amz-executed-version",
                hyper::header::HeaderValue::from_static("$LATEST"),
            );
            r
        }
        Err(e) => service_error(e, true),
    }
}

fn method_not_allowed(method: &Method, path: &str) -> Response<Full<Bytes>> {
    aws_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowedException",
        &format!("{method} is not allowed on {path}"),
    )
}

fn denied(shared: &Shared, kind: &str, what: &str) -> Response<Full<Bytes>> {
    tracing::warn!(function = %shared.function, what, "function endpoint: not in the function's allow-list");
    aws_error(
        StatusCode::FORBIDDEN,
        kind,
        &format!("function {} may not use {what}", shared.function),
    )
}

/// A service's refusal in AWS's shape: Lambda's names for an invoke, IoT's otherwise.
fn service_error(e: ServiceError, lambda: bool) -> Response<Full<Bytes>> {
    let (status, kind) = match (&e, lambda) {
        (ServiceError::Function(f), true) => {
            let body = f.lambda_body("Error");
            let mut r = ok(StatusCode::OK, Bytes::from(body.to_string()));
            r.headers_mut().insert(
                "x-amz-function-error",
                hyper::header::HeaderValue::from_static("Unhandled"),
            );
            return r;
        }
        (ServiceError::Api(status, kind, message), _) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            return aws_error(status, kind, message);
        }
        (ServiceError::NotFound(_), _) => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
        (ServiceError::Invalid(_), true) => {
            (StatusCode::BAD_REQUEST, "InvalidParameterValueException")
        }
        (ServiceError::Invalid(_), false) => (StatusCode::BAD_REQUEST, "InvalidRequestException"),
        (ServiceError::Denied(_), true) => (StatusCode::FORBIDDEN, "AccessDeniedException"),
        (ServiceError::Denied(_), false) => (StatusCode::FORBIDDEN, "ForbiddenException"),
        (ServiceError::Overloaded(_), true) => {
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
        }
        (ServiceError::Overloaded(_), false) => {
            (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException")
        }
        (ServiceError::Conflict(_), _) => (StatusCode::CONFLICT, "ConflictException"),
        (ServiceError::TooLarge(_), true) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException")
        }
        (ServiceError::TooLarge(_), false) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
        ),
    };
    aws_error(status, kind, &e.to_string())
}

/// One environment's endpoint: its server and what the process must be told.
pub(crate) struct Endpoint {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Binds an endpoint where the process can reach it and starts serving.
pub(crate) async fn open(
    services: Arc<dyn LocalServices>,
    config: &super::Config,
    spec: &fnhub_core::FunctionSpec,
    netns: Option<&Arc<super::spawn::NetNs>>,
) -> std::io::Result<Endpoint> {
    let (listener, address) = super::spawn::loopback_listener(netns).await?;
    let shared = Arc::new(Shared {
        services,
        access: spec.capabilities.services.clone(),
        function: spec.name.clone(),
        version: spec.version,
        clock: config.clock.clone(),
        minted: Minted::new(
            config.clock.system_time(),
            config.credential_lifetime,
            spec.resources.timeout,
        )?,
        current: Mutex::new(None),
    });
    let task = serve(listener, shared.clone());
    Ok(Endpoint {
        shared,
        address,
        task,
    })
}

impl Endpoint {
    /// The variables that point the process's AWS SDK here, with its credentials.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let url = format!("http://{}", self.address);
        let minted = self.shared.minted.clone();
        vec![
            ("AWS_ENDPOINT_URL".into(), url.clone()),
            ("AWS_ENDPOINT_URL_LAMBDA".into(), url.clone()),
            ("AWS_ENDPOINT_URL_IOT_DATA_PLANE".into(), url),
            ("AWS_ACCESS_KEY_ID".into(), minted.access_key),
            ("AWS_SECRET_ACCESS_KEY".into(), minted.secret_key),
            ("AWS_SESSION_TOKEN".into(), minted.token),
        ]
    }

    /// The invocation now in progress, which must end by `deadline`: the parent of the
    /// calls the process makes, whose children inherit that deadline.
    pub(crate) fn running(
        &self,
        id: InvocationId,
        context: &InvocationContext,
        deadline: std::time::SystemTime,
    ) {
        let mut context = context.clone();
        context.deadline = Some(context.deadline.map_or(deadline, |d| d.min(deadline)));
        *self.shared.current.lock() = Some((id, context));
    }

    pub(crate) fn stop(&self) {
        self.task.abort();
    }

    /// Whether its credentials are past their use: the environment should be replaced.
    pub(crate) fn retired(&self) -> bool {
        self.shared.clock.system_time() >= self.shared.minted.retire_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_names_and_topics() {
        let r = route("/2015-03-31/functions/double/invocations");
        assert!(matches!(r, Some((Route::Invoke(n), "lambda")) if n == "double"));
        let r = route("/topics/alerts%2Fhot");
        assert!(matches!(r, Some((Route::Publish(t), "iotdata")) if t == "alerts/hot"));
        let r = route("/topics/a/b");
        assert!(matches!(r, Some((Route::Publish(t), _)) if t == "a/b"));
        let r = route("/things/lamp-1/shadow");
        assert!(matches!(r, Some((Route::Shadow(t), _)) if t == "lamp-1"));
        let r = route("/api/things/shadow/ListNamedShadowsForThing/lamp-1");
        assert!(matches!(r, Some((Route::ShadowList(t), "iotdata")) if t == "lamp-1"));
    }

    #[test]
    fn named_shadow_pages_follow_their_token() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
        let now = std::time::UNIX_EPOCH;
        let first = shadow_page(&names, "pageSize=2", now).unwrap();
        assert_eq!(first["results"], serde_json::json!(["a", "b"]));
        assert_eq!(first["nextToken"], "b");
        let last = shadow_page(&names, "pageSize=2&nextToken=d", now).unwrap();
        assert_eq!(last["results"], serde_json::json!(["e"]));
        assert!(last.get("nextToken").is_none());
        let all = shadow_page(&names, "", now).unwrap();
        assert_eq!(all["results"].as_array().unwrap().len(), 5);
        assert!(
            shadow_page(&names, "nextToken=zz", now).unwrap()["results"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        for bad in ["pageSize=0", "pageSize=101", "pageSize=x", "nextToken=%ff"] {
            assert!(shadow_page(&names, bad, now).is_err(), "{bad}");
        }
        assert!(route("/things/lamp-1").is_none());
        assert!(route("/topics/%zz").is_none());
        assert!(route("/").is_none());
    }

    #[test]
    fn minted_credentials_are_fresh_each_time() {
        let now = std::time::UNIX_EPOCH;
        let hour = std::time::Duration::from_secs(3600);
        let a = Minted::new(now, hour, hour).unwrap();
        let b = Minted::new(now, hour, hour).unwrap();
        assert_eq!(a.expires_at, now + 2 * hour);
        assert!(a.access_key.starts_with("ASIA") && a.access_key.len() == 20);
        assert_eq!(a.secret_key.len(), 40);
        assert_ne!(a.secret_key, b.secret_key);
        assert_ne!(a.token, b.token);
        assert!(!format!("{a:?}").contains(&a.secret_key));
    }
}
