//! The jail every process function runs in: namespaces, a minimal root, an unprivileged
//! identity, a control group and a syscall filter.
//!
//! Built on [bubblewrap](https://github.com/containers/bubblewrap) (`bwrap`), which sets up
//! the namespaces and the root, with a small `sh` launcher in front of it that puts itself
//! in the environment's control group and sets the resource limits before anything of the
//! function exists, so that every process it ever starts is counted. The chain is
//!
//! ```text
//! sh (root: joins the cgroup, ulimits) → bwrap (PID/mount/IPC/UTS namespaces, root,
//! seccomp) → setpriv (unprivileged uid/gid, no capabilities) → the function
//! ```
//!
//! Nothing here needs code run between `fork` and `exec` in the hub.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fnhub_core::Restriction;

use super::cgroup::Cgroup;

/// The system folders every jail sees, read-only (missing ones skipped).
const SYSTEM_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"];

/// The files and folders of `/etc` a runtime needs (name resolution, certificates, time
/// zones, the dynamic linker's cache), read-only; nothing else of `/etc` is visible.
const ETC: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
];

/// The devices a function gets; `/dev` holds nothing else.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// The launcher: joins the control groups named in its arguments, sets the limits baked
/// into it, then runs bwrap with the syscall filter on descriptor 9. It stays as bwrap's
/// parent, so that killing its process group kills bwrap, whose `--die-with-parent` takes
/// the whole PID namespace with it.
const LAUNCHER: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 126; shift; n=$((n - 1)); done
f=$1; shift
"$@" 9< "$f"
"#;

/// Whose uid and gid a jailed function runs under when the hub is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Identity {
    /// A uid and gid of its own for each function, derived from its name:
    /// `FUNCTION_UID_BASE + hash(name) % FUNCTION_UID_SPAN`, the same on every start, so
    /// files it writes in a writable grant stay its own. Two functions' ids collide with
    /// odds of about one in a million per pair.
    #[default]
    PerFunction,
    /// This uid and gid for every function.
    Fixed {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
}

/// The first uid (and gid) [`Identity::PerFunction`] hands out.
pub const FUNCTION_UID_BASE: u32 = 1_900_000_000;
/// How many uids [`Identity::PerFunction`] hands out.
pub const FUNCTION_UID_SPAN: u32 = 100_000_000;

impl Identity {
    /// The uid and gid for `function`.
    pub fn ids(&self, function: &str) -> (u32, u32) {
        match *self {
            Identity::PerFunction => {
                // FNV-1a: stable across builds and hosts, unlike the std hasher.
                let hash = function.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                let id = FUNCTION_UID_BASE + (hash % u64::from(FUNCTION_UID_SPAN)) as u32;
                (id, id)
            }
            Identity::Fixed { uid, gid } => (uid, gid),
        }
    }
}

/// The programs a jail needs, found once: `bwrap`, `setpriv` and `sh`.
#[derive(Debug)]
pub(crate) struct Tools {
    bwrap: PathBuf,
    setpriv: Option<PathBuf>,
    sh: PathBuf,
    /// The compiled syscall filter, in a memory file the launcher reads by path.
    filter: PathBuf,
    _filter_fd: OwnedFd,
}

