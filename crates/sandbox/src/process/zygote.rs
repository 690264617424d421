//! Templates ("zygotes") for Python functions: a cold start is a `fork`, not an
//! interpreter start.
//!
//! For a function whose command is `python… -m awslambdaric <handler>`, the sandbox keeps
//! one template process per function version (per [`FunctionSpec`](fnhub_core::FunctionSpec),
//! exactly). The template is started like any environment's process, in a jail of its own
//! built from the function's profile (namespaces, root, uid, control group, syscall filter,
//! limits, network namespace) before any of its code runs; it imports the Lambda runtime
//! client and the libraries the handler's module imports (see `zygote.py`), then waits.
//! Each new environment of that version is forked from it:
//!
//! - the fork inherits the template's confinement; the hub then moves it into the
//!   environment's own control group (so `memory_mb` and the process count hold per
//!   environment, as for a spawned process) before it runs on;
//! - it gets its own stdout and stderr (its log lines carry its request ids), the
//!   environment's variables (its own `AWS_LAMBDA_RUNTIME_API`, credentials and endpoint),
//!   and the same argv as a spawned process; the handler's module is imported in the fork,
//!   so module-level code sees the environment's variables, as on Lambda;
//! - it shares the template's network namespace (its Runtime API and endpoint listen
//!   there), mount namespace (so its private `/tmp`) and PID namespace with the other
//!   environments of the same function version, and nothing with any other function.
//!
//! A template that dies (killed, or crashed) is replaced by the next environment that needs
//! one; environments whose process it took with it start a new one, as after any crash. A
//! template stops when the scheduler's reservation policy lets its function go cold
//! (`Sandbox::release`, once the function's idle environments have stopped) and comes back
//! with the policy's pre-warm; one unused for the sandbox's keep-alive is stopped once no
//! environment holds it whatever the policy says, and
//! the templates together keep to a bound on their resident memory (the least recently used
//! idle one stops to make room; when all are in use, the new function goes without). Their
//! memory is reported by `ProcessSandbox::templates`. When no template can be made
//! (the handler's module cannot be read, the interpreter fails), environments are spawned
//! as before, and the reason is logged.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::cgroup::Cgroup;
use super::env::{kill_group, kill_pid};
use super::spawn::{NetNs, Plan};

/// The template's program, run with `python -c`.
pub(super) const SCRIPT: &str = include_str!("zygote.py");

/// How long a fork may take to be answered.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);

/// The handler of a command that runs Python's Lambda runtime client,
/// `python… -m awslambdaric <handler>`; `None` for any other command.
pub(super) fn python_handler<'a>(program: &str, args: &'a [String]) -> Option<&'a str> {
    let name = Path::new(program).file_name()?.to_str()?;
    let is_python = name
        .strip_prefix("python")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'));
    match args {
        [m, ric, handler] if is_python && m == "-m" && ric == "awslambdaric" => {
            (!handler.is_empty() && !handler.starts_with('-')).then_some(handler.as_str())
        }
        _ => None,
    }
}

/// The key of a function version's template: the whole spec, so that any change to the
/// function (command, files, variables, limits) is a template of its own.
pub(super) fn template_key(spec: &fnhub_core::FunctionSpec) -> String {
    format!("{spec:?}")
}

/// Whether a template in its slot is held only there: no environment uses it.
fn unused(template: &Arc<Template>) -> bool {
    Arc::strong_count(template) == 1
}

/// Where one function version's template is kept; locked while it is being made.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Template>>>>;

/// The templates of one sandbox, one per function version.
pub(super) struct Zygotes {
    slots: Mutex<HashMap<String, Slot>>,
    /// A template unused this long is stopped.
    idle: Duration,
    /// The most resident memory the templates may hold together.
    max_bytes: u64,
}

impl std::fmt::Debug for Zygotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygotes")
            .field("templates", &self.slots.lock().len())
            .field("idle", &self.idle)
            .finish()
    }
}

impl Zygotes {
    pub(super) fn new(idle: Duration, max_bytes: u64) -> Zygotes {
        Zygotes {
            slots: Mutex::new(HashMap::new()),
            idle,
            max_bytes,
        }
    }

