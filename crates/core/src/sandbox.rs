//! Where code runs: sandboxes prepare environments.

use std::fmt;

use crate::function::BoxFuture;
use crate::invocation::Invocation;
use crate::outcome::{FunctionError, Outcome};
use crate::spec::FunctionSpec;

/// One kind of confinement a capability profile can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Restriction {
    /// Limit or deny network access.
    Network,
    /// Limit the filesystem to granted directories.
    Filesystem,
    /// Limit environment variables to those granted.
    Environment,
    /// Cap memory.
    Memory,
    /// Cap CPU time.
    Cpu,
    /// Run the function's sidecar processes beside it (only the process backend can).
    Sidecars,
    /// Run without privileges: an unprivileged uid of its own (when the hub is root), no
    /// capabilities, `no_new_privs`, and a syscall filter.
    Identity,
    /// Its processes apart: a PID namespace of its own (it sees and signals only its own
    /// processes), memory and process count capped over all of them together, and all of
    /// them killed when it times out or shuts down.
    Processes,
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restriction::Network => "network",
            Restriction::Filesystem => "filesystem",
            Restriction::Environment => "environment",
            Restriction::Memory => "memory",
            Restriction::Cpu => "cpu",
            Restriction::Sidecars => "sidecars",
            Restriction::Identity => "identity",
            Restriction::Processes => "processes",
        })
    }
}

/// How an environment was isolated: what its sandbox enforces, and what it was asked for
/// but does not (only in an explicit best-effort mode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct IsolationReport {
    /// The sandbox backend (`in_process`, `process`, `wasm`).
    pub backend: &'static str,
    /// Restrictions in force.
    pub enforced: Vec<Restriction>,
    /// Restrictions the profile asked for that are not in force.
    pub not_enforced: Vec<Restriction>,
}

impl IsolationReport {
    /// A report for `backend`.
    pub fn new(
        backend: &'static str,
        enforced: Vec<Restriction>,
        not_enforced: Vec<Restriction>,
    ) -> IsolationReport {
        IsolationReport {
            backend,
            enforced,
            not_enforced,
        }
    }
}

/// A sandbox could not prepare an environment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// This sandbox does not run this kind of runtime.
    #[error("the {sandbox} sandbox cannot run {runtime} functions")]
    UnsupportedRuntime {
        /// The sandbox.
        sandbox: &'static str,
        /// The runtime kind asked for.
        runtime: &'static str,
    },
    /// No code is registered under the entry point.
    #[error("no handler is registered under {0:?}")]
    UnknownHandler(String),
    /// The profile asks for restrictions this sandbox cannot enforce (fail closed).
    #[error("the {sandbox} sandbox cannot enforce these restrictions: {}", list(.missing))]
    CannotEnforce {
        /// The sandbox.
        sandbox: &'static str,
        /// What it cannot enforce.
        missing: Vec<Restriction>,
    },
    /// Starting the environment failed.
    #[error("the environment failed to start: {0}")]
    Start(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The function's own code failed while initialising (Lambda's init phase: an import
    /// error, an exception at load time, a process that exited before asking for work).
    /// The invocation that needed the environment ends with this error.
    #[error("the function failed to initialise: {0}")]
    Init(FunctionError),
}

fn list(r: &[Restriction]) -> String {
    r.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prepares environments for functions. A `dyn` plug-in: the hub picks backends at run time.
pub trait Sandbox: Send + Sync + 'static {
    /// The backend's name (`in_process`, `process`, `wasm`).
    fn name(&self) -> &'static str;

    /// Whether this sandbox runs functions of `spec`'s runtime kind.
    fn supports(&self, spec: &FunctionSpec) -> bool;

    /// Prepares a warm environment for `spec`. Fails closed: an environment that cannot
    /// enforce `spec.capabilities` is an error unless the sandbox was configured for best
    /// effort, in which case [`Environment::isolation`] says what was left out.
    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>>;

    /// Memory the sandbox holds warm outside any environment (templates that environments
    /// are forked from), in bytes: counted with the idle environments against the
    /// scheduler's bound on warm memory. Zero unless the sandbox keeps such things.
    fn warm_bytes(&self) -> u64 {
        0
    }

    /// The reservation policy no longer keeps `spec` warm (its keep-alive ended, or it waits
    /// unloaded for its pre-warm point) and its idle environments have stopped: let go of
    /// what the sandbox holds warm for it outside environments (a template). A later
    /// [`prepare`](Self::prepare), such as the policy's pre-warm, makes it again. Default:
    /// nothing is held.
    fn release(&self, spec: &FunctionSpec) {
        let _ = spec;
    }
}

/// A prepared place where one function version runs, kept warm across invocations.
pub trait Environment: Send + Sync + 'static {
    /// Runs one invocation, enforcing the function's timeout and the invocation's deadline.
    ///
    /// Dropping the returned future cancels the invocation: the backend stops the work
    /// (aborts the task, kills the process, interrupts the instance).
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome>;

    /// How this environment is isolated.
    fn isolation(&self) -> &IsolationReport;

    /// Whether it can take another invocation. An unhealthy environment is shut down and
    /// replaced by the pool.
    fn is_healthy(&self) -> bool {
        true
    }

    /// Stops it, releasing what it holds.
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
