//! Warm environments, kept per function version and shared by all workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// An environment as the pool keeps it: shared by the invocations it serves at once.
struct Cell {
    env: Box<dyn Environment>,
}

/// A checked-out environment: the handle a worker runs an invocation in.
pub(crate) struct Pooled {
    pub(crate) id: u64,
    cell: Arc<Cell>,
}

impl Pooled {
    pub(crate) fn env(&self) -> &dyn Environment {
        &*self.cell.env
    }
}

/// One environment in the pool.
struct Entry {
    id: u64,
    cell: Arc<Cell>,
    /// Invocations running in it now.
    in_use: u32,
    /// No longer handed out (unhealthy, evicted, or of a retired version); stopped when
    /// its last invocation ends.
    closing: bool,
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.in_use == 0 && !self.closing
    }
}

/// Stops an environment once nothing else holds it.
fn stop(cell: Arc<Cell>) -> Option<Box<dyn Environment>> {
    Arc::try_unwrap(cell).ok().map(|c| c.env)
}

/// Affinity keys remembered at most; past this the map is cleared (keys then find any
/// warm environment until they are served again).
const AFFINITY_KEYS: usize = 65_536;

/// What the reservation policy decided for an idle function.
struct Plan {
    deployed: Arc<Deployed>,
    idle_since: Instant,
    windows: Windows,
    /// How many environments to hold in the windows (the policy's forecast).
    environments: u32,
    prewarmed: bool,
}

/// The environments and the idle plan of one function (one slot), kept in vectors: a
/// function has a few versions at most, and slots are dense.
#[derive(Default)]
struct SlotState {
    envs: Vec<(Version, Vec<Entry>)>,
    plan: Option<Plan>,
    /// Versions kept warm; empty means all. Environments of other versions stop when their
    /// invocations end.
    live: Vec<Version>,
}

impl SlotState {
    fn envs(&mut self, version: Version) -> &mut Vec<Entry> {
        let at = match self.envs.iter().position(|(v, _)| *v == version) {
            Some(at) => at,
            None => {
                self.envs.push((version, Vec::new()));
                self.envs.len() - 1
            }
        };
        &mut self.envs[at].1
    }

    fn idle_count(&self) -> usize {
        self.envs
            .iter()
            .flat_map(|(_, e)| e)
            .filter(|e| e.is_idle())
            .count()
    }

    /// Marks idle environments for which `close` holds as closing and returns them to stop.
    fn close_idle(&mut self, close: impl Fn(Version) -> bool) -> Vec<Box<dyn Environment>> {
        let mut out = Vec::new();
        for (version, entries) in &mut self.envs {
            if !close(*version) {
                continue;
            }
            // Taken out of the list first: `stop` hands the environment back only from
            // its last reference.
            for idle in entries.extract_if(.., |e| e.in_use == 0) {
                out.extend(stop(idle.cell));
            }
            for busy in entries.iter_mut() {
                busy.closing = true;
            }
        }
        self.envs.retain(|(_, e)| !e.is_empty());
        out
    }
}

#[derive(Default)]
struct State {
    slots: Vec<SlotState>,
    /// (function slot, affinity key) to the environment that last served the key.
    affinity: HashMap<(usize, String), u64>,
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
    /// Read on cold starts and deploys only; added to after the build by
    /// `Scheduler::add_sandbox`.
    sandboxes: parking_lot::RwLock<Vec<Arc<dyn Sandbox>>>,
    state: Mutex<State>,
    max_idle_per_version: usize,
    /// The most memory (by `memory_mb`) pre-warms may bring idle environments to.
    max_warm_mb: u64,
    affinity_wait: Duration,
    next_id: AtomicU64,
    /// Signalled when an environment comes back, for affinity waits.
    returned: tokio::sync::Notify,
}

/// What a maintenance pass asks of its caller.
#[derive(Default)]
pub(crate) struct Maintenance {
    /// Functions to pre-warm one environment for (a function is listed once per
    /// environment).
    pub(crate) prewarm: Vec<Arc<Deployed>>,
    /// Environments evicted, to shut down.
    pub(crate) evicted: Vec<Box<dyn Environment>>,
    /// Functions the policy has let go cold, for their sandboxes to release what they hold
    /// for them (after the evicted environments have stopped).
    pub(crate) released: Vec<Arc<Deployed>>,
}

