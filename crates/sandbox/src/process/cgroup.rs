//! One control group per environment: its memory and process count cover every process the
//! function starts, and killing it leaves nothing behind.
//!
//! cgroup v2 (one unified hierarchy) and v1 (the `memory` and `pids` controllers mounted
//! apart, as on hybrid hosts) are both handled. Groups are made under the hub's own group,
//! named `fnhub-<hub pid>-<n>`; groups left by a hub that was killed are emptied and removed
//! the first time a hub on the same host makes one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";
const PREFIX: &str = "fnhub-";

/// Where this hub may make groups.
#[derive(Debug)]
enum Hierarchy {
    /// One unified hierarchy: groups under `base`, where `memory` and `pids` are enabled.
    V2 { base: PathBuf },
    /// Controllers mounted apart: groups under the hub's own group of each.
    V1 { memory: PathBuf, pids: PathBuf },
}

/// A control group holding one environment's processes.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// One folder on v2; the `memory` folder, then the `pids` folder, on v1.
    dirs: Vec<PathBuf>,
    v2: bool,
}

/// The hierarchy, found once. `None` when this hub cannot make groups (not root, or the
/// controllers are missing); the reason is logged once.
fn hierarchy() -> Option<&'static Hierarchy> {
    static FOUND: OnceLock<Option<Hierarchy>> = OnceLock::new();
    FOUND
        .get_or_init(|| match find() {
            Ok(h) => {
                remove_stale(&h);
                Some(h)
            }
            Err(reason) => {
                tracing::warn!(%reason, "functions get no control group: memory and process counts are per process only");
                None
            }
        })
        .as_ref()
}

/// Whether groups can be made here.
pub(crate) fn available() -> bool {
    hierarchy().is_some()
}

fn own_path(controller: &str, cgroups: &str) -> Option<String> {
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        names
            .split(',')
            .any(|n| n == controller)
            .then(|| path.trim_start_matches('/').to_owned())
    })
}

fn find() -> Result<Hierarchy, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the hub does not run as root".into());
    }
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        let own = own_path("", &cgroups).unwrap_or_default();
        let base = root.join(&own);
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).map_err(|e| e.to_string())?;
        for needed in ["memory", "pids"] {
            if !controllers.split_whitespace().any(|c| c == needed) {
                return Err(format!("cgroup v2 has no {needed} controller"));
            }
        }
        // A group with processes cannot hand controllers to its children: the hub moves
        // into a leaf of its own first (as systemd's delegation asks).
        if !own.is_empty() {
            let leaf = base.join("fnhub.hub");
            make_dir(&leaf)?;
            std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
                .map_err(|e| format!("moving the hub into {}: {e}", leaf.display()))?;
        }
        std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids")
            .map_err(|e| format!("enabling memory and pids under {}: {e}", base.display()))?;
        return Ok(Hierarchy::V2 { base });
    }
    let dir = |controller: &str| -> Result<PathBuf, String> {
        let own = own_path(controller, &cgroups)
            .ok_or_else(|| format!("no {controller} controller in /proc/self/cgroup"))?;
        let dir = root.join(controller).join(own);
        if !dir.join("cgroup.procs").exists() {
            return Err(format!("{} is not a {controller} cgroup", dir.display()));
        }
        Ok(dir)
    };
    Ok(Hierarchy::V1 {
        memory: dir("memory")?,
        pids: dir("pids")?,
    })
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("making {}: {e}", dir.display())),
    }
}

/// Empties and removes the groups of hubs that are gone.
fn remove_stale(h: &Hierarchy) {
    let parents: Vec<&Path> = match h {
        Hierarchy::V2 { base } => vec![base],
        Hierarchy::V1 { memory, pids } => vec![memory, pids],
    };
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
                continue;
            }
            let dir = entry.path();
            kill_members(
                std::slice::from_ref(&dir),
                matches!(h, Hierarchy::V2 { .. }),
            );
            remove_soon(vec![dir]);
        }
    }
}

