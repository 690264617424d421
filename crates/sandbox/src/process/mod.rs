//! The process backend: each environment is a process speaking the AWS Lambda Runtime API.
//!
//! An environment owns a Runtime API server on loopback and one process started with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it, so unmodified Lambda runtime clients (the Rust
//! `lambda_runtime` crate, Python's `awslambdaric`, Node's `aws-lambda-ric`, a custom
//! `bootstrap`) run as they do on Lambda. The process is started when the environment is
//! prepared and is ready once it first asks for work; it is reused, warm, for every
//! invocation after that, one at a time.
//!
//! What ends an invocation, and how:
//!
//! | what happens | outcome |
//! | --- | --- |
//! | the client posts a response | `Ok(bytes)` |
//! | the client posts an error | `Unhandled` with the client's `errorType`, message and stack trace (`OutOfMemory` for `MemoryError`) |
//! | a response over the limit (6 MiB by default) | `Unhandled`, type `Function.ResponseSizeTooLarge`; the client gets `413` once its body is read (up to 64 MiB), and its process lives on |
//! | the timeout or the deadline passes | `Timeout` / `DeadlineExceeded`; the process group is killed |
//! | the process dies mid-invocation | `Crashed`, type `Runtime.ExitError`, with its exit status and last lines of stderr |
//! | the process dies before it asks for the invocation | a new process gets it (once; a second such death is `Crashed`) |
//! | the caller drops the invocation | the process group is killed |
//! | the init phase fails | [`PrepareError::Init`] with the client's init error, or `Runtime.ExitError` |
//!
//! After a kill or a crash the next invocation starts a new process in the same
//! environment (same Runtime API address), so it gets a healthy one.
//!
//! # Confinement
//!
//! By default ([`Confinement::Jail`]) every process of a function runs in a jail made with
//! bubblewrap (`bwrap`, which must be installed), whatever its profile grants:
//!
//! - **Identity.** When the hub is root, the function runs as an unprivileged uid and gid
//!   of its own ([`Identity::PerFunction`]), with no supplementary groups, no capabilities
//!   (effective, permitted and bounding sets empty) and `no_new_privs`. A function granted
//!   the whole filesystem ([`FilesystemAccess::Unrestricted`](fnhub_core::FilesystemAccess::Unrestricted))
//!   keeps the hub's uid, still without capabilities. The uid must be able to read the
//!   function's workdir and program and write its writable grants: preparing refuses a
//!   function whose uid cannot, and says which path and what to change.
//! - **Processes.** A PID namespace of its own: it sees only its own processes in its own
//!   `/proc` and can signal nothing else. A control group (v2, or v1's `memory` and `pids`
//!   controllers) per environment: `memory_mb` caps all its processes together (swap
//!   included) and [`ProcessLimits::processes`] caps how many exist. A timeout, an
//!   abandoned call or a shutdown kills the PID namespace, so a child in a session of its
//!   own does not survive. An OOM kill in the group is reported as `OutOfMemory`.
//! - **Filesystem.** With [`FilesystemAccess::Only`](fnhub_core::FilesystemAccess::Only), a
//!   mount namespace whose root holds, read-only, the system folders (`/usr`, `/lib*`,
//!   `/bin`, `/sbin`), the few files of `/etc` a runtime needs (name resolution,
//!   certificates, time zones, users), the program's installation prefix and the workdir;
//!   the grants, read-only or writable as granted; a private `/tmp` (tmpfs, at most
//!   `memory_mb`, counted in the memory limit); a `/dev` with only `null`, `zero`, `full`,
//!   `random` and `urandom`. Host sockets, `/etc/shadow`, the hub's config and state, other
//!   processes' `/proc` entries: none of it is there.
//! - **Syscalls.** A seccomp filter refuses with `EPERM` what functions never need:
//!   `ptrace` and cross-process memory access, module and kernel loading, `mount` and the
//!   new mount API, `unshare`/`setns` and `clone` with `CLONE_NEWUSER` (`clone3` answers
//!   `ENOSYS`, and C libraries fall back to `clone`), keyrings, `bpf`, `perf_event_open`,
//!   `userfaultfd`, clock setting, swap, reboot.
//! - **Network.** Unless [`NetworkAccess::Any`](fnhub_core::NetworkAccess::Any), a network
//!   namespace of its own whose only interface is its loopback, where the Runtime API is
//!   served; abstract Unix sockets of the host live in the host's namespace and are out of
//!   reach. Making a namespace needs `CAP_SYS_ADMIN` (root) and the `unshare` and `ip`
//!   programs. A function with `NetworkAccess::Any` shares the host's network namespace,
//!   abstract Unix sockets included.
//! - **Environment.** With [`EnvAccess::Only`](fnhub_core::EnvAccess::Only) the process sees
//!   the Lambda runtime variables and the granted ones, nothing inherited, and `HOME=/tmp`
//!   unless granted another (runtimes ask for a home directory: Node.js's `os.homedir()`
//!   fails for a uid the system's `/etc/passwd` does not name, as a jailed function's is
//!   not, and the AWS SDK for JavaScript asks it).
//! - **Limits per process** as well: `RLIMIT_DATA` at `memory_mb`, and open files, processes
//!   and CPU time from [`ProcessLimits`], set by the jail's launcher before the function
//!   starts.
//!
//! Without root there is no control group and no uid switch: the environment reports
//! [`Restriction::Processes`](fnhub_core::Restriction::Processes) as not enforced (memory
//! and process counts are per process only), and bwrap runs in a user namespace of its own.
//! Without bwrap, neither identity nor processes can be enforced.
//!
//! [`Confinement::Landlock`] is the confinement before the jail: Landlock rules for the
//! filesystem, limits per process, the network namespace; set up without a `pre_exec` hook
//! (which forces a slow `fork`), on a fresh thread that spawns the process and is thrown
//! away, with limits set by `prlimit` right after the spawn.
//!
//! What cannot be enforced fails the environment closed ([`PrepareError::CannotEnforce`]),
//! unless the sandbox runs [`Enforcement::BestEffort`], which reports what was left out in
//! the environment's [`IsolationReport`](fnhub_core::IsolationReport).
//!
//! # The function endpoint
//!
//! With [`ProcessSandbox::with_services`], each environment also serves AWS's APIs to its
//! process on the loopback of its network namespace (the host's when it has
//! [`NetworkAccess::Any`](fnhub_core::NetworkAccess::Any)): Lambda `Invoke`, IoT
//! `Publish`, `GetThingShadow`, `UpdateThingShadow`, `DeleteThingShadow`,
//! `ListNamedShadowsForThing` (classic and named shadows). The process gets
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_LAMBDA` and `AWS_ENDPOINT_URL_IOT_DATA_PLANE`
//! pointing there, and `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`
//! minted for the environment from the operating system's random source (never written
//! to disk, new with every environment, rotated by retiring the environment: see
//! [`ProcessSandbox::with_credential_lifetime`]); every call must be SigV4-signed with them. A
//! call is a child of the invocation in progress. What a function may call is its
//! profile's [`ServiceAccess`](fnhub_core::ServiceAccess), closed by default.
//!
//! # Templates for Python functions
//!
//! With [`ProcessSandbox::with_templates`], a function whose command is
//! `python… -m awslambdaric <handler>` gets one template process per function version,
//! started in a jail of its own exactly as an environment's process would be (its
//! confinement in place before any code of its runs), which imports the runtime client and
//! the libraries the handler's module imports. Each environment's process is then forked
//! from it, moved into the environment's own control group, and given the environment's
//! standard streams, variables (its own `AWS_LAMBDA_RUNTIME_API`, credentials and
//! endpoint) and argv; the handler's module is imported in the fork, so its module-level
//! code runs with the environment's variables, as on Lambda. Environments of one function
//! version share the template's network, mount and PID namespaces (so its `/tmp`); no
//! template is shared between functions. A template that dies is replaced by the next
//! environment that needs one; one that cannot be made leaves its function to start the
//! interpreter for each environment.
//!
//! Other runtimes are started for each environment. Node.js (`aws-lambda-ric`) is not
//! forked from a template: V8 runs threads of its own from the start (its platform's
//! workers, libuv's pool), and a fork keeps only the thread that forked, with whatever
//! locks the others held; Node has no supported way to fork itself. `lambda_runtime`
//! binaries start in milliseconds and gain nothing from one.
//!
//! Every line the process writes to stdout or stderr becomes a `tracing` event with target
//! `fnhub::function`, carrying the function, its version, the stream and the request id
//! that was running.

mod api;
mod cgroup;
mod endpoint;
mod env;
mod http1;
mod jail;
mod lambda;
mod logs;
mod output;
mod seccomp;
mod spawn;
mod zygote;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use fnhub_core::{BoxFuture, Environment, FunctionSpec, PrepareError, Runtime, Sandbox};

use crate::Enforcement;

pub use crate::DEFAULT_MAX_RESPONSE_BYTES;
pub use jail::{FUNCTION_UID_BASE, FUNCTION_UID_SPAN, Identity};
pub use logs::{LOG_TAIL_BYTES, LogTails};

/// How the process backend confines a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Confinement {
    /// The jail (the default): its own PID, mount, IPC and UTS namespaces under bubblewrap,
    /// a minimal read-only root, an unprivileged [`Identity`], a control group and a
    /// syscall filter. See the [module documentation](self).
    #[default]
    Jail,
    /// Only Landlock filesystem rules, resource limits per process and the network
    /// namespace: the confinement before the jail. The function shares the hub's uid and
    /// PID namespace.
    Landlock,
}
use env::ProcessEnvironment;

/// How many of a process's last stderr lines a crash report quotes.
const STDERR_TAIL: usize = 8;

/// The longest log line kept whole; longer lines are split.
const MAX_LOG_LINE: u64 = 16 * 1024;

/// Limits set on every process of the backend with `prlimit`, besides memory (which comes
/// from the function's `memory_mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessLimits {
    /// Most open file descriptors (`RLIMIT_NOFILE`). Default 1024, as on Lambda.
    pub open_files: Option<u64>,
    /// Most processes of the user (`RLIMIT_NPROC`). Default 1024, as on Lambda. The kernel
    /// counts per user and does not apply it to root.
    pub processes: Option<u64>,
    /// Most CPU seconds over the life of one process (`RLIMIT_CPU`); `None` by default,
    /// since a warm process's CPU time adds up across invocations. The kernel ends a
    /// process past it, and the invocation reports `Crashed`.
    pub cpu_seconds: Option<u64>,
    /// Whether `memory_mb` caps the process's data segment (`RLIMIT_DATA`). Default true.
    pub memory: bool,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        ProcessLimits {
            open_files: Some(1024),
            processes: Some(1024),
            cpu_seconds: None,
            memory: true,
        }
    }
}

