//! Shared by the durable-execution tests that need no children.

use bytes::Bytes;
use fnhub_checkpoint::durable::DurableHost;
use fnhub_core::{BoxFuture, Invocation, Outcome};

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
