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
//! Set up without a `pre_exec` hook (which forces a slow `fork`): what the child must
//! inherit is set on a fresh thread that spawns it and is then thrown away, and resource
//! limits are set on the child with `prlimit` right after the spawn.
//!
//! - Environment: with [`EnvAccess::Only`] the process sees the
//!   Lambda runtime variables and the granted ones, nothing inherited.
//! - Filesystem: with [`FilesystemAccess::Only`],
//!   Landlock rules allow reading the system folders (`/usr`, `/lib*`, `/bin`, `/sbin`,
//!   `/etc`, `/proc`, `/sys`), reading and writing device files in `/dev`, reading the
//!   program's installation prefix (the parent of its folder) and the working directory,
//!   and the granted folders, read-only or writable as granted. Nothing else.
//! - Network: unless [`NetworkAccess::Any`], the process runs
//!   in a network namespace of its own whose only interface is its loopback, where the
//!   Runtime API is served. Making a namespace needs `CAP_SYS_ADMIN` (root) and the
//!   `unshare` and `ip` programs.
//! - Memory: `RLIMIT_DATA` at the function's `memory_mb`. Open files, processes and CPU
//!   time: [`ProcessLimits`].
//!
//! What cannot be enforced fails the environment closed ([`PrepareError::CannotEnforce`]),
//! unless the sandbox runs [`Enforcement::BestEffort`], which reports what was left out in
//! the environment's [`IsolationReport`].
//!
//! Every line the process writes to stdout or stderr becomes a `tracing` event with target
//! `fnhub::function`, carrying the function, its version, the stream and the request id
//! that was running.

mod api;
mod spawn;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fnhub_core::{
    BoxFuture, EnvAccess, Environment, ErrorKind, FilesystemAccess, FunctionError, FunctionSpec,
    Invocation, IsolationReport, NetworkAccess, Outcome, PrepareError, Restriction, Runtime,
    Sandbox, SidecarSpec, TraceParent,
};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use self::api::{Answer, Api, Delivery, Phase};
use self::spawn::{FsRules, NetNs, Plan, Rlimits};
use crate::Enforcement;
use crate::limit::Limit;

pub use crate::DEFAULT_MAX_RESPONSE_BYTES;

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

#[derive(Clone)]
struct Config {
    clock: Arc<dyn fnhub_core::Clock>,
    enforcement: Enforcement,
    region: String,
    account: String,
    init_timeout: Duration,
    max_response_bytes: usize,
    limits: ProcessLimits,
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

    /// Resource limits set on every process.
    pub fn with_limits(mut self, limits: ProcessLimits) -> ProcessSandbox {
        self.config_mut().limits = limits;
        self
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("enforcement", &self.enforcement)
            .field("region", &self.region)
            .field("init_timeout", &self.init_timeout)
            .field("limits", &self.limits)
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
}

fn start_error(message: impl Into<String>) -> PrepareError {
    PrepareError::Start(Box::new(io::Error::other(message.into())))
}

/// One warm environment: a Runtime API server and the process it serves.
struct ProcessEnvironment {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn fnhub_core::Clock>,
    function: String,
    version: String,
    timeout: Duration,
    init_timeout: Duration,
    api: Arc<Api>,
    deliver: mpsc::Sender<Delivery>,
    server: tokio::task::JoinHandle<()>,
    plan: Plan,
    report: IsolationReport,
    /// The running process, if any; the lock also serialises invocations.
    process: tokio::sync::Mutex<Option<Running>>,
    /// Pid of the running process, for the kill on drop.
    pid: AtomicU32,
    healthy: Arc<AtomicBool>,
    starts: AtomicU64,
    sidecars: Vec<tokio::task::JoinHandle<()>>,
    /// Kept so the namespace lives as long as the environment.
    _netns: Option<Arc<NetNs>>,
}

/// How a process ended.
#[derive(Debug, Clone)]
struct Exit {
    error: FunctionError,
}

struct Running {
    pid: u32,
    exited: watch::Receiver<Option<Exit>>,
    /// Set when an abandoned invocation killed it: its exit is on the way.
    killed: Arc<AtomicBool>,
}

impl Running {
    fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    async fn wait(&mut self) -> Exit {
        loop {
            if let Some(exit) = self.exited.borrow().clone() {
                return exit;
            }
            if self.exited.changed().await.is_err() {
                return Exit {
                    error: FunctionError::new(ErrorKind::Crashed, "the process watcher ended")
                        .with_type("Runtime.ExitError"),
                };
            }
        }
    }

