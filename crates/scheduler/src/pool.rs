//! Warm environments, kept per function version and shared by all workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fnhub_core::{Environment, FunctionSpec, PrepareError, Sandbox, Version};

use crate::deployed::Deployed;
use crate::policy::Windows;
use parking_lot::Mutex;

/// Whether an invocation found a warm environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Start {
    /// An environment was prepared for it.
    Cold,
    /// It reused a warm environment.
    Warm,
    /// It never ran (deadline passed in the queue, environment failed, shut down).
    NotStarted,
}

impl Start {
    /// `cold`, `warm` or `not_started`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Warm => "warm",
            Start::NotStarted => "not_started",
        }
    }
}

/// A function's slot and a version.
type Key = (usize, Version);

/// What the reservation policy decided for an idle function.
struct Plan {
    deployed: Arc<Deployed>,
    idle_since: Instant,
    windows: Windows,
    prewarmed: bool,
}

#[derive(Default)]
struct State {
    idle: HashMap<Key, Vec<Box<dyn Environment>>>,
    /// Functions that are idle, by slot.
    plans: HashMap<usize, Plan>,
}

pub(crate) struct Pool {
    sandboxes: Vec<Arc<dyn Sandbox>>,
    state: Mutex<State>,
    max_idle_per_version: usize,
}

/// What a maintenance pass asks of its caller.
#[derive(Default)]
pub(crate) struct Maintenance {
    /// Functions to pre-warm one environment for.
    pub(crate) prewarm: Vec<Arc<Deployed>>,
    /// Environments evicted, to shut down.
    pub(crate) evicted: Vec<Box<dyn Environment>>,
}

impl Pool {
    pub(crate) fn new(sandboxes: Vec<Arc<dyn Sandbox>>, max_idle_per_version: usize) -> Pool {
        Pool {
            sandboxes,
            state: Mutex::new(State::default()),
            max_idle_per_version,
        }
    }

    pub(crate) fn sandbox_for(&self, spec: &FunctionSpec) -> Option<&Arc<dyn Sandbox>> {
        self.sandboxes.iter().find(|s| s.supports(spec))
    }

    /// A warm environment for `spec`, or a new one.
    pub(crate) async fn checkout(
        &self,
        spec: &Deployed,
    ) -> Result<(Box<dyn Environment>, Start), PrepareError> {
        let key = (spec.slot, spec.version);
        if let Some(env) = self.state.lock().idle.get_mut(&key).and_then(Vec::pop) {
            return Ok((env, Start::Warm));
        }
        let sandbox = self
            .sandbox_for(spec)
            .ok_or(PrepareError::UnsupportedRuntime {
                sandbox: "any",
                runtime: spec.runtime.kind(),
            })?;
        let env = sandbox.prepare(spec).await?;
        Ok((env, Start::Cold))
    }

    /// Prepares one environment for `deployed` and keeps it idle.
    pub(crate) async fn prewarm(&self, deployed: &Deployed) -> Result<(), PrepareError> {
        let sandbox = self
            .sandbox_for(deployed)
            .ok_or(PrepareError::UnsupportedRuntime {
                sandbox: "any",
                runtime: deployed.runtime.kind(),
            })?;
        let env = sandbox.prepare(deployed).await?;
        self.checkin(deployed, env);
        Ok(())
    }

    /// Returns an environment after use. Unhealthy ones, and ones beyond the idle limit,
    /// are shut down.
    pub(crate) fn checkin(&self, spec: &Deployed, env: Box<dyn Environment>) {
        let rejected = if env.is_healthy() {
            let mut state = self.state.lock();
            let slot = state.idle.entry((spec.slot, spec.version)).or_default();
            if slot.len() < self.max_idle_per_version {
                slot.push(env);
                None
            } else {
                Some(env)
            }
        } else {
            Some(env)
        };
        if let Some(env) = rejected {
            tokio::spawn(env.shutdown());
        }
    }

    /// Number of idle environments.
    pub(crate) fn idle_count(&self) -> usize {
        self.state.lock().idle.values().map(Vec::len).sum()
    }

    /// Shuts down every idle environment.
    pub(crate) async fn drain(&self) {
        let all: Vec<_> = {
            let mut state = self.state.lock();
            state.plans.clear();
            state.idle.drain().flat_map(|(_, v)| v).collect()
        };
        for env in all {
            env.shutdown().await;
        }
    }

    /// The function of `deployed` went idle at `now`; hold its environments by `windows`.
    pub(crate) fn went_idle(&self, deployed: Arc<Deployed>, windows: Windows, now: Instant) {
        let slot = deployed.slot;
        self.state.lock().plans.insert(
            slot,
            Plan {
                deployed,
                idle_since: now,
                windows,
                prewarmed: false,
            },
        );
    }

    /// The function in `slot` has work again: its idle plan ends.
    pub(crate) fn busy(&self, slot: usize) {
        self.state.lock().plans.remove(&slot);
    }

    /// Applies the plans at `now`: evicts environments before their pre-warm point and
    /// after their keep-alive, and lists the functions due for a pre-warm.
    pub(crate) fn maintain(&self, now: Instant) -> Maintenance {
        let mut out = Maintenance::default();
        let mut state = self.state.lock();
        let State { idle, plans } = &mut *state;
        plans.retain(|&slot, plan| {
            let elapsed = now.saturating_duration_since(plan.idle_since);
            let w = plan.windows;
            let loaded_window = elapsed >= w.prewarm && elapsed <= w.prewarm + w.keep_alive;
            if !loaded_window {
                for (_, envs) in idle.iter_mut().filter(|((s, _), _)| *s == slot) {
                    out.evicted.append(envs);
                }
            }
            let has_idle = idle
                .iter()
                .any(|((s, _), envs)| *s == slot && !envs.is_empty());
            if loaded_window && !plan.prewarmed && !has_idle {
                plan.prewarmed = true;
                out.prewarm.push(plan.deployed.clone());
            }
            // Past the keep-alive the plan is done.
            elapsed <= w.prewarm + w.keep_alive
        });
        idle.retain(|_, envs| !envs.is_empty());
        out
    }
}
