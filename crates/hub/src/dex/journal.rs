//! The engine's executions (Rust functions with a `DurableContext`) through the same
//! operations as the Lambda ones, so that one API lists, reads and stops every durable
//! execution of a hub, whatever kind:
//!
//! - `ListDurableExecutionsByFunction` of a durable Rust function: those in the
//!   checkpoint store (running or waiting), then those that ended lately on this hub (the
//!   engine remembers [`Engine::REMEMBERED_OUTCOMES`]; a finished execution's checkpoint is
//!   gone, so one that ended before the hub started is not listed);
//! - `GetDurableExecution` and `GetDurableExecutionHistory`: the journal as Lambda's
//!   operations (a step is a `STEP`, a child a `CHAINED_INVOKE`, a sleep a `WAIT`, a wait
//!   for an event a `CALLBACK` of sub-type `WaitForEvent` named by its topic filter), and
//!   the operation it waits on as one that has started. The journal keeps no time per
//!   operation: each shows the execution's start, and the one it waits on the time it
//!   suspended;
//! - `StopDurableExecution`: [`Engine::stop`]; the execution ends with the given `Error`
//!   (kind `Cancelled`), delivered like any outcome;
//! - `SendDurableExecutionCallbackSuccess` / `Failure` / `Heartbeat`: a wait for an event
//!   is a callback whose id is `{execution}-{journal position}` (its history shows it);
//!   success answers it with the result as the event's payload, failure with the error
//!   ([`Engine::send`]), once; the right to invoke the function is asked (the id is no
//!   secret, unlike a Lambda callback's);
//! - `DeleteDurableExecution` of one that ended forgets it; pausing is not offered (409).
//!
//! The execution's id in its ARN is the execution id's 32 hex digits; its name is the
//! execution id as the hub writes it (the id of the invocation that started it).

use std::time::{SystemTime, UNIX_EPOCH};

use fnhub_checkpoint::durable::{Ended, Engine, EngineError, StopResult};
use fnhub_core::{
    Checkpoint, ErrorKind, ExecutionId, FunctionError, FunctionName, JournalEntry, Operation,
    PendingDependency,
};
use serde_json::{Value, json};

use super::api::{
    ApiError, Asker, error, function_name, list_of, not_found, read_only, stop_reason,
};
use super::model::{OpStatus, OpType, Operation as Op};
use super::{ACCOUNT, ErrorObject, ExecStatus, Execution, REGION};
use crate::EdgeHub;

/// Answers a request under `/2025-12-01/` about the engine's executions, or `None` when it
/// is not about one (the caller then answers as for the Lambda ones).
pub(super) async fn serve(
    hub: &EdgeHub,
    asker: &Asker<'_>,
    method: &str,
    rest: &str,
    query: &str,
    body: &[u8],
) -> Option<Result<(u16, Value), ApiError>> {
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let engine = hub.engine();
    match (method, &segments[..]) {
        ("GET", ["functions", name, "durable-executions"]) => {
            let name = function_name(&fnhub_core::percent_decode(name)?);
            let function = FunctionName::new(&name).ok()?;
            if !engine.runs(&function) {
                return None;
            }
            if let Err(refused) = allowed(asker, &name) {
                return Some(Err(refused));
            }
            Some(list(engine, &function, query).await)
        }
        ("POST", ["durable-execution-callbacks", callback, verb]) => {
            let callback = fnhub_core::percent_decode(callback)?;
            let (hex, at) = callback.split_once('-')?;
            let (id, at) = (execution_id(hex)?, at.parse::<u32>().ok()?);
            let (function, waits_there) = match find(hub, id).await? {
                Ok(Found::Stored(c)) => {
                    let waits = c.journal.len() == at as usize
                        && matches!(c.pending, Some(PendingDependency::Event { .. }));
                    (c.function, waits)
                }
                Ok(Found::Ended(e)) => (e.function, false),
                Err(e) => return Some(Err(e)),
            };
            // The id is no secret (the execution's, and a position): the right to invoke
            // the function is asked, also of a function through its endpoint.
            if !(asker.may_invoke)(function.as_str()) {
                return Some(Err(error(
                    403,
                    "AccessDeniedException",
                    format!("not authorized for the executions of {function}"),
                )));
            }
            Some(answer_wait(engine, (id, at), waits_there, verb, body).await)
        }
        (_, ["durable-executions", arn, tail @ ..]) => {
            let arn = fnhub_core::percent_decode(arn)?;
            let id = execution_id(arn.rsplit('/').next()?)?;
            let exec = match find(hub, id).await? {
                Ok(Found::Stored(c)) => view(&c),
                Ok(Found::Ended(e)) => ended(&e),
                Err(e) => return Some(Err(e)),
            };
            if exec.arn != arn {
                return None;
            }
            if let Err(refused) = allowed(asker, &exec.function) {
                return Some(Err(refused));
            }
            if let Some(read) = read_only(&exec, method, tail, query) {
                return Some(read);
            }
            Some(change(engine, &exec, id, method, tail, body).await)
        }
        _ => None,
    }
}

