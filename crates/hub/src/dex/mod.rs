//! Lambda durable functions (the 2025-12-01 durable execution API), served by the hub so
//! that functions written with AWS's durable SDKs (`aws-durable-execution-sdk-python`) run
//! unchanged.
//!
//! A function is durable when deployed with a [`DurableConfig`]. `Invoke` of it starts an
//! execution: the hub invokes the function with `DurableExecutionArn`, `CheckpointToken`
//! and `InitialExecutionState`; the SDK records each step, wait, callback, child context
//! and chained invoke through `CheckpointDurableExecution` (on the function endpoint, or
//! the front door) and answers `PENDING` when it must wait. The environment is then free;
//! the hub invokes the function again when a wait is due, a step's retry delay has
//! passed, a callback arrives, or a chained invoke ends, and the SDK replays from the
//! recorded operations. Each checkpoint consumes its token and hands out the next; a stale
//! token is refused; a repeated `ClientToken` gets the first answer.
//!
//! With a checkpoint store (the config file's `checkpoint_dir`), each execution is kept in
//! it as one checkpoint, beside the engine's own executions, and written before a change
//! is answered (see `store`): a hub killed at any point, built again on the same store,
//! takes up each acknowledged checkpoint and carries on its running executions by
//! invoking their functions again (the SDK replays).

mod handle;
pub(crate) mod journal;
mod model;
mod run;
mod store;

pub(crate) mod replica;

pub(crate) mod api;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::edge::WeakHub;
use crate::wakes::{Due, Timers};

pub use handle::{DurableExecution, DurableStartError};
pub(crate) use model::ErrorObject;
use model::{OpStatus, Operation};
pub(crate) use store::is_lambda;

/// How a function is durable: Lambda's `DurableConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DurableConfig {
    /// The longest an execution may run; then it ends `TIMED_OUT`. Default one day.
    pub execution_timeout: Duration,
    /// How long a finished execution is kept. Default 14 days.
    pub retention: Duration,
}

impl Default for DurableConfig {
    fn default() -> DurableConfig {
        DurableConfig {
            execution_timeout: Duration::from_secs(86_400),
            retention: Duration::from_secs(14 * 86_400),
        }
    }
}

impl DurableConfig {
    /// An execution ends `TIMED_OUT` after `timeout`.
    pub fn with_execution_timeout(mut self, timeout: Duration) -> DurableConfig {
        self.execution_timeout = timeout;
        self
    }

    /// A finished execution is kept for `retention`.
    pub fn with_retention(mut self, retention: Duration) -> DurableConfig {
        self.retention = retention;
        self
    }
}

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ExecStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Stopped,
    Paused,
}

impl ExecStatus {
    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, ExecStatus::Running | ExecStatus::Paused)
    }
}

/// One execution, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Execution {
    pub(crate) id: String,
    pub(crate) arn: String,
    pub(crate) function: String,
    pub(crate) version: u32,
    pub(crate) name: String,
    pub(crate) status: ExecStatus,
    pub(crate) ops: Vec<Operation>,
    pub(crate) result: Option<String>,
    pub(crate) error: Option<ErrorObject>,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: Option<u64>,
    pub(crate) deadline_ms: u64,
    pub(crate) retention_ms: u64,
    /// Something changed that the function has not seen: invoke it again.
    pub(crate) needs_invoke: bool,
    /// The checkpoint token now valid, and every token of the invocation running.
    #[serde(skip)]
    pub(crate) token: Option<String>,
    #[serde(skip)]
    pub(crate) tokens: Vec<String>,
    /// Operations changed outside a checkpoint since the last one answered.
    #[serde(skip)]
    pub(crate) changed: Vec<String>,
    /// The last answers, by `ClientToken`.
    #[serde(skip)]
    pub(crate) answered: VecDeque<(String, Value)>,
}

impl Execution {
    pub(crate) fn op(&self, id: &str) -> Option<&Operation> {
        self.ops.iter().find(|o| o.id == id)
    }

