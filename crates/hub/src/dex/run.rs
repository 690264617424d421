//! Driving an execution: invoking its function until it ends, waking it when something it
//! waits for happens; and what changes an execution from outside (checkpoints, callbacks,
//! chained invokes, stop).

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{Invocation, InvocationContext};
use serde_json::{Value, json};

use super::model::{Invalid, OpStatus, OpType, Operation, OperationUpdate};
use super::{ANSWERS_KEPT, Dex, ErrorObject, ExecStatus, Execution, random_id};
use crate::edge::WeakHub;

/// Invocation failures (not `FAILED` answers) an execution survives before it fails.
const INVOKE_ATTEMPTS: u32 = 3;

/// Runs rounds of execution `id` (see [`Dex::kick`], which starts this on a task) until
/// it waits or ends and nothing changed meanwhile.
pub(crate) async fn drive(dex: Arc<Dex>, hub: WeakHub, id: String) {
    loop {
        let retrying = rounds(&dex, &hub, &id).await;
        // A retry waits out its delay, whatever its invocation changed meanwhile.
        if dex.park(&id, retrying) {
            return;
        }
    }
}

/// Invokes the function of execution `id` for as long as there is something for it to see;
/// returns once the execution waits (its timer armed), ends or is gone: true when it waits
/// to invoke the function again after one that failed.
async fn rounds(dex: &Dex, hub: &WeakHub, id: &str) -> bool {
    loop {
        // What is due now, and whether the function must run.
        dex.begin_round(id);
        let Some(step) = dex.update(id, prepare) else {
            return false;
        };
        let payload = match step {
            Prepared::Ended => {
                dex.disarm(id);
                return false;
            }
            Prepared::Sleep(until_ms) => {
                dex.wake_at(id, until_ms);
                return false;
            }
            Prepared::Invoke(payload) => payload,
        };
        let Some(hub) = hub.upgrade() else {
            return false;
        };
        let Some(exec) = dex.snapshot(id) else {
            return false;
        };
        let Ok(target) = format!("{}:{}", exec.function, exec.version).parse() else {
            return false;
        };
        let mut invocation = Invocation::new(target, Bytes::from(payload.to_string()));
        invocation.context = InvocationContext::default();
        let outcome = hub.call(invocation).await;
        drop(hub);
        let answer = match outcome {
            Ok(completion) => match completion.outcome {
                Ok(bytes) => parse_output(&bytes),
                Err(e) => Answer::Retry(ErrorObject::new(
                    e.error_type.as_deref().unwrap_or(e.kind.as_str()),
                    e.message,
                )),
            },
            Err(e) => Answer::Retry(ErrorObject::new("ServiceException", e.to_string())),
        };
        let retry = dex
            .update(id, |exec, now| {
                exec.tokens.clear();
                exec.token = None;
                if exec.status.is_terminal() {
                    return (None, false);
                }
                match answer {
                    Answer::Succeeded(result) => {
                        let recorded = exec.op(&exec.id).and_then(|o| o.result.clone());
                        exec.result = result.filter(|r| !r.is_empty()).or(recorded);
                        exec.finish(ExecStatus::Succeeded, now);
                        (None, true)
                    }
                    Answer::Failed(error) => {
                        let recorded = exec.op(&exec.id).and_then(|o| o.error.clone());
                        exec.error = error.or(recorded);
                        exec.finish(ExecStatus::Failed, now);
                        (None, true)
                    }
                    // What changed during the invocation (a callback answered, a
                    // chained invoke ended) left `needs_invoke` set.
                    Answer::Pending => (None, true),
                    // Invoked again after a delay: the function has not seen what it was
                    // invoked for.
                    Answer::Retry(error) => {
                        exec.needs_invoke = true;
                        (Some(error), false)
                    }
                }
            })
            .flatten();
        let failures = dex.count_failure(id, retry.is_some());
        let Some(error) = retry else { continue };
        tracing::warn!(execution = %id, attempt = failures, error = ?error.error_message, "a durable execution's invocation failed");
        if failures >= INVOKE_ATTEMPTS {
            dex.update(id, |exec, now| {
                exec.error = Some(error);
                exec.finish(ExecStatus::Failed, now);
                ((), true)
            });
            // Ended: the next round says so and disarms its timer.
            continue;
        }
        dex.wake_at(id, dex.now_ms() + 200 * u64::from(failures));
        return true;
    }
}

