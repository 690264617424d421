//! Starting confined processes without a `pre_exec` hook.
//!
//! A `pre_exec` closure forces `fork` instead of `posix_spawn`/`vfork`, which is slow from a
//! large parent. Instead, what must be set up inside the child is set up on a fresh thread
//! that is thrown away afterwards: Landlock restrictions and the network namespace belong to
//! the calling thread, and a child inherits them from the thread that spawned it. Resource
//! limits are set on the child right after the spawn with `prlimit`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use rustix::process::{Pid, Resource, Rlimit, prlimit};
use tokio::process::{Child, Command};

/// Directories every confined process may read and execute from: the system's programs,
/// libraries and configuration. Missing ones are skipped.
pub(crate) const SYSTEM_PATHS: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys",
];

/// A network namespace of its own, with only a loopback interface. Held by a file
/// descriptor, so it lives as long as this value (and the sockets created in it).
#[derive(Debug)]
pub(crate) struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// Creates one: a short-lived holder process enters a new namespace (`unshare --net`),
    /// the namespace is kept by opening its `/proc` link, and its loopback is brought up
    /// (`ip link set lo up`) from a thread that joined it.
    pub(crate) async fn create() -> io::Result<NetNs> {
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "sleep", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting `unshare --net`: {e}")))?;
        let pid = holder
            .id()
            .ok_or_else(|| io::Error::other("`unshare` exited at once"))?;
        let own = std::fs::read_link("/proc/self/ns/net")?;
        let link = PathBuf::from(format!("/proc/{pid}/ns/net"));
        // Looked for every millisecond, for about five seconds: the tokio timer's
        // ticks, not a clock reading, bound the wait.
        let mut looks = 0u32;
        let fd = loop {
            looks += 1;
            if let Some(status) = holder.try_wait()? {
                let mut err = String::new();
                if let Some(mut stderr) = holder.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut err).await;
                }
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("`unshare --net` failed ({status}): {}", err.trim()),
                ));
            }
            if std::fs::read_link(&link).is_ok_and(|ns| ns != own) {
                break OwnedFd::from(std::fs::File::open(&link)?);
            }
            if looks > 5_000 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "`unshare --net` did not enter a new namespace",
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let _ = holder.start_kill();
        let _ = holder.wait().await;
        let ns = NetNs { fd };
        let status = ns
            .run(|| {
                std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            })
            .await??;
        if !status.success() {
            return Err(io::Error::other(format!(
                "`ip link set lo up` failed in the new namespace ({status})"
            )));
        }
        Ok(ns)
    }

    /// Runs `f` on a fresh thread that has joined this namespace; the thread then ends.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let fd = self.fd.try_clone()?;
        on_fresh_thread(move || {
            rustix::thread::move_into_link_name_space(
                fd.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(f())
        })
        .await?
    }

    /// Binds a loopback listener inside the namespace.
    pub(crate) async fn bind_loopback(&self) -> io::Result<std::net::TcpListener> {
        self.run(|| std::net::TcpListener::bind(("127.0.0.1", 0)))
            .await?
    }
}

/// A listener on loopback where the process can reach it: in its network namespace, or
/// the host's when it has none.
pub(crate) async fn loopback_listener(
    netns: Option<&Arc<NetNs>>,
) -> io::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = match netns {
        Some(ns) => ns.bind_loopback().await?,
        None => std::net::TcpListener::bind(("127.0.0.1", 0))?,
    };
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    Ok((tokio::net::TcpListener::from_std(listener)?, address))
}

/// Runs `f` on a new thread and waits for it without blocking the runtime. The thread is
/// not reused, so changes it makes to itself (namespaces, Landlock) die with it.
async fn on_fresh_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fnhub-spawn".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| io::Error::other("the spawning thread panicked"))
}

/// Filesystem confinement with Landlock: what may be read, what may be written.
#[derive(Debug, Clone, Default)]
pub(crate) struct FsRules {
    pub(crate) read: Vec<PathBuf>,
    pub(crate) write: Vec<PathBuf>,
}

impl FsRules {
    /// Restricts the calling thread (and so what it spawns). Returns whether the kernel
    /// enforces the rules.
    fn restrict_self(&self) -> Result<bool, String> {
        let abi = ABI::V3;
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| r.create())
            .map_err(|e| e.to_string())?;
        let dev = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::ReadDir;
        let dev_path = PathBuf::from("/dev");
        let grants = self
            .read
            .iter()
            .map(|p| (p, AccessFs::from_read(abi)))
            .chain(self.write.iter().map(|p| (p, AccessFs::from_all(abi))))
            .chain(std::iter::once((&dev_path, dev)));
        for (path, access) in grants {
            let Ok(fd) = PathFd::new(path) else {
                continue;
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let status = ruleset.restrict_self().map_err(|e| e.to_string())?;
        Ok(status.ruleset != RulesetStatus::NotEnforced)
    }
}

/// Resource limits set on the child with `prlimit`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rlimits {
    pub(crate) data_bytes: Option<u64>,
    pub(crate) open_files: Option<u64>,
    pub(crate) processes: Option<u64>,
    pub(crate) cpu_seconds: Option<u64>,
}

