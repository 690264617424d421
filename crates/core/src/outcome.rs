//! Outcomes of invocations.

use std::fmt;

use bytes::Bytes;

/// The result of one invocation: the function's output, or why there is none.
pub type Outcome = Result<Bytes, FunctionError>;

/// Why an invocation has no output. Errors are data: match on [`ErrorKind`], never parse the
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ErrorKind {
    /// The function returned an error of its own.
    Handled,
    /// The function failed in a way it did not handle (an uncaught exception).
    Unhandled,
    /// The function ran past its timeout and was stopped.
    Timeout,
    /// The invocation's deadline passed before it could run or finish.
    DeadlineExceeded,
    /// The function used more memory than allowed.
    OutOfMemory,
    /// The function's code panicked, or its process or instance died.
    Crashed,
    /// The invocation was cancelled before it finished.
    Cancelled,
    /// The runtime refused to run it (unknown function, not allowed, environment failed).
    Rejected,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Handled,
        ErrorKind::Unhandled,
        ErrorKind::Timeout,
        ErrorKind::DeadlineExceeded,
        ErrorKind::OutOfMemory,
        ErrorKind::Crashed,
        ErrorKind::Cancelled,
        ErrorKind::Rejected,
    ];

    /// A stable snake_case name, for metrics labels and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Handled => "handled",
            ErrorKind::Unhandled => "unhandled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::Crashed => "crashed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an invocation produced no output.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FunctionError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A message for people.
    pub message: String,
    /// The error's type name as the function reported it (Lambda's `errorType`), if any.
    pub error_type: Option<String>,
    /// The stack as the function's runtime reported it (Lambda's `stackTrace`), one frame
    /// a line; empty when it reported none.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub stack_trace: Vec<String>,
}

impl FunctionError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> FunctionError {
        FunctionError {
            kind,
            message: message.into(),
            error_type: None,
            stack_trace: Vec::new(),
        }
    }

    /// An error the function returned itself.
    pub fn handled(message: impl Into<String>) -> FunctionError {
        FunctionError::new(ErrorKind::Handled, message)
    }

    /// Sets the reported stack trace.
    pub fn with_stack_trace(mut self, frames: Vec<String>) -> FunctionError {
        self.stack_trace = frames;
        self
    }

    /// Lambda's error document: `errorMessage`, `errorType` (the reported one, else
    /// `default_type`) and `stackTrace` when there is one.
    pub fn lambda_body(&self, default_type: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "errorMessage": self.message,
            "errorType": self.error_type.as_deref().unwrap_or(default_type),
        });
        if !self.stack_trace.is_empty() {
            body["stackTrace"] = self.stack_trace.clone().into();
        }
        body
    }

    /// Sets the reported error type.
    pub fn with_type(mut self, error_type: impl Into<String>) -> FunctionError {
        self.error_type = Some(error_type.into());
        self
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error_type {
            Some(t) => write!(f, "{} ({t}): {}", self.kind, self.message),
            None => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for FunctionError {}