/// An engine execution, as the hub knows it.
enum Found {
    /// In the checkpoint store: running or waiting.
    Stored(Box<Checkpoint>),
    /// Ended lately on this hub.
    Ended(Ended),
}

/// Engine execution `id`: its checkpoint, or how it ended; `None` when the hub knows no
/// engine execution of that id (none, or a Lambda one).
async fn find(hub: &EdgeHub, id: ExecutionId) -> Option<Result<Found, ApiError>> {
    match hub.checkpoint_store().load(id).await {
        Ok(Some(c)) if !super::is_lambda(&c) => Some(Ok(Found::Stored(Box::new(c)))),
        Ok(Some(_)) => None,
        Ok(None) => hub.engine().ended(id).map(|e| Ok(Found::Ended(e))),
        Err(e) => Some(Err(unavailable(e))),
    }
}

/// `SendDurableExecutionCallbackSuccess`, `…Failure` and `…Heartbeat` for a wait for an
/// event: the callback id is `{execution}-{journal position}` (as the history shows it).
async fn answer_wait(
    engine: &Engine,
    (id, at): (ExecutionId, u32),
    waits_there: bool,
    verb: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let result = match verb {
        "succeed" => Ok(bytes::Bytes::copy_from_slice(body)),
        "fail" => {
            let e: ErrorObject = serde_json::from_value(super::api::body_json(body)?)
                .map_err(|e| super::api::invalid(format!("Error: {e}")))?;
            Err(FunctionError {
                error_type: e.error_type,
                stack_trace: e.stack_trace.unwrap_or_default(),
                ..FunctionError::new(
                    ErrorKind::Handled,
                    e.error_message
                        .unwrap_or_else(|| "the callback failed".into()),
                )
            })
        }
        // No heartbeat timeout on a wait for an event: one still waiting is answered.
        "heartbeat" if waits_there => return Ok((200, json!({}))),
        "heartbeat" => return Err(closed()),
        _ => {
            return Err(error(
                404,
                "UnknownOperationException",
                format!("{verb} is not a callback operation"),
            ));
        }
    };
    match engine.send(id, at, result).await {
        Ok(true) => Ok((200, json!({}))),
        Ok(false) => Err(closed()),
        Err(e) => Err(unavailable(e)),
    }
}

fn closed() -> ApiError {
    error(
        400,
        "CallbackTimeoutException",
        "the callback has timed out or is closed",
    )
}

/// Lists, reads and stops need the right to invoke the function, at the front door (a
/// function does not manage executions from its endpoint).
fn allowed(asker: &Asker<'_>, function: &str) -> Result<(), ApiError> {
    if asker.from_function || !(asker.may_invoke)(function) {
        return Err(error(
            403,
            "AccessDeniedException",
            format!("not authorized for the executions of {function}"),
        ));
    }
    Ok(())
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    error(
        503,
        "ServiceException",
        format!("the checkpoint store cannot be read: {e}"),
    )
}

async fn list(
    engine: &Engine,
    function: &FunctionName,
    query: &str,
) -> Result<(u16, Value), ApiError> {
    let stored = engine
        .executions_of(function, super::is_lambda)
        .await
        .map_err(unavailable)?;
    let mut all: Vec<Execution> = stored.iter().map(view).collect();
    all.extend(
        engine
            .ended_of(function)
            .iter()
            .filter(|f| stored.iter().all(|c| c.execution_id != f.execution))
            .map(ended),
    );
    all.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    list_of(all, query)
}