enum Prepared {
    Ended,
    Sleep(u64),
    Invoke(Value),
}

/// Marks what is due (waits ended, steps ready to retry, callbacks timed out) and decides:
/// invoke now, or sleep until the next thing is due.
fn prepare(exec: &mut Execution, now: u64) -> (Prepared, bool) {
    if exec.status.is_terminal() {
        return (Prepared::Ended, false);
    }
    if now >= exec.deadline_ms {
        exec.error = Some(ErrorObject::new(
            "Execution.TimedOut",
            "the execution ran past its ExecutionTimeout",
        ));
        exec.finish(ExecStatus::TimedOut, now);
        return (Prepared::Ended, true);
    }
    let mut changed = false;
    let mut next = exec.deadline_ms;
    for op in &mut exec.ops {
        match (op.op_type, op.status) {
            (OpType::Wait, OpStatus::Started) => match op.due_ms {
                Some(due) if due <= now => {
                    op.end(OpStatus::Succeeded, due);
                    changed = true;
                }
                Some(due) => next = next.min(due),
                None => {}
            },
            (OpType::Step, OpStatus::Pending) => match op.due_ms {
                Some(due) if due <= now => {
                    op.status = OpStatus::Ready;
                    changed = true;
                }
                Some(due) => next = next.min(due),
                None => {}
            },
            (OpType::Callback, OpStatus::Started) => {
                let timeout = [
                    (op.callback_timeout_ms, "Callback.Timeout"),
                    (op.heartbeat_due_ms, "Callback.Heartbeat"),
                ]
                .into_iter()
                .find_map(|(due, kind)| due.filter(|d| *d <= now).map(|_| kind));
                if let Some(kind) = timeout {
                    op.error = Some(ErrorObject::new(kind, "the callback timed out"));
                    op.end(OpStatus::TimedOut, now);
                    changed = true;
                } else {
                    for due in [op.callback_timeout_ms, op.heartbeat_due_ms]
                        .into_iter()
                        .flatten()
                    {
                        next = next.min(due);
                    }
                }
            }
            _ => {}
        }
    }
    if changed {
        exec.needs_invoke = true;
    }
    if exec.status == ExecStatus::Paused || !exec.needs_invoke {
        return (Prepared::Sleep(next), changed);
    }
    exec.needs_invoke = false;
    exec.changed.clear();
    let token = random_id();
    exec.token = Some(token.clone());
    exec.tokens = vec![token.clone()];
    let operations: Vec<Value> = exec.ops.iter().map(|o| o.to_json(false)).collect();
    let payload = json!({
        "DurableExecutionArn": exec.arn,
        "CheckpointToken": token,
        "InitialExecutionState": {"Operations": operations, "NextMarker": ""},
    });
    (Prepared::Invoke(payload), true)
}

/// What one invocation answered.
enum Answer {
    Succeeded(Option<String>),
    Failed(Option<ErrorObject>),
    Pending,
    /// It did not answer as the SDK does: invoke it again, a few times.
    Retry(ErrorObject),
}

fn parse_output(bytes: &[u8]) -> Answer {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return Answer::Retry(ErrorObject::new(
            "Runtime.InvalidOutput",
            "a durable function must answer {\"Status\": ...}",
        ));
    };
    match v.get("Status").and_then(Value::as_str) {
        Some("SUCCEEDED") => {
            Answer::Succeeded(v.get("Result").and_then(Value::as_str).map(str::to_owned))
        }
        Some("FAILED") => Answer::Failed(
            v.get("Error")
                .and_then(|e| serde_json::from_value(e.clone()).ok()),
        ),
        Some("PENDING") => Answer::Pending,
        _ => Answer::Retry(ErrorObject::new(
            "Runtime.InvalidOutput",
            "a durable function must answer SUCCEEDED, FAILED or PENDING",
        )),
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    #[error("no such durable execution")]
    Unknown,
    #[error(
        "Invalid Checkpoint Token: the token was used already or belongs to another invocation"
    )]
    StaleToken,
    #[error("{0}")]
    Invalid(String),
}