    pub(crate) fn op_mut(&mut self, id: &str) -> Option<&mut Operation> {
        self.ops.iter_mut().find(|o| o.id == id)
    }

    /// Ends the execution with `status`.
    pub(crate) fn finish(&mut self, status: ExecStatus, now_ms: u64) {
        let label = match status {
            ExecStatus::Succeeded => "succeeded",
            ExecStatus::Failed => "failed",
            ExecStatus::TimedOut => "timed_out",
            ExecStatus::Stopped => "stopped",
            ExecStatus::Running | ExecStatus::Paused => "running",
        };
        metrics::counter!("fnhub_durable_executions_total", "status" => label).increment(1);
        self.status = status;
        self.end_ms = Some(now_ms);
        self.token = None;
        self.tokens.clear();
        let op_status = match status {
            ExecStatus::Succeeded => OpStatus::Succeeded,
            ExecStatus::Failed => OpStatus::Failed,
            ExecStatus::TimedOut => OpStatus::TimedOut,
            _ => OpStatus::Stopped,
        };
        let id = self.id.clone();
        if let Some(op) = self.op_mut(&id)
            && !op.status.is_terminal()
        {
            op.end(op_status, now_ms);
        }
    }

    /// `GetDurableExecution`'s answer (and, without the payloads, a list entry's).
    pub(crate) fn summary(&self, with_data: bool) -> Value {
        let mut v = json!({
            "DurableExecutionArn": self.arn,
            "DurableExecutionName": self.name,
            "FunctionArn": format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}:{}", self.function, self.version),
            "Status": self.status,
            "StartTimestamp": self.start_ms as f64 / 1000.0,
            "Version": self.version.to_string(),
        });
        if let Some(end) = self.end_ms {
            v["EndTimestamp"] = json!(end as f64 / 1000.0);
        }
        if with_data {
            let input = self.op(&self.id).and_then(|o| o.input.clone());
            v["InputPayload"] = json!(input.unwrap_or_default());
            if let Some(r) = &self.result {
                v["Result"] = json!(r);
            }
            if let Some(e) = &self.error {
                v["Error"] = json!(e);
            }
            v["ExecutionDataIncluded"] = json!(true);
            // An engine execution has no timeout of its own (each run has its function's).
            if self.deadline_ms > 0 {
                v["ExpectedExecutionTimeoutTimestamp"] = json!(self.deadline_ms as f64 / 1000.0);
            }
        }
        v
    }
}

pub(crate) const REGION: &str = "us-east-1";
pub(crate) const ACCOUNT: &str = "000000000000";

/// Finished executions' answers kept per `ClientToken`.
const ANSWERS_KEPT: usize = 32;

/// The largest input of an execution (it is saved with every checkpoint): 256 KB.
pub(crate) const MAX_EXECUTION_INPUT: usize = 256 * 1024;

/// Every durable function and execution of one hub.
pub(crate) struct Dex {
    functions: Mutex<HashMap<String, DurableConfig>>,
    state: Mutex<State>,
    store: Option<store::Saver>,
    /// True once the executions in the store are taken up (at once without a store).
    ready: watch::Sender<bool>,
    /// Running executions taken up from the store whose drivers wait for a cloud node's
    /// claim (see [`Dex::hold`]).
    held: Mutex<Vec<String>>,
    /// The cloud runtime's copy, when the hub is one of its nodes.
    replica: OnceLock<Arc<dyn replica::Replica>>,
    /// What runs the executions' rounds, once the hub is built (see [`Dex::set_driver`]).
    driver: OnceLock<Driver>,
    clock: Arc<dyn fnhub_core::Clock>,
}

/// What the dex needs to run rounds of its executions: the hub that invokes their
/// functions, and the hub's timer table that wakes them.
struct Driver {
    me: std::sync::Weak<Dex>,
    hub: WeakHub,
    timers: Arc<Timers>,
}

#[derive(Default)]
struct State {
    executions: HashMap<String, Live>,
    /// `(function, name)` → execution id.
    by_name: HashMap<(String, String), String>,
    /// Callback id → `(execution id, operation id)`.
    callbacks: HashMap<String, (String, String)>,
}

