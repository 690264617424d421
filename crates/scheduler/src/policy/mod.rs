//! Reservation policies: how long to keep a function's environment warm after it goes idle,
//! and when to load one again before the next invocation is due.
//!
//! A policy is a deterministic state machine: it is told of arrivals and asked for
//! [`Windows`] with the time passed in (`now`), never reading a clock itself, so the same
//! inputs give the same decisions under a [`ManualClock`](fnhub_core::ManualClock) or a
//! trace replay. [`sim`] replays Azure Functions traces through a simulated pool.
//!
//! Shipped policies:
//! - [`FixedKeepAlive`]: keep every environment for a fixed time (10 minutes, the public
//!   cloud baseline);
//! - [`DemandForecast`]: an EWMA of each function's concurrency turned into an arrival rate by
//!   Little's law, and a keep-alive long enough to catch the next arrival with 99%
//!   probability under that rate;
//! - [`HybridHistogram`]: the policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC
//!   2020) — an idle-time histogram per function gives a pre-warm window at its 5th
//!   percentile and a keep-alive window up to its 99th, falling back to a fixed keep-alive
//!   while the histogram is not representative.

mod hybrid;
pub mod sim;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use hybrid::{HybridConfig, HybridHistogram};

/// When to hold an environment for a function that has just gone idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// How long after going idle to (re)load the environment. Zero keeps it loaded.
    pub prewarm: Duration,
    /// How long to keep it loaded after the pre-warm point.
    pub keep_alive: Duration,
}

impl Windows {
    /// Keeps the environment for `keep_alive` from now.
    pub const fn keep(keep_alive: Duration) -> Windows {
        Windows {
            prewarm: Duration::ZERO,
            keep_alive,
        }
    }

    /// Whether an invocation arriving `idle` after the function went idle finds it warm.
    pub fn is_warm_after(&self, idle: Duration) -> bool {
        idle >= self.prewarm && idle <= self.prewarm + self.keep_alive
    }

    /// How long the environment is loaded without work if the next invocation arrives
    /// `idle` after the function went idle (or never, with `None`, until the windows end).
    pub fn idle_loaded(&self, idle: Option<Duration>) -> Duration {
        let end = self.prewarm + self.keep_alive;
        match idle {
            Some(idle) if idle < self.prewarm => Duration::ZERO,
            Some(idle) => idle.min(end) - self.prewarm,
            None => self.keep_alive,
        }
    }
}

/// Decides, per function, how long to keep environments warm and when to pre-warm them.
///
/// Functions are named by a caller-chosen `function` index. Implementations must be
/// deterministic in their inputs.
pub trait ReservationPolicy: Send {
    /// A short name for reports (`fixed_keep_alive`, `demand_forecast`, `hybrid_histogram`).
    fn name(&self) -> &'static str;

    /// `arrivals` invocations of `function` arrived at `now`, each running about `run`;
    /// `idle` is how long the function was idle before them (`None` for its first).
    fn record(
        &mut self,
        function: usize,
        now: Instant,
        arrivals: u32,
        run: Duration,
        idle: Option<Duration>,
    );

    /// `function` has just gone idle at `now`: the windows to apply until its next arrival.
    fn decide(&mut self, function: usize, now: Instant) -> Windows;

    /// How many environments of `function` to hold loaded in its windows (and to load at
    /// its pre-warm point): the concurrency the policy forecasts for it, at least one. One
    /// unless the policy forecasts concurrency.
    fn environments(&self, function: usize) -> u32 {
        let _ = function;
        1
    }
}

/// Environments for a forecast concurrency: enough to run it at once, at least one, at
/// most 1024. A forecast within rounding of a whole number is that number: a busy minute's
/// `arrivals × run / period` that is one in exact arithmetic must not hold two environments.
fn environments_for(concurrency: Option<f64>) -> u32 {
    concurrency.map_or(1, |c| ((c - 1e-9).ceil() as u32).clamp(1, 1024))
}

/// Keeps every environment loaded for a fixed time after it goes idle.
#[derive(Debug, Clone)]
pub struct FixedKeepAlive {
    keep_alive: Duration,
}