    /// Stops the least recently used templates that no environment holds until those left
    /// hold less than `max_bytes`. Whether they do.
    fn make_room(&self, except: &str) -> bool {
        let slots: Vec<(String, Slot)> = self
            .slots
            .lock()
            .iter()
            .filter(|(k, _)| k.as_str() != except)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let mut total = 0;
        let mut idle = Vec::new();
        for (key, slot) in slots {
            let Ok(held) = slot.try_lock() else { continue };
            let Some(template) = held.as_ref().filter(|t| t.alive()) else {
                continue;
            };
            let bytes = template.resident_bytes();
            total += bytes;
            if unused(template) {
                idle.push((*template.last_used.lock(), bytes, key));
            }
        }
        idle.sort();
        let mut idle = idle.into_iter();
        while total >= self.max_bytes {
            let Some((_, bytes, key)) = idle.next() else {
                return false;
            };
            let slot = self.slots.lock().get(&key).cloned();
            if let Some(slot) = slot
                && let Ok(mut held) = slot.try_lock()
                && let Some(template) = held.take()
            {
                tracing::debug!(template = %key, bytes, "a template stopped to make room");
                template.stop();
                total = total.saturating_sub(bytes);
            }
        }
        true
    }

    /// The live template under `key`, made with `make` when there is none (or it died).
    /// `None` when it cannot be made: the caller spawns instead.
    pub(super) async fn template<F, Fut>(
        self: &Arc<Self>,
        key: String,
        function: &str,
        make: F,
    ) -> Option<Arc<Template>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Template, String>>,
    {
        let slot = self.slots.lock().entry(key.clone()).or_default().clone();
        let mut held = slot.lock().await;
        if let Some(template) = held.as_ref()
            && template.alive()
        {
            template.touch();
            return Some(template.clone());
        }
        if held.take().is_some() {
            tracing::info!(function, "the function's template ended; making another");
        }
        if !self.make_room(&key) {
            tracing::debug!(
                function,
                "no room for another template: its environments start the interpreter"
            );
            return None;
        }
        let started = Instant::now();
        match make().await {
            Ok(template) => {
                let template = Arc::new(template);
                tracing::debug!(function, took = ?started.elapsed(), "function template ready");
                *held = Some(template.clone());
                self.reap_when_idle(key, Arc::downgrade(&template));
                Some(template)
            }
            Err(reason) => {
                tracing::warn!(function, %reason, "no template for the function: its environments start the interpreter each");
                None
            }
        }
    }

    /// Stops the template once it has not forked for `idle`, or ends with it.
    fn reap_when_idle(self: &Arc<Self>, key: String, template: Weak<Template>) {
        let zygotes = Arc::downgrade(self);
        let idle = self.idle;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep((idle / 4).max(Duration::from_millis(10))).await;
                let (Some(zygotes), Some(live)) = (zygotes.upgrade(), template.upgrade()) else {
                    return;
                };
                if !live.alive() {
                    return;
                }
                // Stopping it would take its environments' processes with it (they share
                // its PID namespace): it goes once the last of them has.
                let in_use = Arc::strong_count(&live) > 2;
                if in_use || live.last_used.lock().elapsed() < idle {
                    continue;
                }
                let slot = zygotes.slots.lock().get(&key).cloned();
                if let Some(slot) = slot {
                    let mut held = slot.lock().await;
                    if held.as_ref().is_some_and(|t| Arc::ptr_eq(t, &live)) {
                        *held = None;
                    }
                }
                tracing::debug!(template = %key, "an idle function template stopped");
                live.stop();
                return;
            }
        });
    }

    /// Stops the template under `key` now unless an environment holds it (one that does
    /// stops when its last environment has gone and it sits unused). Whether one stopped.
    pub(super) fn release(&self, key: &str) -> bool {
        let Some(slot) = self.slots.lock().get(key).cloned() else {
            return false;
        };
        let Ok(mut held) = slot.try_lock() else {
            // Being made (a pre-warm or a cold start needs it): kept.
            return false;
        };
        match held.as_ref() {
            Some(template) if unused(template) => {
                if let Some(template) = held.take() {
                    tracing::debug!(template = %key, "the reservation policy let the function's template go");
                    template.stop();
                }
                true
            }
            _ => false,
        }
    }

    /// How many templates are alive, and their resident memory in bytes.
    pub(super) fn usage(&self) -> (usize, u64) {
        let slots: Vec<_> = self.slots.lock().values().cloned().collect();
        let mut count = 0;
        let mut bytes = 0;
        for slot in slots {
            if let Ok(held) = slot.try_lock()
                && let Some(template) = held.as_ref()
                && template.alive()
            {
                count += 1;
                bytes += template.resident_bytes();
            }
        }
        (count, bytes)
    }
}

