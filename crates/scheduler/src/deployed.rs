//! A deployed function version with what the scheduler keeps beside it.

use std::ops::Deref;
use std::sync::Arc;

use fnhub_core::{ErrorKind, FunctionSpec, Outcome};
use metrics::Counter;

use crate::pool::Start;

/// Outcome columns: `ok`, each known error kind, then `other` for kinds added later.
const OUTCOMES: usize = ErrorKind::ALL.len() + 2;
const STARTS: [Start; 3] = [Start::Cold, Start::Warm, Start::NotStarted];

/// Counters registered once at deploy, so a completion records its metric without building
/// a key (which allocates). Install the `metrics` recorder before deploying functions.
pub(crate) struct FunctionMetrics {
    invocations: Vec<Counter>,
}

fn outcome_index(outcome: &Outcome) -> usize {
    match outcome {
        Ok(_) => 0,
        Err(e) => {
            1 + ErrorKind::ALL
                .iter()
                .position(|k| *k == e.kind)
                .unwrap_or(ErrorKind::ALL.len())
        }
    }
}

fn outcome_label(index: usize) -> &'static str {
    match index {
        0 => "ok",
        i if i <= ErrorKind::ALL.len() => ErrorKind::ALL[i - 1].as_str(),
        _ => "other",
    }
}

impl FunctionMetrics {
    fn register(spec: &FunctionSpec) -> FunctionMetrics {
        let mut invocations = Vec::with_capacity(OUTCOMES * STARTS.len());
        for o in 0..OUTCOMES {
            for s in STARTS {
                invocations.push(metrics::counter!(
                    "fnhub_invocations_total",
                    "function" => spec.name.to_string(),
                    "version" => spec.version.to_string(),
                    "outcome" => outcome_label(o),
                    "start" => s.as_str(),
                ));
            }
        }
        FunctionMetrics { invocations }
    }

    pub(crate) fn completed(&self, outcome: &Outcome, start: Start) {
        let s = STARTS.iter().position(|x| *x == start).unwrap_or(0);
        if let Some(c) = self
            .invocations
            .get(outcome_index(outcome) * STARTS.len() + s)
        {
            c.increment(1);
        }
    }
}

/// One deployed version: its spec and its metric handles.
pub(crate) struct Deployed {
    pub(crate) spec: Arc<FunctionSpec>,
    pub(crate) metrics: FunctionMetrics,
    /// Dense index of the function (all versions share it), for per-function state kept
    /// in vectors rather than hash maps.
    pub(crate) slot: usize,
}

impl Deployed {
    pub(crate) fn new(spec: FunctionSpec, slot: usize) -> Deployed {
        let metrics = FunctionMetrics::register(&spec);
        Deployed {
            spec: Arc::new(spec),
            metrics,
            slot,
        }
    }
}

impl Deref for Deployed {
    type Target = FunctionSpec;

    fn deref(&self) -> &FunctionSpec {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhub_core::FunctionError;

    #[test]
    fn every_outcome_has_its_own_column() {
        let mut seen = std::collections::HashSet::new();
        seen.insert(outcome_index(&Ok(bytes::Bytes::new())));
        for kind in ErrorKind::ALL {
            let i = outcome_index(&Err(FunctionError::new(kind.clone(), "")));
            assert_eq!(outcome_label(i), kind.as_str());
            assert!(seen.insert(i));
        }
        assert!(seen.iter().all(|&i| i < OUTCOMES));
    }
}
