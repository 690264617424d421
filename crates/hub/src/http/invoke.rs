//! The Lambda Invoke API: one request, from its signature to the function's answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fnhub_core::{ErrorKind, FunctionRef, Invocation, Principal, Qualifier, TraceParent};
use fnhub_scheduler::SubmitError;
use serde_json::json;

use super::{HttpAuth, HttpConfig, sigv4};
use crate::EdgeHub;

pub(super) struct Front {
    pub(super) hub: EdgeHub,
    pub(super) config: HttpConfig,
    pub(super) keys: BTreeMap<String, (String, Principal)>,
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
/// `text` for an error message: whole when short, else its first 64 characters and its
/// length, so a request cannot make the answer echo megabytes.
fn clipped(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

fn function_ref(segment: &str, qualifier: Option<&str>) -> Result<FunctionRef, String> {
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
        let key = sigv4::verify(&request, self.hub.clock().system_time(), |k| {
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

pub(super) async fn invoke(
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
    let Some(spec) = front.hub.resolve(&target) else {
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
}