/// An execution, whether a round of it runs, and who awaits its end.
struct Live {
    exec: Execution,
    /// A task runs rounds of it now (see [`Dex::kick`]).
    driving: bool,
    /// It changed since its round began: the task runs one more before it stops.
    again: bool,
    /// Invocations in a row that did not answer as the SDK does.
    failures: u32,
    done: watch::Sender<bool>,
}

impl Dex {
    /// Executions of the hub named `hub`, kept in `store` (in memory only without one);
    /// with a store, those it holds are taken up by [`Dex::take_up`], and requests wait for
    /// it ([`Dex::ready`]). Must be called on a tokio runtime when `store` is given (its
    /// writer is a task).
    pub(crate) fn new(
        store: Option<Arc<dyn fnhub_core::CheckpointStore>>,
        clock: Arc<dyn fnhub_core::Clock>,
        hub: &str,
    ) -> Dex {
        Dex {
            functions: Mutex::new(HashMap::new()),
            state: Mutex::new(State::default()),
            ready: watch::Sender::new(store.is_none()),
            held: Mutex::new(Vec::new()),
            store: store.map(|s| store::Saver::new(s, hub)),
            replica: OnceLock::new(),
            driver: OnceLock::new(),
            clock,
        }
    }

    /// Takes up the Lambda executions in the store (after moving in those an earlier hub
    /// kept as files in `legacy`): the ids of those still running, whose functions must be
    /// invoked again (the SDK replays). Requests are served from then on, also when the
    /// store could not be read (what it holds stays there).
    pub(crate) async fn take_up(
        &self,
        legacy: Option<&std::path::Path>,
    ) -> Result<Vec<String>, String> {
        let Some(saver) = &self.store else {
            return Ok(Vec::new());
        };
        let taken = async {
            if let Some(dir) = legacy {
                store::import_folder(saver, dir)
                    .await
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            saver.load().await.map_err(|e| e.to_string())
        }
        .await;
        let taken = taken.map(|loaded| {
            let mut running = Vec::new();
            let mut state = self.state.lock();
            for mut exec in loaded {
                // One a cloud node adopted meanwhile is newer than the stored copy.
                if state.executions.contains_key(&exec.id) {
                    continue;
                }
                if !exec.status.is_terminal() {
                    // An invocation may have been cut short: the function replays.
                    exec.needs_invoke = true;
                    running.push(exec.id.clone());
                }
                state.insert(exec);
            }
            running
        });
        self.ready.send_replace(true);
        taken
    }

    /// Keeps the running executions `ids`, taken up from the store, from being driven
    /// until [`Dex::unhold`]: a cloud node first claims them, and lets go of those another
    /// node runs now, so that it does not invoke their functions once more.
    pub(crate) fn hold(&self, ids: Vec<String>) {
        self.held.lock().extend(ids);
    }

    /// The held executions still here, to be driven now.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn unhold(&self) -> Vec<String> {
        let held = std::mem::take(&mut *self.held.lock());
        let state = self.state.lock();
        held.into_iter()
            .filter(|id| state.executions.contains_key(id))
            .collect()
    }

