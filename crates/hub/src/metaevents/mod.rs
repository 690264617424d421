//! Metaevents: rules over the hub's own load and metrics that publish an event or invoke a
//! function when they hold.
//!
//! A rule is written as text:
//!
//! ```text
//! queue_depth(ingest) > 100 for 10s     a gauge above a threshold for a while
//! error_rate(ingest) > 5% over 1m       a ratio over a sliding window
//! cold_starts(ingest) > 20 per minute   a count over a sliding window
//! queue_pressure() >= 80%               the hub as a whole
//! cpu > 0.9 for 10s                     processor utilisation (a hub-wide metric may
//!                                       drop its empty parentheses)
//! ```
//!
//! `cpu` is the processor utilisation, 0 to 1, that the scheduler measures
//! ([`CpuMeter`](fnhub_scheduler::CpuMeter): the hub's control group when it has one of its
//! own, else the machine's `/proc/stat`); a rule on it never holds where it cannot be read.
//!
//! Gauges (`queue_depth`, `running`, `queue_pressure`, `utilisation`, `cpu`) are read at each
//! tick; `for D` asks that the condition hold at every tick for `D` first. Counts
//! (`invocations`, `errors`, `cold_starts`, `rejected`) and the ratio `error_rate` (errors
//! over invocations) are taken over a sliding window, `over D` or `per second|minute|hour`
//! (default one minute). A function name in the parentheses reads that function; empty
//! parentheses read the whole hub. `%` divides by 100. Comparisons: `>`, `>=`, `<`, `<=`.
//!
//! When a rule holds it fires its action — publish a JSON event on a topic, or invoke a
//! function with that JSON — and then stays quiet for its cooldown (default one minute)
//! even if it still holds: a rule that another rule's firing sets off fires at most once per
//! cooldown, so rules that feed each other through the metrics they cause cannot storm.
//! The JSON names the rule, its text, the value read and the threshold.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fnhub_core::{Clock, FunctionRef, LoadSnapshot};
use serde_json::json;

use crate::edge::{EdgeHub, WeakHub};
use crate::stats::HubStats;

/// What a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Metric {
    /// Invocations waiting (gauge).
    QueueDepth,
    /// Invocations running (gauge).
    Running,
    /// The hub's queue fill, 0 to 1 (gauge, hub only).
    QueuePressure,
    /// Busy workers, 0 to 1 (gauge, hub only).
    Utilisation,
    /// Processor utilisation, 0 to 1 (gauge, hub only).
    Cpu,
    /// Invocations completed in the window.
    Invocations,
    /// Invocations failed in the window.
    Errors,
    /// Errors over invocations in the window.
    ErrorRate,
    /// Cold starts in the window.
    ColdStarts,
    /// Admissions refused in the window (hub only).
    Rejected,
}

impl Metric {
    fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "queue_depth" => Metric::QueueDepth,
            "running" => Metric::Running,
            "queue_pressure" => Metric::QueuePressure,
            "utilisation" | "utilization" => Metric::Utilisation,
            "cpu" => Metric::Cpu,
            "invocations" => Metric::Invocations,
            "errors" => Metric::Errors,
            "error_rate" => Metric::ErrorRate,
            "cold_starts" => Metric::ColdStarts,
            "rejected" => Metric::Rejected,
            _ => return None,
        })
    }

    fn is_gauge(self) -> bool {
        matches!(
            self,
            Metric::QueueDepth
                | Metric::Running
                | Metric::QueuePressure
                | Metric::Utilisation
                | Metric::Cpu
        )
    }

    fn hub_only(self) -> bool {
        matches!(
            self,
            Metric::QueuePressure | Metric::Utilisation | Metric::Cpu | Metric::Rejected
        )
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cmp {
    /// `>`
    Above,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
    /// `<=`
    AtMost,
}

impl Cmp {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Above => value > threshold,
            Cmp::AtLeast => value >= threshold,
            Cmp::Below => value < threshold,
            Cmp::AtMost => value <= threshold,
        }
    }
}

