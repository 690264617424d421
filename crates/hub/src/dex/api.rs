//! The durable execution operations under `/2025-12-01/`, one handler for the front door
//! and the function endpoint: each request in botocore's shape, each answer a status and
//! a JSON body (or an AWS error).

use std::sync::Arc;

use fnhub_core::percent_decode as decode;
use serde_json::{Value, json};

use super::model::OperationUpdate;
use super::run::{self, CheckpointError};
use super::{Dex, ErrorObject, ExecStatus};
use crate::edge::WeakHub;

/// An AWS error: status, `x-amzn-ErrorType`, message.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

pub(super) fn error(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        kind,
        message: message.into(),
    }
}

/// The error type of an answer another node sent, as one this API answers with (a
/// `ServiceException` when it is not one of them).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn known_kind(kind: &str) -> &'static str {
    const KINDS: [&str; 7] = [
        "AccessDeniedException",
        "CallbackTimeoutException",
        "InvalidParameterValueException",
        "ResourceConflictException",
        "ResourceNotFoundException",
        "ServiceException",
        "UnknownOperationException",
    ];
    KINDS
        .into_iter()
        .find(|k| *k == kind)
        .unwrap_or("ServiceException")
}

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    error(400, "InvalidParameterValueException", message)
}

pub(super) fn not_found(what: &str) -> ApiError {
    error(
        404,
        "ResourceNotFoundException",
        format!("{what} not found"),
    )
}

/// Who asks: a function through its endpoint may checkpoint, read its state and answer
/// callbacks; anything else (and everything at the front door) needs the right to invoke
/// the execution's function.
pub(crate) struct Asker<'a> {
    pub(crate) from_function: bool,
    pub(crate) may_invoke: &'a (dyn Fn(&str) -> bool + Send + Sync),
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| decode(v))
}

pub(super) fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the request body is not JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(invalid("the request body is not a JSON object"))
    }
}

fn max_items(query: &str) -> Result<usize, ApiError> {
    match query_param(query, "MaxItems") {
        None => Ok(1000),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(1000),
            Ok(n @ 1..=1000) => Ok(n),
            _ => Err(invalid(format!("MaxItems {v:?} is not 0 to 1000"))),
        },
    }
}

/// A page of `items` after `Marker` (an index).
fn page<T: Clone>(items: &[T], query: &str) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = max_items(query)?;
    let start = match query_param(query, "Marker") {
        None => 0,
        Some(m) if m.is_empty() => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| invalid(format!("Marker {m:?} is not one this hub gave")))?,
    };
    let end = (start + max).min(items.len());
    let page = items.get(start.min(end)..end).unwrap_or_default().to_vec();
    let next = (end < items.len()).then(|| end.to_string());
    Ok((page, next))
}

/// The function's name in a name, `name:qualifier` or an ARN.
pub(super) fn function_name(text: &str) -> String {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.iter().position(|p| *p == "function") {
        Some(at) if text.starts_with("arn:") => parts.get(at + 1).copied().unwrap_or_default(),
        _ => parts[0],
    }
    .to_owned()
}

/// The operations that only read an execution (`GetDurableExecution`,
/// `GetDurableExecutionHistory`), answered from `exec`.
pub(super) fn read_only(
    exec: &super::Execution,
    method: &str,
    tail: &[&str],
    query: &str,
) -> Option<Result<(u16, Value), ApiError>> {
    match (method, tail) {
        ("GET", []) => {
            let with_data = query_param(query, "IncludeExecutionData").as_deref() != Some("false");
            Some(Ok((200, exec.summary(with_data))))
        }
        ("GET", ["history"]) => Some(history(exec, query)),
        _ => None,
    }
}

/// A read of `exec`, saved by the node that runs it (or ran it, and is gone): every
/// acknowledged change is in the saved copy, so any node answers it.
fn read_saved(
    exec: &super::Execution,
    method: &str,
    rest: &str,
    query: &str,
) -> Option<Result<(u16, Value), ApiError>> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let ["durable-executions", arn, tail @ ..] = &segments[..] else {
        return None;
    };
    if decode(arn)? != exec.arn {
        return None;
    }
    read_only(exec, method, tail, query)
}

/// The function whose executions `method` `rest` lists, if it is that request.
fn listed_function(method: &str, rest: &str) -> Option<String> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (method, &segments[..]) {
        ("GET", ["functions", name, "durable-executions"]) => Some(function_name(&decode(name)?)),
        _ => None,
    }
}