/// A chained invoke a checkpoint started: its operation, the function, the payload.
pub(crate) type Chained = (String, String, Option<String>);

/// `CheckpointDurableExecution`: applies `updates` (all or none), consumes `token` and
/// answers the next token with the operations that changed. Chained invokes it starts
/// are handed back to be run.
pub(crate) fn checkpoint(
    dex: &Dex,
    id: &str,
    token: &str,
    client_token: Option<&str>,
    updates: &[OperationUpdate],
) -> Result<(Value, Vec<Chained>), CheckpointError> {
    dex.with(id, |exec, now| {
        if let Some(ct) = client_token
            && let Some((_, answer)) = exec.answered.iter().find(|(t, _)| t == ct)
        {
            return (Ok((answer.clone(), Vec::new())), false);
        }
        if exec.token.as_deref() != Some(token) {
            return (Err(CheckpointError::StaleToken), false);
        }
        let mut ops = exec.ops.clone();
        let mut changed: Vec<String> = std::mem::take(&mut exec.changed);
        let mut invokes = Vec::new();
        for u in updates {
            let applied = if u.op_type == OpType::Execution {
                match ops.iter_mut().find(|o| o.id == exec.id) {
                    Some(op) if u.id == op.id => op.apply(u, now),
                    _ => Err(Invalid(format!("{:?} is not this execution's id", u.id))),
                }
            } else {
                match ops.iter_mut().find(|o| o.id == u.id) {
                    Some(op) => op.apply(u, now),
                    None => Operation::from_update(u, now).map(|mut op| {
                        if op.op_type == OpType::Callback {
                            // The execution's id first: any node can tell whose callback it is.
                            op.callback_id = Some(format!("{}-{}", exec.id, random_id()));
                        }
                        if let Some(target) = &op.invoke_target {
                            invokes.push((op.id.clone(), target.clone(), u.payload.clone()));
                        }
                        ops.push(op);
                    }),
                }
            };
            if let Err(Invalid(m)) = applied {
                exec.changed = changed;
                return (
                    Err(CheckpointError::Invalid(format!(
                        "update of {:?}: {m}",
                        u.id
                    ))),
                    false,
                );
            }
            if !changed.contains(&u.id) {
                changed.push(u.id.clone());
            }
        }
        exec.ops = ops;
        let next = random_id();
        exec.token = Some(next.clone());
        exec.tokens.push(next.clone());
        let operations: Vec<Value> = changed
            .iter()
            .filter_map(|id| exec.op(id))
            .map(|o| o.to_json(true))
            .collect();
        let answer = json!({
            "CheckpointToken": next,
            "NewExecutionState": {"Operations": operations},
        });
        if let Some(ct) = client_token {
            if exec.answered.len() == ANSWERS_KEPT {
                exec.answered.pop_front();
            }
            exec.answered.push_back((ct.to_owned(), answer.clone()));
        }
        (Ok((answer, invokes)), true)
    })
    .unwrap_or(Err(CheckpointError::Unknown))
}

/// Ends operation `op` of execution `id` from outside (a callback's answer, a chained
/// invoke's outcome): the function is invoked again to see it.
pub(crate) fn complete(
    dex: &Dex,
    id: &str,
    op: &str,
    outcome: Result<Option<String>, ErrorObject>,
) -> Option<Result<(), OpStatus>> {
    dex.with(id, |exec, now| {
        let Some(operation) = exec.op_mut(op) else {
            return (Err(OpStatus::Stopped), false);
        };
        if operation.status.is_terminal() {
            return (Err(operation.status), false);
        }
        match outcome {
            Ok(result) => {
                operation.result = result;
                operation.end(OpStatus::Succeeded, now);
            }
            Err(error) => {
                operation.error = Some(error);
                operation.end(OpStatus::Failed, now);
            }
        }
        exec.changed.push(op.to_owned());
        exec.needs_invoke = true;
        (Ok(()), true)
    })
}