    /// Resolves once the executions in the store are taken up.
    pub(crate) async fn ready(&self) {
        let _ = self.ready.subscribe().wait_for(|r| *r).await;
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock
            .system_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Makes `function` durable.
    pub(crate) fn declare(&self, function: &str, config: DurableConfig) {
        self.functions.lock().insert(function.to_owned(), config);
    }

    pub(crate) fn config_of(&self, function: &str) -> Option<DurableConfig> {
        self.functions.lock().get(function).copied()
    }

    /// Queues `exec` to be kept (answers wait for [`Dex::flushed`]).
    fn save(&self, exec: &Execution, now_ms: u64) {
        if let Some(replica) = self.replica.get() {
            replica.saved(exec);
        }
        if let Some(store) = &self.store {
            store.save(exec, now_ms);
        }
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// Keeps every execution in `replica` too, from now on; false if one is already set.
    pub(crate) fn set_replica(&self, replica: Arc<dyn replica::Replica>) -> bool {
        self.replica.set(replica).is_ok()
    }

    pub(crate) fn replica(&self) -> Option<&Arc<dyn replica::Replica>> {
        self.replica.get()
    }

    /// Resolves once every change so far is kept where it must be (the checkpoint store,
    /// the replica); false if one of them could not keep it.
    pub(crate) async fn flushed(&self) -> bool {
        // Both write in the background meanwhile: waiting for one, then the other, takes
        // as long as the slower.
        let stored = match &self.store {
            Some(store) => store.flushed().await,
            None => true,
        };
        let replicated = match self.replica.get() {
            Some(replica) => replica.flushed().await,
            None => true,
        };
        stored && replicated
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// Takes up `exec`, run until now by a node that is gone: the function is invoked
    /// again and replays. False if this hub has it already.
    pub(crate) fn adopt(&self, mut exec: Execution) -> bool {
        let mut state = self.state.lock();
        if state.executions.contains_key(&exec.id) {
            return false;
        }
        if !exec.status.is_terminal() {
            exec.needs_invoke = true;
        }
        if let Some(store) = &self.store {
            store.save(&exec, self.now_ms());
        }
        state.insert(exec);
        true
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// Lets go of execution `id`: another node runs it now. Its driver stops; a caller
    /// waiting for its end here is told it was deleted.
    pub(crate) fn forget(&self, id: &str) {
        let mut state = self.state.lock();
        if let Some(live) = state.executions.remove(id) {
            state
                .by_name
                .remove(&(live.exec.function.clone(), live.exec.name.clone()));
            state.callbacks.retain(|_, (e, _)| e != id);
            live.done.send_replace(true);
            self.disarm(id);
            if let Some(store) = &self.store {
                store.remove(id);
            }
        }
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// The ids of the executions this hub runs (not ended).
    pub(crate) fn running(&self) -> Vec<String> {
        let state = self.state.lock();
        state
            .executions
            .values()
            .filter(|l| !l.exec.status.is_terminal())
            .map(|l| l.exec.id.clone())
            .collect()
    }

    /// Starts an execution of `function` (at `version`) with `input`, named `name` (a
    /// fresh name if none); or, for a name already started with the same input, finds
    /// that one. The execution's id, whether it is new, and a receiver that turns true
    /// when it ends.
    pub(crate) fn start(
        &self,
        function: &str,
        version: u32,
        input: String,
        name: Option<String>,
    ) -> Result<(String, bool, watch::Receiver<bool>), DurableStartError> {
        let config = self
            .config_of(function)
            .ok_or_else(|| DurableStartError::NotDurable(function.to_owned()))?;
        if input.len() > MAX_EXECUTION_INPUT {
            return Err(DurableStartError::Invalid(format!(
                "an execution's input is at most {MAX_EXECUTION_INPUT} bytes, not {}",
                input.len()
            )));
        }
        let id = random_id();
        let name = match name {
            Some(n) => {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(DurableStartError::Invalid(format!(
                        "DurableExecutionName {n:?} is not 1 to 64 of [a-zA-Z0-9_-]"
                    )));
                }
                n
            }
            None => id.clone(),
        };
        let now = self.now_ms();
        let mut state = self.state.lock();
        self.sweep(&mut state, now);
        if let Some(existing) = state.by_name.get(&(function.to_owned(), name.clone())) {
            let live = &state.executions[existing];
            let same = live.exec.op(&live.exec.id).and_then(|o| o.input.as_deref())
                == Some(input.as_str());
            if !same {
                return Err(DurableStartError::AlreadyStarted(name));
            }
            return Ok((existing.clone(), false, live.done.subscribe()));
        }
        let exec = Execution {
            arn: format!(
                "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}:{version}/durable-execution/{name}/{id}"
            ),
            id: id.clone(),
            function: function.to_owned(),
            version,
            name,
            status: ExecStatus::Running,
            ops: vec![Operation::execution(&id, input, now)],
            result: None,
            error: None,
            start_ms: now,
            end_ms: None,
            deadline_ms: now + config.execution_timeout.as_millis() as u64,
            retention_ms: config.retention.as_millis() as u64,
            needs_invoke: true,
            token: None,
            tokens: Vec::new(),
            changed: Vec::new(),
            answered: VecDeque::new(),
        };
        self.save(&exec, now);
        metrics::counter!("fnhub_durable_executions_total", "status" => "started").increment(1);
        let done = state.insert(exec);
        Ok((id, true, done))
    }

    /// Removes finished executions past their retention.
    fn sweep(&self, state: &mut State, now: u64) {
        let expired: Vec<String> = state
            .executions
            .values()
            .filter(|l| {
                l.exec.status.is_terminal()
                    && l.exec
                        .end_ms
                        .is_some_and(|end| end + l.exec.retention_ms <= now)
            })
            .map(|l| l.exec.id.clone())
            .collect();
        for id in expired {
            self.remove(state, &id);
        }
    }

    fn remove(&self, state: &mut State, id: &str) {
        if let Some(live) = state.executions.remove(id) {
            state
                .by_name
                .remove(&(live.exec.function.clone(), live.exec.name.clone()));
            state.callbacks.retain(|_, (e, _)| e != id);
            if let Some(store) = &self.store {
                store.remove(id);
            }
            if let Some(replica) = self.replica.get() {
                replica.deleted(&live.exec);
            }
        }
    }

    /// Runs `f` on execution `id`, saves it when `f` says it changed, and then runs a
    /// round of it (see [`Dex::kick`]): what changed from outside may be for its function
    /// to see.
    pub(crate) fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Execution, u64) -> (T, bool),
    ) -> Option<T> {
        let (out, changed) = self.update(id, |exec, now| {
            let (out, changed) = f(exec, now);
            ((out, changed), changed)
        })?;
        if changed {
            self.kick(id);
        }
        Some(out)
    }

    /// [`Dex::with`] without the round: what a round itself changes.
    pub(crate) fn update<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Execution, u64) -> (T, bool),
    ) -> Option<T> {
        let now = self.now_ms();
        let mut state = self.state.lock();
        let live = state.executions.get_mut(id)?;
        let (out, changed) = f(&mut live.exec, now);
        if changed {
            self.save(&live.exec, now);
            if live.exec.status.is_terminal() {
                live.done.send_replace(true);
            }
            let callbacks: Vec<(String, String)> = live
                .exec
                .ops
                .iter()
                .filter_map(|o| Some((o.callback_id.clone()?, o.id.clone())))
                .collect();
            for (callback, op) in callbacks {
                state.callbacks.insert(callback, (id.to_owned(), op));
            }
        }
        Some(out)
    }