impl Rlimits {
    fn apply(&self, pid: u32) -> io::Result<()> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("bad child pid"))?;
        for (resource, value) in [
            (Resource::Data, self.data_bytes),
            (Resource::Nofile, self.open_files),
            (Resource::Nproc, self.processes),
            (Resource::Cpu, self.cpu_seconds),
        ] {
            if let Some(v) = value {
                let limit = Rlimit {
                    current: Some(v),
                    maximum: Some(v),
                };
                prlimit(Some(pid), resource, limit)?;
            }
        }
        Ok(())
    }
}

/// Everything needed to start one process.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) workdir: Option<PathBuf>,
    pub(crate) clear_env: bool,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) fs: Option<FsRules>,
    pub(crate) netns: Option<Arc<NetNs>>,
    pub(crate) limits: Rlimits,
    /// The jail it runs in; its launcher sets the limits then.
    pub(crate) jail: Option<Arc<super::jail::Jail>>,
    /// Its standard input; `/dev/null` when `None`.
    pub(crate) stdin: Option<Arc<OwnedFd>>,
}

/// What starting a process failed on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("starting {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the kernel does not enforce Landlock filesystem rules here: {0}")]
    Landlock(String),
    #[error("setting resource limits: {0}")]
    Limits(#[source] io::Error),
    #[error("joining the network namespace: {0}")]
    Namespace(#[source] io::Error),
}

impl Plan {
    fn command(&self) -> io::Result<Command> {
        let mut cmd = match &self.jail {
            Some(jail) => {
                let (launcher, args) = jail.command(&self.program, &self.args);
                let mut cmd = Command::new(launcher);
                cmd.args(args);
                cmd
            }
            None => {
                let mut cmd = Command::new(&self.program);
                cmd.args(&self.args);
                cmd
            }
        };
        match &self.stdin {
            Some(fd) => cmd.stdin(Stdio::from(fd.try_clone()?)),
            None => cmd.stdin(Stdio::null()),
        };
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that what it starts is killed with it.
            .process_group(0);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// Starts the process: on this thread when nothing needs a thread of its own, otherwise
    /// on a fresh thread that joins the namespace and restricts itself first.
    pub(crate) async fn spawn(&self) -> Result<Child, SpawnError> {
        let program = self.program.to_string_lossy().into_owned();
        let child = if self.fs.is_none() && self.netns.is_none() {
            self.command()
                .and_then(|mut c| c.spawn())
                .map_err(|source| SpawnError::Spawn {
                    program: program.clone(),
                    source,
                })?
        } else {
            let handle = tokio::runtime::Handle::current();
            let plan = self.clone();
            let ns_fd = match &self.netns {
                Some(ns) => Some(ns.fd.try_clone().map_err(SpawnError::Namespace)?),
                None => None,
            };
            let program2 = program.clone();
            on_fresh_thread(move || {
                let _guard = handle.enter();
                if let Some(fd) = ns_fd {
                    rustix::thread::move_into_link_name_space(
                        fd.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| SpawnError::Namespace(e.into()))?;
                }
                if let Some(fs) = &plan.fs {
                    match fs.restrict_self() {
                        Ok(true) => {}
                        Ok(false) => {
                            return Err(SpawnError::Landlock(
                                "not supported by this kernel".into(),
                            ));
                        }
                        Err(e) => return Err(SpawnError::Landlock(e)),
                    }
                }
                plan.command()
                    .and_then(|mut c| c.spawn())
                    .map_err(|source| SpawnError::Spawn {
                        program: program2,
                        source,
                    })
            })
            .await
            .map_err(|source| SpawnError::Spawn {
                program: program.clone(),
                source,
            })??
        };
        if self.jail.is_none()
            && let Some(pid) = child.id()
        {
            self.limits.apply(pid).map_err(SpawnError::Limits)?;
        }
        Ok(child)
    }
}

/// Whether the kernel enforces Landlock: checked once, on a thread thrown away after.
pub(crate) async fn landlock_available() -> bool {
    static AVAILABLE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *AVAILABLE
        .get_or_init(|| async {
            on_fresh_thread(|| FsRules::default().restrict_self() == Ok(true))
                .await
                .unwrap_or(false)
        })
        .await
}

/// The installation prefix of `program` (the parent of the folder it is in, such as `/usr`
/// for `/usr/bin/python3`), which holds the libraries an interpreter loads.
pub(crate) fn install_prefix(program: &Path) -> Option<PathBuf> {
    let dir = program.parent()?;
    Some(dir.parent().unwrap_or(dir).to_path_buf())
}

/// Finds `program` on `PATH` when it has no slash, as `execvp` would.
pub(crate) fn resolve_program(
    program: &str,
    path_var: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