/// A rule's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metaevent rule {text:?}: {reason}")]
pub struct RuleError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// What a rule does when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaAction {
    /// Publish the firing's JSON on this topic.
    Publish(String),
    /// Invoke this function with the firing's JSON.
    Invoke(FunctionRef),
}

/// One rule. See the [module documentation](self) for the text.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetaRule {
    /// Its name, in the firing's JSON and in logs.
    pub name: String,
    /// Its text.
    pub text: String,
    /// What it reads.
    pub metric: Metric,
    /// Of which function; `None` for the whole hub.
    pub function: Option<String>,
    /// How it compares.
    pub cmp: Cmp,
    /// With what.
    pub threshold: f64,
    /// For gauges: how long the condition must hold. For the rest: the window.
    pub duration: Duration,
    /// What it does.
    pub action: MetaAction,
    /// Quiet time after a firing. Default one minute.
    pub cooldown: Duration,
}

fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl MetaRule {
    /// Reads `text` as a rule named `name` that does `action`.
    pub fn parse(
        name: impl Into<String>,
        text: &str,
        action: MetaAction,
    ) -> Result<MetaRule, RuleError> {
        let err = |reason: &str| RuleError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        // A hub-wide metric may be written without its empty parentheses: `cpu > 0.9`.
        let spelled;
        let full = match text.trim_start().split_once(char::is_whitespace) {
            Some((first, rest))
                if !first.contains('(') && Metric::parse(first).is_some_and(Metric::hub_only) =>
            {
                spelled = format!("{first}() {rest}");
                spelled.as_str()
            }
            _ => text,
        };
        let (head, rest) = full
            .split_once(')')
            .ok_or_else(|| err("expected metric(function)"))?;
        let (metric_name, function) = head
            .split_once('(')
            .ok_or_else(|| err("expected metric(function)"))?;
        let metric = Metric::parse(metric_name.trim())
            .ok_or_else(|| err(&format!("unknown metric {:?}", metric_name.trim())))?;
        let function = Some(function.trim().to_owned()).filter(|f| !f.is_empty());
        if function.is_some() && metric.hub_only() {
            return Err(err(
                "this metric reads the whole hub: leave the parentheses empty",
            ));
        }
        let mut words = rest.split_whitespace();
        let cmp = match words.next() {
            Some(">") => Cmp::Above,
            Some(">=") => Cmp::AtLeast,
            Some("<") => Cmp::Below,
            Some("<=") => Cmp::AtMost,
            _ => return Err(err("expected >, >=, < or <= after the metric")),
        };
        let number = words.next().ok_or_else(|| err("expected a threshold"))?;
        let (number, percent) = match number.strip_suffix('%') {
            Some(n) => (n, true),
            None => (number, false),
        };
        let mut threshold: f64 = number
            .parse()
            .map_err(|_| err(&format!("{number:?} is not a number")))?;
        if !threshold.is_finite() {
            return Err(err("the threshold is not a finite number"));
        }
        if percent {
            threshold /= 100.0;
        }
        let window = match (words.next(), words.next()) {
            (None, _) => None,
            (Some("for"), Some(d)) if metric.is_gauge() => {
                Some(duration(d).ok_or_else(|| err(&format!("{d:?} is not a duration")))?)
            }
            (Some("over"), Some(d)) if !metric.is_gauge() => {
                Some(duration(d).ok_or_else(|| err(&format!("{d:?} is not a duration")))?)
            }
            (Some("per"), Some(unit)) if !metric.is_gauge() => Some(match unit {
                "second" => Duration::from_secs(1),
                "minute" => Duration::from_secs(60),
                "hour" => Duration::from_secs(3600),
                _ => return Err(err("per takes second, minute or hour")),
            }),
            (Some(w), _) if metric.is_gauge() => {
                return Err(err(&format!("a gauge takes `for DURATION`, not {w:?}")));
            }
            (Some(w), _) => {
                return Err(err(&format!(
                    "a windowed metric takes `over DURATION` or `per UNIT`, not {w:?}"
                )));
            }
        };
        if words.next().is_some() {
            return Err(err("unexpected words at the end"));
        }
        let duration = window.unwrap_or(if metric.is_gauge() {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        });
        if !metric.is_gauge() && duration.is_zero() {
            return Err(err("the window must not be empty"));
        }
        Ok(MetaRule {
            name: name.into(),
            text: text.to_owned(),
            metric,
            function,
            cmp,
            threshold,
            duration,
            action,
            cooldown: Duration::from_secs(60),
        })
    }

    /// Sets the quiet time after a firing.
    pub fn with_cooldown(mut self, cooldown: Duration) -> MetaRule {
        self.cooldown = cooldown;
        self
    }
}