/// Starts an execution of the durable function `target` and waits for its end.
async fn chained_execution(
    dex: &Arc<Dex>,
    hub: &WeakHub,
    target: &str,
    payload: Option<String>,
) -> Result<Option<String>, ErrorObject> {
    let Some(spec) = hub.upgrade().and_then(|h| h.resolve(&target.parse().ok()?)) else {
        return Err(ErrorObject::new(
            "ResourceNotFoundException",
            format!("function {target:?} is not deployed"),
        ));
    };
    let started = dex.start(
        spec.name.as_str(),
        spec.version.get(),
        payload.unwrap_or_else(|| "{}".into()),
        None,
    );
    let (child, _, mut done) =
        started.map_err(|e| ErrorObject::new("InvalidParameterValueException", e.to_string()))?;
    dex.kick(&child);
    let _ = done.wait_for(|d| *d).await;
    match dex.snapshot(&child) {
        Some(exec) if exec.status == ExecStatus::Succeeded => Ok(exec.result),
        Some(exec) => Err(exec.error.unwrap_or_else(|| {
            ErrorObject::new(
                "ChainedInvoke.Failed",
                format!("the execution ended {:?}", exec.status),
            )
        })),
        None => Err(ErrorObject::new(
            "ServiceException",
            "the child execution is gone",
        )),
    }
}

