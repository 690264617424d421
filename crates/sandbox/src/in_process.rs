//! The in-process backend: native handlers run as futures on the hub's runtime.

use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fnhub_core::{
    BoxFuture, Clock, DynFunction, Environment, ErrorKind, Function, FunctionError, FunctionSpec,
    Invocation, IsolationReport, Outcome, PrepareError, Runtime, Sandbox, SystemClock,
};
use parking_lot::RwLock;

use crate::limit::Limit;

/// What a sandbox does with a capability profile it cannot enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Enforcement {
    /// Refuse to prepare the environment, naming what cannot be enforced. The default.
    #[default]
    FailClosed,
    /// Prepare it anyway and list what is not enforced in its
    /// [`IsolationReport`](fnhub_core::IsolationReport).
    BestEffort,
}

/// Runs native [`Function`]s inside the hub process.
///
/// Handlers are registered by name; a [`FunctionSpec`] with
/// [`Runtime::InProcess { handler }`](fnhub_core::Runtime::InProcess) selects one. Cheap to
/// clone: clones share the registry.
#[derive(Clone)]
pub struct InProcessSandbox {
    handlers: Arc<RwLock<HashMap<String, Arc<dyn Handler>>>>,
    clock: Arc<dyn Clock>,
    enforcement: Enforcement,
}

impl std::fmt::Debug for InProcessSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessSandbox")
            .field("handlers", &self.handlers.read().keys().collect::<Vec<_>>())
            .field("enforcement", &self.enforcement)
            .finish_non_exhaustive()
    }
}

impl Default for InProcessSandbox {
    fn default() -> Self {
        InProcessSandbox::new()
    }
}

impl InProcessSandbox {
    /// An empty sandbox on the system clock that fails closed.
    pub fn new() -> InProcessSandbox {
        InProcessSandbox {
            handlers: Arc::default(),
            clock: Arc::new(SystemClock),
            enforcement: Enforcement::FailClosed,
        }
    }

    /// Reads deadlines from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> InProcessSandbox {
        self.clock = clock;
        self
    }

    /// Sets what happens to profiles that ask for confinement. Default
    /// [`Enforcement::FailClosed`]; in-process code can never be confined, so best effort
    /// means "run it unconfined and say so".
    pub fn with_enforcement(mut self, enforcement: Enforcement) -> InProcessSandbox {
        self.enforcement = enforcement;
        self
    }

    /// Registers `function` under `handler`; returns whether it replaced one. Environments
    /// prepared earlier keep the handler they were prepared with.
    pub fn register(&self, handler: impl Into<String>, function: impl Function) -> bool {
        self.handlers
            .write()
            .insert(handler.into(), Arc::new(Typed(function)))
            .is_some()
    }

    /// Registers an already shared, type-erased handler. Each call through it costs one
    /// more allocation than a handler registered with [`register`](Self::register).
    pub fn register_dyn(&self, handler: impl Into<String>, function: Arc<dyn DynFunction>) -> bool {
        self.handlers
            .write()
            .insert(handler.into(), Arc::new(Erased(function)))
            .is_some()
    }

    /// Whether a handler is registered under `handler`.
    pub fn contains(&self, handler: &str) -> bool {
        self.handlers.read().contains_key(handler)
    }
}

