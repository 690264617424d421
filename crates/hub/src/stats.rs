//! Counters and a latency histogram the hub keeps for itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fnhub_core::FunctionName;
use parking_lot::Mutex;

/// Sub-buckets per power of two: values are kept to within 1/32 (about 3%).
const SUB: usize = 32;
const SUB_BITS: u32 = 5;
/// Enough buckets for any `u64`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A lock-free log-linear histogram of `u64` values (microseconds here), within 3%.
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
}

fn bucket(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let mantissa = (v >> shift) as usize; // in SUB..2*SUB
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// The smallest value that falls in bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    ((i % SUB + SUB) as u64) << shift
}

impl Histogram {
    pub(crate) fn new() -> Histogram {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn record(&self, v: u64) {
        self.counts[bucket(v)].fetch_add(1, Ordering::Relaxed);
    }

    /// The value at quantile `q` (0.0 to 1.0): the floor of the bucket holding it.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_floor(i));
            }
        }
        None
    }

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Per-function figures in [`HubStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// Invocations completed, any outcome.
    pub invocations: u64,
    /// Of those, how many started a new environment.
    pub cold_starts: u64,
    /// Of those, how many succeeded.
    pub ok: u64,
}

/// Latency percentiles in microseconds, from admission to completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Completions measured.
    pub count: u64,
    /// Median, within 3%.
    pub p50_us: u64,
    /// 99th percentile, within 3%.
    pub p99_us: u64,
    /// Largest, within 3%.
    pub max_us: u64,
}

/// What the hub has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Events published to the hub from outside (devices, the application, bridges).
    pub events_in: u64,
    /// Events published by functions on their output topics.
    pub events_out: u64,
    /// Deliveries to local subscribers.
    pub delivered: u64,
    /// Deliveries skipped because a subscriber's queue was full.
    pub delivery_full: u64,
    /// Events refused by the router (invalid topic, too deep, bad republish).
    pub events_refused: u64,
    /// Invocations refused at admission (queue full, unknown function, shutting down).
    pub rejected: u64,
    /// Invocations dropped by a flow's overflow policy: the oldest waiting one cancelled
    /// to make room, or one that waited past its flow's timeout.
    pub overflow_dropped: u64,
    /// Completed invocations per function.
    pub functions: BTreeMap<String, FunctionStats>,
    /// Completed invocations by outcome: `ok` or an error kind.
    pub outcomes: BTreeMap<String, u64>,
    /// Admission-to-completion latency.
    pub latency: LatencySummary,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) events_in: AtomicU64,
    pub(crate) events_out: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) delivery_full: AtomicU64,
    pub(crate) events_refused: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) overflow_dropped: AtomicU64,
}

/// A function's figures and its outcomes by kind.
type PerFunction = (FunctionStats, BTreeMap<&'static str, u64>);

pub(crate) struct Stats {
    pub(crate) counters: Counters,
    per_function: Mutex<HashMap<FunctionName, PerFunction, foldhash::fast::RandomState>>,
    latency: Histogram,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            counters: Counters::default(),
            per_function: Mutex::new(HashMap::default()),
            latency: Histogram::new(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Counts `n` invocations the hub did not take (`what`: why) in `counter`, and says so
    /// in the log: at once the first time, then at most one line a second per kind, with
    /// the number since the last line. No drop goes uncounted or unsaid.
    pub(crate) fn refused(counter: &AtomicU64, what: &'static str, n: usize) {
        if n == 0 {
            return;
        }
        Stats::add(counter, n);
        static LAST: parking_lot::Mutex<Vec<(&'static str, u64, u64)>> =
            parking_lot::Mutex::new(Vec::new());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut last = LAST.lock();
        let entry = match last.iter().position(|(w, _, _)| *w == what) {
            Some(i) => &mut last[i],
            None => {
                last.push((what, 0, 0));
                let i = last.len() - 1;
                &mut last[i]
            }
        };
        entry.2 += n as u64;
        if now > entry.1 {
            let count = std::mem::take(&mut entry.2);
            entry.1 = now;
            drop(last);
            tracing::warn!(what, count, "invocations not taken");
        }
    }

    pub(crate) fn completed(
        &self,
        function: &FunctionName,
        outcome: &'static str,
        cold: bool,
        latency: Duration,
    ) {
        self.latency
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        let mut map = self.per_function.lock();
        let (f, outcomes) = match map.get_mut(function) {
            Some(entry) => entry,
            None => map.entry(function.clone()).or_default(),
        };
        f.invocations += 1;
        f.cold_starts += u64::from(cold);
        f.ok += u64::from(outcome == "ok");
        *outcomes.entry(outcome).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> HubStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut functions = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        for (name, (f, by_kind)) in self.per_function.lock().iter() {
            functions.insert(name.to_string(), f.clone());
            for (kind, n) in by_kind {
                *outcomes.entry((*kind).to_owned()).or_default() += n;
            }
        }
        let q = |p| self.latency.quantile(p).unwrap_or(0);
        HubStats {
            events_in: load(&c.events_in),
            events_out: load(&c.events_out),
            delivered: load(&c.delivered),
            delivery_full: load(&c.delivery_full),
            events_refused: load(&c.events_refused),
            rejected: load(&c.rejected),
            overflow_dropped: load(&c.overflow_dropped),
            functions,
            outcomes,
            latency: LatencySummary {
                count: self.latency.count(),
                p50_us: q(0.5),
                p99_us: q(0.99),
                max_us: q(1.0),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= v, "{v}: floor {floor}");
            assert!(v - floor <= v / SUB as u64, "{v}: floor {floor} too far");
        }
    }

    proptest! {
        /// Quantiles agree with a sorted vector to within the bucket width.
        #[test]
        fn quantiles_match_sorting(mut values in proptest::collection::vec(0u64..10_000_000, 1..500), q in 0.0f64..=1.0) {
            let h = Histogram::new();
            for &v in &values { h.record(v); }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let got = h.quantile(q).unwrap();
            prop_assert!(got <= exact && exact - got <= exact / SUB as u64, "q={} exact={} got={}", q, exact, got);
        }
    }
}
