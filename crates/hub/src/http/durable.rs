//! Lambda durable functions at the front door: `Invoke` of a durable function starts an
//! execution, and the durable execution API under `/2025-12-01/` (see the hub's `dex`
//! module) answers operators and the AWS CLI.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fnhub_core::{FunctionRef, Principal};
use serde_json::json;

use super::invoke::{Front, aws_error, header_pairs, refused_signature};
use super::sigv4;
use crate::DurableStartError;
use crate::dex;

/// The longest a `RequestResponse` call of a durable function waits for its execution to
/// end (Lambda's synchronous limit); the execution's own timeout when that is shorter.
pub const MAX_SYNC_WAIT: Duration = Duration::from_secs(15 * 60);

/// `Invoke` of a durable function: starts (or, by name, finds) an execution.
pub(super) async fn invoke(
    front: &Front,
    target: &FunctionRef,
    kind: &str,
    name: Option<String>,
    payload: Bytes,
) -> Response {
    let Ok(input) = String::from_utf8(payload.to_vec()) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "the payload of a durable function is UTF-8 JSON",
        );
    };
    let timeout = front
        .hub
        .dex()
        .config_of(target.name.as_str())
        .map_or(MAX_SYNC_WAIT, |c| {
            c.execution_timeout + Duration::from_secs(1)
        });
    let wait = MAX_SYNC_WAIT.min(timeout);
    // On a node of the cloud runtime, a name is the deployment's: it may be another node's.
    let replica = front.hub.dex().replica().cloned();
    if let (Some(replica), Some(name)) = (&replica, &name) {
        match replica
            .reserve_name(target.name.as_str(), name, &input)
            .await
        {
            Ok(None) => {}
            Ok(Some(named)) if !named.same_input => {
                return aws_error(
                    StatusCode::CONFLICT,
                    "DurableExecutionAlreadyStartedException",
                    &format!("an execution named {name:?} was started with another input"),
                );
            }
            Ok(Some(named)) => return elsewhere(replica.as_ref(), named.arn, kind, wait).await,
            Err(e) => {
                return aws_error(
                    StatusCode::from_u16(e.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    e.kind,
                    &e.message,
                );
            }
        }
    }
    let reserved = name.clone();
    let execution = match front
        .hub
        .start_durable(&target.to_string(), input, name)
        .await
    {
        Ok(execution) => execution,
        Err(DurableStartError::AlreadyStarted(n)) => {
            return aws_error(
                StatusCode::CONFLICT,
                "DurableExecutionAlreadyStartedException",
                &format!("an execution named {n:?} was started with another input"),
            );
        }
        Err(DurableStartError::NotDurable(f)) => {
            return aws_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("{f} is not a durable function"),
            );
        }
        Err(DurableStartError::Invalid(m)) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &m,
            );
        }
        Err(e @ DurableStartError::Unsaved) => {
            return aws_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                &e.to_string(),
            );
        }
    };
    let arn = execution.arn.clone();
    if let (Some(replica), Some(name)) = (&replica, &reserved) {
        replica.named(target.name.as_str(), name, &arn).await;
    }
    let with_arn = |r: Response| with_arn(r, &arn);
    if kind == "Event" {
        return with_arn(StatusCode::ACCEPTED.into_response());
    }
    let (body, failed) = match tokio::time::timeout(wait, execution.outcome()).await {
        Ok(Ok(result)) => (result.to_vec(), false),
        Ok(Err(e)) => (e.lambda_body("Error").to_string().into_bytes(), true),
        Err(_) => (still_running(wait), true),
    };
    with_arn(answered(body, failed))
}

fn with_arn(mut r: Response, arn: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(arn) {
        r.headers_mut().insert("x-amz-durable-execution-arn", v);
    }
    r
}

fn still_running(wait: Duration) -> Vec<u8> {
    let body = json!({
        "errorType": "Durable.SynchronousWaitExceeded",
        "errorMessage": format!(
            "the execution is still running after {}s; follow it with GetDurableExecution",
            wait.as_secs()
        ),
    });
    body.to_string().into_bytes()
}

/// `Invoke`'s answer: the result, or (`failed`) an error body.
fn answered(body: Vec<u8>, failed: bool) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if failed {
        r.headers_mut().insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    r
}

/// `Invoke` under a name another node started an execution of, with the same input: that
/// execution's ARN, and for `RequestResponse` its end, followed through the node that runs
/// it (every half second, at most `wait`).
async fn elsewhere(
    replica: &dyn dex::replica::Replica,
    arn: String,
    kind: &str,
    wait: Duration,
) -> Response {
    if kind == "Event" {
        return with_arn(StatusCode::ACCEPTED.into_response(), &arn);
    }
    let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
    let rest = format!(
        "durable-executions/{}",
        arn.replace('%', "%25").replace('/', "%2F")
    );
    let until = tokio::time::Instant::now() + wait;
    loop {
        let seen = match replica.locate(&id).await {
            Some(at) => {
                let request = dex::replica::Forwarded {
                    method: "GET".into(),
                    rest: rest.clone(),
                    query: String::new(),
                    body: Bytes::new(),
                };
                replica.forward(at.node, request).await.ok()
            }
            None => None,
        };
        if let Some((_, exec)) = seen
            && exec["Status"] != "RUNNING"
            && exec["Status"] != "PAUSED"
        {
            let r = if exec["Status"] == "SUCCEEDED" {
                let result = exec["Result"].as_str().unwrap_or("null");
                answered(result.as_bytes().to_vec(), false)
            } else {
                let body = json!({
                    "errorType": exec["Error"]["ErrorType"].as_str().unwrap_or("Error"),
                    "errorMessage": exec["Error"]["ErrorMessage"].as_str().unwrap_or_default(),
                });
                answered(body.to_string().into_bytes(), true)
            };
            return with_arn(r, &arn);
        }
        if tokio::time::Instant::now() >= until {
            return with_arn(answered(still_running(wait), true), &arn);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every request under `/2025-12-01/`.
pub(super) async fn api(State(front): State<Arc<Front>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, front.config.max_payload).await {
        Ok(b) => b,
        Err(_) => {
            return aws_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                "the request body is too large",
            );
        }
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let headers = header_pairs(&parts.headers);
    let signed = sigv4::SignedRequest {
        method: parts.method.as_str(),
        path: &path,
        query: &query,
        headers: &headers,
        body: &body,
    };
    let principal = match front.check_headers(&signed) {
        Err(response) => return response,
        Ok(None) => Principal::anonymous(),
        Ok(Some(checked)) => {
            let mut hash = sigv4::BodyHash::new();
            hash.update(&body);
            match checked
                .finish(&signed, &hash.finish())
                .map_err(refused_signature)
                .and_then(|key| front.principal_of(&key))
            {
                Ok(p) => p,
                Err(response) => return response,
            }
        }
    };
    let rest = path.strip_prefix("/2025-12-01/").unwrap_or_default();
    let may_invoke = |function: &str| {
        function
            .parse::<FunctionRef>()
            .is_ok_and(|f| front.config.allows(&principal, &f))
    };
    let asker = dex::api::Asker {
        from_function: false,
        may_invoke: &may_invoke,
    };
    let hub = front.hub.downgrade();
    match dex::api::serve_anywhere(
        front.hub.dex(),
        &hub,
        &asker,
        parts.method.as_str(),
        rest,
        &query,
        &body,
    )
    .await
    {
        Ok((status, body)) => {
            let mut r = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                body.to_string(),
            )
                .into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => aws_error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.kind,
            &e.message,
        ),
    }
}
