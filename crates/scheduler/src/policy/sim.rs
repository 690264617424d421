//! Replays invocation traces in the format of the Azure Functions 2019 public dataset
//! through a simulated pool, one policy at a time, on simulated time.
//!
//! The model is the one of "Serverless in the Wild": one environment per function, minute
//! granularity. A function goes idle at the end of each minute with invocations; the policy
//! then gives its [`Windows`]. The first invocation of the next busy minute is a cold start
//! unless the idle time falls inside the windows (the minute's other invocations reuse the
//! environment). Memory is wasted while the environment is loaded and idle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ReservationPolicy, Windows};

/// A trace file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A header lacks a column the format requires.
    #[error("{file}: header lacks column {column:?}")]
    MissingColumn {
        /// Which file (`inv`, `run` or `mem`).
        file: &'static str,
        /// The column.
        column: &'static str,
    },
    /// A row is malformed.
    #[error("{file}, line {line}: {reason}")]
    Row {
        /// Which file (`inv`, `run` or `mem`).
        file: &'static str,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The invocation file has no functions.
    #[error("the trace has no functions")]
    Empty,
}

/// One function of a trace.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TraceFunction {
    /// The function's hash.
    pub id: String,
    /// Invocations in each minute.
    pub per_minute: Vec<u32>,
    /// Mean run time.
    pub mean_run: Duration,
    /// Memory of its environment, in MB.
    pub memory_mb: f64,
}

/// A trace: functions with per-minute invocation counts, run times and memory.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Trace {
    /// The functions.
    pub functions: Vec<TraceFunction>,
    /// Minutes covered.
    pub minutes: usize,
    /// Functions whose run time or memory was missing and got the default (1 s, 128 MB).
    pub defaulted: usize,
}

const DEFAULT_RUN: Duration = Duration::from_secs(1);
const DEFAULT_MEMORY_MB: f64 = 128.0;

fn column(header: &[&str], file: &'static str, name: &'static str) -> Result<usize, TraceError> {
    header
        .iter()
        .position(|h| h.trim() == name)
        .ok_or(TraceError::MissingColumn { file, column: name })
}

fn rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r').split(',').collect()))
}

fn field<'a>(
    row: &[&'a str],
    at: usize,
    file: &'static str,
    line: usize,
) -> Result<&'a str, TraceError> {
    row.get(at)
        .map(|s| s.trim())
        .ok_or_else(|| TraceError::Row {
            file,
            line,
            reason: format!("has {} fields, needs at least {}", row.len(), at + 1),
        })
}

/// Reads the non-negative number in column `value`, keyed by column `key`, from each row.
fn numeric_column(
    text: &str,
    file: &'static str,
    key: &'static str,
    value: &'static str,
) -> Result<HashMap<String, f64>, TraceError> {
    let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let (k, v) = (column(&header, file, key)?, column(&header, file, value)?);
    let mut out = HashMap::new();
    for (line, row) in rows(text) {
        let bad = |what: &str| TraceError::Row {
            file,
            line,
            reason: format!("{value} {what}"),
        };
        let n: f64 = field(&row, v, file, line)?
            .parse()
            .map_err(|_| bad("is not a number"))?;
        if !(n.is_finite() && n >= 0.0) {
            return Err(bad("is negative or not finite"));
        }
        out.insert(field(&row, k, file, line)?.to_owned(), n);
    }
    Ok(out)
}