/// What the template said.
enum Reply {
    Forked(u32),
    Failed(String),
}

#[derive(Default)]
struct Waits {
    /// The fork in flight (forks are one at a time).
    reply: Option<oneshot::Sender<Reply>>,
    /// The live forks by their pid in the template's namespace: their pid on the host, and
    /// where their exit status goes.
    forks: HashMap<u32, (u32, oneshot::Sender<String>)>,
}

/// One running template.
pub(super) struct Template {
    /// The network namespace its forks (and their listeners) live in.
    pub(super) netns: Option<Arc<NetNs>>,
    ctl: Arc<UnixStream>,
    /// The launcher's pid (its process group is the template's).
    launcher: u32,
    /// The interpreter's pid, as the host sees it.
    zygote: u32,
    alive: Arc<AtomicBool>,
    waits: Arc<Mutex<Waits>>,
    forking: tokio::sync::Mutex<()>,
    last_used: Mutex<Instant>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Its jail (and so its control group), kept while it runs.
    _jail: Option<Arc<super::jail::Jail>>,
}

/// A process forked from a template, for one environment.
pub(super) struct Forked {
    /// Its pid as the host sees it; it leads its own process group.
    pub(super) pid: u32,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    /// Resolves with how it ended, once it has.
    pub(super) exit: std::pin::Pin<Box<dyn Future<Output = String> + Send>>,
}

