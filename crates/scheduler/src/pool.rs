//! Warm environments, kept per function version and shared by all workers.

use std::collections::HashMap;
use std::sync::Arc;

use fnhub_core::{Environment, FunctionSpec, PrepareError, Sandbox, Version};

use crate::deployed::Deployed;
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

pub(crate) struct Pool {
    sandboxes: Vec<Arc<dyn Sandbox>>,
    idle: Mutex<HashMap<Key, Vec<Box<dyn Environment>>>>,
    max_idle_per_version: usize,
}

impl Pool {
    pub(crate) fn new(sandboxes: Vec<Arc<dyn Sandbox>>, max_idle_per_version: usize) -> Pool {
        Pool {
            sandboxes,
            idle: Mutex::new(HashMap::new()),
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
        if let Some(env) = self.idle.lock().get_mut(&key).and_then(Vec::pop) {
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

    /// Returns an environment after use. Unhealthy ones, and ones beyond the idle limit,
    /// are shut down.
    pub(crate) fn checkin(&self, spec: &Deployed, env: Box<dyn Environment>) {
        let rejected = if env.is_healthy() {
            let mut idle = self.idle.lock();
            let slot = idle.entry((spec.slot, spec.version)).or_default();
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
        self.idle.lock().values().map(Vec::len).sum()
    }

    /// Shuts down every idle environment.
    pub(crate) async fn drain(&self) {
        let all: Vec<_> = self.idle.lock().drain().flat_map(|(_, v)| v).collect();
        for env in all {
            env.shutdown().await;
        }
    }
}