impl fmt::Display for MetaRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.text)
    }
}

/// Cumulative counters of one sample.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    invocations: u64,
    errors: u64,
    cold_starts: u64,
    rejected: u64,
}

/// What the hub looked like at one tick.
pub(crate) struct Sample<'a> {
    pub(crate) load: &'a LoadSnapshot,
    pub(crate) stats: &'a HubStats,
}

impl Sample<'_> {
    fn counts(&self, function: Option<&str>) -> Counts {
        match function {
            Some(f) => {
                let s = self.stats.functions.get(f);
                Counts {
                    invocations: s.map_or(0, |s| s.invocations),
                    errors: s.map_or(0, |s| s.invocations - s.ok),
                    cold_starts: s.map_or(0, |s| s.cold_starts),
                    rejected: 0,
                }
            }
            None => {
                let all = self.stats.functions.values();
                Counts {
                    invocations: all.clone().map(|s| s.invocations).sum(),
                    errors: all.clone().map(|s| s.invocations - s.ok).sum(),
                    cold_starts: all.map(|s| s.cold_starts).sum(),
                    rejected: self.load.rejected_total,
                }
            }
        }
    }

    fn gauge(&self, metric: Metric, function: Option<&str>) -> f64 {
        let f = function.and_then(|f| self.load.functions.get(f));
        match (metric, function) {
            (Metric::QueueDepth, Some(_)) => f.map_or(0.0, |f| f.queued as f64),
            (Metric::QueueDepth, None) => self.load.queued as f64,
            (Metric::Running, Some(_)) => f.map_or(0.0, |f| f.running as f64),
            (Metric::Running, None) => self.load.running as f64,
            (Metric::QueuePressure, _) => f64::from(self.load.queue_pressure()),
            (Metric::Utilisation, _) => f64::from(self.load.utilisation()),
            // Not measured: no comparison holds.
            (Metric::Cpu, _) => self.load.cpu_utilization.map_or(f64::NAN, f64::from),
            _ => 0.0,
        }
    }
}

struct RuleState {
    rule: MetaRule,
    /// When the condition started to hold, for gauges.
    since: Option<Duration>,
    last_fired: Option<Duration>,
    /// Cumulative counts at each tick, oldest first, for windowed metrics.
    history: VecDeque<(Duration, Counts)>,
}

/// A rule that fired: what to do, and the JSON to do it with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Firing {
    pub(crate) action: MetaAction,
    pub(crate) body: serde_json::Value,
}

/// Evaluates rules tick by tick. Pure: the hub feeds it samples and the time.
pub(crate) struct Evaluator {
    rules: Vec<RuleState>,
}

impl Evaluator {
    pub(crate) fn new(rules: Vec<MetaRule>) -> Evaluator {
        Evaluator {
            rules: rules
                .into_iter()
                .map(|rule| RuleState {
                    rule,
                    since: None,
                    last_fired: None,
                    history: VecDeque::new(),
                })
                .collect(),
        }
    }

