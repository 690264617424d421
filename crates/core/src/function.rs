//! In-process function handlers.

use std::future::Future;
use std::pin::Pin;

use crate::invocation::Invocation;
use crate::outcome::Outcome;

/// A boxed, sendable future: the return type of `dyn` plug-in methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler that runs inside the hub process.
///
/// Implement it for your type, or wrap a closure with [`from_fn`]. A panic inside `call`
/// becomes an outcome of kind `Crashed`; the sandbox stops waiting at the function's
/// timeout (the future is dropped at that point, so handlers should await rather than
/// block).
pub trait Function: Send + Sync + 'static {
    /// Runs one invocation.
    fn call(&self, invocation: Invocation) -> impl Future<Output = Outcome> + Send;
}

/// The object-safe form of [`Function`], implemented for every `Function`; what sandboxes
/// store.
pub trait DynFunction: Send + Sync + 'static {
    /// Runs one invocation.
    fn call_boxed(&self, invocation: Invocation) -> BoxFuture<'_, Outcome>;
}

impl<F: Function> DynFunction for F {
    fn call_boxed(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(self.call(invocation))
    }
}

/// A [`Function`] made from a closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnFunction<F>(F);

impl<F> std::fmt::Debug for FnFunction<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnFunction")
    }
}

/// Makes a [`Function`] from an async closure.
///
/// ```
/// use fnhub_core::{from_fn, Invocation, Outcome};
/// let echo = from_fn(|inv: Invocation| async move { Outcome::Ok(inv.payload) });
/// # let _ = echo;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnFunction<F>
where
    F: Fn(Invocation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FnFunction(f)
}

impl<F, Fut> Function for FnFunction<F>
where
    F: Fn(Invocation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn call(&self, invocation: Invocation) -> impl Future<Output = Outcome> + Send {
        (self.0)(invocation)
    }
}