impl Trace {
    /// Reads `*_inv.csv` and, when present beside it, the matching `*_run.csv` (durations)
    /// and `*_mem.csv` (memory); functions missing from those get 1 s and 128 MB.
    pub fn load(inv: &Path) -> Result<Trace, TraceError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TraceError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let inv_text = read(inv)?;
        let sibling = |suffix: &str| {
            let name = inv.file_name()?.to_str()?;
            let stem = name.strip_suffix("_inv.csv")?;
            let path = inv.with_file_name(format!("{stem}_{suffix}.csv"));
            path.exists().then_some(path)
        };
        let run = sibling("run").map(|p| read(&p)).transpose()?;
        let mem = sibling("mem").map(|p| read(&p)).transpose()?;
        Trace::parse(&inv_text, run.as_deref(), mem.as_deref())
    }

    /// Parses the three files' text.
    pub fn parse(inv: &str, run: Option<&str>, mem: Option<&str>) -> Result<Trace, TraceError> {
        let header: Vec<&str> = inv.lines().next().unwrap_or("").split(',').collect();
        let f_col = column(&header, "inv", "HashFunction")?;
        let a_col = column(&header, "inv", "HashApp")?;
        let first_minute = column(&header, "inv", "minute_1")?;
        let minutes = header.len() - first_minute;

        let runs = match run {
            Some(text) => numeric_column(text, "run", "HashFunction", "Average")?,
            None => HashMap::new(),
        };
        let mems = match mem {
            Some(text) => numeric_column(text, "mem", "HashApp", "AverageAllocatedMb")?,
            None => HashMap::new(),
        };

        let mut functions = Vec::new();
        let mut defaulted = 0;
        for (line, row) in rows(inv) {
            if row.len() != header.len() {
                return Err(TraceError::Row {
                    file: "inv",
                    line,
                    reason: format!("has {} fields; the header has {}", row.len(), header.len()),
                });
            }
            let per_minute = row[first_minute..]
                .iter()
                .map(|c| c.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| TraceError::Row {
                    file: "inv",
                    line,
                    reason: "a minute count is not a non-negative integer".to_owned(),
                })?;
            let id = field(&row, f_col, "inv", line)?.to_owned();
            let app = field(&row, a_col, "inv", line)?;
            let run = runs.get(&id).map(|ms| Duration::from_secs_f64(ms / 1000.0));
            let mem = mems.get(app).copied();
            if run.is_none() || mem.is_none() {
                defaulted += 1;
            }
            functions.push(TraceFunction {
                id,
                per_minute,
                mean_run: run.unwrap_or(DEFAULT_RUN),
                memory_mb: mem.unwrap_or(DEFAULT_MEMORY_MB),
            });
        }
        if functions.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(Trace {
            functions,
            minutes,
            defaulted,
        })
    }
}

/// What one policy did over a trace.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SimReport {
    /// The policy.
    pub policy: &'static str,
    /// Invocations replayed.
    pub invocations: u64,
    /// Of those, cold starts.
    pub cold_starts: u64,
    /// Cold starts as a percentage of invocations.
    pub cold_start_pct: f64,
    /// The 75th percentile, over functions, of each function's cold-start percentage.
    pub cold_start_pct_p75_function: f64,
    /// Memory held by loaded, idle environments, in GB-minutes.
    pub wasted_gb_minutes: f64,
    /// Mean wall time the policy spent per invocation (its `record` and `decide` calls for
    /// each busy minute, divided by the invocations), in nanoseconds. Measured, so noisy.
    pub decision_ns: f64,
    /// Cold-start percentage in each hour of the day (minutes 0–59 are hour 0).
    pub cold_start_pct_by_hour: Vec<f64>,
    /// Per function, in trace order: (invocations, cold starts, wasted GB-minutes).
    pub per_function: Vec<(u64, u64, f64)>,
}