impl FixedKeepAlive {
    /// The public cloud baseline: 10 minutes.
    pub const DEFAULT: Duration = Duration::from_secs(600);

    /// A policy keeping environments for `keep_alive`.
    pub fn new(keep_alive: Duration) -> FixedKeepAlive {
        FixedKeepAlive { keep_alive }
    }
}

impl Default for FixedKeepAlive {
    fn default() -> Self {
        FixedKeepAlive::new(Self::DEFAULT)
    }
}

impl ReservationPolicy for FixedKeepAlive {
    fn name(&self) -> &'static str {
        "fixed_keep_alive"
    }

    fn record(&mut self, _: usize, _: Instant, _: u32, _: Duration, _: Option<Duration>) {}

    fn decide(&mut self, _: usize, _: Instant) -> Windows {
        Windows::keep(self.keep_alive)
    }
}

#[derive(Debug, Clone, Default)]
struct Forecast {
    /// EWMA of concurrency per sampling period (zero periods included).
    concurrency: f64,
    run_secs: f64,
    seen: bool,
}

/// Forecasts each function's demand and keeps its environment just long enough.
///
/// Every `period` (one minute by default) is a sample of concurrency `L = arrivals × run /
/// period`, folded into an exponentially weighted moving average (weight `alpha`; idle
/// periods count as zeros). Little's law turns the forecast `L` into an arrival rate
/// `λ = L / run`; the keep-alive is the time by which a Poisson process of that rate has
/// arrived with probability `1 − miss` — `ln(1/miss) / λ` — clamped to `[min, max]`.
#[derive(Debug, Clone)]
pub struct DemandForecast {
    alpha: f64,
    miss: f64,
    period: Duration,
    min: Duration,
    max: Duration,
    functions: HashMap<usize, Forecast>,
}

impl Default for DemandForecast {
    /// `alpha` 0.3, `miss` 1%, 1-minute periods, keep-alive between 1 and 60 minutes.
    fn default() -> Self {
        DemandForecast {
            alpha: 0.3,
            miss: 0.01,
            period: Duration::from_secs(60),
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            functions: HashMap::new(),
        }
    }
}

impl DemandForecast {
    /// Sets the EWMA weight of the newest period, in `(0, 1]`.
    pub fn with_alpha(mut self, alpha: f64) -> DemandForecast {
        self.alpha = alpha.clamp(f64::MIN_POSITIVE, 1.0);
        self
    }

    /// Sets the accepted chance of missing the next arrival, in `(0, 1)`.
    pub fn with_miss(mut self, miss: f64) -> DemandForecast {
        self.miss = miss.clamp(1e-9, 0.999);
        self
    }

    /// Sets the bounds of the keep-alive.
    pub fn with_bounds(mut self, min: Duration, max: Duration) -> DemandForecast {
        self.min = min;
        self.max = max.max(min);
        self
    }

    /// The forecast concurrency of `function`, if it has been seen.
    pub fn concurrency(&self, function: usize) -> Option<f64> {
        self.functions
            .get(&function)
            .filter(|f| f.seen)
            .map(|f| f.concurrency)
    }
}