/// The tools, or why there are none.
pub(crate) fn tools() -> Result<&'static Tools, &'static str> {
    static FOUND: OnceLock<Result<Tools, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = std::env::var_os("PATH")
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
            let find = |name: &str| super::spawn::resolve_program(name, Some(&path));
            let bwrap = find("bwrap").ok_or_else(|| {
                "bubblewrap (`bwrap`) is not installed (Debian/Ubuntu: apt install bubblewrap)"
                    .to_owned()
            })?;
            let sh = find("sh").ok_or_else(|| "no `sh` on PATH".to_owned())?;
            let setpriv = if rustix::process::geteuid().is_root() {
                Some(find("setpriv").ok_or_else(|| {
                    "`setpriv` (util-linux) is not installed; it drops the function to its own uid"
                        .to_owned()
                })?)
            } else {
                None
            };
            let (filter_fd, filter) =
                filter_file().map_err(|e| format!("the syscall filter: {e}"))?;
            Ok(Tools {
                bwrap,
                setpriv,
                sh,
                filter,
                _filter_fd: filter_fd,
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Writes the compiled filter into a memory file and names it by its `/proc` path.
fn filter_file() -> std::io::Result<(OwnedFd, PathBuf)> {
    let bytes = super::seccomp::program_bytes()?;
    let fd = rustix::fs::memfd_create("fnhub-seccomp", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes)?;
    let fd = OwnedFd::from(file);
    let path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ));
    Ok((fd, path))
}

/// What one environment's jail looks like; the same for every process it starts.
#[derive(Debug)]
pub(crate) struct Jail {
    pub(crate) tools: &'static Tools,
    /// Folders bound at their own path: `(path, writable)`. `None`: the whole host root.
    pub(crate) binds: Option<Vec<(PathBuf, bool)>>,
    pub(crate) workdir: PathBuf,
    /// The uid and gid to drop to (the hub is root), or `None` to keep the hub's.
    pub(crate) ids: Option<(u32, u32)>,
    /// Bytes of the private `/tmp`.
    pub(crate) tmp_bytes: u64,
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    /// `ulimit` lines for the launcher.
    pub(crate) ulimits: Vec<(char, u64)>,
}

impl Jail {
    /// The launcher's program, its script and arguments, ending with `program` and `args`.
    pub(crate) fn command(
        &self,
        program: &OsString,
        args: &[OsString],
    ) -> (PathBuf, Vec<OsString>) {
        let mut script = String::new();
        for (flag, value) in &self.ulimits {
            script.push_str(&format!("ulimit -{flag} {value} || exit 126\n"));
        }
        script.push_str(LAUNCHER);
        let mut out: Vec<OsString> = vec!["-c".into(), script.into(), "fnhub-jail".into()];
        let dirs = self.cgroup.as_ref().map(|c| c.dirs()).unwrap_or_default();
        out.push(dirs.len().to_string().into());
        out.extend(dirs.iter().map(|d| d.clone().into_os_string()));
        out.push(self.tools.filter.clone().into_os_string());
        out.push(self.tools.bwrap.clone().into_os_string());
        out.extend(self.bwrap_args());
        out.push("--".into());
        if let (Some((uid, gid)), Some(setpriv)) = (self.ids, &self.tools.setpriv) {
            out.push(setpriv.clone().into_os_string());
            for arg in [
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--bounding-set=-all".into(),
                "--inh-caps=-all".into(),
                "--".into(),
            ] {
                out.push(arg.into());
            }
        }
        out.push(program.clone());
        out.extend(args.iter().cloned());
        (self.tools.sh.clone(), out)
    }

    fn bwrap_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        fn push(a: &mut Vec<OsString>, items: &[&str]) {
            a.extend(items.iter().map(OsString::from));
        }
        push(
            &mut a,
            &[
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--new-session",
                "--die-with-parent",
                "--hostname",
                "fnhub",
                "--seccomp",
                "9",
                "--cap-drop",
                "ALL",
            ],
        );
        if self.tools.setpriv.is_some() && self.ids.is_some() {
            // Only for setpriv to drop to the function's ids and empty the bounding set.
            push(
                &mut a,
                &[
                    "--cap-add",
                    "CAP_SETUID",
                    "--cap-add",
                    "CAP_SETGID",
                    "--cap-add",
                    "CAP_SETPCAP",
                ],
            );
        }
        if !rustix::process::geteuid().is_root() {
            push(&mut a, &["--unshare-user", "--disable-userns"]);
        }
        match &self.binds {
            None => push(&mut a, &["--bind", "/", "/"]),
            Some(binds) => {
                // A private /tmp first, so a grant below the host's /tmp shows through it.
                a.extend(
                    [
                        "--perms".into(),
                        "1777".into(),
                        "--size".into(),
                        self.tmp_bytes.to_string(),
                        "--tmpfs".into(),
                        "/tmp".into(),
                    ]
                    .map(OsString::from),
                );
                // Made first, searchable: bwrap would give it the first bound file's mode.
                push(&mut a, &["--perms", "0755", "--dir", "/etc"]);
                for dir in SYSTEM_DIRS.iter().chain(ETC) {
                    push(&mut a, &["--ro-bind-try", dir, dir]);
                }
                let mut binds = binds.clone();
                // Parents before children, so a writable grant inside a read-only folder
                // is mounted over it and not hidden by it.
                binds.sort_by_key(|(p, _)| p.components().count());
                binds.dedup_by(|a, b| a.0 == b.0 && !a.1);
                // bwrap makes a bound folder's missing parents with the modes of the
                // host's (a 0700 /root hides a /root/.pyenv bound below it): parents that
                // are not inside something bound are made searchable first.
                let mut bound: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
                let mut made: Vec<PathBuf> = Vec::new();
                for (path, writable) in binds {
                    let parents: Vec<&Path> = path.ancestors().skip(1).collect();
                    for parent in parents.into_iter().rev() {
                        let inside = |b: &PathBuf| parent.starts_with(b);
                        if parent == Path::new("/")
                            || bound.iter().any(inside)
                            || made.iter().any(|m| m == parent)
                        {
                            continue;
                        }
                        a.extend(["--perms", "0755", "--dir"].map(OsString::from));
                        a.push(parent.as_os_str().to_owned());
                        made.push(parent.to_path_buf());
                    }
                    bound.push(path.clone());
                    a.push(if writable { "--bind" } else { "--ro-bind" }.into());
                    a.push(path.clone().into_os_string());
                    a.push(path.into_os_string());
                }
            }
        }
        a.extend(["--proc", "/proc", "--tmpfs", "/dev"].map(OsString::from));
        for dev in DEVICES {
            let path = format!("/dev/{dev}");
            a.extend(["--dev-bind".into(), path.clone().into(), path.into()]);
        }
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            a.extend(["--symlink", target, link].map(OsString::from));
        }
        a.push("--chdir".into());
        a.push(self.workdir.clone().into_os_string());
        a
    }
}