/// [`serve`]; and when the hub is a node of the cloud runtime and the execution the
/// request names runs on another node, that node's answer. Resolves once what the request
/// changed is kept (in the checkpoint store, and in the cloud runtime's bucket), so an
/// acknowledged checkpoint outlives this node. Waits first for the executions in the store
/// to be taken up, when the hub has just started.
pub(crate) async fn serve_anywhere(
    dex: &Arc<Dex>,
    hub: &WeakHub,
    asker: &Asker<'_>,
    method: &str,
    rest: &str,
    query: &str,
    body: &bytes::Bytes,
) -> Result<(u16, Value), ApiError> {
    dex.ready().await;
    let answer = serve(dex, hub, asker, method, rest, query, body);
    // Not a Lambda execution or function: perhaps one of the engine's (a Rust function),
    // answered from the checkpoint store (the deployment's, on a cloud runtime node).
    if let (Err(e), Some(hub)) = (&answer, hub.upgrade())
        && e.status == 404
        && (!asker.from_function || rest.starts_with("durable-execution-callbacks/"))
        && let Some(engine_answer) =
            super::journal::serve(&hub, asker, method, rest, query, body).await
    {
        return engine_answer;
    }
    let answer = match answer {
        Err(e) if e.status == 404 && !asker.from_function => {
            match (dex.replica(), super::replica::execution_named(rest)) {
                (Some(replica), Some(id)) => match replica.locate(&id).await {
                    // A callback id is its own right (as here); the rest need the right
                    // to invoke the execution's function.
                    Some(at)
                        if rest.starts_with("durable-execution-callbacks/")
                            || (asker.may_invoke)(&at.function) =>
                    {
                        match read_saved(&at.exec, method, rest, query) {
                            Some(read) => read,
                            None => {
                                let request = super::replica::Forwarded {
                                    method: method.to_owned(),
                                    rest: rest.to_owned(),
                                    query: query.to_owned(),
                                    body: body.clone(),
                                };
                                replica.forward(at.node, request).await
                            }
                        }
                    }
                    _ => Err(e),
                },
                _ => Err(e),
            }
        }
        Ok(listed) => match (dex.replica(), listed_function(method, rest)) {
            // Every node's executions of the function, from the deployment's bucket,
            // with this node's as it has them now.
            (Some(replica), Some(function)) => match replica.executions_of(&function).await {
                Some(mut all) => {
                    let here = dex.list(&function);
                    all.retain(|e| here.iter().all(|h| h.id != e.id));
                    all.extend(here);
                    all.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
                    list_of(all, query)
                }
                None => Ok(listed),
            },
            _ => Ok(listed),
        },
        answer => answer,
    };
    if !dex.flushed().await {
        return Err(error(
            503,
            "ServiceException",
            "the change could not be stored in time; retry (a repeated ClientToken gets one answer)",
        ));
    }
    answer
}

