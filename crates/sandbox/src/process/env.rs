//! One warm environment: a Runtime API server, the process it serves, and what starts,
//! watches and ends that process.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fnhub_core::{
    BoxFuture, EnvAccess, Environment, ErrorKind, FilesystemAccess, FunctionError, FunctionSpec,
    Invocation, IsolationReport, NetworkAccess, Outcome, PrepareError, Restriction, Runtime,
};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::api::{Answer, Api, Delivery, Phase};
use super::jail;
use super::spawn::{FsRules, NetNs, Plan, Rlimits};
use super::zygote::{self, Template};
use crate::limit::Limit;
use crate::{Confinement, Enforcement};

use super::lambda::{LAMBDA_PATH, client_context, lambda_env, tenant, xray_trace_id};
use super::logs::{LogPipe, LogTails, read_output};
use super::output::supervise_sidecar;
use super::*;

/// One warm environment: a Runtime API server and the process it serves.
pub(super) struct ProcessEnvironment {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) clock: Arc<dyn fnhub_core::Clock>,
    pub(super) function: String,
    pub(super) version: String,
    pub(super) timeout: Duration,
    pub(super) init_timeout: Duration,
    pub(super) api: Arc<Api>,
    pub(super) server: tokio::task::JoinHandle<()>,
    pub(super) plan: Plan,
    pub(super) report: IsolationReport,
    /// The running process, if any; the lock also serialises invocations.
    pub(super) process: tokio::sync::Mutex<Option<Running>>,
    /// The timer of the invocation in flight, kept between invocations and moved later for
    /// each: a timer registered anew is the runtime's earliest, and tokio wakes its own
    /// driver (an eventfd write, an extra `epoll_wait`) for each such one; a timer moved
    /// later than when the driver last parked wakes nothing.
    pub(super) timer: parking_lot::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
    /// Pid of the running process, for the kill on drop.
    pub(super) pid: AtomicU32,
    pub(super) healthy: Arc<AtomicBool>,
    pub(super) starts: AtomicU64,
    pub(super) sidecars: Vec<tokio::task::JoinHandle<()>>,
    /// The AWS APIs served to the process, if the sandbox has services.
    pub(super) endpoint: Option<super::endpoint::Endpoint>,
    /// Where the tails of watched invocations' output go.
    pub(super) log_tails: Option<Arc<LogTails>>,
    /// Kept so the namespace lives as long as the environment.
    pub(super) _netns: Option<Arc<NetNs>>,
    /// The template its processes are forked from, if it has one.
    pub(super) template: Option<Arc<Template>>,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub(super) struct Exit {
    pub(super) error: FunctionError,
}

pub(super) struct Running {
    pub(super) pid: u32,
    pub(super) exited: watch::Receiver<Option<Exit>>,
    /// Set when an abandoned invocation killed it: its exit is on the way.
    pub(super) killed: Arc<AtomicBool>,
    /// Its stdout and stderr, as far as they have been read.
    pub(super) logs: Vec<Arc<LogPipe>>,
    /// For a process forked from a template (whose PID namespace outlives it), the control
    /// group that holds it and whatever it started: killed with it.
    pub(super) group: Option<Arc<super::cgroup::Cgroup>>,
    /// The template it was forked from: when that ends, so did this process.
    pub(super) forked_from: Option<Arc<Template>>,
}

impl Running {
    fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Whether it is known to be gone though its exit may not be recorded yet: an
    /// abandoned invocation killed it, or its template ended (taking it along).
    fn is_going(&self) -> bool {
        self.killed.load(Ordering::Relaxed) || self.forked_from.as_ref().is_some_and(|t| !t.alive())
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
        if let Some(group) = &self.group {
            group.kill();
        }
    }

    fn kill_on_drop(&self) -> KillOnDrop {
        KillOnDrop(Some((self.pid, self.killed.clone(), self.group.clone())))
    }
}

