//! Processor utilisation, for [`LoadSnapshot::cpu_utilization`](fnhub_core::LoadSnapshot):
//! from the process's control group when it has one of its own (cgroup v2: `cpu.stat`'s
//! `usage_usec` over the time passed and the CPUs `cpu.max` grants), else from the whole
//! machine's `/proc/stat` (busy jiffies over all jiffies). Each reading covers the time since
//! the one before; readings closer than [`CpuMeter::MIN_INTERVAL`] return the last value,
//! so a snapshot taken on every event costs a lock and nothing else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Where the counters come from.
#[derive(Debug, Clone)]
enum Source {
    /// A cgroup v2 folder, and the CPUs it may use.
    Cgroup { folder: PathBuf, cpus: f64 },
    /// The machine's `/proc/stat`.
    Machine(PathBuf),
}

/// Counters at one reading.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    /// Busy time (cgroup: µs; machine: jiffies).
    busy: u64,
    /// Machine only: all jiffies.
    total: u64,
}

/// Measures processor utilisation, 0.0 to 1.0 of what the process may use.
#[derive(Debug)]
pub struct CpuMeter {
    source: Option<Source>,
    state: Mutex<(Option<Reading>, Option<f32>)>,
}

impl CpuMeter {
    /// Readings closer together than this return the previous value.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

    /// The meter of this process: its cgroup's when it has one of its own, else the
    /// machine's; one that measures nothing where neither can be read.
    pub fn detect() -> CpuMeter {
        let source = own_cgroup().or_else(|| {
            let stat = PathBuf::from("/proc/stat");
            stat.exists().then_some(Source::Machine(stat))
        });
        CpuMeter {
            source,
            state: Mutex::new((None, None)),
        }
    }

    /// A meter reading a `/proc/stat`-format file at `path` (for tests and odd systems).
    pub fn from_proc_stat(path: impl Into<PathBuf>) -> CpuMeter {
        CpuMeter {
            source: Some(Source::Machine(path.into())),
            state: Mutex::new((None, None)),
        }
    }

    /// Whether it reads a control group (else the machine, or nothing).
    pub fn is_cgroup(&self) -> bool {
        matches!(self.source, Some(Source::Cgroup { .. }))
    }

    /// Utilisation since the previous reading (`None` until two readings exist, or when
    /// nothing can be read).
    pub fn utilisation(&self) -> Option<f32> {
        let source = self.source.as_ref()?;
        let mut state = self.state.lock();
        let now = Instant::now();
        if let Some(prev) = state.0
            && now.duration_since(prev.at) < Self::MIN_INTERVAL
        {
            return state.1;
        }
        let reading = read(source, now)?;
        if let Some(prev) = state.0 {
            state.1 = utilisation(source, prev, reading);
        }
        state.0 = Some(reading);
        state.1
    }
}

/// The cgroup v2 folder of this process, when it is not the root.
fn own_cgroup() -> Option<Source> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    if path == "/" || path.is_empty() {
        return None;
    }
    let folder = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    if !folder.join("cpu.stat").exists() {
        return None;
    }
    let all = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let cpus = std::fs::read_to_string(folder.join("cpu.max"))
        .ok()
        .and_then(|m| cpu_max(&m))
        .map_or(all, |c| c.min(all));
    Some(Source::Cgroup { folder, cpus })
}

/// The CPUs a `cpu.max` line grants (`quota period`), or `None` for `max`.
fn cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0 && quota > 0.0).then(|| quota / period)
}

fn read(source: &Source, at: Instant) -> Option<Reading> {
    match source {
        Source::Cgroup { folder, .. } => {
            let text = std::fs::read_to_string(folder.join("cpu.stat")).ok()?;
            let busy = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            Some(Reading { at, busy, total: 0 })
        }
        Source::Machine(path) => {
            let text = std::fs::read_to_string(path).ok()?;
            let (busy, total) = proc_stat(&text)?;
            Some(Reading { at, busy, total })
        }
    }
}

/// Busy and total jiffies from the `cpu` line of `/proc/stat` (idle and iowait are not
/// busy).
fn proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is
    // already in user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn utilisation(source: &Source, prev: Reading, now: Reading) -> Option<f32> {
    let busy = now.busy.checked_sub(prev.busy)? as f64;
    let whole = match source {
        Source::Cgroup { cpus, .. } => now.at.duration_since(prev.at).as_micros() as f64 * cpus,
        Source::Machine(_) => now.total.checked_sub(prev.total)? as f64,
    };
    (whole > 0.0).then(|| (busy / whole).clamp(0.0, 1.0) as f32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proc_stat_counts_busy_jiffies() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n";
        assert_eq!(proc_stat(text), Some((160, 1000)));
        assert_eq!(proc_stat("cpu  x y\n"), None);
        assert_eq!(proc_stat("intr 5\n"), None);
        assert_eq!(proc_stat("cpu  1 2\n"), None);
    }

    #[test]
    fn cpu_max_grants_a_share() {
        assert_eq!(cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(cpu_max("max 100000\n"), None);
        assert_eq!(cpu_max(""), None);
    }

    #[test]
    fn a_meter_reads_the_change_between_readings() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        std::fs::write(&stat, "cpu  100 0 100 800 0 0 0 0 0 0\n").unwrap();
        let meter = CpuMeter::from_proc_stat(&stat);
        assert_eq!(meter.utilisation(), None, "one reading says nothing yet");
        // Within the minimum interval: the last value, without reading.
        std::fs::write(&stat, "cpu  400 0 100 900 0 0 0 0 0 0\n").unwrap();
        assert_eq!(meter.utilisation(), None);
        std::thread::sleep(CpuMeter::MIN_INTERVAL);
        // 300 busy of 400 jiffies since the first reading.
        assert_eq!(meter.utilisation(), Some(0.75));
        // Counters that went backwards (a reset) say nothing new.
        std::thread::sleep(CpuMeter::MIN_INTERVAL);
        std::fs::write(&stat, "cpu  1 0 1 1 0 0 0 0 0 0\n").unwrap();
        assert_eq!(meter.utilisation(), None);
    }
}
