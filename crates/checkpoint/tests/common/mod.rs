//! Shared by the store and durable-execution tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fnhub_checkpoint::durable::DurableHost;
use fnhub_core::{BoxFuture, Checkpoint, ExecutionId, FunctionName, Invocation, Outcome, Version};

/// Checkpoint number `n` (its execution id is `n + 1`) with `state` bytes of state, all `n`.
pub(crate) fn checkpoint(n: u32, state: usize) -> Checkpoint {
    let mut c = Checkpoint::new(
        ExecutionId::from_u128(u128::from(n) + 1),
        FunctionName::new("f").unwrap_or_else(|e| panic!("{e}")),
        Version::FIRST,
        Bytes::from(format!("input {n}")),
        "hub-a",
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_400_000),
    );
    c.state = Some(Bytes::from(vec![n as u8; state]));
    c.context.trace =
        fnhub_core::TraceParent::from_parts(7, 7, 1).unwrap_or_else(|| panic!("a valid trace"));
    c
}

/// A host for functions that call no child: any call answers empty at once.
pub(crate) struct NoChildren;

impl DurableHost for NoChildren {
    fn invoke(&self, _: Invocation) -> BoxFuture<'static, Outcome> {
        Box::pin(async { Ok(Bytes::new()) })
    }
}

/// A current-thread runtime with timers, for tests that are plain `#[test]`s (the child
/// processes re-run them).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