impl Sandbox for InProcessSandbox {
    fn name(&self) -> &'static str {
        "in_process"
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        matches!(spec.runtime, Runtime::InProcess { .. })
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>> {
        Box::pin(async move {
            let Runtime::InProcess { handler } = &spec.runtime else {
                return Err(PrepareError::UnsupportedRuntime {
                    sandbox: self.name(),
                    runtime: spec.runtime.kind(),
                });
            };
            // Sidecars are processes this backend cannot start: refused in every mode.
            if !spec.sidecars.is_empty() {
                return Err(PrepareError::CannotEnforce {
                    sandbox: self.name(),
                    missing: vec![fnhub_core::Restriction::Sidecars],
                });
            }
            let missing = spec.capabilities.restrictions();
            if !missing.is_empty() && self.enforcement == Enforcement::FailClosed {
                return Err(PrepareError::CannotEnforce {
                    sandbox: self.name(),
                    missing,
                });
            }
            let function = self
                .handlers
                .read()
                .get(handler)
                .cloned()
                .ok_or_else(|| PrepareError::UnknownHandler(handler.clone()))?;
            Ok(Box::new(InProcessEnvironment {
                function,
                timeout: spec.resources.timeout,
                clock: self.clock.clone(),
                report: IsolationReport::new(self.name(), Vec::new(), missing),
            }) as Box<dyn Environment>)
        })
    }
}

struct InProcessEnvironment {
    function: Arc<dyn Handler>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    report: IsolationReport,
}

impl Environment for InProcessEnvironment {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        match Limit::new(
            self.timeout,
            invocation.context.deadline,
            self.clock.system_time(),
        ) {
            Ok(limit) => self.function.call_limited(invocation, limit),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }

    fn isolation(&self) -> &IsolationReport {
        &self.report
    }
}

/// A handler as the sandbox stores it: one call is one allocation, the future already
/// wrapped with panic catching and the time limit.
trait Handler: Send + Sync + 'static {
    fn call_limited(&self, invocation: Invocation, limit: Limit) -> BoxFuture<'_, Outcome>;
}

struct Typed<F>(F);

impl<F: Function> Handler for Typed<F> {
    fn call_limited(&self, invocation: Invocation, limit: Limit) -> BoxFuture<'_, Outcome> {
        Box::pin(Guarded::new(self.0.call(invocation), limit))
    }
}

struct Erased(Arc<dyn DynFunction>);

impl Handler for Erased {
    fn call_limited(&self, invocation: Invocation, limit: Limit) -> BoxFuture<'_, Outcome> {
        Box::pin(Guarded::new(self.0.call_boxed(invocation), limit))
    }
}

pin_project_lite::pin_project! {
    /// Runs a handler's future with a panic guard and a time limit, pinned in place inside
    /// the call's one allocation. The timer is armed only if the first poll does not finish
    /// the call, so a handler that completes at once costs no timer registration.
    struct Guarded<Fut> {
        #[pin]
        inner: Fut,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        limit: Limit,
    }
}

impl<Fut> Guarded<Fut> {
    fn new(inner: Fut, limit: Limit) -> Self {
        Guarded {
            inner,
            timer: None,
            limit,
        }
    }
}

impl<Fut: Future<Output = Outcome>> Future for Guarded<Fut> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut this = self.project();
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(outcome)) => return Poll::Ready(outcome),
            Ok(Poll::Pending) => {}
            Err(payload) => return Poll::Ready(Err(crashed(payload.as_ref()))),
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(this.limit.limit)));
        }
        match this.timer.as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(this.limit.error())),
            _ => Poll::Pending,
        }
    }
}

