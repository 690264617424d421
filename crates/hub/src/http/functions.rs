//! The read-only part of the Lambda API that SDKs and the AWS CLI call around `Invoke`:
//! `GetFunction`, `GetFunctionConfiguration`, `ListFunctions`, `ListVersionsByFunction`,
//! `ListAliases`, `GetAlias`, in Lambda's shapes; any other operation answers a JSON
//! `UnknownOperationException`, never a bare 404. A principal sees only the functions its
//! allow-list lets it invoke.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fnhub_core::{FunctionRef, FunctionSpec, Principal, Runtime};
use serde_json::{Value, json};

use super::invoke::{Front, aws_error, function_ref, not_found, query_param};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";

fn arn(name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"),
    }
}

/// `FunctionConfiguration` for `spec`, as version `version` (`$LATEST` or a number).
fn configuration(spec: &FunctionSpec, version: &str) -> Value {
    let (runtime, handler) = match &spec.runtime {
        Runtime::Process { handler, .. } => ("provided.al2023", handler.clone()),
        Runtime::InProcess { handler } => ("fnhub.native", Some(handler.clone())),
        _ => ("fnhub.wasm", None),
    };
    json!({
        "FunctionName": spec.name.as_str(),
        "FunctionArn": arn(spec.name.as_str(), Some(version)),
        "Runtime": runtime,
        "Handler": handler,
        "MemorySize": spec.resources.memory_mb,
        "Timeout": spec.resources.timeout.as_secs().max(1),
        "Version": version,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
    })
}

fn json_response(body: Value) -> Response {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Every `GET` under `/2015-03-31/functions` (and any request no other route takes).
pub(super) async fn read(State(front): State<Arc<Front>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let principal = match front.authenticate_empty(&parts) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let rest = path
        .strip_prefix("/2015-03-31/functions")
        .map(|r| r.trim_matches('/'));
    let segments: Vec<&str> = match rest {
        Some("") => Vec::new(),
        Some(r) => r.split('/').collect(),
        None => return unknown(&parts.method, &path),
    };
    if parts.method != axum::http::Method::GET {
        return unknown(&parts.method, &path);
    }
    let qualifier = query_param(&query, "Qualifier");
    match segments[..] {
        [] => list_functions(&front, &principal),
        [name] => get(&front, &principal, name, qualifier, true),
        [name, "configuration"] => get(&front, &principal, name, qualifier, false),
        [name, "versions"] => versions(&front, &principal, name),
        [name, "aliases"] => aliases(&front, &principal, name, None),
        [name, "aliases", alias] => aliases(&front, &principal, name, Some(alias)),
        _ => unknown(&parts.method, &path),
    }
}

fn unknown(method: &axum::http::Method, path: &str) -> Response {
    aws_error(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        &format!("{method} {path} is not an operation this hub serves"),
    )
}

fn resolve(
    front: &Front,
    principal: &Principal,
    name: &str,
    qualifier: Option<&str>,
) -> Result<(FunctionRef, Arc<FunctionSpec>), Response> {
    let target = function_ref(name, qualifier).map_err(|m| {
        aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &m,
        )
    })?;
    if !front.config.allows(principal, &target) {
        return Err(aws_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            &format!("{principal} is not authorized to read {target}"),
        ));
    }
    let spec = front
        .hub
        .resolve(&target)
        .ok_or_else(|| not_found(&target))?;
    Ok((target, spec))
}

fn get(
    front: &Front,
    principal: &Principal,
    name: &str,
    qualifier: Option<&str>,
    whole: bool,
) -> Response {
    let (target, spec) = match resolve(front, principal, name, qualifier) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let version = match target.qualifier {
        fnhub_core::Qualifier::Latest => "$LATEST".to_owned(),
        _ => spec.version.to_string(),
    };
    let config = configuration(&spec, &version);
    if whole {
        json_response(json!({
            "Configuration": config,
            "Code": {"RepositoryType": "S3", "Location": ""},
        }))
    } else {
        json_response(config)
    }
}

fn list_functions(front: &Front, principal: &Principal) -> Response {
    let mut newest: std::collections::BTreeMap<String, Arc<FunctionSpec>> = Default::default();
    for spec in front.hub.deployed() {
        if spec.name.as_str().starts_with("fnhub-") {
            continue;
        }
        let keep = newest
            .get(spec.name.as_str())
            .is_none_or(|s| s.version < spec.version);
        if keep {
            newest.insert(spec.name.as_str().to_owned(), spec);
        }
    }
    let functions: Vec<Value> = newest
        .values()
        .filter(|s| {
            front
                .config
                .allows(principal, &FunctionRef::from(s.name.clone()))
        })
        .map(|s| configuration(s, "$LATEST"))
        .collect();
    json_response(json!({ "Functions": functions }))
}

fn versions(front: &Front, principal: &Principal, name: &str) -> Response {
    let (_, latest) = match resolve(front, principal, name, None) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let mut all: Vec<Arc<FunctionSpec>> = front
        .hub
        .deployed()
        .into_iter()
        .filter(|s| s.name == latest.name)
        .collect();
    all.sort_by_key(|s| s.version);
    let mut out = vec![configuration(&latest, "$LATEST")];
    out.extend(all.iter().map(|s| configuration(s, &s.version.to_string())));
    json_response(json!({ "Versions": out }))
}

fn aliases(front: &Front, principal: &Principal, name: &str, one: Option<&str>) -> Response {
    let (_, spec) = match resolve(front, principal, name, None) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let shaped: Vec<Value> = front
        .hub
        .aliases(&spec.name)
        .iter()
        .map(|a| {
            let mut v = json!({
                "AliasArn": arn(spec.name.as_str(), Some(a.name().as_str())),
                "Name": a.name().as_str(),
                "FunctionVersion": a.primary().to_string(),
            });
            if let Some((version, weight)) = a.secondary() {
                v["RoutingConfig"] = json!({
                    "AdditionalVersionWeights": {
                        version.to_string(): f64::from(weight) / f64::from(fnhub_core::Alias::WHOLE)
                    }
                });
            }
            v
        })
        .collect();
    match one {
        None => json_response(json!({ "Aliases": shaped })),
        Some(alias) => match shaped.into_iter().find(|a| a["Name"] == alias) {
            Some(a) => json_response(a),
            None => aws_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("Alias not found: {}", arn(spec.name.as_str(), Some(alias))),
            ),
        },
    }
}