/// Serves one request under `/2025-12-01` (`rest` is the path after it).
pub(crate) fn serve(
    dex: &Arc<Dex>,
    hub: &WeakHub,
    asker: &Asker<'_>,
    method: &str,
    rest: &str,
    query: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let unknown = || {
        error(
            404,
            "UnknownOperationException",
            format!("{method} /2025-12-01/{rest} is not an operation this hub serves"),
        )
    };
    match (method, &segments[..]) {
        ("POST", ["durable-execution-callbacks", id, verb]) => {
            let id = decode(id).ok_or_else(|| invalid("the callback id is not UTF-8"))?;
            callback(dex, &id, verb, body)
        }
        ("GET", ["functions", name, "durable-executions"]) => {
            let name = decode(name).ok_or_else(|| invalid("the function name is not UTF-8"))?;
            let name = function_name(&name);
            if !(asker.may_invoke)(&name) || asker.from_function {
                return Err(error(
                    403,
                    "AccessDeniedException",
                    format!("not authorized to list the executions of {name}"),
                ));
            }
            if dex.config_of(&name).is_none() {
                return Err(not_found(&format!("durable function {name}")));
            }
            list(dex, &name, query)
        }
        (_, ["durable-executions", arn, tail @ ..]) => {
            let arn = decode(arn).ok_or_else(|| invalid("the ARN is not UTF-8"))?;
            let id = dex
                .id_of_arn(&arn)
                .ok_or_else(|| not_found(&format!("durable execution {arn}")))?;
            let exec = dex
                .snapshot(&id)
                .ok_or_else(|| not_found(&format!("durable execution {arn}")))?;
            let token_guarded = matches!(
                (method, tail),
                ("POST", ["checkpoint"]) | ("GET", ["state"])
            );
            if !token_guarded && (asker.from_function || !(asker.may_invoke)(&exec.function)) {
                return Err(error(
                    403,
                    "AccessDeniedException",
                    format!("not authorized for the executions of {}", exec.function),
                ));
            }
            if let Some(read) = read_only(&exec, method, tail, query) {
                return read;
            }
            match (method, tail) {
                ("POST", ["checkpoint"]) => checkpoint(dex, hub, &id, body),
                ("GET", ["state"]) => {
                    let token = query_param(query, "CheckpointToken").unwrap_or_default();
                    if !exec.tokens.contains(&token) {
                        return Err(invalid("Invalid Checkpoint Token"));
                    }
                    let ops: Vec<Value> = exec.ops.iter().map(|o| o.to_json(true)).collect();
                    let (ops, next) = page(&ops, query)?;
                    let mut v = json!({"Operations": ops});
                    if let Some(n) = next {
                        v["NextMarker"] = json!(n);
                    }
                    Ok((200, v))
                }
                ("POST", ["stop"]) => {
                    let reason = stop_reason(body)?;
                    let stopped = dex.with(&id, |exec, now| {
                        if exec.status.is_terminal() {
                            return (None, false);
                        }
                        exec.error = reason;
                        exec.finish(ExecStatus::Stopped, now);
                        (Some(now), true)
                    });
                    match stopped.flatten() {
                        Some(now) => Ok((200, json!({"StopTimestamp": now as f64 / 1000.0}))),
                        None => Err(error(
                            409,
                            "ResourceConflictException",
                            "the execution has already ended",
                        )),
                    }
                }
                ("POST", [verb @ ("pause" | "resume")]) => {
                    let pause = *verb == "pause";
                    let done = dex.with(&id, |exec, _| match (exec.status, pause) {
                        (ExecStatus::Running, true) => {
                            exec.status = ExecStatus::Paused;
                            (true, true)
                        }
                        (ExecStatus::Paused, false) => {
                            exec.status = ExecStatus::Running;
                            (true, true)
                        }
                        _ => (false, false),
                    });
                    if done == Some(true) {
                        Ok((202, json!({})))
                    } else {
                        Err(error(
                            409,
                            "ResourceConflictException",
                            format!(
                                "the execution is not {}",
                                if pause { "running" } else { "paused" }
                            ),
                        ))
                    }
                }
                ("DELETE", []) => match dex.delete(&id) {
                    Some(true) => Ok((202, json!({}))),
                    Some(false) => Err(error(
                        409,
                        "ResourceConflictException",
                        "a running execution is stopped before it is deleted",
                    )),
                    None => Err(not_found(&format!("durable execution {arn}"))),
                },
                _ => Err(unknown()),
            }
        }
        _ => Err(unknown()),
    }
}

/// The `Error` a `StopDurableExecution` gives (its body is the `ErrorObject`, or `{}`).
pub(super) fn stop_reason(body: &[u8]) -> Result<Option<ErrorObject>, ApiError> {
    let given = body_json(body)?;
    if given.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    serde_json::from_value(given)
        .map(Some)
        .map_err(|e| invalid(format!("Error: {e}")))
}