fn crashed(payload: &(dyn std::any::Any + Send)) -> FunctionError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned());
    FunctionError::new(
        ErrorKind::Crashed,
        format!("the function panicked: {message}"),
    )
    .with_type("Panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhub_core::{CapabilityProfile, FunctionName, ManualClock, Restriction, from_fn};
    use std::time::SystemTime;

    fn spec(name: &str) -> FunctionSpec {
        FunctionSpec::in_process(FunctionName::new(name).unwrap())
    }

    fn invocation(spec: &FunctionSpec) -> Invocation {
        Invocation::new(spec.name.clone().into(), "x")
    }

    #[tokio::test]
    async fn panic_becomes_crashed_and_environment_keeps_serving() {
        let sandbox = InProcessSandbox::new();
        sandbox.register(
            "p",
            from_fn(|inv: Invocation| async move {
                if &inv.payload[..] == b"boom" {
                    panic!("sensor exploded");
                }
                Ok(inv.payload)
            }),
        );
        let spec = spec("p");
        let env = sandbox.prepare(&spec).await.unwrap();
        let mut bad = invocation(&spec);
        bad.payload = "boom".into();
        let err = env.invoke(bad).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Crashed);
        assert!(err.message.contains("sensor exploded"), "{}", err.message);
        assert_eq!(&env.invoke(invocation(&spec)).await.unwrap()[..], b"x");
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_is_enforced() {
        let sandbox = InProcessSandbox::new();
        sandbox.register(
            "slow",
            from_fn(|_| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok("late".into())
            }),
        );
        let spec = spec("slow").with_timeout(Duration::from_millis(100));
        let env = sandbox.prepare(&spec).await.unwrap();
        let err = env.invoke(invocation(&spec)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_shorter_than_timeout_wins() {
        let clock = ManualClock::new();
        let sandbox = InProcessSandbox::new().with_clock(Arc::new(clock.clone()));
        sandbox.register(
            "slow",
            from_fn(|_| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok("late".into())
            }),
        );
        let spec = spec("slow");
        let env = sandbox.prepare(&spec).await.unwrap();

        let mut inv = invocation(&spec);
        inv.context.deadline = Some(clock.system_time() + Duration::from_millis(50));
        let err = env.invoke(inv).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::DeadlineExceeded);

        let mut past = invocation(&spec);
        past.context.deadline = Some(SystemTime::UNIX_EPOCH);
        let err = env.invoke(past).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::DeadlineExceeded);
        assert!(err.message.contains("before"), "{}", err.message);
    }

    #[tokio::test]
    async fn fails_closed_on_confinement_unless_best_effort() {
        let sandbox = InProcessSandbox::new();
        sandbox.register(
            "f",
            from_fn(|inv: Invocation| async move { Ok(inv.payload) }),
        );
        let confined = spec("f").with_capabilities(CapabilityProfile::default());
        match sandbox.prepare(&confined).await {
            Err(PrepareError::CannotEnforce { missing, .. }) => {
                assert!(missing.contains(&Restriction::Network));
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("in-process sandbox claimed to confine a function"),
        }

        let lenient = sandbox.clone().with_enforcement(Enforcement::BestEffort);
        let env = lenient.prepare(&confined).await.unwrap();
        assert_eq!(env.isolation().backend, "in_process");
        assert!(env.isolation().enforced.is_empty());
        assert!(
            env.isolation()
                .not_enforced
                .contains(&Restriction::Filesystem)
        );
    }

    #[tokio::test]
    async fn unknown_handler_and_wrong_runtime_are_errors() {
        let sandbox = InProcessSandbox::new();
        assert!(matches!(
            sandbox.prepare(&spec("missing")).await,
            Err(PrepareError::UnknownHandler(h)) if h == "missing"
        ));
        let wasm = FunctionSpec::new(
            FunctionName::new("w").unwrap(),
            Runtime::Wasm {
                module: "m.wat".into(),
                export: "handle".into(),
            },
        );
        assert!(!sandbox.supports(&wasm));
        assert!(matches!(
            sandbox.prepare(&wasm).await,
            Err(PrepareError::UnsupportedRuntime {
                runtime: "wasm",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn dropping_the_future_cancels_the_work() {
        let sandbox = InProcessSandbox::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = parking_lot::Mutex::new(Some(tx));
        sandbox.register(
            "hang",
            from_fn(move |_| {
                // Dropped with the future when the caller gives up.
                let guard = tx.lock().take();
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    Ok(bytes::Bytes::new())
                }
            }),
        );
        let spec = spec("hang");
        let env = sandbox.prepare(&spec).await.unwrap();
        let fut = env.invoke(invocation(&spec));
        drop(fut);
        assert!(
            rx.await.is_err(),
            "the guard must be dropped with the future"
        );
    }
}