/// How long an environment's endpoint credentials are used by default.
const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Clone)]
struct Config {
    clock: Arc<dyn fnhub_core::Clock>,
    enforcement: Enforcement,
    region: String,
    account: String,
    init_timeout: Duration,
    max_response_bytes: usize,
    limits: ProcessLimits,
    confinement: Confinement,
    identity: Identity,
    services: Option<Arc<dyn fnhub_core::LocalServices>>,
    credential_lifetime: Duration,
    log_tails: Option<Arc<LogTails>>,
    zygotes: Option<Arc<zygote::Zygotes>>,
}

/// Runs functions of [`Runtime::Process`] as processes speaking the AWS Lambda Runtime API.
/// See the [module documentation](self) for what it enforces and how outcomes map.
///
/// ```no_run
/// use fnhub_core::{FunctionName, FunctionSpec, Invocation, Runtime, Sandbox};
/// use fnhub_sandbox::ProcessSandbox;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let spec = FunctionSpec::new(
///     FunctionName::new("hello")?,
///     Runtime::Process {
///         command: vec!["python3".into(), "-m".into(), "awslambdaric".into(), "app.handler".into()],
///         workdir: Some("functions/hello".into()),
///         handler: Some("app.handler".into()),
///     },
/// );
/// let sandbox = ProcessSandbox::new().best_effort();
/// let env = sandbox.prepare(&spec).await?;
/// let out = env.invoke(Invocation::new(spec.name.clone().into(), r#"{"name":"hub"}"#)).await?;
/// println!("{}", String::from_utf8_lossy(&out));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSandbox {
    config: Arc<Config>,
}