fn checkpoint(
    dex: &Arc<Dex>,
    hub: &WeakHub,
    id: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let v = body_json(body)?;
    let token = v
        .get("CheckpointToken")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("CheckpointToken is required"))?;
    let client_token = v.get("ClientToken").and_then(Value::as_str);
    let updates: Vec<OperationUpdate> = match v.get("Updates") {
        None => Vec::new(),
        Some(u) => {
            serde_json::from_value(u.clone()).map_err(|e| invalid(format!("Updates: {e}")))?
        }
    };
    match run::checkpoint(dex, id, token, client_token, &updates) {
        Ok((answer, invokes)) => {
            for (op, target, payload) in invokes {
                run::spawn_chained(dex.clone(), hub.clone(), id.to_owned(), op, target, payload);
            }
            Ok((200, answer))
        }
        Err(CheckpointError::Unknown) => Err(not_found("durable execution")),
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn callback(dex: &Dex, id: &str, verb: &str, body: &[u8]) -> Result<(u16, Value), ApiError> {
    let (exec, op) = dex
        .callback(id)
        .ok_or_else(|| not_found(&format!("callback {id}")))?;
    let outcome = match verb {
        "succeed" => Ok(Some(String::from_utf8_lossy(body).into_owned())),
        "fail" => {
            let v = body_json(body)?;
            Err(serde_json::from_value::<ErrorObject>(v)
                .map_err(|e| invalid(format!("Error: {e}")))?)
        }
        "heartbeat" => {
            let beat = dex.with(&exec, |e, now| match e.op_mut(&op) {
                Some(o) if !o.status.is_terminal() => {
                    o.heartbeat_due_ms = o.heartbeat_timeout_s.map(|s| now + u64::from(s) * 1000);
                    (true, true)
                }
                _ => (false, false),
            });
            return if beat == Some(true) {
                Ok((200, json!({})))
            } else {
                Err(error(
                    400,
                    "CallbackTimeoutException",
                    "the callback has timed out or is closed",
                ))
            };
        }
        _ => {
            return Err(error(
                404,
                "UnknownOperationException",
                format!("{verb} is not a callback operation"),
            ));
        }
    };
    match run::complete(dex, &exec, &op, outcome) {
        Some(Ok(())) => Ok((200, json!({}))),
        Some(Err(_)) => Err(error(
            400,
            "CallbackTimeoutException",
            "the callback has timed out or is closed",
        )),
        None => Err(not_found(&format!("callback {id}"))),
    }
}

fn list(dex: &Dex, function: &str, query: &str) -> Result<(u16, Value), ApiError> {
    list_of(dex.list(function), query)
}

/// The page `query` asks for of `all` (one function's executions, oldest first).
pub(super) fn list_of(
    mut all: Vec<super::Execution>,
    query: &str,
) -> Result<(u16, Value), ApiError> {
    let statuses: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "Statuses")
        .filter_map(|(_, v)| decode(v))
        .collect();
    let name = query_param(query, "DurableExecutionName");
    all.retain(|e| {
        let status = serde_json::to_value(e.status).unwrap_or_default();
        (statuses.is_empty() || statuses.iter().any(|s| status == *s))
            && name.as_ref().is_none_or(|n| *n == e.name)
    });
    if query_param(query, "ReverseOrder").as_deref() == Some("true") {
        all.reverse();
    }
    let summaries: Vec<Value> = all.iter().map(|e| e.summary(false)).collect();
    let (items, next) = page(&summaries, query)?;
    let mut v = json!({"DurableExecutions": items});
    if let Some(n) = next {
        v["NextMarker"] = json!(n);
    }
    Ok((200, v))
}