/// `StopDurableExecution`, `DeleteDurableExecution` and the rest, which the engine's
/// executions answer differently from the Lambda ones.
async fn change(
    engine: &Engine,
    exec: &Execution,
    id: ExecutionId,
    method: &str,
    tail: &[&str],
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let conflict = |message: &str| error(409, "ResourceConflictException", message);
    match (method, tail) {
        ("POST", ["stop"]) => {
            let reason = stop_reason(body)?.unwrap_or_default();
            let stopped = FunctionError {
                error_type: reason.error_type.or_else(|| Some("Stopped".into())),
                stack_trace: reason.stack_trace.unwrap_or_default(),
                ..FunctionError::new(
                    ErrorKind::Cancelled,
                    reason
                        .error_message
                        .unwrap_or_else(|| "the execution was stopped".into()),
                )
            };
            match engine.stop(id, stopped).await {
                Ok(StopResult::Stopped) => {
                    let at = engine.ended(id).map_or_else(SystemTime::now, |f| f.ended);
                    Ok((200, json!({"StopTimestamp": ms(at) as f64 / 1000.0})))
                }
                Ok(StopResult::Unknown) => {
                    Err(not_found(&format!("durable execution {}", exec.arn)))
                }
                Ok(_) => Err(conflict("the execution has already ended")),
                Err(EngineError::NotSuspended(_)) => Err(conflict(
                    "the execution is running on another node: stop it while it waits",
                )),
                Err(e) => Err(unavailable(e)),
            }
        }
        ("POST", ["pause" | "resume"]) => Err(conflict(
            "an execution of a Rust durable function cannot be paused",
        )),
        ("DELETE", []) if !exec.status.is_terminal() => Err(conflict(
            "a running execution is stopped before it is deleted",
        )),
        ("DELETE", []) => {
            engine.forget(id);
            Ok((202, json!({})))
        }
        // Only a Lambda function's SDK holds checkpoint tokens.
        ("POST", ["checkpoint"]) | ("GET", ["state"]) => Err(error(
            400,
            "InvalidParameterValueException",
            "Invalid Checkpoint Token",
        )),
        _ => Err(error(
            404,
            "UnknownOperationException",
            format!("{method} is not an operation on a durable execution"),
        )),
    }
}

/// The id an ARN ends with, when it is one of an engine execution (32 hex digits).
fn execution_id(text: &str) -> Option<ExecutionId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16)
        .ok()
        .map(ExecutionId::from_u128)
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The ARN of engine execution `id` of `function` at `version`: named by its id as the hub
/// writes it, and ending with its 32 hex digits, as a Lambda execution's ends with its id.
pub(crate) fn arn(id: ExecutionId, function: &str, version: u32) -> String {
    format!(
        "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}:{version}/durable-execution/{id}/{:032x}",
        id.as_u128()
    )
}

/// An execution of the engine as the API shows one, without its operations.
fn shell(
    id: ExecutionId,
    function: &FunctionName,
    version: u32,
    input: &[u8],
    started: SystemTime,
) -> Execution {
    let hex = format!("{:032x}", id.as_u128());
    let start_ms = ms(started);
    Execution {
        arn: arn(id, function.as_str(), version),
        ops: vec![Op::execution(
            &hex,
            String::from_utf8_lossy(input).into_owned(),
            start_ms,
        )],
        id: hex,
        function: function.to_string(),
        version,
        name: id.to_string(),
        status: ExecStatus::Running,
        result: None,
        error: None,
        start_ms,
        end_ms: None,
        deadline_ms: 0,
        retention_ms: 0,
        needs_invoke: false,
        token: None,
        tokens: Vec::new(),
        changed: Vec::new(),
        answered: Default::default(),
    }
}