    /// The execution whose ARN is `arn`.
    pub(crate) fn id_of_arn(&self, arn: &str) -> Option<String> {
        let id = arn.rsplit('/').next()?;
        let state = self.state.lock();
        let live = state.executions.get(id)?;
        (live.exec.arn == arn).then(|| id.to_owned())
    }

    pub(crate) fn callback(&self, callback_id: &str) -> Option<(String, String)> {
        self.state.lock().callbacks.get(callback_id).cloned()
    }

    pub(crate) fn snapshot(&self, id: &str) -> Option<Execution> {
        self.state.lock().executions.get(id).map(|l| l.exec.clone())
    }

    /// Lets the dex run rounds of its executions: `hub` invokes their functions, `timers`
    /// wakes them when something is due. Set once, when the hub is built.
    pub(crate) fn set_driver(self: &Arc<Self>, hub: WeakHub, timers: Arc<Timers>) {
        let me = Arc::downgrade(self);
        let _ = self.driver.set(Driver { me, hub, timers });
    }

    /// Runs rounds of execution `id` on a task of their own until it waits or ends: each
    /// marks what has come due, invokes the function when there is something for it to
    /// see, and arms the hub's timer for the next thing due. A round already running runs
    /// once more instead; an execution held for a cloud node's claim (see [`Dex::hold`])
    /// is left alone. Between rounds an execution holds no task.
    pub(crate) fn kick(&self, id: &str) {
        let Some(driver) = self.driver.get() else {
            return;
        };
        {
            let mut state = self.state.lock();
            let Some(live) = state.executions.get_mut(id) else {
                return;
            };
            if live.driving {
                live.again = true;
                return;
            }
            if self.held.lock().iter().any(|h| h == id) {
                return;
            }
            live.driving = true;
        }
        let Some(dex) = driver.me.upgrade() else {
            return;
        };
        tokio::spawn(run::drive(dex, driver.hub.clone(), id.to_owned()));
    }