impl Cgroup {
    /// Makes a group capped at `memory_bytes` (no swap beyond it) and `pids` processes.
    pub(crate) fn create(memory_bytes: Option<u64>, pids: Option<u64>) -> io::Result<Cgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let h = hierarchy().ok_or_else(|| io::Error::other("control groups are not available"))?;
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let group = match h {
            Hierarchy::V2 { base } => Cgroup {
                dirs: vec![base.join(&name)],
                v2: true,
            },
            Hierarchy::V1 { memory, pids } => Cgroup {
                dirs: vec![memory.join(&name), pids.join(&name)],
                v2: false,
            },
        };
        for dir in &group.dirs {
            std::fs::create_dir(dir)?;
        }
        let memory_dir = &group.dirs[0];
        let pids_dir = group.dirs.last().unwrap_or(memory_dir);
        if let Some(bytes) = memory_bytes {
            if group.v2 {
                std::fs::write(memory_dir.join("memory.max"), bytes.to_string())?;
                write_if_present(&memory_dir.join("memory.swap.max"), "0")?;
            } else {
                std::fs::write(memory_dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                write_if_present(
                    &memory_dir.join("memory.memsw.limit_in_bytes"),
                    &bytes.to_string(),
                )?;
            }
        }
        if let Some(n) = pids {
            std::fs::write(pids_dir.join("pids.max"), n.to_string())?;
        }
        Ok(group)
    }

    /// The folders a process joins by writing its pid to `cgroup.procs` in each.
    /// Moves the process `pid` (as the host sees it) into this group.
    pub(crate) fn adopt(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Kills every process in the group.
    pub(crate) fn kill(&self) {
        kill_members(&self.dirs, self.v2);
    }

    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many times the kernel's OOM killer has killed a process of this group.
    pub(crate) fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(self.dirs[0].join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (k, v) = line.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }
}

fn write_if_present(file: &Path, value: &str) -> io::Result<()> {
    if file.exists() {
        std::fs::write(file, value)?;
    }
    Ok(())
}

fn members(dirs: &[PathBuf]) -> Vec<u32> {
    let mut pids: Vec<u32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kills every process in the group: `cgroup.kill` on v2; on v1, SIGKILL to each member,
/// again until none is left (a member may fork while it is being read).
fn kill_members(dirs: &[PathBuf], v2: bool) {
    if v2 && std::fs::write(dirs[0].join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..16 {
        let pids = members(dirs);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            super::env::kill_pid(pid);
        }
    }
}

/// Removes emptied groups once their last processes have been reaped, on a thread of its
/// own: a group cannot be removed while a dying process is still in it.
fn remove_soon(dirs: Vec<PathBuf>) {
    let remove = move || {
        for _ in 0..100 {
            if dirs
                .iter()
                .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(groups = ?dirs, "control groups still busy two seconds after their processes were killed");
    };
    if std::thread::Builder::new()
        .name("fnhub-cgroup".into())
        .spawn(remove)
        .is_err()
    {
        tracing::warn!("no thread to remove control groups");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        kill_members(&self.dirs, self.v2);
        remove_soon(std::mem::take(&mut self.dirs));
    }
}

#[cfg(test)]
mod tests {
    use super::own_path;

    #[test]
    fn finds_the_hubs_own_group_per_controller() {
        let v1 = "9:name=systemd:/\n8:pids:/a\n4:memory:/process_api/x\n2:cpu,cpuacct:/c\n0::/\n";
        assert_eq!(own_path("pids", v1).as_deref(), Some("a"));
        assert_eq!(own_path("memory", v1).as_deref(), Some("process_api/x"));
        assert_eq!(own_path("cpuacct", v1).as_deref(), Some("c"));
        assert_eq!(own_path("", v1).as_deref(), Some(""));
        assert_eq!(
            own_path("", "0::/user.slice/hub\n").as_deref(),
            Some("user.slice/hub")
        );
        assert_eq!(own_path("blkio", v1), None);
        assert_eq!(own_path("memory", "garbage"), None);
    }
}