    /// The firings of this tick; `now` is the time since the hub started.
    pub(crate) fn tick(&mut self, now: Duration, sample: &Sample<'_>) -> Vec<Firing> {
        let mut out = Vec::new();
        for state in &mut self.rules {
            let rule = &state.rule;
            let function = rule.function.as_deref();
            let value = if rule.metric.is_gauge() {
                sample.gauge(rule.metric, function)
            } else {
                let counts = sample.counts(function);
                state.history.push_back((now, counts));
                // Keep one sample at or before the window's start.
                while state.history.len() > 2 && state.history[1].0 + rule.duration <= now {
                    state.history.pop_front();
                }
                let (_, old) = state.history[0];
                let d = |f: fn(&Counts) -> u64| f(&counts).saturating_sub(f(&old)) as f64;
                match rule.metric {
                    Metric::Invocations => d(|c| c.invocations),
                    Metric::Errors => d(|c| c.errors),
                    Metric::ColdStarts => d(|c| c.cold_starts),
                    Metric::Rejected => d(|c| c.rejected),
                    Metric::ErrorRate => {
                        let n = d(|c| c.invocations);
                        if n == 0.0 {
                            // No invocations: no rate to compare.
                            state.since = None;
                            continue;
                        }
                        d(|c| c.errors) / n
                    }
                    _ => 0.0,
                }
            };
            if !rule.cmp.holds(value, rule.threshold) {
                state.since = None;
                continue;
            }
            let since = *state.since.get_or_insert(now);
            let held = !rule.metric.is_gauge() || now.saturating_sub(since) >= rule.duration;
            let quiet = state
                .last_fired
                .is_none_or(|at| now.saturating_sub(at) >= rule.cooldown);
            if held && quiet {
                state.last_fired = Some(now);
                tracing::info!(rule = %rule.name, value, threshold = rule.threshold, "metaevent fired");
                metrics::counter!("fnhub_metaevents_fired_total", "rule" => rule.name.clone())
                    .increment(1);
                out.push(Firing {
                    action: rule.action.clone(),
                    body: json!({
                        "rule": rule.name,
                        "text": rule.text,
                        "function": rule.function,
                        "value": value,
                        "threshold": rule.threshold,
                    }),
                });
            }
        }
        out
    }
}

/// Rules evaluated on a hub's load and metrics: built, then attached to a running hub.
///
/// ```
/// # async fn f(hub: fnhub::EdgeHub) -> Result<(), Box<dyn std::error::Error>> {
/// use fnhub::metaevents::{MetaAction, MetaRule, Metaevents};
/// let rule = MetaRule::parse(
///     "backlog",
///     "queue_depth(ingest) > 100 for 10s",
///     MetaAction::Publish("alerts/backlog".into()),
/// )?;
/// Metaevents::new(vec![rule]).attach(&hub);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Metaevents {
    rules: Vec<MetaRule>,
    every: Duration,
}

impl Metaevents {
    /// `rules`, evaluated every second.
    pub fn new(rules: Vec<MetaRule>) -> Metaevents {
        Metaevents {
            rules,
            every: Duration::from_secs(1),
        }
    }

    /// How often the rules are evaluated. Default 1 s.
    pub fn every(mut self, every: Duration) -> Metaevents {
        self.every = every.max(Duration::from_millis(1));
        self
    }

    /// Evaluates the rules on `hub` until it shuts down (or is dropped), acting on what
    /// fires.
    pub fn attach(self, hub: &EdgeHub) {
        if !self.rules.is_empty() {
            let clock = hub.clock().clone();
            tokio::spawn(run(hub.downgrade(), clock, self.rules, self.every));
        }
    }
}

/// Evaluates `rules` every `every` while the hub lives, and acts on what fires.
async fn run(hub: WeakHub, clock: Arc<dyn Clock>, rules: Vec<MetaRule>, every: Duration) {
    let mut evaluator = Evaluator::new(rules);
    let start = clock.now();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        if hub.is_closing() {
            return;
        }
        let load = fnhub_core::LoadProbe::snapshot(&hub);
        let stats = hub.stats();
        let sample = Sample {
            load: &load,
            stats: &stats,
        };
        let elapsed = clock.now().saturating_duration_since(start);
        for firing in evaluator.tick(elapsed, &sample) {
            let body = bytes::Bytes::from(firing.body.to_string());
            match firing.action {
                MetaAction::Publish(topic) => {
                    let event = fnhub_core::Event::new(topic, body, fnhub_core::EventSource::Local);
                    if let Err(error) = hub.publish_internal(event) {
                        tracing::warn!(%error, "metaevent not published");
                    }
                }
                MetaAction::Invoke(function) => {
                    let invocation = fnhub_core::Invocation::new(function, body);
                    if let Err(error) = hub.scheduler().try_submit_detached(invocation) {
                        tracing::warn!(%error, "metaevent invocation not admitted");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