impl Template {
    /// Starts `plan` (whose program is the interpreter) as a template for `handler`, and
    /// waits until it has imported what it preloads (at most `init_timeout`).
    pub(super) async fn start(
        mut plan: Plan,
        handler: &str,
        function: &str,
        init_timeout: Duration,
    ) -> Result<Template, String> {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| format!("a socket pair: {e}"))?;
        rustix::io::ioctl_fionbio(&ours, true).map_err(|e| e.to_string())?;
        plan.args = vec!["-c".into(), SCRIPT.into(), handler.into()];
        plan.stdin = Some(Arc::new(theirs));
        let netns = plan.netns.clone();
        // Its control group must outlive the launcher's joining it.
        let jail = plan.jail.clone();
        let spawned = plan.spawn().await;
        // Only the template holds its end now: its death reads as the end of the socket.
        drop(plan);
        let mut child = spawned.map_err(|e| e.to_string())?;
        let launcher = child.id().ok_or("the template exited at once")?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut tasks = Vec::new();
        for (stream, name) in [
            (child.stdout.take().map(|s| s.into_owned_fd()), "stdout"),
            (child.stderr.take().map(|s| s.into_owned_fd()), "stderr"),
        ] {
            if let Some(Ok(fd)) = stream {
                tasks.push(log_template_output(
                    fd,
                    function.to_owned(),
                    name,
                    tail.clone(),
                )?);
            }
        }
        let ctl = std::os::unix::net::UnixStream::from(ours);
        let ctl = Arc::new(UnixStream::from_std(ctl).map_err(|e| e.to_string())?);
        let ready = tokio::time::timeout(init_timeout, async {
            tokio::select! {
                message = recv(&ctl) => message,
                status = child.wait() => Err(io::Error::other(match status {
                    Ok(status) => format!("it ended ({status})"),
                    Err(e) => e.to_string(),
                })),
            }
        })
        .await;
        let failed = |why: String| {
            kill_group(launcher);
            let lines: Vec<String> = tail.lock().iter().cloned().collect();
            if lines.is_empty() {
                why
            } else {
                format!("{why}; last lines of stderr: {}", lines.join(" | "))
            }
        };
        let message = match ready {
            Err(_) => return Err(failed(format!("not ready within {init_timeout:?}"))),
            Ok(Err(e)) => return Err(failed(format!("the template failed: {e}"))),
            Ok(Ok(message)) => message,
        };
        let Some(ns_pid) = message
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return Err(failed(format!("unexpected first message {message:?}")));
        };
        let zygote = find_in_tree(launcher, ns_pid)
            .ok_or_else(|| failed(format!("its process (pid {ns_pid} inside) was not found")))?;
        let alive = Arc::new(AtomicBool::new(true));
        let waits = Arc::new(Mutex::new(Waits::default()));
        {
            let alive = alive.clone();
            let waits = waits.clone();
            tasks.push(tokio::spawn(async move {
                let _ = child.wait().await;
                alive.store(false, Ordering::Relaxed);
                end_forks(&waits);
            }));
        }
        tasks.push(tokio::spawn(read_messages(
            ctl.clone(),
            alive.clone(),
            waits.clone(),
        )));
        let template = Template {
            netns,
            ctl,
            launcher,
            zygote,
            alive,
            waits,
            forking: tokio::sync::Mutex::new(()),
            last_used: Mutex::new(Instant::now()),
            tasks,
            _jail: jail,
        };
        Ok(template)
    }

    pub(super) fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        *self.last_used.lock() = Instant::now();
    }

    fn stop(&self) {
        self.alive.store(false, Ordering::Relaxed);
        kill_group(self.launcher);
        kill_pid(self.zygote);
    }

    /// The interpreter's resident memory.
    fn resident_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/statm", self.zygote))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * rustix::param::page_size() as u64)
    }

    /// Forks a process for an environment with `env` as its variables (added to what it
    /// inherits unless `clear`), moved into `cgroup` before it runs on.
    pub(super) async fn fork(
        &self,
        env: &[(String, String)],
        clear: bool,
        cgroup: Option<&Cgroup>,
    ) -> io::Result<Forked> {
        let _one = self.forking.lock().await;
        if !self.alive() {
            return Err(io::Error::other("the template ended"));
        }
        self.touch();
        let flags = rustix::pipe::PipeFlags::CLOEXEC;
        let (out_r, out_w) = rustix::pipe::pipe_with(flags)?;
        let (err_r, err_w) = rustix::pipe::pipe_with(flags)?;
        let (go_r, go_w) = rustix::pipe::pipe_with(flags)?;
        let vars: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let request = serde_json::json!({ "env": vars, "clear": clear });
        let request = serde_json::to_vec(&request).map_err(io::Error::other)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.waits.lock().reply = Some(reply_tx);
        let sent = self
            .ctl
            .async_io(Interest::WRITABLE, || {
                let fds = [out_w.as_fd(), err_w.as_fd(), go_r.as_fd()];
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
                rustix::net::sendmsg(
                    &*self.ctl,
                    &[io::IoSlice::new(&request)],
                    &mut control,
                    rustix::net::SendFlags::empty(),
                )
                .map_err(io::Error::from)
            })
            .await;
        drop((out_w, err_w, go_r));
        sent?;
        let reply = tokio::time::timeout(FORK_TIMEOUT, reply_rx).await;
        let ns_pid = match reply {
            Ok(Ok(Reply::Forked(pid))) => pid,
            Ok(Ok(Reply::Failed(why))) => {
                return Err(io::Error::other(format!("the template refused: {why}")));
            }
            Ok(Err(_)) => {
                self.alive.store(false, Ordering::Relaxed);
                return Err(io::Error::other("the template ended"));
            }
            Err(_) => {
                self.stop();
                return Err(io::Error::other(format!(
                    "the template did not fork within {FORK_TIMEOUT:?}"
                )));
            }
        };
        let pid = find_child(self.zygote, ns_pid)
            .ok_or_else(|| io::Error::other("the forked process was not found"))?;
        let (exit_tx, exit_rx) = oneshot::channel();
        self.waits.lock().forks.insert(ns_pid, (pid, exit_tx));
        if let Some(cgroup) = cgroup {
            cgroup.adopt(pid).inspect_err(|_| kill_pid(pid))?;
        }
        rustix::io::write(&go_w, b"g")?;
        drop(go_w);
        let exit = Box::pin(async move {
            exit_rx
                .await
                .unwrap_or_else(|_| "unknown status (its template ended)".to_owned())
        });
        Ok(Forked {
            pid,
            stdout: out_r,
            stderr: err_r,
            exit,
        })
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        self.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads the template's messages while it lives: a fork's exit status goes to its
/// environment, the answer to a fork to the fork in flight.
async fn read_messages(ctl: Arc<UnixStream>, alive: Arc<AtomicBool>, waits: Arc<Mutex<Waits>>) {
    loop {
        let Ok(message) = recv(&ctl).await else {
            alive.store(false, Ordering::Relaxed);
            end_forks(&waits);
            return;
        };
        let mut waits = waits.lock();
        if let Some(rest) = message.strip_prefix("exit ") {
            let (pid, status) = rest.split_once(' ').unwrap_or((rest, "unknown status"));
            if let Some((_, tx)) = pid.parse::<u32>().ok().and_then(|p| waits.forks.remove(&p)) {
                let _ = tx.send(status.to_owned());
            }
            continue;
        }
        let reply = match message.strip_prefix("forked ").map(|p| p.trim().parse()) {
            Some(Ok(pid)) => Reply::Forked(pid),
            Some(Err(_)) => Reply::Failed(format!("bad message {message:?}")),
            None => Reply::Failed(
                message
                    .strip_prefix("failed ")
                    .unwrap_or(&message)
                    .to_owned(),
            ),
        };
        if let Some(tx) = waits.reply.take() {
            let _ = tx.send(reply);
        }
    }
}

/// The template is gone: its forks go too (in a jail they went with its PID namespace),
/// and each environment learns that its process ended.
fn end_forks(waits: &Mutex<Waits>) {
    let mut waits = waits.lock();
    waits.reply = None;
    for (_, (pid, tx)) in waits.forks.drain() {
        kill_group(pid);
        let _ = tx.send("signal: 9 (its template ended)".to_owned());
    }
}

/// One message from the template (at most 64 KiB; its messages are short).
async fn recv(ctl: &UnixStream) -> io::Result<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = ctl
        .async_io(Interest::READABLE, || {
            rustix::net::recv(ctl, &mut buf[..], rustix::net::RecvFlags::empty())
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        })
        .await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the template ended",
        ));
    }
    buf.truncate(n);
    String::from_utf8(buf).map_err(|_| io::Error::other("a message that is not UTF-8"))
}