/// Runs a chained invoke: `target` with `payload`, its outcome recorded on `op`.
pub(crate) fn spawn_chained(
    dex: Arc<Dex>,
    hub: WeakHub,
    id: String,
    op: String,
    target: String,
    payload: Option<String>,
) {
    tokio::spawn(async move {
        let name = target.split(':').next().unwrap_or_default().to_owned();
        if dex.config_of(&name).is_some() {
            // A durable function: a child execution, whose end is the invoke's outcome.
            let outcome = chained_execution(&dex, &hub, &target, payload).await;
            complete(&dex, &id, &op, outcome);
            return;
        }
        let outcome = match (hub.upgrade(), target.parse()) {
            (Some(hub), Ok(target)) => {
                let invocation = Invocation::new(target, Bytes::from(payload.unwrap_or_default()));
                match hub.call(invocation).await {
                    Ok(c) => match c.outcome {
                        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                        Err(e) => Err(ErrorObject::new(
                            e.error_type.as_deref().unwrap_or(e.kind.as_str()),
                            e.message,
                        )),
                    },
                    Err(e) => Err(ErrorObject::new("ServiceException", e.to_string())),
                }
            }
            (None, _) => return,
            (_, Err(e)) => Err(ErrorObject::new(
                "ResourceNotFoundException",
                format!("{target:?}: {e}"),
            )),
        };
        complete(&dex, &id, &op, outcome);
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dex::DurableConfig;

    fn dex() -> (Arc<Dex>, String) {
        let clock = Arc::new(fnhub_core::ManualClock::starting_at(
            std::time::Instant::now(),
            std::time::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let dex = Dex::new(None, clock, "hub");
        dex.declare(
            "f",
            DurableConfig::default().with_execution_timeout(Duration::from_secs(60)),
        );
        let (id, new, _) = dex.start("f", 1, "{}".into(), Some("n".into())).unwrap();
        assert!(new);
        (Arc::new(dex), id)
    }

    fn updates(json: &str) -> Vec<OperationUpdate> {
        serde_json::from_str(json).unwrap()
    }

    /// The token of the invocation `prepare` makes now.
    fn invoke(dex: &Dex, id: &str, at_ms: u64) -> Option<String> {
        dex.with(id, |exec, _| prepare(exec, at_ms))
            .and_then(|p| match p {
                Prepared::Invoke(payload) => {
                    Some(payload["CheckpointToken"].as_str().unwrap().to_owned())
                }
                _ => None,
            })
    }

    #[test]
    fn tokens_are_consumed_and_client_tokens_answer_once() {
        let (dex, id) = dex();
        let token = invoke(&dex, &id, 1_000_000).unwrap();
        let step = updates(r#"[{"Id":"s","Type":"STEP","Action":"START"}]"#);
        let (answer, _) = checkpoint(&dex, &id, &token, Some("c1"), &step).unwrap();
        let next = answer["CheckpointToken"].as_str().unwrap().to_owned();
        assert_eq!(
            answer["NewExecutionState"]["Operations"][0]["Status"],
            "STARTED"
        );
        // The same client token gets the same answer, even with the spent token.
        let (again, _) = checkpoint(&dex, &id, &token, Some("c1"), &step).unwrap();
        assert_eq!(again, answer);
        // A spent token without it is refused.
        assert!(matches!(
            checkpoint(&dex, &id, &token, None, &step),
            Err(CheckpointError::StaleToken)
        ));
        // A bad update refuses the whole checkpoint: the good one before it is not kept.
        let mixed = updates(
            r#"[{"Id":"s","Type":"STEP","Action":"SUCCEED","Payload":"1"},
                {"Id":"w","Type":"WAIT","Action":"START"}]"#,
        );
        assert!(matches!(
            checkpoint(&dex, &id, &next, None, &mixed),
            Err(CheckpointError::Invalid(_))
        ));
        let exec = dex.snapshot(&id).unwrap();
        assert_eq!(exec.op("s").unwrap().status, OpStatus::Started);
        assert!(exec.op("w").is_none());
        assert!(checkpoint(&dex, "nope", &next, None, &step).is_err());
    }

    #[test]
    fn retries_waits_and_callbacks_wake_the_execution_when_due() {
        let (dex, id) = dex();
        let t0 = 1_000_000;
        let token = invoke(&dex, &id, t0).unwrap();
        let ups = updates(
            r#"[{"Id":"s","Type":"STEP","Action":"START"},
                {"Id":"s","Type":"STEP","Action":"RETRY","StepOptions":{"NextAttemptDelaySeconds":5}},
                {"Id":"w","Type":"WAIT","Action":"START","WaitOptions":{"WaitSeconds":10}},
                {"Id":"c","Type":"CALLBACK","Action":"START","CallbackOptions":{"TimeoutSeconds":20}}]"#,
        );
        checkpoint(&dex, &id, &token, None, &ups).unwrap();
        // The function answered PENDING: nothing is due before the retry.
        dex.with(&id, |e, _| {
            e.needs_invoke = false;
            ((), false)
        });
        let sleep = dex.with(&id, |e, _| prepare(e, t0 + 1_000)).unwrap();
        assert!(matches!(sleep, Prepared::Sleep(at) if at == 1_005_000));
        assert!(invoke(&dex, &id, t0 + 5_000).is_some(), "the retry is due");
        let exec = dex.snapshot(&id).unwrap();
        assert_eq!(exec.op("s").unwrap().status, OpStatus::Ready);
        assert_eq!(exec.op("w").unwrap().status, OpStatus::Started);
        assert!(invoke(&dex, &id, t0 + 10_000).is_some(), "the wait is due");
        assert_eq!(
            dex.snapshot(&id).unwrap().op("w").unwrap().status,
            OpStatus::Succeeded
        );
        assert!(
            invoke(&dex, &id, t0 + 20_000).is_some(),
            "the callback timed out"
        );
        let callback = dex.snapshot(&id).unwrap();
        let callback = callback.op("c").unwrap();
        assert_eq!(callback.status, OpStatus::TimedOut);
        assert_eq!(
            callback.error.as_ref().unwrap().error_type.as_deref(),
            Some("Callback.Timeout")
        );
        // Past the execution's timeout it ends TIMED_OUT.
        let ended = dex.with(&id, |e, _| prepare(e, t0 + 61_000)).unwrap();
        assert!(matches!(ended, Prepared::Ended));
        assert_eq!(dex.snapshot(&id).unwrap().status, ExecStatus::TimedOut);
    }

    /// A hub with one in-process function `name` declared Lambda-durable, answering with
    /// `answer` (given the hub's dex, the invocation's payload and how many calls came
    /// before).
    fn hub_with(
        name: &str,
        answer: impl Fn(&Dex, &Value, u32) -> String + Send + Sync + 'static,
    ) -> (crate::EdgeHub, Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = Arc::new(AtomicU32::new(0));
        let dex_slot: Arc<std::sync::OnceLock<Arc<Dex>>> = Arc::default();
        let (counted, slot, answer) = (calls.clone(), dex_slot.clone(), Arc::new(answer));
        let hub = crate::EdgeHub::builder()
            .function(
                fnhub_core::FunctionSpec::in_process(fnhub_core::FunctionName::new(name).unwrap()),
                fnhub_core::from_fn(move |inv: Invocation| {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    let payload: Value = serde_json::from_slice(&inv.payload).unwrap();
                    let out = answer(slot.get().unwrap(), &payload, n);
                    async move { Ok(Bytes::from(out)) }
                }),
            )
            .lambda_durable(name, DurableConfig::default())
            .build()
            .unwrap();
        let _ = dex_slot.set(hub.dex().clone());
        (hub, calls)
    }

    /// Waits until `done` holds, a second at most (it may not, and the caller's assertion
    /// then says what did not happen).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// An invocation that does not answer as the SDK does is invoked again, after a delay,
    /// and after `INVOKE_ATTEMPTS` of them the execution fails with the last error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invocations_that_do_not_answer_as_the_sdk_are_retried_then_fail_it() {
        let (hub, calls) = hub_with("garbled", |_, _, _| "not json".to_owned());
        let started = hub.start_durable("garbled", "{}", None).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), started.outcome())
            .await
            .expect("the execution never ended");
        let error = outcome.unwrap_err();
        assert_eq!(error.error_type.as_deref(), Some("Runtime.InvalidOutput"));
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            INVOKE_ATTEMPTS
        );
        hub.shutdown().await;
    }

    /// An execution waiting holds no task: its wait is an entry in the hub's timer table,
    /// and the table's task invokes the function again when it is due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_execution_is_an_entry_in_the_timer_table_not_a_task() {
        let (hub, calls) = hub_with("napper", |dex, payload, n| {
            if n > 0 {
                return r#"{"Status":"SUCCEEDED","Result":"rested"}"#.to_owned();
            }
            // The first call starts a one-second wait, as the SDK does, and answers PENDING.
            let arn = payload["DurableExecutionArn"].as_str().unwrap();
            let token = payload["CheckpointToken"].as_str().unwrap();
            let id = dex.id_of_arn(arn).unwrap();
            let wait = updates(
                r#"[{"Id":"w","Type":"WAIT","Action":"START","WaitOptions":{"WaitSeconds":1}}]"#,
            );
            checkpoint(dex, &id, token, None, &wait).unwrap();
            r#"{"Status":"PENDING"}"#.to_owned()
        });
        let started = hub.start_durable("napper", "{}", None).await.unwrap();
        let id = started.arn.rsplit('/').next().unwrap().to_owned();
        let parked = || {
            let state = hub.dex().state.lock();
            state.executions.get(&id).is_some_and(|l| !l.driving)
        };
        settle(|| calls.load(std::sync::atomic::Ordering::SeqCst) == 1 && parked()).await;
        assert!(parked(), "no round runs while it waits");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(hub.armed_timers(), 1, "its wait is armed in the table");
        let outcome = tokio::time::timeout(Duration::from_secs(30), started.outcome())
            .await
            .expect("the wait never ended");
        assert_eq!(outcome.unwrap(), "rested");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Ended, it leaves nothing in the table (its timeout is not armed for a day).
        settle(|| hub.armed_timers() == 0).await;
        assert_eq!(hub.armed_timers(), 0);
        hub.shutdown().await;
    }

    /// An execution stopped while it waits for its timeout takes its entry out of the
    /// table, rather than leaving it there until the timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_execution_stopped_while_it_waits_leaves_no_timer() {
        let (hub, calls) = hub_with("idle", |_, _, _| r#"{"Status":"PENDING"}"#.to_owned());
        let started = hub.start_durable("idle", "{}", None).await.unwrap();
        let id = started.arn.rsplit('/').next().unwrap().to_owned();
        settle(|| calls.load(std::sync::atomic::Ordering::SeqCst) == 1 && hub.armed_timers() == 1)
            .await;
        assert_eq!(hub.armed_timers(), 1, "armed for its timeout");
        // As StopDurableExecution does.
        hub.dex().with(&id, |exec, now| {
            exec.finish(ExecStatus::Stopped, now);
            ((), true)
        });
        let outcome = started.outcome().await;
        assert_eq!(outcome.unwrap_err().kind, fnhub_core::ErrorKind::Cancelled);
        settle(|| hub.armed_timers() == 0).await;
        assert_eq!(hub.armed_timers(), 0);
        hub.shutdown().await;
    }
}
