//! The hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{ReservationPolicy, Windows};

/// Settings of [`HybridHistogram`]; the defaults are the paper's, except the fallback.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HybridConfig {
    /// Width of a histogram bin. Default 1 minute.
    pub bin: Duration,
    /// Idle times up to this are binned; longer ones are out of bounds. Default 4 hours.
    pub range: Duration,
    /// Percentile of idle times where the pre-warm window ends. Default 5.
    pub head_percentile: f64,
    /// Percentile of idle times where the keep-alive window ends. Default 99.
    pub tail_percentile: f64,
    /// Safety margin: the head is cut by it and the tail stretched by it. Default 10%.
    pub margin: f64,
    /// Idle times needed before the histogram may be trusted. Default 5.
    pub min_samples: u32,
    /// Coefficient of variation of the bin counts above which the histogram is
    /// representative (concentrated). Default 2.
    pub min_cv: f64,
    /// Share of out-of-bounds idle times above which the histogram is not used. Default 50%.
    /// (The paper forecasts such functions with ARIMA; this implementation falls back.)
    pub max_out_of_bounds: f64,
    /// Keep-alive used while the histogram is not representative. Default 10 minutes, the
    /// fixed baseline (the paper uses the histogram range, which keeps rare functions for
    /// four hours).
    pub fallback: Duration,
}