/// The events of an execution, made from its operations: each one's start and end.
fn history(exec: &super::Execution, query: &str) -> Result<(u16, Value), ApiError> {
    let mut events: Vec<(u64, &'static str, Value, &super::model::Operation)> = Vec::new();
    for op in &exec.ops {
        let (kind, details) = started_event(exec, op);
        events.push((op.start_ms, kind, details, op));
        if let Some(end) = op.end_ms
            && let Some((kind, details)) = ended_event(exec, op)
        {
            events.push((end, kind, details, op));
        }
    }
    events.sort_by_key(|(t, ..)| *t);
    let mut out: Vec<Value> = events
        .into_iter()
        .enumerate()
        .map(|(i, (t, kind, details, op))| {
            let mut e = json!({
                "EventType": kind,
                "EventId": i + 1,
                "Id": op.id,
                "EventTimestamp": t as f64 / 1000.0,
            });
            e[format!("{kind}Details")] = details;
            if let Some(n) = &op.name {
                e["Name"] = json!(n);
            }
            if let Some(p) = &op.parent_id {
                e["ParentId"] = json!(p);
            }
            if let Some(s) = &op.sub_type {
                e["SubType"] = json!(s);
            }
            e
        })
        .collect();
    if query_param(query, "ReverseOrder").as_deref() == Some("true") {
        out.reverse();
    }
    let (items, next) = page(&out, query)?;
    let mut v = json!({"Events": items});
    if let Some(n) = next {
        v["NextMarker"] = json!(n);
    }
    Ok((200, v))
}

/// The model's `EventInput`, `EventResult` or `EventError` of a payload or an error (`{}`
/// when there is none).
fn payload(value: Option<impl serde::Serialize>) -> Value {
    value.map_or_else(|| json!({}), |p| json!({"Payload": p}))
}

/// The `…Started` event of `op` and its details, as the model's `Event` has them.
fn started_event(exec: &super::Execution, op: &super::model::Operation) -> (&'static str, Value) {
    use super::model::OpType;
    match op.op_type {
        OpType::Execution => {
            let mut details = json!({"Input": payload(op.input.as_deref())});
            if exec.deadline_ms > 0 {
                details["ExecutionTimeout"] =
                    json!(exec.deadline_ms.saturating_sub(exec.start_ms) / 1000);
            }
            ("ExecutionStarted", details)
        }
        OpType::Context => ("ContextStarted", json!({})),
        OpType::Step => ("StepStarted", json!({})),
        OpType::Wait => {
            let mut d = json!({});
            if let Some(s) = op.wait_s {
                d["Duration"] = json!(s);
                d["ScheduledEndTimestamp"] =
                    json!((op.start_ms + u64::from(s) * 1000) as f64 / 1000.0);
            }
            ("WaitStarted", d)
        }
        OpType::Callback => {
            let mut d = json!({});
            if let Some(id) = &op.callback_id {
                d["CallbackId"] = json!(id);
            }
            if let Some(due) = op.callback_timeout_ms {
                d["Timeout"] = json!(due.saturating_sub(op.start_ms) / 1000);
            }
            if let Some(s) = op.heartbeat_timeout_s {
                d["HeartbeatTimeout"] = json!(s);
            }
            ("CallbackStarted", d)
        }
        OpType::ChainedInvoke => (
            "ChainedInvokeStarted",
            json!({"FunctionName": op.invoke_target.as_deref().unwrap_or_default()}),
        ),
    }
}

/// The event that ended `op`, and its details; `None` for an end the model has no event
/// for (a step or a context stopped with its execution: the execution's event says it).
fn ended_event(
    exec: &super::Execution,
    op: &super::model::Operation,
) -> Option<(&'static str, Value)> {
    use super::model::{OpStatus, OpType};
    let result = || json!({"Result": payload(op.result.as_deref())});
    let error = || json!({"Error": payload(op.error.as_ref())});
    let retry = json!({"CurrentAttempt": op.attempt});
    Some(match (op.op_type, op.status) {
        (OpType::Execution, OpStatus::Succeeded) => (
            "ExecutionSucceeded",
            json!({"Result": payload(exec.result.as_deref().or(op.result.as_deref()))}),
        ),
        (OpType::Execution, status) => {
            let kind = match status {
                OpStatus::Failed => "ExecutionFailed",
                OpStatus::TimedOut => "ExecutionTimedOut",
                _ => "ExecutionStopped",
            };
            (
                kind,
                json!({"Error": payload(exec.error.as_ref().or(op.error.as_ref()))}),
            )
        }
        (OpType::Context, OpStatus::Succeeded) => ("ContextSucceeded", result()),
        (OpType::Context, OpStatus::Failed) => ("ContextFailed", error()),
        (OpType::Step, OpStatus::Succeeded) => (
            "StepSucceeded",
            json!({"Result": payload(op.result.as_deref()), "RetryDetails": retry}),
        ),
        (OpType::Step, OpStatus::Failed) => (
            "StepFailed",
            json!({"Error": payload(op.error.as_ref()), "RetryDetails": retry}),
        ),
        (OpType::Wait, OpStatus::Succeeded) => (
            "WaitSucceeded",
            op.wait_s
                .map_or_else(|| json!({}), |s| json!({"Duration": s})),
        ),
        (OpType::Wait, _) => ("WaitCancelled", error()),
        (OpType::Callback, OpStatus::Succeeded) => ("CallbackSucceeded", result()),
        (OpType::Callback, OpStatus::TimedOut) => ("CallbackTimedOut", error()),
        (OpType::Callback, _) => ("CallbackFailed", error()),
        (OpType::ChainedInvoke, OpStatus::Succeeded) => ("ChainedInvokeSucceeded", result()),
        (OpType::ChainedInvoke, OpStatus::Failed) => ("ChainedInvokeFailed", error()),
        (OpType::ChainedInvoke, OpStatus::TimedOut) => ("ChainedInvokeTimedOut", error()),
        (OpType::ChainedInvoke, _) => ("ChainedInvokeStopped", error()),
        (OpType::Context | OpType::Step, _) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of operation, ended every way it can end: each event names its details
    /// after its type, and an end the model has no event for (a step stopped with its
    /// execution) gives none.
    #[test]
    fn the_history_names_each_event_s_details_after_its_type() {
        use crate::dex::model::{OpStatus, Operation, OperationUpdate};
        let update = |json: &str| serde_json::from_str::<OperationUpdate>(json).unwrap();
        let started = |json: &str| Operation::from_update(&update(json), 1_000).unwrap();
        let mut ops = vec![Operation::execution("e", "{}".into(), 1_000)];
        let mut wait =
            started(r#"{"Id":"w","Type":"WAIT","Action":"START","WaitOptions":{"WaitSeconds":5}}"#);
        wait.end(OpStatus::Succeeded, 6_000);
        let mut step = started(r#"{"Id":"s","Type":"STEP","Action":"START"}"#);
        step.apply(
            &update(r#"{"Id":"s","Type":"STEP","Action":"FAIL","Error":{"ErrorType":"E"}}"#),
            2_000,
        )
        .unwrap();
        let mut stopped = started(r#"{"Id":"t","Type":"STEP","Action":"START"}"#);
        stopped.end(OpStatus::Stopped, 3_000);
        let mut callback = started(
            r#"{"Id":"c","Type":"CALLBACK","Action":"START","CallbackOptions":{"TimeoutSeconds":60}}"#,
        );
        callback.callback_id = Some("e-cb".into());
        callback.end(OpStatus::TimedOut, 61_000);
        let mut invoke = started(
            r#"{"Id":"i","Type":"CHAINED_INVOKE","Action":"START","ChainedInvokeOptions":{"FunctionName":"f"}}"#,
        );
        invoke.end(OpStatus::Stopped, 4_000);
        ops.extend([wait, step, stopped, callback, invoke]);
        let exec: crate::dex::Execution = serde_json::from_value(json!({
            "id": "e", "arn": "arn", "function": "f", "version": 1, "name": "n",
            "status": "RUNNING", "ops": ops, "result": null, "error": null,
            "start_ms": 1_000, "end_ms": null, "deadline_ms": 901_000,
            "retention_ms": 0, "needs_invoke": false,
        }))
        .unwrap();
        let (_, v) = history(&exec, "").unwrap();
        let events = v["Events"].as_array().unwrap();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["EventType"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "ExecutionStarted",
                "WaitStarted",
                "StepStarted",
                "StepStarted",
                "CallbackStarted",
                "ChainedInvokeStarted",
                "StepFailed",
                "ChainedInvokeStopped",
                "WaitSucceeded",
                "CallbackTimedOut",
            ]
        );
        for e in events {
            let kind = e["EventType"].as_str().unwrap();
            assert!(e[format!("{kind}Details")].is_object(), "{e}");
        }
        assert_eq!(
            events[0]["ExecutionStartedDetails"]["ExecutionTimeout"],
            900
        );
        assert_eq!(events[1]["WaitStartedDetails"]["Duration"], 5);
        assert_eq!(
            events[1]["WaitStartedDetails"]["ScheduledEndTimestamp"],
            6.0
        );
        assert_eq!(events[4]["CallbackStartedDetails"]["CallbackId"], "e-cb");
        assert_eq!(events[4]["CallbackStartedDetails"]["Timeout"], 60);
        assert_eq!(
            events[6]["StepFailedDetails"]["RetryDetails"]["CurrentAttempt"],
            1
        );
        assert_eq!(
            events[6]["StepFailedDetails"]["Error"]["Payload"]["ErrorType"],
            "E"
        );
    }

    #[test]
    fn pages_follow_their_marker() {
        let items: Vec<u32> = (0..5).collect();
        let (p, next) = page(&items, "MaxItems=2").unwrap();
        assert_eq!((p, next.as_deref()), (vec![0, 1], Some("2")));
        let (p, next) = page(&items, "MaxItems=2&Marker=4").unwrap();
        assert_eq!((p, next), (vec![4], None));
        let (p, _) = page(&items, "Marker=99").unwrap();
        assert!(p.is_empty());
        for bad in ["MaxItems=1001", "MaxItems=x", "Marker=abc"] {
            assert!(page(&items, bad).is_err(), "{bad}");
        }
    }
}