impl ReservationPolicy for DemandForecast {
    fn name(&self) -> &'static str {
        "demand_forecast"
    }

    fn record(
        &mut self,
        function: usize,
        _now: Instant,
        arrivals: u32,
        run: Duration,
        idle: Option<Duration>,
    ) {
        let period = self.period.as_secs_f64();
        let f = self.functions.entry(function).or_default();
        let run_secs = run.as_secs_f64().max(1e-3);
        let sample = f64::from(arrivals) * run_secs / period;
        if f.seen {
            // Idle periods since the last sample are zeros.
            let zeros = idle.map_or(0.0, |d| (d.as_secs_f64() / period - 1.0).max(0.0));
            f.concurrency *= (1.0 - self.alpha).powf(zeros);
            f.concurrency = self.alpha * sample + (1.0 - self.alpha) * f.concurrency;
            f.run_secs = self.alpha * run_secs + (1.0 - self.alpha) * f.run_secs;
        } else {
            *f = Forecast {
                concurrency: sample,
                run_secs,
                seen: true,
            };
        }
    }

    fn decide(&mut self, function: usize, _now: Instant) -> Windows {
        let Some(f) = self.functions.get(&function).filter(|f| f.seen) else {
            return Windows::keep(self.min);
        };
        // Little's law: L = λ · W, so λ = L / W (arrivals per second).
        let rate = f.concurrency / f.run_secs;
        let secs = if rate > 0.0 {
            (1.0 / self.miss).ln() / rate
        } else {
            f64::INFINITY
        };
        let keep = if secs.is_finite() {
            Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
        } else {
            self.max
        };
        Windows::keep(keep.clamp(self.min, self.max))
    }

    fn environments(&self, function: usize) -> u32 {
        environments_for(self.concurrency(function))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn windows_arithmetic() {
        let w = Windows {
            prewarm: 10 * MIN,
            keep_alive: 5 * MIN,
        };
        assert!(!w.is_warm_after(9 * MIN));
        assert!(w.is_warm_after(10 * MIN));
        assert!(w.is_warm_after(15 * MIN));
        assert!(!w.is_warm_after(16 * MIN));
        assert_eq!(w.idle_loaded(Some(5 * MIN)), Duration::ZERO);
        assert_eq!(w.idle_loaded(Some(12 * MIN)), 2 * MIN);
        assert_eq!(w.idle_loaded(Some(60 * MIN)), 5 * MIN);
        assert_eq!(w.idle_loaded(None), 5 * MIN);
    }

    #[test]
    fn the_forecast_concurrency_sizes_the_environments() {
        let now = fnhub_core::Clock::now(&fnhub_core::SystemClock);
        let mut p = DemandForecast::default();
        assert_eq!(p.environments(0), 1, "never seen: one");
        // 600 arrivals of a second each in a minute: ten at once.
        p.record(0, now, 600, Duration::from_secs(1), None);
        assert_eq!(p.environments(0), 10);
        // A trickle: one.
        p.record(1, now, 1, Duration::from_millis(10), None);
        assert_eq!(p.environments(1), 1);
        // Three arrivals sharing a minute of run time: one at a time, whatever the rounding
        // of 3 × (60 s / 3) / 60 s.
        p.record(2, now, 3, Duration::from_secs_f64(60.0 / 3.0), None);
        assert_eq!(p.environments(2), 1);
        // The hybrid histogram sizes by the same forecast.
        let mut h = HybridHistogram::default();
        h.record(0, now, 600, Duration::from_secs(1), None);
        assert_eq!(h.environments(0), 10);
        assert_eq!(FixedKeepAlive::new(MIN_TEST).environments(0), 1);
    }

    const MIN_TEST: Duration = Duration::from_secs(60);

    #[test]
    fn fixed_keep_alive_is_fixed() {
        let mut p = FixedKeepAlive::default();
        let now = fnhub_core::Clock::now(&fnhub_core::SystemClock);
        p.record(0, now, 5, MIN, None);
        assert_eq!(p.decide(0, now), Windows::keep(10 * MIN));
    }

    #[test]
    fn demand_forecast_keeps_busy_functions_longer_than_rare_ones() {
        let mut p = DemandForecast::default();
        let now = fnhub_core::Clock::now(&fnhub_core::SystemClock);
        // Function 0: 60 calls of 1 s every minute. Function 1: one call every 30 minutes.
        for i in 0..20 {
            p.record(0, now + i * MIN, 60, Duration::from_secs(1), Some(MIN));
        }
        for i in 0..5 {
            p.record(
                1,
                now + i * 30 * MIN,
                1,
                Duration::from_secs(1),
                Some(30 * MIN),
            );
        }
        let busy = p.decide(0, now);
        let rare = p.decide(1, now);
        assert_eq!(
            busy.keep_alive, MIN,
            "a busy function needs only the minimum"
        );
        assert!(rare.keep_alive > busy.keep_alive);
        assert!(rare.keep_alive <= 60 * MIN);
        assert!(
            (p.concurrency(0).unwrap() - 1.0).abs() < 1e-9,
            "60 × 1 s per minute is L = 1"
        );
        assert_eq!(
            p.decide(7, now),
            Windows::keep(MIN),
            "unknown functions get the minimum"
        );
    }
}