/// A stored execution (running, or waiting): its journal, and what it waits on.
fn view(c: &Checkpoint) -> Execution {
    let mut exec = shell(
        c.execution_id,
        &c.function,
        c.version.get(),
        &c.input,
        c.created_at,
    );
    let start = exec.start_ms;
    let hex = exec.id.clone();
    exec.ops
        .extend(c.journal.iter().map(|entry| done(entry, start, &hex)));
    let at = c.journal.len().to_string();
    let since = ms(c.updated_at);
    let waiting = match &c.pending {
        Some(PendingDependency::Timer(due)) => {
            let mut op = Op::new(&at, OpType::Wait, OpStatus::Started, since);
            op.due_ms = Some(ms(*due));
            Some(op)
        }
        Some(PendingDependency::Child(_)) => Some(Op::new(
            &at,
            OpType::ChainedInvoke,
            OpStatus::Started,
            since,
        )),
        Some(PendingDependency::Event { filter }) => {
            let mut op = Op::new(&at, OpType::Callback, OpStatus::Started, since);
            op.sub_type = Some("WaitForEvent".into());
            op.name = Some(filter.clone());
            op.callback_id = Some(format!("{}-{at}", exec.id));
            Some(op)
        }
        // Shed under load, it waits before an operation it has not begun.
        _ => None,
    };
    exec.ops.extend(waiting);
    exec
}

/// A journal entry as the operation it was.
fn done(entry: &JournalEntry, at_ms: u64, execution: &str) -> Op {
    let (op_type, sub_type, target) = match &entry.operation {
        Operation::Invoke { function, .. } => (OpType::ChainedInvoke, None, Some(function)),
        Operation::Sleep => (OpType::Wait, None, None),
        Operation::WaitFor { .. } => (OpType::Callback, Some("WaitForEvent"), None),
        _ => (OpType::Step, None, None),
    };
    let mut op = Op::new(&entry.seq.to_string(), op_type, OpStatus::Started, at_ms);
    op.name = Some(entry.name.clone());
    op.sub_type = sub_type.map(str::to_owned);
    op.invoke_target = target.map(ToString::to_string);
    match op_type {
        OpType::Step => op.attempt = 1,
        OpType::Callback => op.callback_id = Some(format!("{execution}-{}", entry.seq)),
        _ => {}
    }
    match &entry.result {
        Ok(result) => {
            op.result = Some(String::from_utf8_lossy(result).into_owned());
            op.end(OpStatus::Succeeded, at_ms);
        }
        Err(e) => {
            op.error = Some(error_object(e));
            op.end(OpStatus::Failed, at_ms);
        }
    }
    op
}

fn error_object(e: &FunctionError) -> ErrorObject {
    ErrorObject {
        error_message: Some(e.message.clone()),
        error_type: Some(
            e.error_type
                .clone()
                .unwrap_or_else(|| format!("{:?}", e.kind)),
        ),
        error_data: None,
        stack_trace: (!e.stack_trace.is_empty()).then(|| e.stack_trace.clone()),
    }
}

/// An execution that ended lately, as the engine remembers it (its outcome; the journal
/// and the input are gone with the checkpoint).
fn ended(f: &Ended) -> Execution {
    outcome_view(
        f.execution,
        &f.function,
        f.version.get(),
        (f.started, f.ended),
        &f.outcome,
    )
}

