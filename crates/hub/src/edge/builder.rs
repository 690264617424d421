//! Building an [`EdgeHub`]: the scheduler first (its observer made from a weak handle to
//! it), then what reaches back into it through weak handles (the local services and the
//! WebAssembly sandbox that hands them to guests, the durable host and engine), then the
//! deploys and flows.

use std::sync::Arc;

use fnhub_checkpoint::MemoryStore;
use fnhub_checkpoint::durable::{DurableFunction, Engine, LoadPolicy, SuspendPolicy};
use fnhub_core::{
    CheckpointStore, Clock, Function, FunctionRef, FunctionSpec, Invocation, Runtime, Sandbox,
    SystemClock,
};
use fnhub_router::{Flow, Router};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::{BuildError, DeployError, Scheduler};

use super::route::{HubObserver, Routes};
use super::{EdgeHub, Parts};
use crate::durable::{self, HubHost};
use crate::services::HubServices;
use crate::wakes::Timers;

/// The hub could not be built or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The scheduler could not start.
    #[error("the scheduler could not start")]
    Scheduler(#[from] BuildError),
    /// A function could not be deployed.
    #[error("a function could not be deployed")]
    Deploy(#[from] DeployError),
    /// A version deployed warm could not start an environment; it was withdrawn and the
    /// version before keeps the traffic.
    #[error("{function} version {version} could not start, so it takes no traffic: {reason}")]
    WarmFailed {
        /// The function.
        function: fnhub_core::FunctionName,
        /// The version that could not start.
        version: fnhub_core::Version,
        /// Why.
        reason: String,
    },
    /// A flow targets a function that is not deployed.
    #[error("flow {flow} targets {function}, which is not deployed")]
    UnknownFlowTarget {
        /// The flow, as text.
        flow: String,
        /// The missing function.
        function: FunctionRef,
    },
    /// A handler was given with a spec whose runtime is not in-process.
    #[error("{0} is given a handler but its runtime is not in-process")]
    NotInProcess(fnhub_core::FunctionName),
    /// An in-process spec names a handler that is not registered.
    #[error("{function} names handler {handler:?}, which is not registered")]
    NoHandler {
        /// The function.
        function: fnhub_core::FunctionName,
        /// The handler name.
        handler: String,
    },
    /// A spec asks for sidecars on a backend that cannot run them (only the process
    /// backend starts sidecar processes).
    #[error("{function} has sidecars, which its {runtime} runtime cannot run")]
    SidecarsUnsupported {
        /// The function.
        function: fnhub_core::FunctionName,
        /// Its runtime kind.
        runtime: &'static str,
    },
    /// The shadow store could not be opened.
    #[error("the shadow store in {dir} could not be opened: {source}")]
    ShadowStore {
        /// Its folder.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The durable event queue could not be opened.
    #[error("the event log in {dir} could not be opened: {source}")]
    EventLog {
        /// Its folder.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hub already has an MQTT bridge.
    #[cfg(feature = "mqtt")]
    #[error("the hub already has an MQTT bridge")]
    BridgeAttached,
    /// The WebAssembly sandbox could not start (its engine reserves the instance pool up
    /// front).
    #[cfg(feature = "wasm")]
    #[error("the wasm sandbox could not start")]
    Wasm(#[from] fnhub_sandbox::WasmError),
}

/// Builds an [`EdgeHub`].
pub struct EdgeHubBuilder {
    name: String,
    workers: usize,
    reservation: Option<Box<dyn fnhub_scheduler::policy::ReservationPolicy>>,
    queue_capacity: usize,
    max_depth: u32,
    in_process: InProcessSandbox,
    sandboxes: Vec<Arc<dyn Sandbox>>,
    functions: Vec<FunctionSpec>,
    flows: Vec<Flow>,
    store: Option<Arc<dyn CheckpointStore>>,
    clock: Arc<dyn Clock>,
    error: Option<HubError>,
    suspend_policy: SuspendPolicy,
    load_policy: LoadPolicy,
    durables: Vec<(FunctionSpec, Registration)>,
    event_log: Option<std::path::PathBuf>,
    shadow_dir: Option<std::path::PathBuf>,
    /// Where an earlier fnhub kept Lambda durable executions as files, to be moved into
    /// the checkpoint store at start.
    legacy_durable_dir: Option<std::path::PathBuf>,
    hold_lambda_drivers: bool,
    lambda_durables: Vec<(String, crate::DurableConfig)>,
    best_effort: bool,
    python_templates: bool,
    max_warm_mb: Option<u64>,
    cpu_meter: Option<fnhub_scheduler::CpuMeter>,
    maintenance_interval: Option<std::time::Duration>,
    python_templates_max_mb: u32,
    aliases: Vec<(fnhub_core::FunctionName, fnhub_core::Alias)>,
    #[cfg(feature = "wasm")]
    wasm_config: fnhub_sandbox::WasmConfig,
}

/// Registers a durable function with the hub's engine.
type Registration = Box<dyn FnOnce(&Engine) + Send>;

impl std::fmt::Debug for EdgeHubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeHubBuilder")
            .field("name", &self.name)
            .field("functions", &self.functions.len())
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl EdgeHubBuilder {
    /// The hub's name, recorded in checkpoints it takes. Default `fnhub`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Invocations that run at once. Default 16.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// How long idle environments are kept warm and which are started ahead of demand.
    /// Default: the scheduler's, a fixed ten-minute keep-alive (a config file's default is
    /// the hybrid histogram: see [`config`](crate::config)).
    pub fn reservation_policy(
        mut self,
        policy: Box<dyn fnhub_scheduler::policy::ReservationPolicy>,
    ) -> Self {
        self.reservation = Some(policy);
        self
    }

    /// The most memory (by `memory_mb`) that pre-warms bring idle environments to, the
    /// Python templates' resident memory counted in: a pre-warm loads as many environments
    /// of a function as the reservation policy forecasts it will run at once, within this. Default: no bound. The config file's
    /// `[hub] max_warm_mb`.
    pub fn max_warm_mb(mut self, mb: u64) -> Self {
        self.max_warm_mb = Some(mb);
        self
    }

    /// Where the hub reads its processor utilisation (the load policies' and metaevents'
    /// `cpu`). Default: [`CpuMeter::detect`](fnhub_scheduler::CpuMeter::detect), the
    /// hub's control group when it has one of its own, else the machine's `/proc/stat`.
    pub fn cpu_meter(mut self, meter: fnhub_scheduler::CpuMeter) -> Self {
        self.cpu_meter = Some(meter);
        self
    }

    /// How often the hub's maintenance pass applies the reservation policy's decisions
    /// (evicts idle environments, pre-warms). Default 1 s. `Duration::ZERO` turns the
    /// background pass off; call [`EdgeHub::maintain`](crate::EdgeHub::maintain) instead, as a
    /// replay on a [`ManualClock`](fnhub_core::ManualClock) does.
    pub fn maintenance_interval(mut self, interval: std::time::Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// Invocations that may wait for a worker before admission refuses more. Default 1024.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Longest chain of republishes and function outputs an event may start. Default 16.
    pub fn max_depth(mut self, max_depth: u32) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// Deploys a native function: `spec` must have an in-process runtime (see
    /// [`FunctionSpec::in_process`]), and `handler` is registered under its handler name.
    /// A spec of another runtime makes [`build`](Self::build) fail with
    /// [`HubError::NotInProcess`].
    pub fn function(mut self, spec: FunctionSpec, handler: impl Function) -> Self {
        match &spec.runtime {
            Runtime::InProcess { handler: key } => {
                self.in_process.register(key.clone(), handler);
            }
            _ => {
                self.error
                    .get_or_insert(HubError::NotInProcess(spec.name.clone()));
            }
        }
        self.functions.push(spec);
        self
    }

    /// Deploys a durable function: its executions journal their operations in the hub's
    /// checkpoint store and suspend when they would wait long (see
    /// [`fnhub_checkpoint::durable`]). `spec` must have an in-process runtime.
    ///
    /// An invocation starts an execution whose id is the invocation's id. It returns the
    /// function's output if the execution completes without suspending, and an empty output
    /// if it suspends; [`EdgeHub::durable_outcome`] waits for the final outcome, which is
    /// also published on the function's output topic when it has one.
    ///
    /// The spec's timeout bounds each run of an execution (its first run, and each replay
    /// after a suspension), not the execution's whole life. A run past it stops, and the
    /// execution ends with a `Timeout` error (type `Durable.Timeout`) as its outcome. The
    /// invocation that ran it is cut one second later if the engine has not ended it.
    pub fn durable(mut self, spec: FunctionSpec, function: impl DurableFunction) -> Self {
        let (name, version) = (spec.name.clone(), spec.version);
        self.durables.push((
            spec,
            Box::new(move |engine: &Engine| engine.register(name, version, function)),
        ));
        self
    }

    /// When durable executions are suspended to relieve load (checked every second against
    /// the scheduler's load). Default: [`LoadPolicy::default`](LoadPolicy).
    pub fn load_policy(mut self, policy: LoadPolicy) -> Self {
        self.load_policy = policy;
        self
    }

    /// When durable executions suspend. Default: waits predicted over 1 s.
    pub fn suspend_policy(mut self, policy: SuspendPolicy) -> Self {
        self.suspend_policy = policy;
        self
    }

    /// Deploys a function that runs in one of the added sandboxes.
    pub fn deploy(mut self, spec: FunctionSpec) -> Self {
        self.functions.push(spec);
        self
    }

    /// Adds a sandbox backend (process, wasm...). The in-process sandbox is always there, and
    /// with the `process` feature (on by default) so is a fail-closed
    /// [`ProcessSandbox`](fnhub_sandbox::ProcessSandbox); a process sandbox added here is
    /// used instead of it.
    pub fn sandbox(mut self, sandbox: Arc<dyn Sandbox>) -> Self {
        self.sandboxes.push(sandbox);
        self
    }

    /// How the hub's WebAssembly sandbox is set up (feature `wasm`): pool size, largest
    /// memory, fuel, epoch tick. Its guests reach the hub's services (publish, invoke,
    /// key-value store, shadows) through the `fnhub` imports. The engine is made when the
    /// first WebAssembly environment is: a setting it refuses fails that environment (and
    /// shows in `/healthz`), and a hub without WebAssembly functions never makes one.
    #[cfg(feature = "wasm")]
    pub fn wasm_config(mut self, config: fnhub_sandbox::WasmConfig) -> Self {
        self.wasm_config = config;
        self
    }

    /// Names a version of `function` (or splits its calls between two by weight), set
    /// once the functions are deployed.
    pub fn alias(mut self, function: fnhub_core::FunctionName, alias: fnhub_core::Alias) -> Self {
        self.aliases.push((function, alias));
        self
    }

    /// Adds a flow.
    pub fn flow(mut self, flow: Flow) -> Self {
        self.flows.push(flow);
        self
    }

    /// Where checkpoints of suspended executions go, both kinds (Rust durable functions
    /// and Lambda durable functions). Default: a [`MemoryStore`]. A hub built on a store
    /// that holds executions takes them up: the Lambda ones always (each hub its own), the
    /// Rust ones when the store is its own, not shared
    /// ([`CheckpointStore::is_shared`](fnhub_core::CheckpointStore::is_shared)); see
    /// [`EdgeHub::recover_durable`].
    pub fn checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps `Event` invocations ([`EdgeHub::submit_event`]) in a durable queue in `dir`:
    /// each is on disk before it is accepted, and what a hub killed before running it had
    /// accepted runs when the hub is built again from the same folder. Default: none (an
    /// `Event` invocation lives in memory only). The config file puts it in
    /// `checkpoint_dir/events`.
    pub fn event_log(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.event_log = Some(dir.into());
        self
    }

    /// Keeps device shadows in `dir`, one file per thing, saved and synced on every change:
    /// a hub built again from the same folder serves the same documents. Default: in
    /// memory only. The config file puts it in `checkpoint_dir/shadows`.
    pub fn shadow_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.shadow_dir = Some(dir.into());
        self
    }

    /// Runs process functions with best-effort confinement: what the machine cannot
    /// enforce (a hub not run as root has no uid per function, no control group) is
    /// reported and left out instead of refusing every process function. Default: fail
    /// closed. The config file's `[hub] confinement = "best-effort"`.
    pub fn best_effort_confinement(mut self) -> Self {
        self.best_effort = true;
        self
    }

    /// Whether Python functions (`python… -m awslambdaric <handler>`) fork their
    /// environments from a template per function version that has already imported the
    /// runtime client and the handler's libraries (see the process sandbox's
    /// [templates](fnhub_sandbox::process#templates-for-python-functions)). On by default.
    /// A function's template stays while the [reservation policy](Self::reservation_policy)
    /// keeps the function warm, stops when the policy lets it go cold, and is made again by
    /// the policy's pre-warm or the next call; one unused for ten minutes stops whatever the
    /// policy says. The config file's `[hub] python_templates`.
    pub fn python_templates(mut self, on: bool) -> Self {
        self.python_templates = on;
        self
    }

    /// The most resident memory the templates of Python functions hold together, in MiB
    /// (256 unless set): past it, the least recently used template that no environment
    /// holds stops, and when all are in use a new function's environments start the
    /// interpreter. The config file's `[hub] python_templates_max_mb`.
    pub fn python_templates_max_mb(mut self, max_mb: u32) -> Self {
        self.python_templates_max_mb = max_mb;
        self
    }

    /// Makes `function` a Lambda durable function (AWS's 2025-12-01 durable execution
    /// API): `Invoke` of it starts an execution that its SDK checkpoints through the hub.
    /// See [`DurableConfig`](crate::DurableConfig).
    pub fn lambda_durable(
        mut self,
        function: impl Into<String>,
        config: crate::DurableConfig,
    ) -> Self {
        self.lambda_durables.push((function.into(), config));
        self
    }

    /// Moves the Lambda durable executions an earlier fnhub kept as one file each in `dir`
    /// (its `checkpoint_dir/durable-executions`) into the checkpoint store when the hub
    /// starts, and removes the files. The config file does this for its `checkpoint_dir`.
    /// The running Lambda executions taken up from the store are driven only once a cloud
    /// runtime node attached to the hub has claimed them (the config file, for a node):
    /// one another node took up meanwhile is let go without its function being invoked
    /// here again.
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn hold_lambda_drivers(mut self) -> Self {
        self.hold_lambda_drivers = true;
        self
    }

    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn import_durable_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.legacy_durable_dir = Some(dir.into());
        self
    }

    /// The clock. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts the hub on the current tokio runtime.
    pub fn build(self) -> Result<EdgeHub, HubError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        crate::describe_metrics();
        let routes = Arc::new(Routes::new(self.max_depth, self.clock.clone()));
        let in_process = self.in_process.with_clock(self.clock.clone());
        let observed = routes.clone();
        let mut scheduler = Scheduler::builder()
            .workers(self.workers)
            .queue_capacity(self.queue_capacity)
            .clock(self.clock.clone())
            .observer_with(move |scheduler| {
                Arc::new(HubObserver {
                    routes: observed,
                    scheduler,
                })
            })
            .sandbox(Arc::new(in_process.clone()));
        if let Some(policy) = self.reservation {
            scheduler = scheduler.reservation_policy(policy);
        }
        if let Some(mb) = self.max_warm_mb {
            scheduler = scheduler.max_warm_mb(mb);
        }
        if let Some(meter) = self.cpu_meter {
            scheduler = scheduler.cpu_meter(meter);
        }
        if let Some(interval) = self.maintenance_interval {
            scheduler = scheduler.maintenance_interval(interval);
        }
        for sandbox in self.sandboxes {
            scheduler = scheduler.sandbox(sandbox);
        }
        let scheduler = scheduler.build()?;
        let shadows = match &self.shadow_dir {
            Some(dir) => {
                crate::shadows::ShadowStore::open(dir).map_err(|source| HubError::ShadowStore {
                    dir: dir.clone(),
                    source,
                })?
            }
            None => crate::shadows::ShadowStore::default(),
        };
        // Lambda durable executions live in the hub's checkpoint store when it has one.
        let dex = Arc::new(crate::dex::Dex::new(
            self.store.clone(),
            self.clock.clone(),
            &self.name,
        ));
        for (function, config) in &self.lambda_durables {
            dex.declare(function, *config);
        }
        let services = Arc::new(HubServices::new(
            routes.clone(),
            scheduler.downgrade(),
            self.clock.clone(),
            shadows,
            dex.clone(),
        ));
        // After the caller's own, so a sandbox configured by the caller wins. Its functions
        // reach the hub's services through the endpoint each environment serves.
        #[cfg(feature = "process")]
        let log_tails = Arc::new(fnhub_sandbox::process::LogTails::new());
        #[cfg(feature = "process")]
        let process = {
            let mut process = fnhub_sandbox::ProcessSandbox::new();
            if self.best_effort {
                process = process.best_effort();
            }
            if self.python_templates {
                process = process.with_templates(
                    std::time::Duration::from_secs(600),
                    u64::from(self.python_templates_max_mb) * 1024 * 1024,
                );
            }
            let process = process
                .with_clock(self.clock.clone())
                .with_services(services.clone())
                .with_log_tails(log_tails.clone());
            scheduler.add_sandbox(Arc::new(process.clone()));
            process
        };
        #[cfg(feature = "wasm")]
        scheduler.add_sandbox(Arc::new(super::lazy_wasm::LazyWasm::new(
            self.wasm_config,
            services.clone(),
            self.clock.clone(),
        )));
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        // One timer table for the hub's suspended executions, both kinds (`crate::wakes`).
        let timers = Timers::new(self.clock.clone());
        let host = Arc::new(HubHost::new(
            scheduler.downgrade(),
            routes.clone(),
            self.max_depth,
            timers.clone(),
        ));
        let engine = Engine::new(
            self.name.clone(),
            store.clone(),
            host.clone(),
            self.clock.clone(),
            self.suspend_policy,
        );
        engine.set_load_policy(self.load_policy);
        let mut functions = self.functions;
        let has_durables = !self.durables.is_empty();
        if has_durables {
            functions.extend(register_durables(
                &engine,
                &host,
                &in_process,
                self.durables,
            )?);
            tokio::spawn(durable::watch_load(
                scheduler.downgrade(),
                engine.clone(),
                self.clock.clone(),
            ));
        }
        let (events, pending) = match &self.event_log {
            Some(dir) => {
                let (log, recovered) =
                    crate::events::EventLog::open(dir).map_err(|source| HubError::EventLog {
                        dir: dir.clone(),
                        source,
                    })?;
                (Some(Arc::new(log)), recovered.pending)
            }
            None => (None, Vec::new()),
        };
        let hub = EdgeHub {
            parts: Arc::new(Parts {
                events: events.clone(),
                name: self.name,
                scheduler,
                routes,
                engine,
                host,
                in_process,
                store,
                services,
                dex,
                taken_up: tokio::sync::Mutex::new(None),
                start_failures: parking_lot::Mutex::new(std::collections::BTreeMap::new()),
                best_effort: self.best_effort,
                clock: self.clock,
                #[cfg(feature = "process")]
                log_tails,
                #[cfg(feature = "process")]
                process,
                #[cfg(feature = "mqtt")]
                bridge: parking_lot::Mutex::new(None),
            }),
        };
        for spec in functions {
            hub.deploy(spec)?;
        }
        for (function, alias) in self.aliases {
            hub.set_alias(&function, alias)?;
        }
        for flow in self.flows {
            hub.add_flow(flow)?;
        }
        if let Some(log) = events {
            tokio::spawn(crate::events::replay(hub.downgrade(), log, pending));
        }
        hub.services_handle().set_hub(hub.downgrade());
        hub.dex().set_driver(hub.downgrade(), timers.clone());
        let weak = hub.downgrade();
        tokio::spawn(Timers::serve(Arc::downgrade(&timers), move |due| {
            if let Some(hub) = weak.upgrade() {
                hub.fire(due);
            }
        }));
        // What the store holds is taken up at once, both kinds: a hub started again on the
        // store of one that stopped or died carries on with its executions. The engine's,
        // when the store is the hub's own (see `EdgeHub::recover_durable`).
        if has_durables && !hub.parts.store.is_shared() {
            // Only what was there before: starts wait until the store is listed.
            hub.parts.engine.hold_starts();
            let weak = hub.downgrade();
            tokio::spawn(async move {
                let Some(hub) = weak.upgrade() else { return };
                if let Err(error) = hub.recover_durable().await {
                    tracing::error!(%error, "the durable executions in the checkpoint store could not be taken up");
                }
            });
        }
        // The Lambda executions: requests about them wait until they are taken up; those
        // a hub killed mid-way was running carry on: their functions replay.
        let dex = hub.dex().clone();
        let (legacy, hold) = (self.legacy_durable_dir, self.hold_lambda_drivers);
        tokio::spawn(async move {
            match dex.take_up(legacy.as_deref()).await {
                Ok(running) if hold => dex.hold(running),
                Ok(running) => {
                    for id in running {
                        dex.kick(&id);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "the Lambda durable executions in the checkpoint store could not be taken up");
                }
            }
        });
        Ok(hub)
    }
}

impl Default for EdgeHubBuilder {
    fn default() -> EdgeHubBuilder {
        EdgeHubBuilder {
            name: "fnhub".to_owned(),
            workers: 16,
            reservation: None,
            queue_capacity: 1024,
            max_depth: Router::DEFAULT_MAX_DEPTH,
            in_process: InProcessSandbox::new(),
            sandboxes: Vec::new(),
            functions: Vec::new(),
            flows: Vec::new(),
            store: None,
            clock: Arc::new(SystemClock),
            error: None,
            suspend_policy: SuspendPolicy::default(),
            load_policy: LoadPolicy::default(),
            durables: Vec::new(),
            event_log: None,
            shadow_dir: None,
            legacy_durable_dir: None,
            hold_lambda_drivers: false,
            lambda_durables: Vec::new(),
            best_effort: false,
            python_templates: true,
            max_warm_mb: None,
            cpu_meter: None,
            maintenance_interval: None,
            python_templates_max_mb: 256,
            aliases: Vec::new(),
            #[cfg(feature = "wasm")]
            wasm_config: fnhub_sandbox::WasmConfig::default(),
        }
    }
}

/// Registers the durable functions with the engine and their handlers with the in-process
/// sandbox: an invocation carrying a wake resumes its execution, any other starts one (see
/// [`durable::run`]). The specs to deploy.
fn register_durables(
    engine: &Engine,
    host: &Arc<HubHost>,
    in_process: &InProcessSandbox,
    durables: Vec<(FunctionSpec, Registration)>,
) -> Result<Vec<FunctionSpec>, HubError> {
    let mut specs = Vec::new();
    for (spec, register) in durables {
        register(engine);
        // The engine stops each run at the function's timeout and ends the execution with
        // its outcome; the invocation's own limit is a backstop just after.
        host.set_run_timeout(&spec);
        let timeout = spec.resources.timeout + durable::BACKSTOP;
        let spec = spec.with_timeout(timeout);
        let Runtime::InProcess { handler } = &spec.runtime else {
            return Err(HubError::NotInProcess(spec.name));
        };
        let (engine, version, host) = (engine.clone(), spec.version, host.clone());
        in_process.register(
            handler.clone(),
            fnhub_core::from_fn(move |inv: Invocation| {
                let (engine, host) = (engine.clone(), host.clone());
                async move { durable::run(&engine, &host, inv, version).await }
            }),
        );
        specs.push(spec);
    }
    Ok(specs)
}
