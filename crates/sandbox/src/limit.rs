//! How long one call may run: shared by every backend.

use std::time::{Duration, SystemTime};

use fnhub_core::{ErrorKind, FunctionError};

/// How long one call may run, and whether that limit comes from the invocation's deadline
/// (rather than the function's timeout).
#[derive(Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) limit: Duration,
    pub(crate) by_deadline: bool,
}

impl Limit {
    /// The function's `timeout`, or the time left before `deadline` when that is sooner.
    /// A deadline already past is an error: the call must not start.
    pub(crate) fn new(
        timeout: Duration,
        deadline: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Limit, FunctionError> {
        let until_deadline = deadline.map(|d| d.duration_since(now).unwrap_or(Duration::ZERO));
        let limit = match until_deadline {
            Some(left) if left < timeout => Limit {
                limit: left,
                by_deadline: true,
            },
            _ => Limit {
                limit: timeout,
                by_deadline: false,
            },
        };
        if limit.by_deadline && limit.limit.is_zero() {
            return Err(FunctionError::new(
                ErrorKind::DeadlineExceeded,
                "the deadline passed before the invocation started",
            ));
        }
        Ok(limit)
    }

    /// The error of a call stopped at this limit.
    pub(crate) fn error(self) -> FunctionError {
        if self.by_deadline {
            FunctionError::new(
                ErrorKind::DeadlineExceeded,
                format!("the invocation's deadline passed after {:?}", self.limit),
            )
        } else {
            FunctionError::new(
                ErrorKind::Timeout,
                format!("timed out after {:?}", self.limit),
            )
        }
    }
}