fn outcome_view(
    id: ExecutionId,
    function: &FunctionName,
    version: u32,
    (started, ended): (SystemTime, SystemTime),
    outcome: &fnhub_core::Outcome,
) -> Execution {
    let mut exec = shell(id, function, version, &[], started);
    exec.ops[0].input = None;
    let end = ms(ended);
    let status = match outcome {
        Ok(output) => {
            exec.result = Some(String::from_utf8_lossy(output).into_owned());
            ExecStatus::Succeeded
        }
        Err(e) => {
            exec.error = Some(error_object(e));
            match e.kind {
                ErrorKind::Cancelled => ExecStatus::Stopped,
                ErrorKind::Timeout | ErrorKind::DeadlineExceeded => ExecStatus::TimedOut,
                _ => ExecStatus::Failed,
            }
        }
    };
    exec.status = status;
    exec.end_ms = Some(end);
    let op_status = match status {
        ExecStatus::Succeeded => OpStatus::Succeeded,
        ExecStatus::TimedOut => OpStatus::TimedOut,
        ExecStatus::Stopped => OpStatus::Stopped,
        _ => OpStatus::Failed,
    };
    exec.ops[0].end(op_status, end);
    exec
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fnhub_core::{FunctionRef, InvocationId, Version};

    fn checkpoint() -> Checkpoint {
        let mut c = Checkpoint::new(
            ExecutionId::from_u128(0xabc),
            FunctionName::new("order").unwrap(),
            Version::FIRST,
            Bytes::from_static(b"{\"n\":1}"),
            "hub",
            UNIX_EPOCH + std::time::Duration::from_secs(100),
        );
        c.journal = vec![
            JournalEntry::new(0, "reserve", Operation::Step, Ok(Bytes::from_static(b"ok"))),
            JournalEntry::new(
                1,
                "charge",
                Operation::Invoke {
                    child: InvocationId::from_u128(7),
                    function: FunctionRef::latest(FunctionName::new("pay").unwrap()),
                },
                Err(FunctionError::new(ErrorKind::Handled, "declined").with_type("Declined")),
            ),
            JournalEntry::new(2, "pause", Operation::Sleep, Ok(Bytes::new())),
        ];
        c.pending = Some(PendingDependency::Event {
            filter: "acks/#".into(),
        });
        c.updated_at = UNIX_EPOCH + std::time::Duration::from_secs(160);
        c
    }

    #[test]
    fn a_journal_reads_as_lambda_operations() {
        let exec = view(&checkpoint());
        assert_eq!(exec.id, format!("{:032x}", 0xabc));
        assert_eq!(execution_id(&exec.id), Some(ExecutionId::from_u128(0xabc)));
        assert!(exec.arn.ends_with(&format!("/{}", exec.id)), "{}", exec.arn);
        assert!(exec.arn.contains(":function:order:1/durable-execution/"));
        let ops: Vec<Value> = exec.ops.iter().map(|o| o.to_json(true)).collect();
        let kinds: Vec<(&str, &str)> = ops
            .iter()
            .map(|o| (o["Type"].as_str().unwrap(), o["Status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("EXECUTION", "STARTED"),
                ("STEP", "SUCCEEDED"),
                ("CHAINED_INVOKE", "FAILED"),
                ("WAIT", "SUCCEEDED"),
                ("CALLBACK", "STARTED"),
            ]
        );
        assert_eq!(ops[0]["ExecutionDetails"]["InputPayload"], "{\"n\":1}");
        assert_eq!(ops[1]["StepDetails"]["Result"], "ok");
        assert_eq!(
            ops[2]["ChainedInvokeDetails"]["Error"]["ErrorType"],
            "Declined"
        );
        assert_eq!(ops[4]["Name"], "acks/#");
        assert_eq!(ops[4]["StartTimestamp"], 160.0);
        let summary = exec.summary(true);
        assert_eq!(summary["Status"], "RUNNING");
        assert!(summary.get("ExpectedExecutionTimeoutTimestamp").is_none());
    }

    #[test]
    fn an_ended_execution_reads_with_its_outcome() {
        let (id, function) = (ExecutionId::from_u128(1), FunctionName::new("f").unwrap());
        let times = (UNIX_EPOCH, UNIX_EPOCH + std::time::Duration::from_secs(2));
        let stopped = Err(FunctionError::new(ErrorKind::Cancelled, "by hand").with_type("Stop"));
        let exec = outcome_view(id, &function, 1, times, &stopped);
        assert_eq!(exec.status, ExecStatus::Stopped);
        let summary = exec.summary(true);
        assert_eq!(summary["Error"]["ErrorType"], "Stop");
        assert_eq!(summary["EndTimestamp"], 2.0);
        let done = outcome_view(id, &function, 1, times, &Ok(Bytes::from_static(b"done")));
        assert_eq!(done.summary(true)["Status"], "SUCCEEDED");
        assert_eq!(done.summary(true)["Result"], "done");
        let failed = Err(FunctionError::new(ErrorKind::Handled, "no"));
        let failed = outcome_view(id, &function, 1, times, &failed);
        assert_eq!(failed.summary(true)["Error"]["ErrorType"], "Handled");
    }

    #[test]
    fn only_32_hex_digits_name_an_engine_execution() {
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"a".repeat(33),
            "0123456789abcdef0123456789abcde-",
        ] {
            assert_eq!(execution_id(bad), None, "{bad}");
        }
    }
}