impl Default for HybridConfig {
    fn default() -> Self {
        HybridConfig {
            bin: Duration::from_secs(60),
            range: Duration::from_secs(4 * 3600),
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.10,
            min_samples: 5,
            min_cv: 2.0,
            max_out_of_bounds: 0.5,
            fallback: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    bins: Vec<u32>,
    out_of_bounds: u32,
    total: u32,
}

/// Pre-warms shortly before a function's usual idle time runs out and keeps it warm until
/// its idle times rarely run longer, learned from a histogram of its idle times.
#[derive(Debug, Clone)]
pub struct HybridHistogram {
    config: HybridConfig,
    bins: usize,
    functions: HashMap<usize, Histogram>,
    /// The concurrency forecast that sizes how many environments are held: the histogram
    /// says when, the forecast how many.
    demand: super::DemandForecast,
}

impl Default for HybridHistogram {
    fn default() -> Self {
        HybridHistogram::new(HybridConfig::default())
    }
}

impl HybridHistogram {
    /// A policy with `config`.
    pub fn new(config: HybridConfig) -> HybridHistogram {
        let bin = config.bin.max(Duration::from_millis(1));
        let bins = (config.range.as_secs_f64() / bin.as_secs_f64())
            .ceil()
            .max(1.0) as usize;
        HybridHistogram {
            config: HybridConfig { bin, ..config },
            bins,
            functions: HashMap::new(),
            demand: super::DemandForecast::default(),
        }
    }

    /// The windows from `h` if it is representative.
    fn windows_from(&self, h: &Histogram) -> Option<Windows> {
        let c = &self.config;
        if h.total < c.min_samples {
            return None;
        }
        if f64::from(h.out_of_bounds) > c.max_out_of_bounds * f64::from(h.total) {
            return None;
        }
        let in_bounds = h.total - h.out_of_bounds;
        if in_bounds == 0 {
            return None;
        }
        // Concentration: coefficient of variation of the bin counts.
        let n = h.bins.len() as f64;
        let mean = f64::from(in_bounds) / n;
        let var = h
            .bins
            .iter()
            .map(|&b| (f64::from(b) - mean).powi(2))
            .sum::<f64>()
            / n;
        if var.sqrt() / mean < c.min_cv {
            return None;
        }
        let percentile_bin = |p: f64| {
            let rank = ((p / 100.0) * f64::from(in_bounds)).ceil().max(1.0) as u64;
            let mut seen = 0u64;
            h.bins
                .iter()
                .position(|&b| {
                    seen += u64::from(b);
                    seen >= rank
                })
                .unwrap_or(h.bins.len() - 1)
        };
        let bin = c.bin.as_secs_f64();
        let head = percentile_bin(c.head_percentile) as f64 * bin * (1.0 - c.margin);
        let tail = (percentile_bin(c.tail_percentile) + 1) as f64 * bin * (1.0 + c.margin);
        // Whole bins: the head rounds down, the tail up (ignoring float noise such as
        // 30 × 1.1 = 33.000000000000004).
        let head = (head / bin + 1e-9).floor() * bin;
        let tail = (tail / bin - 1e-9).ceil() * bin;
        Some(Windows {
            prewarm: Duration::from_secs_f64(head),
            keep_alive: Duration::from_secs_f64((tail - head).max(bin)),
        })
    }
}

impl ReservationPolicy for HybridHistogram {
    fn name(&self) -> &'static str {
        "hybrid_histogram"
    }

    fn record(
        &mut self,
        function: usize,
        now: Instant,
        arrivals: u32,
        run: Duration,
        idle: Option<Duration>,
    ) {
        self.demand.record(function, now, arrivals, run, idle);
        let bins = self.bins;
        let h = self.functions.entry(function).or_insert_with(|| Histogram {
            bins: vec![0; bins],
            out_of_bounds: 0,
            total: 0,
        });
        let Some(idle) = idle else { return };
        let index = (idle.as_secs_f64() / self.config.bin.as_secs_f64()) as usize;
        match h.bins.get_mut(index) {
            Some(b) => *b += 1,
            None => h.out_of_bounds += 1,
        }
        h.total += 1;
    }

    fn decide(&mut self, function: usize, _: Instant) -> Windows {
        self.functions
            .get(&function)
            .and_then(|h| self.windows_from(h))
            .unwrap_or(Windows::keep(self.config.fallback))
    }

    fn environments(&self, function: usize) -> u32 {
        self.demand.environments(function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn periodic_arrivals_are_prewarmed_just_before_they_are_due() {
        let mut p = HybridHistogram::default();
        let now = fnhub_core::Clock::now(&fnhub_core::SystemClock);
        assert_eq!(
            p.decide(0, now),
            Windows::keep(10 * MIN),
            "no history: fallback"
        );
        for i in 0..4 {
            p.record(0, now + i * 30 * MIN, 1, MIN, Some(29 * MIN));
        }
        assert_eq!(
            p.decide(0, now),
            Windows::keep(10 * MIN),
            "4 samples are too few"
        );
        p.record(0, now, 1, MIN, Some(29 * MIN));
        let w = p.decide(0, now);
        // Head: bin 29 → 29 min × 0.9 = 26.1 → 26 min. Tail: 30 min × 1.1 = 33 min.
        assert_eq!(w.prewarm, 26 * MIN);
        assert_eq!(w.keep_alive, 7 * MIN);
        assert!(w.is_warm_after(29 * MIN + Duration::from_secs(30)));
        assert!(!w.is_warm_after(10 * MIN));
    }

    #[test]
    fn scattered_or_long_idle_times_fall_back() {
        let mut p = HybridHistogram::default();
        let now = fnhub_core::Clock::now(&fnhub_core::SystemClock);
        // Spread evenly over the range: not concentrated.
        for i in 0..240 {
            p.record(1, now, 1, MIN, Some(i * MIN));
        }
        assert_eq!(p.decide(1, now), Windows::keep(10 * MIN));
        // Mostly longer than the 4-hour range.
        for _ in 0..10 {
            p.record(2, now, 1, MIN, Some(300 * MIN));
        }
        for _ in 0..5 {
            p.record(2, now, 1, MIN, Some(2 * MIN));
        }
        assert_eq!(p.decide(2, now), Windows::keep(10 * MIN));
    }

    #[test]
    fn decisions_are_deterministic() {
        let run = || {
            let mut p = HybridHistogram::default();
            let now = fnhub_core::Clock::now(&fnhub_core::SystemClock);
            let mut out = Vec::new();
            for i in 0..50u32 {
                p.record(0, now, 1, MIN, Some(MIN * (i * 7 % 13 + 3)));
                out.push(p.decide(0, now));
            }
            out
        };
        assert_eq!(run(), run());
    }
}