fn pid_of(pid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
}

/// SIGKILL to the process group `pid` leads.
pub(super) fn kill_group(pid: u32) {
    if let Some(pid) = pid_of(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// SIGKILL to the process `pid`.
pub(super) fn kill_pid(pid: u32) {
    if let Some(pid) = pid_of(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

impl ProcessEnvironment {
    pub(super) async fn prepare(
        config: Arc<Config>,
        spec: &FunctionSpec,
    ) -> Result<Self, PrepareError> {
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

        let tools = match config.confinement {
            Confinement::Jail => match jail::tools() {
                Ok(tools) => Some(tools),
                Err(reason) => {
                    tracing::warn!(function = %spec.name, %reason, "the function cannot be jailed");
                    missing.extend([Restriction::Identity, Restriction::Processes]);
                    None
                }
            },
            Confinement::Landlock => None,
        };
        let landlock = tools.is_none()
            && matches!(profile.filesystem, FilesystemAccess::Only(_))
            && spawn::landlock_available().await;
        // What the function may see of the filesystem besides the system's folders.
        let visible = |grants: &[fnhub_core::PathGrant]| {
            let mut read: Vec<PathBuf> = Vec::new();
            if let Some(prefix) = resolved.as_deref().and_then(spawn::install_prefix) {
                read.push(prefix);
            }
            read.push(task_root.clone());
            let mut all: Vec<(PathBuf, bool)> = read.into_iter().map(|p| (p, false)).collect();
            all.extend(grants.iter().map(|g| (g.path.clone(), g.writable)));
            all
        };
        let binds = match &profile.filesystem {
            FilesystemAccess::Only(grants) => Some(visible(grants)),
            _ => None,
        };
        let fs = match &profile.filesystem {
            FilesystemAccess::Only(grants) if landlock => {
                let mut rules = FsRules {
                    read: spawn::SYSTEM_PATHS.iter().map(PathBuf::from).collect(),
                    write: Vec::new(),
                };
                for (path, writable) in visible(grants) {
                    if writable {
                        rules.write.push(path);
                    } else {
                        rules.read.push(path);
                    }
                }
                enforced.push(Restriction::Filesystem);
                Some(rules)
            }
            FilesystemAccess::Only(_) if tools.is_some() => {
                enforced.push(Restriction::Filesystem);
                None
            }
            FilesystemAccess::Only(_) => {
                missing.push(Restriction::Filesystem);
                None
            }
            _ => None,
        };
        let jail = match tools {
            Some(tools) => Some(Arc::new(jail::build(
                &config,
                spec,
                tools,
                task_root.clone(),
                binds.clone(),
                &mut enforced,
                &mut missing,
            )?)),
            None => None,
        };
        if !missing.is_empty() && config.enforcement == Enforcement::FailClosed {
            return Err(PrepareError::CannotEnforce {
                sandbox: "process",
                missing,
            });
        }
        let program_path = resolved
            .map(PathBuf::into_os_string)
            .unwrap_or_else(|| program.into());
        let limits = Rlimits {
            data_bytes: config
                .limits
                .memory
                .then(|| u64::from(spec.resources.memory_mb.max(1)) * 1024 * 1024),
            open_files: config.limits.open_files,
            processes: config.limits.processes,
            cpu_seconds: config.limits.cpu_seconds,
        };
        let compose = |address: &str, endpoint: Vec<(String, String)>| {
            compose_env(
                &config,
                spec,
                &task_root,
                address,
                handler.as_deref(),
                endpoint,
                clear_env,
                granted,
            )
        };

        // A Python function forks its environments from a template of its own.
        let template = match (&config.zygotes, zygote::python_handler(program, args)) {
            (Some(zygotes), Some(handler_arg)) => {
                let make = || async {
                    let (mut e, mut m) = (Vec::new(), Vec::new());
                    let netns = make_netns(&config, profile, &mut e, &mut m)
                        .await
                        .map_err(|e| e.to_string())?;
                    let jail = match tools {
                        Some(tools) => Some(Arc::new(
                            jail::build(
                                &config,
                                spec,
                                tools,
                                task_root.clone(),
                                binds.clone(),
                                &mut e,
                                &mut m,
                            )
                            .map_err(|e| e.to_string())?,
                        )),
                        None => None,
                    };
                    let plan = Plan {
                        program: program_path.clone(),
                        args: Vec::new(),
                        workdir: workdir.clone(),
                        clear_env,
                        // What the environments will have, but the addresses: the fork is
                        // told those.
                        env: compose("127.0.0.1:9", Vec::new()),
                        fs: fs.clone(),
                        netns,
                        limits,
                        jail,
                        stdin: None,
                    };
                    Template::start(plan, handler_arg, spec.name.as_str(), config.init_timeout)
                        .await
                };
                zygotes
                    .template(super::zygote::template_key(spec), spec.name.as_str(), make)
                    .await
            }
            _ => None,
        };
        let netns = match &template {
            Some(template) => {
                if template.netns.is_some() {
                    enforced.push(Restriction::Network);
                } else if profile.network != NetworkAccess::Any {
                    missing.push(Restriction::Network);
                }
                template.netns.clone()
            }
            None => make_netns(&config, profile, &mut enforced, &mut missing).await?,
        };

        let (listener, address) = spawn::loopback_listener(netns.as_ref())
            .await
            .map_err(|e| PrepareError::Start(Box::new(e)))?;
        let endpoint = match &config.services {
            Some(services) => Some(
                super::endpoint::open(services.clone(), &config, spec, netns.as_ref())
                    .await
                    .map_err(|e| PrepareError::Start(Box::new(e)))?,
            ),
            None => None,
        };

        let function = spec.name.as_str().to_owned();
        let version = spec.version.to_string();
        let arn = format!(
            "arn:aws:lambda:{}:{}:function:{}:{}",
            config.region, config.account, function, version
        );
        let api = Api::new(arn, config.max_response_bytes);
        let server = api.serve(listener);

        let all = compose(
            &address.to_string(),
            endpoint.as_ref().map(|e| e.env()).unwrap_or_default(),
        );
        let plan = Plan {
            program: program_path,
            args: args.iter().map(Into::into).collect(),
            workdir: workdir.clone(),
            clear_env,
            env: all,
            fs,
            netns: netns.clone(),
            limits,
            jail,
            stdin: None,
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
            server,
            plan,
            report,
            process: tokio::sync::Mutex::new(None),
            timer: parking_lot::Mutex::new(None),
            pid: AtomicU32::new(0),
            healthy,
            starts: AtomicU64::new(0),
            sidecars: sidecar_tasks,
            endpoint,
            log_tails: config.log_tails.clone(),
            _netns: netns,
            template,
        });
        {
            let mut process = inner.process.lock().await;
            *process = Some(inner.start().await.map_err(PrepareError::Init)?);
        }
        Ok(ProcessEnvironment { inner })
    }
}

/// How a process ended, once it has (as Rust prints an exit status).
type ExitFuture = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// A network namespace of its own for a function whose profile does not grant the host's
/// network; what it enforces (or cannot) is added to `enforced` (or `missing`).
async fn make_netns(
    config: &Config,
    profile: &fnhub_core::CapabilityProfile,
    enforced: &mut Vec<Restriction>,
    missing: &mut Vec<Restriction>,
) -> Result<Option<Arc<NetNs>>, PrepareError> {
    if profile.network == NetworkAccess::Any {
        return Ok(None);
    }
    match NetNs::create().await {
        Ok(ns) => {
            enforced.push(Restriction::Network);
            Ok(Some(Arc::new(ns)))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot give the function a network namespace");
            missing.push(Restriction::Network);
            if config.enforcement == Enforcement::FailClosed {
                return Err(PrepareError::CannotEnforce {
                    sandbox: "process",
                    missing: missing.clone(),
                });
            }
            Ok(None)
        }
    }
}

/// The variables of an environment's process: Lambda's (with the Runtime API at `address`
/// and the endpoint's), then the granted ones that do not collide with those.
#[allow(clippy::too_many_arguments)]
fn compose_env(
    config: &Config,
    spec: &FunctionSpec,
    task_root: &std::path::Path,
    address: &str,
    handler: Option<&str>,
    endpoint: Vec<(String, String)>,
    clear_env: bool,
    granted: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env = lambda_env(config, spec, task_root, address);
    if let Some(handler) = handler {
        env.push(("_HANDLER".into(), handler.to_owned()));
    }
    env.extend(endpoint);
    if !clear_env && std::env::var_os("PATH").is_some() {
        // An inherited environment keeps the hub's PATH.
        env.retain(|(k, _)| k != "PATH");
    }
    // Reserved variables win over granted ones, as on Lambda.
    let reserved: std::collections::HashSet<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    let mut all: Vec<(String, String)> = granted
        .iter()
        .filter(|(k, _)| !reserved.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.extend(env);
    if clear_env && !all.iter().any(|(k, _)| k == "HOME") {
        // Runtimes look for the user's home (the AWS SDK for JavaScript asks Node.js's
        // `os.homedir()`, which fails for a uid the system's `/etc/passwd` does not name,
        // as a jailed function's is not): its own `/tmp`, the folder it may write.
        all.push(("HOME".into(), "/tmp".into()));
    }
    all
}

impl Inner {
    /// Starts the process and waits until it asks for work.
    async fn start(self: &Arc<Self>) -> Result<Running, FunctionError> {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let _ = self.api.take_init_error();
        // The kernel's OOM killer acting in the jail's control group (memory summed over all
        // the function's processes) also makes the exit an out-of-memory error.
        let cgroup = self.plan.jail.as_ref().and_then(|j| j.cgroup.clone());
        let ooms_before = cgroup.as_ref().map_or(0, |c| c.oom_kills());
        let forked = match &self.template {
            Some(template) if template.alive() => {
                match template
                    .fork(&self.plan.env, self.plan.clear_env, cgroup.as_deref())
                    .await
                {
                    Ok(forked) => Some(forked),
                    Err(error) => {
                        tracing::debug!(function = %self.function, %error, "no fork from the template: starting the process");
                        None
                    }
                }
            }
            _ => None,
        };
        let was_forked = forked.is_some();
        let (pid, stdout, stderr, exit) = match forked {
            Some(f) => (f.pid, Some(Ok(f.stdout)), Some(Ok(f.stderr)), f.exit),
            None => {
                let mut child = self.plan.spawn().await.map_err(|e| {
                    FunctionError::new(ErrorKind::Rejected, e.to_string())
                        .with_type("Runtime.StartError")
                })?;
                let pid = child.id().unwrap_or(0);
                let stdout = child.stdout.take().map(|s| s.into_owned_fd());
                let stderr = child.stderr.take().map(|s| s.into_owned_fd());
                let exit: ExitFuture = Box::pin(async move {
                    match child.wait().await {
                        Ok(status) => status.to_string(),
                        Err(e) => format!("unknown status ({e})"),
                    }
                });
                (pid, stdout, stderr, exit)
            }
        };
        self.pid.store(pid, Ordering::Relaxed);
        tracing::debug!(function = %self.function, pid, start = n, forked = self.template.is_some(), "function process started");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let oom = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        let mut logs = Vec::new();
        let streams = [
            (stdout, "stdout", None),
            (stderr, "stderr", Some(tail.clone())),
        ];
        for (stream, name, stderr_tail) in streams {
            let Some(stream) = stream else { continue };
            let started =
                stream.and_then(|fd| read_output(fd, name, self, stderr_tail, oom.clone()));
            match started {
                Ok((pipe, reader)) => {
                    logs.push(pipe);
                    readers.push(reader);
                }
                Err(error) => {
                    tracing::warn!(function = %self.function, stream = name, %error, "the function's output cannot be read");
                }
            }
        }
        let (exited_tx, exited) = watch::channel(None);
        let api = self.api.clone();
        let group = if was_forked { cgroup.clone() } else { None };
        tokio::spawn(async move {
            let status = exit.await;
            // Let the readers take the last lines before quoting them.
            for reader in readers {
                let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
            }
            let lines: Vec<String> = tail.lock().iter().cloned().collect();
            let mut message = format!("the function's process ended: {status}");
            if !lines.is_empty() {
                message.push_str("\nlast lines of stderr:");
                for line in lines {
                    message.push_str("\n  ");
                    message.push_str(&line);
                }
            }
            let oom_killed = cgroup.is_some_and(|c| c.oom_kills() > ooms_before);
            if oom_killed {
                message.push_str("\nthe kernel ended it: its processes together passed memory_mb");
            }
            let error = if oom.load(Ordering::Relaxed) || oom_killed {
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
            logs,
            group,
            forked_from: if was_forked {
                self.template.clone()
            } else {
                None
            },
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
                && running.is_going()
            {
                // Let the exit be processed first, so that the reset it causes does not
                // hit the next process.
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
            let (reply, mut answer) = oneshot::channel();
            let delivery = Delivery {
                request_id: invocation.id.to_string().into(),
                payload: invocation.payload.clone(),
                deadline_ms: deadline
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                trace_id: xray_trace_id(&invocation.context.trace),
                client_context: client_context(&invocation.context),
                tenant: tenant(&invocation.context),
                reply,
            };
            if let Some(endpoint) = &self.endpoint {
                endpoint.running(invocation.id, &invocation.context, deadline);
            }
            // Kills the process if this future is dropped before the answer arrives.
            let guard = running.kill_on_drop();
            let left = limit
                .limit
                .saturating_sub(self.clock.now().saturating_duration_since(since));
            let until = tokio::time::Instant::now() + left;
            let mut timer = self
                .timer
                .lock()
                .take()
                .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(until)));
            timer.as_mut().reset(until);
            // Written and read on this task when the process already waits for work;
            // otherwise its next `GET /next` takes the event.
            let exchange = async {
                match self.api.hand(delivery) {
                    Some((conn, delivery)) => self.api.exchange(conn, delivery, &mut answer).await,
                    None => (&mut answer).await,
                }
            };
            let result = tokio::select! {
                biased;
                answer = exchange => Ok(answer),
                () = timer.as_mut() => Err(()),
            };
            *self.timer.lock() = Some(timer);
            guard.disarm();
            return match result {
                Ok(Ok(Answer::Outcome(outcome))) => {
                    // A watched tail gets every line written before the answer.
                    if let Some(tails) = &self.log_tails
                        && tails.is_watched(invocation.id)
                    {
                        for pipe in &running.logs {
                            pipe.settle().await;
                        }
                    }
                    outcome
                }
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

pub(super) struct KillOnDrop(
    pub(super) Option<(u32, Arc<AtomicBool>, Option<Arc<super::cgroup::Cgroup>>)>,
);

impl KillOnDrop {
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some((pid, killed, group)) = self.0.take() {
            killed.store(true, Ordering::Relaxed);
            kill_group(pid);
            if let Some(group) = group {
                group.kill();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(endpoint) = &self.endpoint {
            endpoint.stop();
        }
        for sidecar in &self.sidecars {
            sidecar.abort();
        }
        let pid = self.pid.load(Ordering::Relaxed);
        if pid != 0 {
            kill_group(pid);
        }
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
            && !self.inner.endpoint.as_ref().is_some_and(|e| e.retired())
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
