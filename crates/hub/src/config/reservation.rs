//! `[hub] reservation`: which reservation policy keeps environments warm.
//!
//! ```toml
//! [hub]
//! reservation = "hybrid"                                  # the default
//! # reservation = { policy = "fixed", keep_alive_s = 600 }
//! # reservation = { policy = "forecast", miss = 0.01, min_s = 60, max_s = 3600 }
//! # reservation = { policy = "hybrid", fallback_s = 600, head_percentile = 5, tail_percentile = 99 }
//! ```
//!
//! The default is the hybrid histogram ("Serverless in the Wild"): on the Azure trace in
//! `shared/traces` (`cargo run --release --example policy_sim`) it has the fewest cold
//! starts (0.042 % of invocations, against 0.098 % for a ten-minute fixed keep-alive and
//! 0.426 % for the demand forecast) and the fewest at the 75th-percentile function (20.0 %,
//! against 30.4 % and 36.4 %). It holds more memory warm than the ten-minute keep-alive
//! (90,405 against 65,083 GB-minutes), but a fixed keep-alive given that same memory (27.9
//! minutes) still has 18 % more cold starts: the hybrid spends its memory where it saves
//! cold starts. The forecast holds the least memory (32,313 GB-minutes) for the most cold
//! starts: choose it where memory is what is short.

use std::time::Duration;

use fnhub_scheduler::policy::{
    DemandForecast, FixedKeepAlive, HybridConfig, HybridHistogram, ReservationPolicy,
};
use serde::Deserialize;

/// `reservation` as written: a policy's name, or a table with its parameters.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ReservationSection {
    Name(String),
    Table(ReservationTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReservationTable {
    policy: String,
    keep_alive_s: Option<u64>,
    miss: Option<f64>,
    min_s: Option<u64>,
    max_s: Option<u64>,
    fallback_s: Option<u64>,
    head_percentile: Option<f64>,
    tail_percentile: Option<f64>,
}

/// The policy a config file chose, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// A fixed keep-alive.
    Fixed {
        /// How long an idle environment is kept.
        keep_alive: Duration,
    },
    /// Keep-alive from a forecast of each function's demand.
    Forecast {
        /// Chance of a cold start the keep-alive accepts.
        miss: f64,
        /// Shortest keep-alive.
        min: Duration,
        /// Longest keep-alive.
        max: Duration,
    },
    /// The hybrid histogram of idle times, with pre-warming.
    Hybrid {
        /// Keep-alive while a function's histogram is not yet representative.
        fallback: Duration,
        /// Percentile of idle times where pre-warming starts.
        head_percentile: f64,
        /// Percentile of idle times where the keep-alive ends.
        tail_percentile: f64,
    },
}

impl Default for Reservation {
    fn default() -> Reservation {
        let d = HybridConfig::default();
        Reservation::Hybrid {
            fallback: d.fallback,
            head_percentile: d.head_percentile,
            tail_percentile: d.tail_percentile,
        }
    }
}

/// A day, the longest keep-alive or fallback a config may ask for.
const MAX_KEEP_S: u64 = 24 * 3600;

impl Reservation {
    /// The policy, for [`EdgeHubBuilder::reservation_policy`](crate::EdgeHubBuilder::reservation_policy).
    pub fn policy(&self) -> Box<dyn ReservationPolicy> {
        match *self {
            Reservation::Fixed { keep_alive } => Box::new(FixedKeepAlive::new(keep_alive)),
            Reservation::Forecast { miss, min, max } => Box::new(
                DemandForecast::default()
                    .with_miss(miss)
                    .with_bounds(min, max),
            ),
            Reservation::Hybrid {
                fallback,
                head_percentile,
                tail_percentile,
            } => {
                let mut c = HybridConfig::default();
                c.fallback = fallback;
                c.head_percentile = head_percentile;
                c.tail_percentile = tail_percentile;
                Box::new(HybridHistogram::new(c))
            }
        }
    }
}

impl ReservationSection {
    /// The policy it names, or the key that is wrong and why.
    pub(super) fn reservation(&self) -> Result<Reservation, (String, String)> {
        let bad = |key: &str, m: String| (format!("hub.reservation.{key}"), m);
        let table = match self {
            ReservationSection::Name(name) => {
                return match name.as_str() {
                    "fixed" => Ok(Reservation::Fixed {
                        keep_alive: Duration::from_secs(600),
                    }),
                    "forecast" => Ok(Reservation::Forecast {
                        miss: 0.01,
                        min: Duration::from_secs(60),
                        max: Duration::from_secs(3600),
                    }),
                    "hybrid" => Ok(Reservation::default()),
                    other => Err((
                        "hub.reservation".into(),
                        format!("{other:?} is not \"fixed\", \"forecast\" or \"hybrid\""),
                    )),
                };
            }
            ReservationSection::Table(t) => t,
        };
        let secs = |v: Option<u64>, key: &str, default: u64| match v {
            None => Ok(Duration::from_secs(default)),
            Some(s) if (1..=MAX_KEEP_S).contains(&s) => Ok(Duration::from_secs(s)),
            Some(s) => Err(bad(key, format!("{s} is not between 1 and {MAX_KEEP_S}"))),
        };
        let only = |allowed: &[&str]| {
            let given = [
                ("keep_alive_s", table.keep_alive_s.is_some()),
                ("miss", table.miss.is_some()),
                ("min_s", table.min_s.is_some()),
                ("max_s", table.max_s.is_some()),
                ("fallback_s", table.fallback_s.is_some()),
                ("head_percentile", table.head_percentile.is_some()),
                ("tail_percentile", table.tail_percentile.is_some()),
            ];
            match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
                Some((k, _)) => Err(bad(
                    k,
                    format!("not a parameter of the {:?} policy", table.policy),
                )),
                None => Ok(()),
            }
        };
        match table.policy.as_str() {
            "fixed" => {
                only(&["keep_alive_s"])?;
                Ok(Reservation::Fixed {
                    keep_alive: secs(table.keep_alive_s, "keep_alive_s", 600)?,
                })
            }
            "forecast" => {
                only(&["miss", "min_s", "max_s"])?;
                let miss = table.miss.unwrap_or(0.01);
                if !(miss > 0.0 && miss < 1.0) {
                    return Err(bad("miss", format!("{miss} is not between 0 and 1")));
                }
                let min = secs(table.min_s, "min_s", 60)?;
                let max = secs(table.max_s, "max_s", 3600)?;
                if min > max {
                    return Err(bad("min_s", "is more than max_s".into()));
                }
                Ok(Reservation::Forecast { miss, min, max })
            }
            "hybrid" => {
                only(&["fallback_s", "head_percentile", "tail_percentile"])?;
                let d = HybridConfig::default();
                let head = table.head_percentile.unwrap_or(d.head_percentile);
                let tail = table.tail_percentile.unwrap_or(d.tail_percentile);
                if !((0.0..100.0).contains(&head) && head < tail && tail <= 100.0) {
                    return Err(bad(
                        "head_percentile",
                        format!("{head} and {tail} are not 0 ≤ head < tail ≤ 100"),
                    ));
                }
                Ok(Reservation::Hybrid {
                    fallback: secs(table.fallback_s, "fallback_s", d.fallback.as_secs())?,
                    head_percentile: head,
                    tail_percentile: tail,
                })
            }
            other => Err(bad(
                "policy",
                format!("{other:?} is not \"fixed\", \"forecast\" or \"hybrid\""),
            )),
        }
    }
}