    fn kill(&self) {
        kill_group(self.pid);
    }
}

fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

impl ProcessEnvironment {
    async fn prepare(config: Arc<Config>, spec: &FunctionSpec) -> Result<Self, PrepareError> {
        let Runtime::Process {
            command,
            workdir,
            handler,
        } = &spec.runtime
        else {
            return Err(PrepareError::UnsupportedRuntime {
                sandbox: "process",
                runtime: spec.runtime.kind(),
            });
        };
        let Some((program, args)) = command.split_first() else {
            return Err(start_error("the function's command is empty"));
        };
        let workdir = match workdir {
            Some(dir) => Some(
                std::path::absolute(dir)
                    .map_err(|e| start_error(format!("workdir {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let task_root = match &workdir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| PrepareError::Start(Box::new(e)))?,
        };
        let profile = &spec.capabilities;
        let mut enforced = vec![Restriction::Environment];
        let mut missing = Vec::new();
        if config.limits.memory {
            enforced.push(Restriction::Memory);
        }
        if config.limits.cpu_seconds.is_some() {
            enforced.push(Restriction::Cpu);
        }
        let no_vars = std::collections::BTreeMap::new();
        let (clear_env, granted) = match &profile.env {
            EnvAccess::Only(vars) => (true, vars),
            EnvAccess::Inherit(vars) => (false, vars),
            _ => (true, &no_vars),
        };
        if !clear_env {
            enforced.retain(|r| *r != Restriction::Environment);
        }

        // Where the program lives, for Landlock and for PATH lookup.
        let path_var = granted
            .get("PATH")
            .map(std::ffi::OsString::from)
            .or_else(|| (!clear_env).then(|| std::env::var_os("PATH")).flatten())
            .or_else(|| Some(LAMBDA_PATH.into()));
        let resolved = spawn::resolve_program(program, path_var.as_deref());

        let landlock = matches!(profile.filesystem, FilesystemAccess::Only(_))
            && spawn::landlock_available().await;
        let fs = match &profile.filesystem {
            FilesystemAccess::Unrestricted => None,
            FilesystemAccess::Only(grants) if landlock => {
                let mut rules = FsRules {
                    read: spawn::SYSTEM_PATHS.iter().map(PathBuf::from).collect(),
                    write: Vec::new(),
                };
                if let Some(prefix) = resolved.as_deref().and_then(spawn::install_prefix) {
                    rules.read.push(prefix);
                }
                rules.read.push(task_root.clone());
                for grant in grants {
                    if grant.writable {
                        rules.write.push(grant.path.clone());
                    } else {
                        rules.read.push(grant.path.clone());
                    }
                }
                enforced.push(Restriction::Filesystem);
                Some(rules)
            }
            _ => {
                missing.push(Restriction::Filesystem);
                None
            }
        };
        if !missing.is_empty() && config.enforcement == Enforcement::FailClosed {
            return Err(PrepareError::CannotEnforce {
                sandbox: "process",
                missing,
            });
        }
        let netns = if profile.network == NetworkAccess::Any {
            None
        } else {
            match NetNs::create().await {
                Ok(ns) => {
                    enforced.push(Restriction::Network);
                    Some(Arc::new(ns))
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot give the function a network namespace");
                    missing.push(Restriction::Network);
                    if config.enforcement == Enforcement::FailClosed {
                        return Err(PrepareError::CannotEnforce {
                            sandbox: "process",
                            missing,
                        });
                    }
                    None
                }
            }
        };

        let std_listener = match &netns {
            Some(ns) => ns.bind_loopback().await,
            None => std::net::TcpListener::bind(("127.0.0.1", 0)),
        }
        .map_err(|e| PrepareError::Start(Box::new(e)))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| PrepareError::Start(Box::new(e)))?;
        let address = std_listener
            .local_addr()
            .map_err(|e| PrepareError::Start(Box::new(e)))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| PrepareError::Start(Box::new(e)))?;

        let function = spec.name.as_str().to_owned();
        let version = spec.version.to_string();
        let arn = format!(
            "arn:aws:lambda:{}:{}:function:{}:{}",
            config.region, config.account, function, version
        );
        let (api, deliver) = Api::new(arn, config.max_response_bytes);
        let server = api.serve(listener);

        let mut env = lambda_env(&config, spec, &task_root, &address.to_string());
        if let Some(handler) = handler {
            env.push(("_HANDLER".into(), handler.clone()));
        }
        if !clear_env && std::env::var_os("PATH").is_some() {
            // An inherited environment keeps the hub's PATH.
            env.retain(|(k, _)| k != "PATH");
        }
        // Reserved variables win over granted ones, as on Lambda.
        let reserved: std::collections::HashSet<String> =
            env.iter().map(|(k, _)| k.clone()).collect();
        let mut all: Vec<(String, String)> = granted
            .iter()
            .filter(|(k, _)| !reserved.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.extend(env);

        let limits = Rlimits {
            data_bytes: config
                .limits
                .memory
                .then(|| u64::from(spec.resources.memory_mb.max(1)) * 1024 * 1024),
            open_files: config.limits.open_files,
            processes: config.limits.processes,
            cpu_seconds: config.limits.cpu_seconds,
        };
        let plan = Plan {
            program: resolved
                .map(PathBuf::into_os_string)
                .unwrap_or_else(|| program.into()),
            args: args.iter().map(Into::into).collect(),
            workdir: workdir.clone(),
            clear_env,
            env: all,
            fs,
            netns: netns.clone(),
            limits,
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let sidecars = spec
            .sidecars
            .iter()
            .map(|sidecar| {
                supervise_sidecar(sidecar.clone(), plan.clone(), &function, healthy.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sidecar_tasks = Vec::with_capacity(sidecars.len());
        for started in sidecars {
            sidecar_tasks.push(started.await?);
        }

        let report = IsolationReport::new("process", enforced, missing);
        let inner = Arc::new(Inner {
            clock: config.clock.clone(),
            function,
            version,
            timeout: spec.resources.timeout,
            init_timeout: config.init_timeout,
            api,
            deliver,
            server,
            plan,
            report,
            process: tokio::sync::Mutex::new(None),
            pid: AtomicU32::new(0),
            healthy,
            starts: AtomicU64::new(0),
            sidecars: sidecar_tasks,
            _netns: netns,
        });
        {
            let mut process = inner.process.lock().await;
            *process = Some(inner.start().await.map_err(PrepareError::Init)?);
        }
        Ok(ProcessEnvironment { inner })
    }
}

/// `PATH` as Lambda sets it.
const LAMBDA_PATH: &str = "/usr/local/bin:/usr/bin/:/bin:/opt/bin";

/// The variables Lambda defines for a runtime.
fn lambda_env(
    config: &Config,
    spec: &FunctionSpec,
    task_root: &std::path::Path,
    api_address: &str,
) -> Vec<(String, String)> {
    let name = spec.name.as_str();
    let version = spec.version.to_string();
    let task_root = task_root.display().to_string();
    let today = humantime_date(config.clock.system_time());
    let stream = format!("{today}/[{version}]{}", fnhub_core::InvocationId::random());
    [
        ("AWS_LAMBDA_RUNTIME_API", api_address.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", version),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.resources.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", config.region.clone()),
        ("AWS_DEFAULT_REGION", config.region.clone()),
        ("AWS_EXECUTION_ENV", "fnhub".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("PATH", LAMBDA_PATH.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `YYYY/MM/DD` of `t` in UTC, as Lambda's log stream names start.
fn humantime_date(t: SystemTime) -> String {
    let days = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}/{month:02}/{day:02}")
}

/// The X-Ray form of a W3C trace context, as `Lambda-Runtime-Trace-Id` carries it.
fn xray_trace_id(trace: &TraceParent) -> String {
    let id = format!("{:032x}", trace.trace_id());
    format!(
        "Root=1-{}-{};Parent={:016x};Sampled={}",
        &id[..8],
        &id[8..],
        trace.parent_id(),
        u8::from(trace.is_sampled())
    )
}

/// Lambda's client context for an invocation triggered by an event: the `custom` map tells
/// the function which topic spoke, for whom, and in which trace.
fn client_context(context: &fnhub_core::InvocationContext) -> Option<String> {
    let topic = context.topic.as_deref()?;
    let custom = serde_json::json!({
        "custom": {
            "topic": topic,
            "principal": context.principal.as_str(),
            "traceparent": context.trace.to_string(),
        }
    });
    Some(custom.to_string())
}

impl Inner {
    /// Starts the process and waits until it asks for work.
    async fn start(self: &Arc<Self>) -> Result<Running, FunctionError> {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let _ = self.api.take_init_error();
        let mut child = self.plan.spawn().await.map_err(|e| {
            FunctionError::new(ErrorKind::Rejected, e.to_string()).with_type("Runtime.StartError")
        })?;
        let pid = child.id().unwrap_or(0);
        self.pid.store(pid, Ordering::Relaxed);
        tracing::debug!(function = %self.function, pid, start = n, "function process started");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let oom = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(log_lines(
                out,
                "stdout",
                self.clone(),
                None,
                oom.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(log_lines(
                err,
                "stderr",
                self.clone(),
                Some(tail.clone()),
                oom.clone(),
            )));
        }
        let (exited_tx, exited) = watch::channel(None);
        let api = self.api.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the readers take the last lines before quoting them.
            for reader in readers {
                let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
            }
            let status = match status {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            let lines: Vec<String> = tail.lock().iter().cloned().collect();
            let mut message = format!("the function's process ended: {status}");
            if !lines.is_empty() {
                message.push_str("\nlast lines of stderr:");
                for line in lines {
                    message.push_str("\n  ");
                    message.push_str(&line);
                }
            }
            let error = if oom.load(Ordering::Relaxed) {
                FunctionError::new(ErrorKind::OutOfMemory, message).with_type("Runtime.OutOfMemory")
            } else {
                FunctionError::new(ErrorKind::Crashed, message).with_type("Runtime.ExitError")
            };
            let owed = api.reset().await;
            let _ = exited_tx.send(Some(Exit {
                error: error.clone(),
            }));
            owed.settle(&error);
        });
        let mut running = Running {
            pid,
            exited,
            killed: Arc::new(AtomicBool::new(false)),
        };
        let ready = tokio::time::timeout(self.init_timeout, async {
            tokio::select! {
                phase = self.api.initialised() => Ok(phase),
                exit = running.wait() => Err(exit),
            }
        })
        .await;
        match ready {
            Ok(Ok(Phase::Ready)) => Ok(running),
            Ok(Ok(Phase::InitFailed(error))) => {
                running.kill();
                running.wait().await;
                Err(error)
            }
            Ok(Ok(Phase::Starting)) => unreachable!("initialised() waits past Starting"),
            Ok(Err(exit)) => Err(self.api.take_init_error().unwrap_or(exit.error)),
            Err(_) => {
                running.kill();
                running.wait().await;
                Err(FunctionError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the process did not ask for work within the init timeout of {:?}",
                        self.init_timeout
                    ),
                )
                .with_type("Runtime.InitTimeout"))
            }
        }
    }

    async fn invoke(self: &Arc<Self>, invocation: Invocation) -> Outcome {
        let limit = Limit::new(
            self.timeout,
            invocation.context.deadline,
            self.clock.system_time(),
        )?;
        // Set at the first delivery, so a cold start does not eat the function's time; a
        // redelivery keeps it. The wall-clock deadline is what the process is told; the
        // monotonic start is what the wait is measured from.
        let mut handed_over: Option<(SystemTime, std::time::Instant)> = None;
        let mut process = self.process.lock().await;
        // A process that dies idle never saw the invocation waiting for it: that one goes
        // to the next process. Once only, so a process that keeps dying ends the call.
        let mut redeliveries = 1;
        loop {
            if let Some(running) = process.as_mut()
                && running.killed.load(Ordering::Relaxed)
            {
                // An abandoned invocation killed it: let the exit be processed first, so
                // that the reset it causes does not hit the next process.
                running.wait().await;
            }
            if process.as_ref().is_none_or(Running::has_exited) {
                *process = None;
                *process = Some(self.start().await?);
            }
            let Some(running) = process.as_mut() else {
                unreachable!("started above");
            };
            let (deadline, since) = *handed_over
                .get_or_insert_with(|| (self.clock.system_time() + limit.limit, self.clock.now()));
            let (reply, answer) = oneshot::channel();
            let delivery = Delivery {
                request_id: invocation.id.to_string().into(),
                payload: invocation.payload.clone(),
                deadline_ms: deadline
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                trace_id: xray_trace_id(&invocation.context.trace),
                client_context: client_context(&invocation.context),
                reply,
            };
            // Kills the process if this future is dropped before the answer arrives.
            let guard = KillOnDrop(Some((running.pid, running.killed.clone())));
            if self.deliver.send(delivery).await.is_err() {
                guard.disarm();
                return Err(FunctionError::new(
                    ErrorKind::Crashed,
                    "the environment is closed",
                ));
            }
            let left = limit
                .limit
                .saturating_sub(self.clock.now().saturating_duration_since(since));
            let result = tokio::time::timeout(left, answer).await;
            guard.disarm();
            return match result {
                Ok(Ok(Answer::Outcome(outcome))) => outcome,
                Ok(Ok(Answer::Undelivered)) if redeliveries > 0 => {
                    redeliveries -= 1;
                    tracing::debug!(
                        function = %self.function,
                        invocation = %invocation.id,
                        "the process ended before it took the invocation; starting another"
                    );
                    running.wait().await;
                    continue;
                }
                // The process went away: the watcher answered with its exit, or dropped it.
                Ok(Ok(Answer::Undelivered) | Err(_)) => Err(running.wait().await.error),
                Err(_) => {
                    running.kill();
                    running.wait().await;
                    Err(if limit.by_deadline {
                        limit.error()
                    } else {
                        FunctionError::new(
                            ErrorKind::Timeout,
                            format!(
                                "Task timed out after {:.2} seconds",
                                limit.limit.as_secs_f64()
                            ),
                        )
                        .with_type("Sandbox.Timedout")
                    })
                }
            };
        }
    }
}

struct KillOnDrop(Option<(u32, Arc<AtomicBool>)>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some((pid, killed)) = self.0.take() {
            killed.store(true, Ordering::Relaxed);
            kill_group(pid);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.abort();
        for sidecar in &self.sidecars {
            sidecar.abort();
        }
        let pid = self.pid.load(Ordering::Relaxed);
        if pid != 0 {
            kill_group(pid);
        }
    }
}

/// Copies a process's output into `tracing`, a line at a time.
async fn log_lines<R: AsyncRead + Unpin>(
    stream: R,
    name: &'static str,
    inner: Arc<Inner>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    oom: Arc<AtomicBool>,
) {
    use tokio::io::AsyncReadExt;
    let function = inner.function.clone();
    let version = inner.version.clone();
    let api = inner.api.clone();
    // Do not keep the environment alive through its own output.
    drop(inner);
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LOG_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.contains("memory allocation of") && line.contains("failed")
            || line.contains("MemoryError")
        {
            oom.store(true, Ordering::Relaxed);
        }
        let request_id = api.current.lock().clone();
        tracing::info!(
            target: "fnhub::function",
            function = %function,
            version = %version,
            stream = name,
            request_id = request_id.as_deref().unwrap_or("-"),
            "{line}"
        );
        if let Some(tail) = &tail {
            let mut tail = tail.lock();
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }
}

/// Starts `sidecar` and keeps it running: when it exits, the environment is marked
/// unhealthy (so its pool replaces it) and the sidecar is started again after a backoff.
fn supervise_sidecar(
    sidecar: SidecarSpec,
    function_plan: Plan,
    function: &str,
    healthy: Arc<AtomicBool>,
) -> Result<impl Future<Output = Result<tokio::task::JoinHandle<()>, PrepareError>>, PrepareError> {
    let Some((program, args)) = sidecar.command.split_first() else {
        return Err(start_error(format!(
            "sidecar {:?} has an empty command",
            sidecar.name
        )));
    };
    let mut plan = function_plan;
    plan.program = spawn::resolve_program(program, Some(LAMBDA_PATH.as_ref()))
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|| program.into());
    plan.args = args.iter().map(Into::into).collect();
    plan.env
        .push(("FNHUB_SIDECAR_NAME".into(), sidecar.name.clone()));
    let function = function.to_owned();
    Ok(async move {
        let first = plan
            .spawn()
            .await
            .map_err(|e| start_error(format!("sidecar {:?} failed to start: {e}", sidecar.name)))?;
        Ok(tokio::spawn(async move {
            let mut child = first;
            let mut backoff = Duration::from_millis(50);
            loop {
                drain_output(&mut child, &function, &sidecar.name);
                // Aborting this task (the environment shut down) kills the sidecar's group.
                let group = KillOnDrop(
                    child
                        .id()
                        .map(|pid| (pid, Arc::new(AtomicBool::new(false)))),
                );
                let status = child.wait().await;
                group.disarm();
                healthy.store(false, Ordering::Relaxed);
                tracing::warn!(function = %function, sidecar = %sidecar.name, ?status, "sidecar exited; the environment is unhealthy");
                loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match plan.spawn().await {
                        Ok(c) => {
                            child = c;
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(function = %function, sidecar = %sidecar.name, %error, "sidecar restart failed");
                        }
                    }
                }
            }
        }))
    })
}

fn drain_output(child: &mut tokio::process::Child, function: &str, sidecar: &str) {
    for (stream, name) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            "stdout",
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            "stderr",
        ),
    ] {
        let Some(stream) = stream else { continue };
        let function = function.to_owned();
        let sidecar = sidecar.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "fnhub::sidecar", function = %function, sidecar = %sidecar, stream = name, "{line}");
            }
        });
    }
}

impl Environment for ProcessEnvironment {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(self.inner.invoke(invocation))
    }

    fn isolation(&self) -> &IsolationReport {
        &self.inner.report
    }

    fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        let inner = self.inner;
        Box::pin(async move {
            let mut process = inner.process.lock().await;
            if let Some(running) = process.as_mut() {
                running.kill();
                running.wait().await;
            }
            *process = None;
            drop(process);
            for sidecar in &inner.sidecars {
                sidecar.abort();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_ids_split_the_w3c_trace_id() {
        let trace =
            TraceParent::from_parts(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef, 0x42, 1).unwrap();
        assert_eq!(
            xray_trace_id(&trace),
            "Root=1-01234567-89abcdef0123456789abcdef;Parent=0000000000000042;Sampled=1"
        );
    }

    #[test]
    fn log_stream_dates_are_civil_utc() {
        assert_eq!(humantime_date(UNIX_EPOCH), "1970/01/01");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_910_400); // 2026-11-29
        assert_eq!(humantime_date(t), "2026/11/29");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(humantime_date(leap), "2000/02/29");
    }
}