/// The jail for `spec`'s environment: its control group made, its identity chosen, and
/// what it enforces added to `enforced` (what it cannot, to `missing`). Refuses a function
/// whose uid could not read its own code or write its writable grants.
pub(crate) fn build(
    config: &super::Config,
    spec: &fnhub_core::FunctionSpec,
    tools: &'static Tools,
    workdir: PathBuf,
    binds: Option<Vec<(PathBuf, bool)>>,
    enforced: &mut Vec<Restriction>,
    missing: &mut Vec<Restriction>,
) -> Result<Jail, fnhub_core::PrepareError> {
    let memory_bytes = u64::from(spec.resources.memory_mb.max(1)) * 1024 * 1024;
    // Dropping to a uid of its own only when the files it sees are confined too: a
    // function granted the whole filesystem keeps the hub's uid, without capabilities.
    let ids = (tools.setpriv.is_some() && binds.is_some())
        .then(|| config.identity.ids(spec.name.as_str()));
    if let (Some(ids), Some(binds)) = (ids, &binds) {
        for (path, writable) in binds {
            if let Some(problem) = access_problem(path, ids, *writable) {
                return Err(super::start_error(format!(
                    "function {}: {problem}",
                    spec.name
                )));
            }
        }
    }
    enforced.push(Restriction::Identity);
    let cgroup = if super::cgroup::available() {
        let group = Cgroup::create(
            config.limits.memory.then_some(memory_bytes),
            config.limits.processes,
        )
        .map_err(|e| super::start_error(format!("making the function's control group: {e}")))?;
        enforced.push(Restriction::Processes);
        Some(Arc::new(group))
    } else {
        missing.push(Restriction::Processes);
        None
    };
    let mut ulimits = vec![];
    if config.limits.memory {
        ulimits.push(('d', memory_bytes / 1024));
    }
    if let Some(n) = config.limits.open_files {
        ulimits.push(('n', n));
    }
    if let Some(n) = config.limits.processes {
        ulimits.push(('p', n));
    }
    if let Some(n) = config.limits.cpu_seconds {
        ulimits.push(('t', n));
    }
    Ok(Jail {
        tools,
        binds,
        workdir,
        ids,
        tmp_bytes: memory_bytes,
        cgroup,
        ulimits,
    })
}

/// Why the function's uid cannot use `path` as it must, if it cannot: read (and enter) it,
/// or also write it. Judged from the mode bits (ACLs are not read).
pub(crate) fn access_problem(path: &Path, (uid, gid): (u32, u32), write: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode();
    let shift = if meta.uid() == uid {
        6
    } else if meta.gid() == gid {
        3
    } else {
        0
    };
    let bits = (mode >> shift) & 0o7;
    let need = if meta.is_dir() { 0o5 } else { 0o4 } | if write { 0o2 } else { 0 };
    (bits & need != need).then(|| {
        format!(
            "the function runs as uid {uid}, which cannot {} {} (mode {:o}, owner {}): \
             make it {} by that uid (chown {uid} or chmod o+{})",
            if write { "write" } else { "read" },
            path.display(),
            mode & 0o7777,
            meta.uid(),
            if write { "writable" } else { "readable" },
            if write {
                "rwx"
            } else if meta.is_dir() {
                "rx"
            } else {
                "r"
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_function_ids_are_stable_and_in_range() {
        let (a, ga) = Identity::PerFunction.ids("orders");
        assert_eq!((a, ga), Identity::PerFunction.ids("orders"));
        assert_eq!(a, ga);
        assert!((FUNCTION_UID_BASE..FUNCTION_UID_BASE + FUNCTION_UID_SPAN).contains(&a));
        assert_ne!(a, Identity::PerFunction.ids("orders2").0);
        assert_eq!(Identity::Fixed { uid: 7, gid: 8 }.ids("x"), (7, 8));
    }

    #[test]
    fn access_is_judged_from_owner_group_and_other_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let stranger = (me.0.wrapping_add(12_345), me.1.wrapping_add(12_345));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(access_problem(path, me, true).is_none());
        let problem = access_problem(path, stranger, false).unwrap();
        assert!(
            problem.contains("cannot read") && problem.contains("mode 700"),
            "{problem}"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(access_problem(path, stranger, false).is_none());
        assert!(
            access_problem(path, stranger, true)
                .unwrap()
                .contains("cannot write")
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(access_problem(path, stranger, true).is_none());
    }
}
