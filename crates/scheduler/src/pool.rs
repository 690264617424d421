//! Warm environments, kept per function version and shared by all workers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// An environment with the pool's id for it (affinity remembers ids).
pub(crate) struct Pooled {
    pub(crate) id: u64,
    pub(crate) env: Box<dyn Environment>,
}

/// Affinity keys remembered at most; past this the map is cleared (keys then find any
/// warm environment until they are served again).
const AFFINITY_KEYS: usize = 65_536;

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
    idle: Vec<(Version, Vec<Pooled>)>,
    plan: Option<Plan>,
    /// Versions kept warm; empty means all. Environments of other versions are shut down
    /// when they come back from an invocation.
    live: Vec<Version>,
}

impl SlotState {
    fn envs(&mut self, version: Version) -> &mut Vec<Pooled> {
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
    /// (function slot, affinity key) to the environment that last served the key.
    affinity: HashMap<(usize, String), u64>,
    /// Environments checked out, tracked once any affinity key has been seen.
    busy: HashSet<u64>,
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
    affinity_wait: Duration,
    affinity_used: AtomicBool,
    next_id: AtomicU64,
    /// Signalled when an environment comes back, for affinity waits.
    returned: tokio::sync::Notify,
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
    pub(crate) fn new(
        sandboxes: Vec<Arc<dyn Sandbox>>,
        max_idle_per_version: usize,
        affinity_wait: Duration,
    ) -> Pool {
        Pool {
            sandboxes,
            state: Mutex::new(State::default()),
            max_idle_per_version,
            affinity_wait,
            affinity_used: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            returned: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn sandbox_for(&self, spec: &FunctionSpec) -> Option<&Arc<dyn Sandbox>> {
        self.sandboxes.iter().find(|s| s.supports(spec))
    }

    /// A warm environment for `spec`, or a new one. With an affinity `key`, the environment
    /// that last served the key is preferred: taken if idle, waited for up to the affinity
    /// wait if busy; otherwise any.
    pub(crate) async fn checkout(
        &self,
        spec: &Deployed,
        key: Option<&str>,
    ) -> Result<(Pooled, Start), PrepareError> {
        let deadline = key.map(|_| tokio::time::Instant::now() + self.affinity_wait);
        if key.is_some() {
            self.affinity_used.store(true, Ordering::Relaxed);
        }
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            {
                let mut state = self.state.lock();
                let track = self.affinity_used.load(Ordering::Relaxed);
                let target =
                    key.and_then(|k| state.affinity.get(&(spec.slot, k.to_owned())).copied());
                let envs = state.slot(spec.slot).envs(spec.version);
                let at = match target {
                    Some(id) => envs.iter().position(|p| p.id == id),
                    None => None,
                };
                let waiting_for_busy = at.is_none()
                    && target.is_some_and(|id| state.busy.contains(&id))
                    && deadline.is_some_and(|d| tokio::time::Instant::now() < d);
                if !waiting_for_busy {
                    let envs = state.slot(spec.slot).envs(spec.version);
                    let taken = match at {
                        Some(at) => Some(envs.swap_remove(at)),
                        None => envs.pop(),
                    };
                    if let Some(p) = taken {
                        if track {
                            state.busy.insert(p.id);
                        }
                        return Ok((p, Start::Warm));
                    }
                    break;
                }
                returned.as_mut().enable();
            }
            if let Some(d) = deadline {
                let _ = tokio::time::timeout_at(d, returned).await;
            }
        }
        let env = self.prepare(spec).await?;
        if self.affinity_used.load(Ordering::Relaxed) {
            self.state.lock().busy.insert(env.id);
        }
        Ok((env, Start::Cold))
    }

    async fn prepare(&self, spec: &Deployed) -> Result<Pooled, PrepareError> {
        let sandbox = self
            .sandbox_for(spec)
            .ok_or(PrepareError::UnsupportedRuntime {
                sandbox: "any",
                runtime: spec.runtime.kind(),
            })?;
        let env = sandbox.prepare(spec).await?;
        Ok(Pooled {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            env,
        })
    }

    /// Prepares one environment for `deployed` and keeps it idle.
    pub(crate) async fn prewarm(&self, deployed: &Deployed) -> Result<(), PrepareError> {
        let env = self.prepare(deployed).await?;
        self.checkin(deployed, env, None);
        Ok(())
    }

    /// Returns an environment after use, remembering it for the affinity `key` it served.
    /// Unhealthy ones, ones of retired versions and ones beyond the idle limit are shut
    /// down.
    pub(crate) fn checkin(&self, spec: &Deployed, env: Pooled, key: Option<&str>) {
        let rejected = {
            let mut state = self.state.lock();
            if self.affinity_used.load(Ordering::Relaxed) {
                state.busy.remove(&env.id);
            }
            if let Some(k) = key {
                if state.affinity.len() >= AFFINITY_KEYS {
                    state.affinity.clear();
                }
                state.affinity.insert((spec.slot, k.to_owned()), env.id);
            }
            let slot = state.slot(spec.slot);
            let retired = !slot.live.is_empty() && !slot.live.contains(&spec.version);
            let envs = slot.envs(spec.version);
            if env.env.is_healthy() && !retired && envs.len() < self.max_idle_per_version {
                envs.push(env);
                None
            } else {
                Some(env)
            }
        };
        self.returned.notify_waiters();
        if let Some(p) = rejected {
            tokio::spawn(p.env.shutdown());
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
                .map(|p| p.env)
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
                out.extend(envs.drain(..).map(|p| p.env));
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
                    out.evicted.extend(envs.drain(..).map(|p| p.env));
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