impl Pool {
    pub(crate) fn new(
        sandboxes: Vec<Arc<dyn Sandbox>>,
        max_idle_per_version: usize,
        max_warm_mb: u64,
        affinity_wait: Duration,
    ) -> Pool {
        Pool {
            sandboxes: parking_lot::RwLock::new(sandboxes),
            state: Mutex::new(State::default()),
            max_idle_per_version,
            max_warm_mb,
            affinity_wait,
            next_id: AtomicU64::new(1),
            returned: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn sandbox_for(&self, spec: &FunctionSpec) -> Option<Arc<dyn Sandbox>> {
        self.sandboxes
            .read()
            .iter()
            .find(|s| s.supports(spec))
            .cloned()
    }

    pub(crate) fn add_sandbox(&self, sandbox: Arc<dyn Sandbox>) {
        self.sandboxes.write().push(sandbox);
    }

    /// An environment for `spec` with room for one more invocation (each serves up to the
    /// spec's `concurrency` at once), or a new one. With an affinity `key`, the environment
    /// that last served the key is preferred: taken if it has room, waited for up to the
    /// affinity wait if full; otherwise any.
    pub(crate) async fn checkout(
        &self,
        spec: &Deployed,
        key: Option<&str>,
    ) -> Result<(Pooled, Start), PrepareError> {
        let per_env = spec.resources.concurrency.max(1);
        // The affinity wait, on tokio's timer, from the first time the preferred environment
        // is found busy: it is waited for until the wait runs out. Made only then, so a
        // checkout without a key (or whose environment has room) pays nothing for it.
        let mut wait_ends: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            {
                let mut state = self.state.lock();
                let target =
                    key.and_then(|k| state.affinity.get(&(spec.slot, k.to_owned())).copied());
                let entries = state.slot(spec.slot).envs(spec.version);
                // An idle environment that turned unhealthy while it waited (its process
                // died, its credentials are due) is stopped, not handed out.
                for dead in entries.extract_if(.., |e| e.is_idle() && !e.cell.env.is_healthy()) {
                    if let Some(env) = stop(dead.cell) {
                        tokio::spawn(env.shutdown());
                    }
                }
                let has_room = |e: &Entry| !e.closing && e.in_use < per_env;
                let preferred = target.and_then(|id| entries.iter().position(|e| e.id == id));
                let wait = match preferred {
                    Some(at) if has_room(&entries[at]) => false,
                    // The key's environment is busy: wait for it while the wait lasts.
                    Some(_) => wait_ends.as_ref().is_none_or(|w| !w.is_elapsed()),
                    None => false,
                };
                if !wait {
                    let at = preferred
                        .filter(|&at| has_room(&entries[at]))
                        .or_else(|| entries.iter().position(has_room));
                    if let Some(at) = at {
                        let e = &mut entries[at];
                        e.in_use += 1;
                        return Ok((
                            Pooled {
                                id: e.id,
                                cell: e.cell.clone(),
                            },
                            Start::Warm,
                        ));
                    }
                    break;
                }
                returned.as_mut().enable();
            }
            if key.is_some() {
                let ends = wait_ends
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.affinity_wait)));
                tokio::select! {
                    () = &mut returned => {}
                    () = ends.as_mut() => {}
                }
            }
        }
        let pooled = self.prepare(spec).await?;
        self.state
            .lock()
            .slot(spec.slot)
            .envs(spec.version)
            .push(Entry {
                id: pooled.id,
                cell: pooled.cell.clone(),
                in_use: 1,
                closing: false,
            });
        Ok((pooled, Start::Cold))
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
            cell: Arc::new(Cell { env }),
        })
    }

    /// Prepares one environment for `deployed` and keeps it idle.
    pub(crate) async fn prewarm(&self, deployed: &Deployed) -> Result<(), PrepareError> {
        let pooled = self.prepare(deployed).await?;
        self.state
            .lock()
            .slot(deployed.slot)
            .envs(deployed.version)
            .push(Entry {
                id: pooled.id,
                cell: pooled.cell,
                in_use: 0,
                closing: false,
            });
        Ok(())
    }

    /// Returns an environment after one invocation, remembering it for the affinity `key`
    /// it served. Unhealthy ones, ones of retired versions and idle ones beyond the idle
    /// limit stop once no invocation runs in them.
    pub(crate) fn checkin(&self, spec: &Deployed, pooled: Pooled, key: Option<&str>) {
        let Pooled { id, cell } = pooled;
        let healthy = cell.env.is_healthy();
        drop(cell);
        let stopped = {
            let mut state = self.state.lock();
            if let Some(k) = key {
                if state.affinity.len() >= AFFINITY_KEYS {
                    state.affinity.clear();
                }
                state.affinity.insert((spec.slot, k.to_owned()), id);
            }
            let max_idle = self.max_idle_per_version;
            let slot = state.slot(spec.slot);
            let retired = !slot.live.is_empty() && !slot.live.contains(&spec.version);
            let entries = slot.envs(spec.version);
            let idle_now = entries.iter().filter(|e| e.is_idle()).count();
            match entries.iter().position(|e| e.id == id) {
                Some(at) => {
                    let e = &mut entries[at];
                    e.in_use = e.in_use.saturating_sub(1);
                    if !healthy || retired || (e.in_use == 0 && idle_now >= max_idle) {
                        e.closing = true;
                    }
                    if e.closing && e.in_use == 0 {
                        let e = entries.swap_remove(at);
                        stop(e.cell)
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        self.returned.notify_waiters();
        if let Some(env) = stopped {
            tokio::spawn(env.shutdown());
        }
    }

    /// Number of idle environments (warm, no invocation running).
    pub(crate) fn idle_count(&self) -> usize {
        self.state
            .lock()
            .slots
            .iter()
            .map(SlotState::idle_count)
            .sum()
    }

    /// Shuts down every idle environment and forgets every plan.
    pub(crate) async fn drain(&self) {
        let all: Vec<_> = {
            let mut state = self.state.lock();
            state
                .slots
                .iter_mut()
                .flat_map(|s| {
                    s.plan = None;
                    s.close_idle(|_| true)
                })
                .collect()
        };
        for env in all {
            env.shutdown().await;
        }
    }

    /// Only `live` versions of the function in `slot` stay warm from now on: idle
    /// environments of the others are returned for shutdown, and busy ones stop when their
    /// invocations end.
    pub(crate) fn retire(&self, slot: usize, live: Vec<Version>) -> Vec<Box<dyn Environment>> {
        let mut state = self.state.lock();
        let s = state.slot(slot);
        let out = s.close_idle(|v| !live.contains(&v));
        s.live = live;
        out
    }

    /// The function of `deployed` went idle at `now`; hold `environments` of it by
    /// `windows`.
    pub(crate) fn went_idle(
        &self,
        deployed: Arc<Deployed>,
        windows: Windows,
        environments: u32,
        now: Instant,
    ) {
        let slot = deployed.slot;
        self.state.lock().slot(slot).plan = Some(Plan {
            deployed,
            idle_since: now,
            windows,
            environments: environments.max(1),
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
        // What the sandboxes hold warm outside environments (templates) counts too; asked
        // only when there is a bound to keep.
        let held_mb: u64 = if self.max_warm_mb == u64::MAX {
            0
        } else {
            self.sandboxes
                .read()
                .iter()
                .map(|s| s.warm_bytes().div_ceil(1024 * 1024))
                .sum()
        };
        let mut state = self.state.lock();
        // The memory idle environments hold now; pre-warms keep the total within the bound.
        let mut warm_mb: u64 = held_mb
            + state
                .slots
                .iter()
                .filter_map(|s| {
                    let memory = s.plan.as_ref()?.deployed.resources.memory_mb;
                    Some(u64::from(memory) * s.idle_count() as u64)
                })
                .sum::<u64>();
        for slot in &mut state.slots {
            let Some(plan) = &mut slot.plan else { continue };
            let elapsed = now.saturating_duration_since(plan.idle_since);
            let w = plan.windows;
            let loaded_window = elapsed >= w.prewarm && elapsed <= w.prewarm + w.keep_alive;
            let past = elapsed > w.prewarm + w.keep_alive;
            let due = loaded_window && !plan.prewarmed;
            if due {
                plan.prewarmed = true;
            }
            let deployed = plan.deployed.clone();
            if past {
                slot.plan = None;
            }
            if !loaded_window {
                let closed = slot.close_idle(|_| true);
                // Cold by the policy's windows: what the sandbox holds for it goes too.
                if !closed.is_empty() || past {
                    out.released.push(deployed.clone());
                }
                out.evicted.extend(closed);
            } else if due {
                // As many as the forecast says, while the memory bound allows.
                let want = slot.plan.as_ref().map_or(1, |p| p.environments) as usize;
                let memory = u64::from(deployed.resources.memory_mb);
                for _ in slot.idle_count()..want {
                    if warm_mb + memory > self.max_warm_mb {
                        break;
                    }
                    warm_mb += memory;
                    out.prewarm.push(deployed.clone());
                }
            }
        }
        out
    }
}
