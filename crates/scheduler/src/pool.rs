//! Warm environments, kept per function version and shared by all workers.

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

/// What the reservation policy decided for an idle function.
struct Plan {
    deployed: Arc<Deployed>,
    idle_since: Instant,
    windows: Windows,
    prewarmed: bool,
}

/// Idle environments and the idle plan of one function (one slot), kept in vectors: a
/// function has a few versions at most, and slots are dense.
#[derive(Default)]
struct SlotState {
    idle: Vec<(Version, Vec<Box<dyn Environment>>)>,
    plan: Option<Plan>,
    /// Versions kept warm; empty means all. Environments of other versions are shut down
    /// when they come back from an invocation.
    live: Vec<Version>,
}

impl SlotState {
    fn envs(&mut self, version: Version) -> &mut Vec<Box<dyn Environment>> {
        let at = match self.idle.iter().position(|(v, _)| *v == version) {
            Some(at) => at,
            None => {
                self.idle.push((version, Vec::new()));
                self.idle.len() - 1
            }
        };
        &mut self.idle[at].1
    }
}

#[derive(Default)]
struct State {
    slots: Vec<SlotState>,
}

impl State {
    fn slot(&mut self, slot: usize) -> &mut SlotState {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, SlotState::default);
        }
        &mut self.slots[slot]
    }
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
        if let Some(env) = self.state.lock().slot(spec.slot).envs(spec.version).pop() {
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
            let slot = state.slot(spec.slot);
            let retired = !slot.live.is_empty() && !slot.live.contains(&spec.version);
            let slot = slot.envs(spec.version);
            if !retired && slot.len() < self.max_idle_per_version {
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
        self.state
            .lock()
            .slots
            .iter()
            .flat_map(|s| &s.idle)
            .map(|(_, envs)| envs.len())
            .sum()
    }

    /// Shuts down every idle environment.
    pub(crate) async fn drain(&self) {
        let all: Vec<_> = {
            let mut state = self.state.lock();
            std::mem::take(&mut state.slots)
                .into_iter()
                .flat_map(|s| s.idle)
                .flat_map(|(_, envs)| envs)
                .collect()
        };
        for env in all {
            env.shutdown().await;
        }
    }

    /// Only `live` versions of the function in `slot` stay warm from now on: idle
    /// environments of the others are returned for shutdown, and busy ones are shut down
    /// when their invocation ends.
    pub(crate) fn retire(&self, slot: usize, live: Vec<Version>) -> Vec<Box<dyn Environment>> {
        let mut state = self.state.lock();
        let s = state.slot(slot);
        let mut out = Vec::new();
        for (version, envs) in &mut s.idle {
            if !live.contains(version) {
                out.append(envs);
            }
        }
        s.idle.retain(|(_, envs)| !envs.is_empty());
        s.live = live;
        out
    }

    /// The function of `deployed` went idle at `now`; hold its environments by `windows`.
    pub(crate) fn went_idle(&self, deployed: Arc<Deployed>, windows: Windows, now: Instant) {
        let slot = deployed.slot;
        self.state.lock().slot(slot).plan = Some(Plan {
            deployed,
            idle_since: now,
            windows,
            prewarmed: false,
        });
    }

    /// The function in `slot` has work again: its idle plan ends.
    pub(crate) fn busy(&self, slot: usize) {
        if let Some(s) = self.state.lock().slots.get_mut(slot) {
            s.plan = None;
        }
    }

    /// Applies the plans at `now`: evicts environments before their pre-warm point and
    /// after their keep-alive, and lists the functions due for a pre-warm.
    pub(crate) fn maintain(&self, now: Instant) -> Maintenance {
        let mut out = Maintenance::default();
        let mut state = self.state.lock();
        for slot in &mut state.slots {
            let Some(plan) = &mut slot.plan else { continue };
            let elapsed = now.saturating_duration_since(plan.idle_since);
            let w = plan.windows;
            let loaded_window = elapsed >= w.prewarm && elapsed <= w.prewarm + w.keep_alive;
            if !loaded_window {
                for (_, envs) in &mut slot.idle {
                    out.evicted.append(envs);
                }
            }
            let has_idle = slot.idle.iter().any(|(_, envs)| !envs.is_empty());
            if loaded_window && !plan.prewarmed && !has_idle {
                plan.prewarmed = true;
                out.prewarm.push(plan.deployed.clone());
            }
            // Past the keep-alive the plan is done.
            if elapsed > w.prewarm + w.keep_alive {
                slot.plan = None;
            }
            slot.idle.retain(|(_, envs)| !envs.is_empty());
        }
        out
    }
}