/// Replays `trace` under `policy`.
pub fn simulate(trace: &Trace, policy: &mut dyn ReservationPolicy) -> SimReport {
    const MINUTE: Duration = Duration::from_secs(60);
    // Trace time starts anywhere; the clock also times the policy's own work.
    let clock = fnhub_core::SystemClock;
    let base = fnhub_core::Clock::now(&clock);
    let hours = trace.minutes.div_ceil(60).max(1);
    let (mut cold_by_hour, mut inv_by_hour) = (vec![0u64; hours], vec![0u64; hours]);
    let (mut invocations, mut cold_starts) = (0u64, 0u64);
    let mut wasted_mb_minutes = 0.0;
    let mut per_function_pct = Vec::with_capacity(trace.functions.len());
    let mut per_function = Vec::with_capacity(trace.functions.len());
    let mut policy_time = Duration::ZERO;

    for (index, f) in trace.functions.iter().enumerate() {
        let (mut f_inv, mut f_cold) = (0u64, 0u64);
        let wasted_before = wasted_mb_minutes;
        let mut last: Option<(usize, Windows)> = None; // (minute it went idle, windows)
        for (minute, &count) in f.per_minute.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let idle = last.map(|(since, _)| MINUTE * (minute - since) as u32);
            let warm = match (last, idle) {
                (Some((_, w)), Some(idle)) => w.is_warm_after(idle),
                _ => false,
            };
            if let (Some((_, w)), Some(_)) = (last, idle) {
                wasted_mb_minutes += w.idle_loaded(idle).as_secs_f64() / 60.0 * f.memory_mb;
            }
            let cold = u64::from(!warm);
            f_inv += u64::from(count);
            f_cold += cold;
            inv_by_hour[minute / 60] += u64::from(count);
            cold_by_hour[minute / 60] += cold;

            let started = fnhub_core::Clock::now(&clock);
            let now = base + MINUTE * minute as u32;
            policy.record(index, now, count, f.mean_run, idle);
            let windows = policy.decide(index, now + MINUTE);
            policy_time += fnhub_core::Clock::now(&clock).saturating_duration_since(started);
            last = Some((minute + 1, windows));
        }
        if let Some((since, w)) = last {
            let rest = MINUTE * (trace.minutes.saturating_sub(since)) as u32;
            wasted_mb_minutes += w.idle_loaded(Some(rest)).as_secs_f64() / 60.0 * f.memory_mb;
        }
        if f_inv > 0 {
            per_function_pct.push(100.0 * f_cold as f64 / f_inv as f64);
        }
        per_function.push((f_inv, f_cold, (wasted_mb_minutes - wasted_before) / 1024.0));
        invocations += f_inv;
        cold_starts += f_cold;
    }
    per_function_pct.sort_by(f64::total_cmp);
    let p75 = if per_function_pct.is_empty() {
        0.0
    } else {
        let rank = (0.75 * per_function_pct.len() as f64).ceil() as usize;
        per_function_pct[rank.clamp(1, per_function_pct.len()) - 1]
    };
    let pct = |c: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            100.0 * c as f64 / n as f64
        }
    };
    SimReport {
        policy: policy.name(),
        invocations,
        cold_starts,
        cold_start_pct: pct(cold_starts, invocations),
        cold_start_pct_p75_function: p75,
        wasted_gb_minutes: wasted_mb_minutes / 1024.0,
        decision_ns: if invocations == 0 {
            0.0
        } else {
            policy_time.as_nanos() as f64 / invocations as f64
        },
        cold_start_pct_by_hour: cold_by_hour
            .iter()
            .zip(&inv_by_hour)
            .map(|(&c, &n)| pct(c, n))
            .collect(),
        per_function,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DemandForecast, FixedKeepAlive, HybridHistogram};

    /// A header and `functions` rows of `minutes` minutes, built from a closure.
    fn inv(minutes: usize, rows: &[(&str, &dyn Fn(usize) -> u32)]) -> String {
        let mut s = String::from("HashFunction,HashApp,HashOwner");
        for m in 1..=minutes {
            s.push_str(&format!(",minute_{m}"));
        }
        for (id, count) in rows {
            s.push_str(&format!("\n{id},app-{id},owner"));
            for m in 0..minutes {
                s.push_str(&format!(",{}", count(m)));
            }
        }
        s
    }

    #[test]
    fn parses_and_rejects_garbage() {
        let text = inv(3, &[("f", &|m| m as u32)]);
        let run = "HashFunction,HashApp,HashOwner,Count,Average\nf,app-f,o,3,250";
        let mem = "HashApp,HashOwner,SampleCount,AverageAllocatedMb\napp-f,o,1,256";
        let t = Trace::parse(&text, Some(run), Some(mem)).unwrap();
        assert_eq!(t.minutes, 3);
        assert_eq!(t.functions[0].per_minute, [0, 1, 2]);
        assert_eq!(t.functions[0].mean_run, Duration::from_millis(250));
        assert_eq!(t.functions[0].memory_mb, 256.0);
        assert_eq!(t.defaulted, 0);
        assert_eq!(Trace::parse(&text, None, None).unwrap().defaulted, 1);

        assert!(matches!(
            Trace::parse("", None, None),
            Err(TraceError::MissingColumn { .. })
        ));
        assert!(matches!(
            Trace::parse(
                "HashFunction,HashApp,HashOwner,minute_1\nf,a,o,x",
                None,
                None
            ),
            Err(TraceError::Row { line: 2, .. })
        ));
        assert!(matches!(
            Trace::parse(
                "HashFunction,HashApp,HashOwner,minute_1\nf,a,o,1,2",
                None,
                None
            ),
            Err(TraceError::Row { line: 2, .. })
        ));
        assert!(matches!(
            Trace::parse(
                "HashFunction,HashApp,HashOwner,minute_1\nf,a,o,-1",
                None,
                None
            ),
            Err(TraceError::Row { .. })
        ));
        assert!(matches!(
            Trace::parse("HashFunction,HashApp,HashOwner,minute_1", None, None),
            Err(TraceError::Empty)
        ));
        let bad_run = "HashFunction,HashApp,HashOwner,Count,Average\nf,a,o,1,NaN";
        assert!(matches!(
            Trace::parse(&text, Some(bad_run), None),
            Err(TraceError::Row { file: "run", .. })
        ));
    }

    #[test]
    fn hybrid_beats_fixed_on_periodic_functions_with_less_memory() {
        // Every 20 minutes, and every 45 minutes: both beyond a 10-minute keep-alive.
        let text = inv(
            1440,
            &[
                ("p20", &|m| u32::from(m % 20 == 0)),
                ("p45", &|m| u32::from(m % 45 == 0)),
            ],
        );
        let trace = Trace::parse(&text, None, None).unwrap();
        let fixed = simulate(&trace, &mut FixedKeepAlive::default());
        let hybrid = simulate(&trace, &mut HybridHistogram::default());
        assert_eq!(
            fixed.cold_start_pct, 100.0,
            "every arrival is past the keep-alive"
        );
        // Per function: the first call, then five idle times learned under the fallback;
        // every call after that is pre-warmed.
        assert_eq!(hybrid.cold_starts, 12, "hybrid: {}%", hybrid.cold_start_pct);
        assert!(hybrid.wasted_gb_minutes < fixed.wasted_gb_minutes);
        assert_eq!(hybrid.invocations, 72 + 32);
        assert_eq!(hybrid.cold_start_pct_by_hour.len(), 24);
    }

    #[test]
    fn busy_functions_stay_warm_under_every_policy() {
        let text = inv(120, &[("busy", &|_| 5)]);
        let trace = Trace::parse(&text, None, None).unwrap();
        for policy in [
            &mut FixedKeepAlive::default() as &mut dyn ReservationPolicy,
            &mut DemandForecast::default(),
            &mut HybridHistogram::default(),
        ] {
            let r = simulate(&trace, policy);
            assert_eq!(
                r.cold_starts, 1,
                "{}: only the first call is cold",
                r.policy
            );
            assert_eq!(r.invocations, 600);
        }
    }

    #[test]
    fn simulation_is_deterministic_apart_from_timing() {
        let text = inv(
            600,
            &[
                ("a", &|m| u32::from(m % 7 == 0 || m % 11 == 0)),
                ("b", &|m| (m % 3) as u32),
            ],
        );
        let trace = Trace::parse(&text, None, None).unwrap();
        let mut a = simulate(&trace, &mut HybridHistogram::default());
        let mut b = simulate(&trace, &mut HybridHistogram::default());
        a.decision_ns = 0.0;
        b.decision_ns = 0.0;
        assert_eq!(a, b);
    }
}
