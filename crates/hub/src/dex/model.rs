//! The operations of a Lambda durable execution, in the shapes of botocore's Lambda model
//! (2025-12-01): what `CheckpointDurableExecution` receives (`OperationUpdate`) and what
//! `GetDurableExecutionState` and the invocation's `InitialExecutionState` hold
//! (`Operation`), and how an update changes an operation.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Lambda's `ErrorObject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ErrorObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stack_trace: Option<Vec<String>>,
}

impl ErrorObject {
    pub(crate) fn new(error_type: &str, message: impl Into<String>) -> ErrorObject {
        ErrorObject {
            error_message: Some(message.into()),
            error_type: Some(error_type.to_owned()),
            ..ErrorObject::default()
        }
    }
}

/// The kinds of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OpType {
    Execution,
    Context,
    Step,
    Wait,
    Callback,
    ChainedInvoke,
}

/// What an update does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Action {
    Start,
    Succeed,
    Fail,
    Retry,
    Cancel,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OpStatus {
    Started,
    Pending,
    Ready,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Stopped,
}

impl OpStatus {
    pub(crate) fn is_terminal(self) -> bool {
        !matches!(
            self,
            OpStatus::Started | OpStatus::Pending | OpStatus::Ready
        )
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct StepOptions {
    #[serde(default)]
    pub(crate) next_attempt_delay_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct WaitOptions {
    #[serde(default)]
    pub(crate) wait_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct CallbackOptions {
    #[serde(default)]
    pub(crate) timeout_seconds: Option<u32>,
    #[serde(default)]
    pub(crate) heartbeat_timeout_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ChainedInvokeOptions {
    pub(crate) function_name: String,
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
    #[serde(default, rename = "XAmznTraceId")]
    pub(crate) trace_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ContextOptions {
    #[serde(default)]
    pub(crate) replay_children: Option<bool>,
}

/// One update of `CheckpointDurableExecution`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct OperationUpdate {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) parent_id: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(rename = "Type")]
    pub(crate) op_type: OpType,
    #[serde(default)]
    pub(crate) sub_type: Option<String>,
    pub(crate) action: Action,
    #[serde(default)]
    pub(crate) payload: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<ErrorObject>,
    #[serde(default)]
    pub(crate) context_options: Option<ContextOptions>,
    #[serde(default)]
    pub(crate) step_options: Option<StepOptions>,
    #[serde(default)]
    pub(crate) wait_options: Option<WaitOptions>,
    #[serde(default)]
    pub(crate) callback_options: Option<CallbackOptions>,
    #[serde(default)]
    pub(crate) chained_invoke_options: Option<ChainedInvokeOptions>,
}

/// One operation of an execution. Times are milliseconds since the epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Operation {
    pub(crate) id: String,
    pub(crate) parent_id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) op_type: OpType,
    pub(crate) sub_type: Option<String>,
    pub(crate) status: OpStatus,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: Option<u64>,
    /// The execution's input (EXECUTION).
    pub(crate) input: Option<String>,
    /// A step's, context's, callback's or invoke's result.
    pub(crate) result: Option<String>,
    pub(crate) error: Option<ErrorObject>,
    /// A step's attempt count.
    pub(crate) attempt: u32,
    /// When a step is retried (PENDING) or a wait ends (STARTED).
    pub(crate) due_ms: Option<u64>,
    /// A wait's length in seconds, as asked (its history shows it).
    #[serde(default)]
    pub(crate) wait_s: Option<u32>,
    pub(crate) replay_children: bool,
    pub(crate) callback_id: Option<String>,
    /// When a callback times out, and when its heartbeat does.
    pub(crate) callback_timeout_ms: Option<u64>,
    pub(crate) heartbeat_timeout_s: Option<u32>,
    pub(crate) heartbeat_due_ms: Option<u64>,
    /// The function a chained invoke calls.
    pub(crate) invoke_target: Option<String>,
}

/// Why an update was refused: `InvalidParameterValueException`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Invalid(pub(crate) String);

/// The largest operation payload (a step's result, an error's data): Lambda's 256 KB.
pub(crate) const MAX_OPERATION_PAYLOAD: usize = 256 * 1024;

impl Operation {
    /// The EXECUTION operation of a new execution.
    pub(crate) fn execution(id: &str, input: String, now_ms: u64) -> Operation {
        Operation::new(id, OpType::Execution, OpStatus::Started, now_ms).with_input(input)
    }

    pub(crate) fn new(id: &str, op_type: OpType, status: OpStatus, now_ms: u64) -> Operation {
        Operation {
            id: id.to_owned(),
            parent_id: None,
            name: None,
            op_type,
            sub_type: None,
            status,
            start_ms: now_ms,
            end_ms: None,
            input: None,
            result: None,
            error: None,
            attempt: 0,
            due_ms: None,
            wait_s: None,
            replay_children: false,
            callback_id: None,
            callback_timeout_ms: None,
            heartbeat_timeout_s: None,
            heartbeat_due_ms: None,
            invoke_target: None,
        }
    }

    fn with_input(mut self, input: String) -> Operation {
        self.input = Some(input);
        self
    }

    /// Ends it with `status`, at `now_ms`.
    pub(crate) fn end(&mut self, status: OpStatus, now_ms: u64) {
        self.status = status;
        self.end_ms = Some(now_ms);
        self.due_ms = None;
    }

    /// The operation as the API shows it: times in epoch seconds (`seconds`) or in
    /// milliseconds (the invocation's `InitialExecutionState`).
    pub(crate) fn to_json(&self, seconds: bool) -> Value {
        let time = |ms: u64| {
            if seconds {
                json!(ms as f64 / 1000.0)
            } else {
                json!(ms)
            }
        };
        let mut v = json!({
            "Id": self.id,
            "Type": self.op_type,
            "Status": self.status,
            "StartTimestamp": time(self.start_ms),
        });
        let o = v.as_object_mut().expect("an object");
        if let Some(p) = &self.parent_id {
            o.insert("ParentId".into(), json!(p));
        }
        if let Some(n) = &self.name {
            o.insert("Name".into(), json!(n));
        }
        if let Some(s) = &self.sub_type {
            o.insert("SubType".into(), json!(s));
        }
        if let Some(end) = self.end_ms {
            o.insert("EndTimestamp".into(), time(end));
        }
        let mut details = serde_json::Map::new();
        if let Some(r) = &self.result {
            details.insert("Result".into(), json!(r));
        }
        if let Some(e) = &self.error {
            details.insert("Error".into(), json!(e));
        }
        let (key, details) = match self.op_type {
            OpType::Execution => (
                "ExecutionDetails",
                json!({"InputPayload": self.input.clone().unwrap_or_default()}),
            ),
            OpType::Context => {
                if self.replay_children {
                    details.insert("ReplayChildren".into(), json!(true));
                }
                ("ContextDetails", Value::Object(details))
            }
            OpType::Step => {
                details.insert("Attempt".into(), json!(self.attempt));
                if let Some(due) = self.due_ms {
                    details.insert("NextAttemptTimestamp".into(), time(due));
                }
                ("StepDetails", Value::Object(details))
            }
            OpType::Wait => (
                "WaitDetails",
                match self.due_ms.or(self.end_ms) {
                    Some(due) => json!({"ScheduledEndTimestamp": time(due)}),
                    None => json!({}),
                },
            ),
            OpType::Callback => {
                details.insert("CallbackId".into(), json!(self.callback_id));
                ("CallbackDetails", Value::Object(details))
            }
            OpType::ChainedInvoke => ("ChainedInvokeDetails", Value::Object(details)),
        };
        o.insert(key.into(), details);
        v
    }

    /// A new operation from its START (or an immediate SUCCEED / FAIL, as the SDK sends
    /// for steps run at most once with their result).
    pub(crate) fn from_update(u: &OperationUpdate, now_ms: u64) -> Result<Operation, Invalid> {
        if u.op_type == OpType::Execution {
            return Err(Invalid(
                "the EXECUTION operation is made by the service".into(),
            ));
        }
        let mut op = Operation::new(&u.id, u.op_type, OpStatus::Started, now_ms);
        op.parent_id.clone_from(&u.parent_id);
        op.name.clone_from(&u.name);
        op.sub_type.clone_from(&u.sub_type);
        if u.action == Action::Start {
            match u.op_type {
                OpType::Step => op.attempt = 1,
                OpType::Wait => {
                    let seconds = u
                        .wait_options
                        .as_ref()
                        .and_then(|w| w.wait_seconds)
                        .ok_or_else(|| Invalid("a WAIT needs WaitOptions.WaitSeconds".into()))?;
                    op.due_ms = Some(now_ms + u64::from(seconds) * 1000);
                    op.wait_s = Some(seconds);
                }
                OpType::Callback => {
                    let options = u.callback_options.clone().unwrap_or_default();
                    op.callback_timeout_ms = options
                        .timeout_seconds
                        .filter(|s| *s > 0)
                        .map(|s| now_ms + u64::from(s) * 1000);
                    op.heartbeat_timeout_s = options.heartbeat_timeout_seconds.filter(|s| *s > 0);
                    op.heartbeat_due_ms =
                        op.heartbeat_timeout_s.map(|s| now_ms + u64::from(s) * 1000);
                }
                OpType::ChainedInvoke => {
                    let options = u.chained_invoke_options.as_ref().ok_or_else(|| {
                        Invalid("a CHAINED_INVOKE needs ChainedInvokeOptions.FunctionName".into())
                    })?;
                    op.invoke_target = Some(options.function_name.clone());
                }
                OpType::Context => {
                    op.replay_children = u
                        .context_options
                        .as_ref()
                        .and_then(|c| c.replay_children)
                        .unwrap_or(false);
                }
                OpType::Execution => {}
            }
            return Ok(op);
        }
        op.apply(u, now_ms)?;
        Ok(op)
    }

    /// Applies an update to an operation that exists.
    pub(crate) fn apply(&mut self, u: &OperationUpdate, now_ms: u64) -> Result<(), Invalid> {
        if u.op_type != self.op_type {
            return Err(Invalid(format!(
                "operation {:?} is a {:?}, not a {:?}",
                self.id, self.op_type, u.op_type
            )));
        }
        if self.status.is_terminal() {
            return Err(Invalid(format!(
                "operation {:?} has already ended ({:?})",
                self.id, self.status
            )));
        }
        for text in [
            u.payload.as_deref(),
            u.error.as_ref().and_then(|e| e.error_data.as_deref()),
        ]
        .into_iter()
        .flatten()
        {
            if text.len() > MAX_OPERATION_PAYLOAD {
                return Err(Invalid(format!(
                    "an operation payload is at most {MAX_OPERATION_PAYLOAD} bytes, not {}",
                    text.len()
                )));
            }
        }
        match (self.op_type, u.action) {
            (OpType::Step, Action::Start) if self.status == OpStatus::Ready => {
                self.status = OpStatus::Started;
                self.attempt += 1;
                self.due_ms = None;
            }
            (OpType::Step, Action::Retry) => {
                let delay = u
                    .step_options
                    .as_ref()
                    .and_then(|s| s.next_attempt_delay_seconds)
                    .unwrap_or(1);
                self.status = OpStatus::Pending;
                self.error.clone_from(&u.error);
                // A polled condition's state rides on its retries.
                if u.payload.is_some() {
                    self.result.clone_from(&u.payload);
                }
                self.due_ms = Some(now_ms + u64::from(delay) * 1000);
            }
            (OpType::Wait, Action::Cancel) => self.end(OpStatus::Cancelled, now_ms),
            (OpType::Step | OpType::Context | OpType::Execution, Action::Succeed) => {
                self.result.clone_from(&u.payload);
                self.end(OpStatus::Succeeded, now_ms);
            }
            (OpType::Step | OpType::Context | OpType::Execution, Action::Fail) => {
                self.error = Some(u.error.clone().unwrap_or_default());
                self.end(OpStatus::Failed, now_ms);
            }
            (t, a) => {
                return Err(Invalid(format!(
                    "{a:?} is not an action on a {t:?} in status {:?}",
                    self.status
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> OperationUpdate {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_step_starts_retries_and_succeeds() {
        let mut op = Operation::from_update(
            &update(r#"{"Id":"s1","Type":"STEP","Action":"START","Name":"charge"}"#),
            1_000,
        )
        .unwrap();
        assert_eq!((op.status, op.attempt), (OpStatus::Started, 1));
        op.apply(
            &update(r#"{"Id":"s1","Type":"STEP","Action":"RETRY","StepOptions":{"NextAttemptDelaySeconds":2},"Error":{"ErrorType":"E"}}"#),
            2_000,
        )
        .unwrap();
        assert_eq!((op.status, op.due_ms), (OpStatus::Pending, Some(4_000)));
        assert_eq!(
            op.to_json(false)["StepDetails"]["NextAttemptTimestamp"],
            4_000
        );
        op.status = OpStatus::Ready;
        op.apply(
            &update(r#"{"Id":"s1","Type":"STEP","Action":"START"}"#),
            4_000,
        )
        .unwrap();
        assert_eq!(op.attempt, 2);
        op.apply(
            &update(r#"{"Id":"s1","Type":"STEP","Action":"SUCCEED","Payload":"42"}"#),
            5_000,
        )
        .unwrap();
        let json = op.to_json(true);
        assert_eq!(json["Status"], "SUCCEEDED");
        assert_eq!(json["StepDetails"]["Result"], "42");
        assert_eq!(json["EndTimestamp"], 5.0);
        // An ended operation takes no more updates.
        assert!(
            op.apply(
                &update(r#"{"Id":"s1","Type":"STEP","Action":"FAIL"}"#),
                6_000
            )
            .is_err()
        );
    }

    #[test]
    fn updates_that_do_not_fit_are_refused() {
        for bad in [
            r#"{"Id":"x","Type":"STEP"}"#,
            r#"{"Id":"x","Type":"NOPE","Action":"START"}"#,
            r#"{"Id":"x","Type":"STEP","Action":"START","Extra":1}"#,
            r#"{"Type":"STEP","Action":"START"}"#,
        ] {
            assert!(
                serde_json::from_str::<OperationUpdate>(bad).is_err(),
                "{bad}"
            );
        }
        assert!(
            Operation::from_update(&update(r#"{"Id":"w","Type":"WAIT","Action":"START"}"#), 0)
                .is_err()
        );
        assert!(
            Operation::from_update(
                &update(r#"{"Id":"e","Type":"EXECUTION","Action":"SUCCEED"}"#),
                0
            )
            .is_err()
        );
        let mut wait = Operation::from_update(
            &update(r#"{"Id":"w","Type":"WAIT","Action":"START","WaitOptions":{"WaitSeconds":5}}"#),
            1_000,
        )
        .unwrap();
        assert_eq!(wait.due_ms, Some(6_000));
        assert!(
            wait.apply(&update(r#"{"Id":"w","Type":"STEP","Action":"SUCCEED"}"#), 0)
                .is_err()
        );
        let big = format!(
            r#"{{"Id":"w","Type":"WAIT","Action":"CANCEL","Payload":"{}"}}"#,
            "x".repeat(MAX_OPERATION_PAYLOAD + 1)
        );
        assert!(wait.apply(&update(&big), 0).is_err());
        wait.apply(
            &update(r#"{"Id":"w","Type":"WAIT","Action":"CANCEL"}"#),
            2_000,
        )
        .unwrap();
        assert_eq!(wait.status, OpStatus::Cancelled);
    }
}