    /// Starts a round of `id`: what changed so far, the round sees (see [`Dex::park`]).
    pub(crate) fn begin_round(&self, id: &str) {
        if let Some(live) = self.state.lock().executions.get_mut(id) {
            live.again = false;
        }
    }

    /// Ends a task's rounds of `id`, unless it changed meanwhile and `anyway` is false:
    /// false then, and the task runs another.
    pub(crate) fn park(&self, id: &str, anyway: bool) -> bool {
        let mut state = self.state.lock();
        let Some(live) = state.executions.get_mut(id) else {
            return true;
        };
        if std::mem::take(&mut live.again) && !anyway {
            return false;
        }
        live.driving = false;
        true
    }

    /// Arms the hub's timer for execution `id` at `at_ms` (Unix milliseconds, the dex's
    /// clock): its next round then. Replaces the one armed before.
    pub(crate) fn wake_at(&self, id: &str, at_ms: u64) {
        if let Some(driver) = self.driver.get() {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(at_ms);
            driver.timers.arm(at, Due::Lambda(id.to_owned()));
        }
    }

    /// Removes execution `id`'s entry from the hub's timer table: nothing is due for it.
    pub(crate) fn disarm(&self, id: &str) {
        if let Some(driver) = self.driver.get() {
            driver.timers.disarm(id);
        }
    }

    /// Counts an invocation of `id` that did not answer as the SDK does (`failed`), or
    /// clears the count; the count now.
    pub(crate) fn count_failure(&self, id: &str, failed: bool) -> u32 {
        let mut state = self.state.lock();
        let Some(live) = state.executions.get_mut(id) else {
            return 0;
        };
        live.failures = if failed { live.failures + 1 } else { 0 };
        live.failures
    }

    /// Executions of `function`, oldest first.
    pub(crate) fn list(&self, function: &str) -> Vec<Execution> {
        let now = self.now_ms();
        let mut state = self.state.lock();
        self.sweep(&mut state, now);
        let mut out: Vec<Execution> = state
            .executions
            .values()
            .filter(|l| l.exec.function == function)
            .map(|l| l.exec.clone())
            .collect();
        out.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
        out
    }

    /// Deletes a finished execution; false if it is running (or unknown).
    pub(crate) fn delete(&self, id: &str) -> Option<bool> {
        let mut state = self.state.lock();
        let terminal = state.executions.get(id)?.exec.status.is_terminal();
        if terminal {
            self.remove(&mut state, id);
        }
        Some(terminal)
    }
}

impl State {
    fn insert(&mut self, exec: Execution) -> watch::Receiver<bool> {
        let (done, rx) = watch::channel(exec.status.is_terminal());
        self.by_name
            .insert((exec.function.clone(), exec.name.clone()), exec.id.clone());
        for op in &exec.ops {
            if let Some(cb) = &op.callback_id {
                self.callbacks
                    .insert(cb.clone(), (exec.id.clone(), op.id.clone()));
            }
        }
        self.executions.insert(
            exec.id.clone(),
            Live {
                exec,
                driving: false,
                again: false,
                failures: 0,
                done,
            },
        );
        rx
    }
}

/// 32 hex digits from the operating system's random source.
pub(crate) fn random_id() -> String {
    use std::io::Read;
    let mut raw = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .is_err()
    {
        // Unique still, if not secret: the time and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        raw[..8].copy_from_slice(&t.to_le_bytes());
        raw[8..].copy_from_slice(&n.to_le_bytes());
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