impl Default for ProcessSandbox {
    fn default() -> Self {
        ProcessSandbox::new()
    }
}

impl ProcessSandbox {
    /// A sandbox that fails closed, reports region `us-east-1`, gives the init phase 10 s
    /// (Lambda's limit) and caps responses at 6 MiB.
    pub fn new() -> ProcessSandbox {
        ProcessSandbox {
            config: Arc::new(Config {
                clock: Arc::new(fnhub_core::SystemClock),
                enforcement: Enforcement::FailClosed,
                region: "us-east-1".into(),
                account: "000000000000".into(),
                init_timeout: Duration::from_secs(10),
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                limits: ProcessLimits::default(),
                confinement: Confinement::Jail,
                identity: Identity::PerFunction,
                services: None,
                credential_lifetime: DEFAULT_CREDENTIAL_LIFETIME,
                log_tails: None,
                zygotes: None,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sets what happens when a profile asks for what this machine cannot enforce.
    pub fn with_enforcement(mut self, enforcement: Enforcement) -> ProcessSandbox {
        self.config_mut().enforcement = enforcement;
        self
    }

    /// Shorthand for [`Enforcement::BestEffort`].
    pub fn best_effort(self) -> ProcessSandbox {
        self.with_enforcement(Enforcement::BestEffort)
    }

    /// The region in `AWS_REGION` and in the invoked function's ARN.
    pub fn with_region(mut self, region: impl Into<String>) -> ProcessSandbox {
        self.config_mut().region = region.into();
        self
    }

    /// How long a process may take to ask for its first invocation.
    pub fn with_init_timeout(mut self, timeout: Duration) -> ProcessSandbox {
        self.config_mut().init_timeout = timeout;
        self
    }

    /// The largest response a function may return.
    pub fn with_max_response_bytes(mut self, bytes: usize) -> ProcessSandbox {
        self.config_mut().max_response_bytes = bytes;
        self
    }

    /// Reads deadlines and dates from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn fnhub_core::Clock>) -> ProcessSandbox {
        self.config_mut().clock = clock;
        self
    }

    /// How functions are confined; [`Confinement::Jail`] by default.
    pub fn with_confinement(mut self, confinement: Confinement) -> ProcessSandbox {
        self.config_mut().confinement = confinement;
        self
    }

    /// Whose uid a jailed function runs under when the hub is root;
    /// [`Identity::PerFunction`] by default.
    pub fn with_identity(mut self, identity: Identity) -> ProcessSandbox {
        self.config_mut().identity = identity;
        self
    }

    /// Serves `services` to every function on its own endpoint, as AWS's APIs (Lambda
    /// `Invoke`, IoT `Publish` and device shadows), with credentials minted for its
    /// environment: see [the endpoint](self#the-function-endpoint). A hub passes its own.
    pub fn with_services(mut self, services: Arc<dyn fnhub_core::LocalServices>) -> ProcessSandbox {
        self.config_mut().services = Some(services);
        self
    }

    /// How long the credentials minted for an environment's endpoint are used (one hour
    /// unless set). An environment is retired (reported unhealthy, so its pool replaces it
    /// with one that has new credentials) once less than its function's timeout is left,
    /// so no invocation outlives the credentials it started with; the credentials stay
    /// valid for a timeout past that, then every call with them answers
    /// `ExpiredTokenException`.
    pub fn with_credential_lifetime(mut self, lifetime: Duration) -> ProcessSandbox {
        self.config_mut().credential_lifetime = lifetime;
        self
    }

    /// Keeps the tail of the output of the invocations watched in `tails` (the last
    /// [`LOG_TAIL_BYTES`] of their stdout and stderr lines, everything written before they
    /// answered): what Lambda's `--log-type Tail` returns. A hub passes its own.
    pub fn with_log_tails(mut self, tails: Arc<LogTails>) -> ProcessSandbox {
        self.config_mut().log_tails = Some(tails);
        self
    }

    /// Forks the environments of Python functions (`python… -m awslambdaric <handler>`) from
    /// a template per function version that has already imported the runtime client and the
    /// handler's libraries, so a cold start is a `fork` rather than an interpreter start.
    /// A template unused for `keep_alive` is stopped; the templates hold at most `max_bytes`
    /// of resident memory together (past it, the least recently used one that no environment
    /// holds stops, and when every one is in use a new function's environments start the
    /// interpreter). Off unless set; see [templates](self#templates-for-python-functions).
    pub fn with_templates(mut self, keep_alive: Duration, max_bytes: u64) -> ProcessSandbox {
        self.config_mut().zygotes = Some(Arc::new(zygote::Zygotes::new(keep_alive, max_bytes)));
        self
    }

    /// The templates alive now and their resident memory: what they hold warm.
    pub fn templates(&self) -> TemplateUsage {
        let (templates, resident_bytes) =
            self.config.zygotes.as_ref().map_or((0, 0), |z| z.usage());
        TemplateUsage {
            templates,
            resident_bytes,
        }
    }

    /// Readies what `spec`'s environments share ahead of its first invocation (its
    /// template, when it has one) by preparing one environment and stopping it.
    pub async fn stage(&self, spec: &FunctionSpec) -> Result<(), PrepareError> {
        let env = ProcessEnvironment::prepare(self.config.clone(), spec).await?;
        Box::new(env).shutdown().await;
        Ok(())
    }

    /// Resource limits set on every process.
    pub fn with_limits(mut self, limits: ProcessLimits) -> ProcessSandbox {
        self.config_mut().limits = limits;
        self
    }
}

/// What the templates of Python functions hold: see [`ProcessSandbox::templates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TemplateUsage {
    /// Templates alive.
    pub templates: usize,
    /// Their resident memory, in bytes.
    pub resident_bytes: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("enforcement", &self.enforcement)
            .field("region", &self.region)
            .field("init_timeout", &self.init_timeout)
            .field("limits", &self.limits)
            .field("confinement", &self.confinement)
            .field("identity", &self.identity)
            .field("services", &self.services.is_some())
            .finish_non_exhaustive()
    }
}

impl Sandbox for ProcessSandbox {
    fn name(&self) -> &'static str {
        "process"
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        matches!(spec.runtime, Runtime::Process { .. })
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>> {
        Box::pin(async move {
            let env = ProcessEnvironment::prepare(self.config.clone(), spec).await?;
            Ok(Box::new(env) as Box<dyn Environment>)
        })
    }

    /// The templates' resident memory.
    fn warm_bytes(&self) -> u64 {
        self.templates().resident_bytes
    }

    /// Stops the function version's template, if no environment holds it.
    fn release(&self, spec: &FunctionSpec) {
        if let Some(zygotes) = &self.config.zygotes {
            zygotes.release(&zygote::template_key(spec));
        }
    }
}

fn start_error(message: impl Into<String>) -> PrepareError {
    PrepareError::Start(Box::new(io::Error::other(message.into())))
}