/// Logs what the template itself writes (the forks have their own streams), keeping its
/// last lines for an error.
fn log_template_output(
    fd: OwnedFd,
    function: String,
    stream: &'static str,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use tokio::io::AsyncBufReadExt;
    let receiver =
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "fnhub::function", function = %function, stream, template = true, "{line}");
            let mut tail = tail.lock();
            if tail.len() == 8 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }))
}

/// The pid, as the host sees it, of the process in the tree under `root` whose pid in its
/// own namespace is `ns_pid`.
fn find_in_tree(root: u32, ns_pid: u32) -> Option<u32> {
    let mut queue = VecDeque::from([root]);
    let mut seen = 0;
    while let Some(pid) = queue.pop_front() {
        seen += 1;
        if seen > 64 {
            return None;
        }
        if pid != root && ns_pid_of(pid) == Some(ns_pid) {
            return Some(pid);
        }
        queue.extend(children(pid));
    }
    None
}

/// The pid, as the host sees it, of `parent`'s child whose pid in its namespace is `ns_pid`.
fn find_child(parent: u32, ns_pid: u32) -> Option<u32> {
    children(parent)
        .into_iter()
        .find(|&pid| ns_pid_of(pid) == Some(ns_pid))
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The innermost pid of `pid` (its `NSpid` line's last field).
fn ns_pid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_python_running_awslambdaric_has_a_template() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let h = args(&["-m", "awslambdaric", "app.handler"]);
        assert_eq!(python_handler("/usr/bin/python3", &h), Some("app.handler"));
        assert_eq!(python_handler("python3.11", &h), Some("app.handler"));
        assert_eq!(python_handler("python", &h), Some("app.handler"));
        assert_eq!(python_handler("/usr/bin/node", &h), None);
        assert_eq!(python_handler("python3-config", &h), None);
        assert_eq!(
            python_handler("python3", &args(&["-m", "awslambdaric"])),
            None
        );
        assert_eq!(
            python_handler("python3", &args(&["-u", "-m", "awslambdaric", "a.b"])),
            None
        );
        assert_eq!(
            python_handler("python3", &args(&["-m", "awslambdaric", "--help"])),
            None
        );
        assert_eq!(python_handler("python3", &args(&["app.py"])), None);
    }

    #[test]
    fn the_own_namespace_pid_is_read_from_proc() {
        let me = std::process::id();
        assert_eq!(ns_pid_of(me), Some(me));
        assert_eq!(ns_pid_of(u32::MAX), None);
    }
}
