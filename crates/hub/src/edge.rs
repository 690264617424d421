//! The edge hub: router + scheduler + sandboxes + checkpoint store.

use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use fnhub_checkpoint::MemoryStore;
use fnhub_checkpoint::durable::{DurableFunction, Engine, EngineError, RunResult, SuspendPolicy};
use fnhub_core::ExecutionId;
use fnhub_core::{
    CheckpointStore, Clock, ErrorKind, Event, EventSource, Function, FunctionError, FunctionRef,
    FunctionSpec, Invocation, InvocationContext, LoadProbe, LoadSnapshot, LocalServices, Outcome,
    Runtime, Sandbox, SystemClock,
};
use fnhub_router::topic::{TopicError, TopicFilter, expand_template};
use fnhub_router::{Flow, FlowId, RouteError, Router, Subscription, Target};
use fnhub_sandbox::InProcessSandbox;

use crate::durable::HubHost;
use crate::overflow::Placed;
use crate::services::HubServices;
use fnhub_scheduler::{
    BuildError, Completion, DeployError, Observer, Scheduler, Start, SubmitError,
};

use crate::stats::{HubStats, Stats};

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
    /// The WebAssembly sandbox could not start (its engine reserves the instance pool up
    /// front).
    #[cfg(feature = "wasm")]
    #[error("the wasm sandbox could not start")]
    Wasm(#[from] fnhub_sandbox::WasmError),
}

/// An event was not accepted by the hub. The event is handed back inside.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The router refused it.
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// What publishing one event did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PublishReport {
    /// Invocations admitted.
    pub invocations: usize,
    /// Deliveries to local subscribers.
    pub delivered: usize,
    /// Local subscribers skipped because their queue was full.
    pub full: usize,
    /// Invocations refused at admission, each handed back for the caller to retry or drop.
    pub rejected: Vec<SubmitError>,
    /// Invocations held by flows whose overflow policy waits for room; they are admitted
    /// in order as room appears (or dropped and counted past the flow's timeout).
    pub waiting: usize,
}

/// Builds an [`EdgeHub`].
pub struct EdgeHubBuilder {
    name: String,
    workers: usize,
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
    load_policy: fnhub_checkpoint::durable::LoadPolicy,
    durables: Vec<(FunctionSpec, Registration)>,
    #[cfg(feature = "wasm")]
    wasm_config: fnhub_sandbox::WasmConfig,
    #[cfg(feature = "mqtt")]
    mqtt: Option<fnhub_router::mqtt::MqttConfig>,
    #[cfg(feature = "mqtt")]
    remote: Option<crate::bridge::RemoteInvoke>,
    #[cfg(all(feature = "mqtt", feature = "config"))]
    shadow: Option<String>,
    metaevents: Vec<crate::metaevents::MetaRule>,
    metaevent_interval: std::time::Duration,
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
    /// the scheduler's load). Default: [`LoadPolicy::default`](fnhub_checkpoint::durable::LoadPolicy).
    pub fn load_policy(mut self, policy: fnhub_checkpoint::durable::LoadPolicy) -> Self {
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
    /// key-value store, shadows) through the `fnhub` imports.
    #[cfg(feature = "wasm")]
    pub fn wasm_config(mut self, config: fnhub_sandbox::WasmConfig) -> Self {
        self.wasm_config = config;
        self
    }

    /// Bridges the hub to an MQTT broker (feature `mqtt`): upstream messages on the
    /// config's inbound filters are published in the hub as events from the cloud, and
    /// local events on its outbound filters are published upstream. See
    /// [`fnhub_router::mqtt`]. The bridge starts with the hub and stops with its shutdown.
    #[cfg(feature = "mqtt")]
    pub fn mqtt(mut self, config: fnhub_router::mqtt::MqttConfig) -> Self {
        self.mqtt = Some(config);
        self
    }

    /// Takes invocation requests from the cloud over the MQTT bridge (feature `mqtt`): see
    /// [`RemoteInvoke`](crate::bridge::RemoteInvoke). Needs [`mqtt`](Self::mqtt).
    #[cfg(feature = "mqtt")]
    pub fn remote_invoke(mut self, remote: crate::bridge::RemoteInvoke) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Lets the device shadow of `thing` drive the deployment over the MQTT bridge
    /// (features `mqtt` and `config`): see [`shadow`](crate::shadow). Needs
    /// [`mqtt`](Self::mqtt).
    #[cfg(all(feature = "mqtt", feature = "config"))]
    pub fn shadow_deployment(mut self, thing: impl Into<String>) -> Self {
        self.shadow = Some(thing.into());
        self
    }

    /// Adds a metaevent rule: see [`metaevents`](crate::metaevents).
    pub fn metaevent(mut self, rule: crate::metaevents::MetaRule) -> Self {
        self.metaevents.push(rule);
        self
    }

    /// How often metaevent rules are evaluated. Default 1 s.
    pub fn metaevent_interval(mut self, every: std::time::Duration) -> Self {
        self.metaevent_interval = every.max(std::time::Duration::from_millis(1));
        self
    }

    /// Adds a flow.
    pub fn flow(mut self, flow: Flow) -> Self {
        self.flows.push(flow);
        self
    }

    /// Where checkpoints of suspended executions go. Default: a [`MemoryStore`].
    pub fn checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
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
        let observer = Arc::new(HubObserver {
            hub: OnceLock::new(),
        });
        let in_process = self.in_process.with_clock(self.clock.clone());
        let mut scheduler = Scheduler::builder()
            .workers(self.workers)
            .queue_capacity(self.queue_capacity)
            .clock(self.clock.clone())
            .observer(observer.clone())
            .sandbox(Arc::new(in_process.clone()));
        for sandbox in self.sandboxes {
            scheduler = scheduler.sandbox(sandbox);
        }
        // After the caller's own, so a sandbox configured by the caller wins.
        #[cfg(feature = "process")]
        {
            scheduler = scheduler.sandbox(Arc::new(fnhub_sandbox::ProcessSandbox::new()));
        }
        let services = Arc::new(HubServices::new());
        #[cfg(feature = "wasm")]
        {
            let wasm = fnhub_sandbox::WasmSandbox::with_config(self.wasm_config, services.clone())?;
            scheduler = scheduler.sandbox(Arc::new(wasm));
        }
        let scheduler = scheduler.build()?;
        let router = Router::new().with_max_depth(self.max_depth);
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let host = Arc::new(HubHost::new());
        let engine = Engine::new(
            self.name.clone(),
            store.clone(),
            host.clone(),
            self.clock.clone(),
            self.suspend_policy,
        );
        let mut functions = self.functions;
        let has_durables = !self.durables.is_empty();
        if has_durables {
            // Resumed executions run as invocations of this function. A replay may last as
            // long as the longest durable function may run.
            let longest = self
                .durables
                .iter()
                .map(|(spec, _)| spec.resources.timeout)
                .max()
                .unwrap_or_default();
            let (spec, handler) = host.resume_function();
            let timeout = longest.max(spec.resources.timeout) + crate::durable::BACKSTOP;
            let spec = spec.with_timeout(timeout);
            in_process.register(crate::durable::RESUME_FUNCTION, handler);
            functions.push(spec);
        }
        for (spec, register) in self.durables {
            register(&engine);
            // The engine stops each run at the function's timeout and ends the execution
            // with its outcome; the invocation's own limit is a backstop just after.
            host.set_run_timeout(&spec);
            let spec = {
                let timeout = spec.resources.timeout + crate::durable::BACKSTOP;
                spec.with_timeout(timeout)
            };
            let Runtime::InProcess { handler } = &spec.runtime else {
                return Err(HubError::NotInProcess(spec.name));
            };
            let (starter, version, tracker) = (engine.clone(), spec.version, host.clone());
            in_process.register(
                handler.clone(),
                fnhub_core::from_fn(move |inv: Invocation| {
                    let (engine, tracker) = (starter.clone(), tracker.clone());
                    async move { start_durable(&engine, &tracker, inv, version).await }
                }),
            );
            functions.push(spec);
        }
        let inner = Arc::new(HubInner {
            closing: std::sync::atomic::AtomicBool::new(false),
            name: self.name,
            router,
            scheduler,
            engine,
            host: host.clone(),
            in_process,
            store,
            stats: Stats::new(),
            services: services.clone(),
            overflows: crate::overflow::Overflows::default(),
            max_depth: self.max_depth,
            #[cfg(feature = "mqtt")]
            bridge: parking_lot::Mutex::new(None),
        });
        let _ = host.hub.set(Arc::downgrade(&inner));
        let _ = services.hub.set(Arc::downgrade(&inner));
        let _ = inner.overflows.hub.set(Arc::downgrade(&inner));
        inner.engine.set_load_policy(self.load_policy);
        // Outputs of executions that finish after a suspension go out like any output; the
        // run that starts an execution returns its output through the scheduler.
        let weak = Arc::downgrade(&inner);
        inner.engine.set_completion_hook(Arc::new(
            move |done: &fnhub_checkpoint::durable::Finished| {
                let (Some(hub), true, Ok(output)) = (weak.upgrade(), done.resumed, &done.outcome)
                else {
                    return;
                };
                let spec = hub
                    .scheduler
                    .deployed()
                    .into_iter()
                    .find(|s| s.name == done.function && s.version == done.version);
                if let Some(template) = spec.and_then(|s| s.output_topic.clone())
                    && !output.is_empty()
                {
                    hub.publish_output(&done.function, &done.context, &template, output.clone());
                }
            },
        ));
        if has_durables {
            tokio::spawn(watch_load(Arc::downgrade(&inner), self.clock.clone()));
        }
        if !self.metaevents.is_empty() {
            tokio::spawn(crate::metaevents::run(
                Arc::downgrade(&inner),
                self.metaevents,
                self.metaevent_interval,
            ));
        }
        let hub = EdgeHub { inner };
        for spec in functions {
            hub.deploy(spec)?;
        }
        for flow in self.flows {
            hub.add_flow(flow)?;
        }
        // Only now may completions publish outputs through the hub.
        let _ = observer.hub.set(Arc::downgrade(&hub.inner));
        #[cfg(feature = "mqtt")]
        if let Some(config) = self.mqtt {
            #[cfg(feature = "config")]
            let shadow = self.shadow;
            #[cfg(not(feature = "config"))]
            let shadow = None;
            hub.start_bridge(config, self.remote, shadow);
        }
        Ok(hub)
    }
}

pub(crate) struct HubInner {
    name: String,
    /// Set when shutdown begins: outside work is refused, inside work flows on.
    closing: std::sync::atomic::AtomicBool,
    pub(crate) router: Router,
    pub(crate) scheduler: Scheduler,
    engine: Engine,
    host: Arc<HubHost>,
    in_process: InProcessSandbox,
    store: Arc<dyn CheckpointStore>,
    pub(crate) stats: Stats,
    services: Arc<HubServices>,
    pub(crate) overflows: crate::overflow::Overflows,
    max_depth: u32,
    #[cfg(feature = "mqtt")]
    pub(crate) bridge: parking_lot::Mutex<Option<fnhub_router::mqtt::MqttBridge>>,
}

/// Feeds completions into the hub's stats and publishes outputs on output topics.
struct HubObserver {
    hub: OnceLock<Weak<HubInner>>,
}

impl Observer for HubObserver {
    fn on_completed(&self, c: &Completion, spec: &FunctionSpec) {
        let Some(hub) = self.hub.get().and_then(Weak::upgrade) else {
            return;
        };
        let outcome = match &c.outcome {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        hub.stats.completed(
            &c.function,
            outcome,
            c.start == Start::Cold,
            c.queued + c.ran,
        );
        if let (Ok(output), Some(template)) = (&c.outcome, &spec.output_topic)
            && !output.is_empty()
        {
            hub.publish_output(&c.function, &c.context, template, output.clone());
        }
    }
}

impl HubInner {
    fn publish_output(
        &self,
        function: &fnhub_core::FunctionName,
        context: &InvocationContext,
        template: &str,
        payload: Bytes,
    ) {
        let trigger = context.topic.as_deref().unwrap_or("");
        let topic = match expand_template(template, trigger) {
            Ok(t) => t,
            Err(error) => {
                Stats::add(&self.stats.counters.events_refused, 1);
                tracing::warn!(%function, %error, "output topic does not fit; output dropped");
                return;
            }
        };
        let event = Event::new(
            topic.as_str(),
            payload,
            EventSource::Function(function.clone()),
        )
        .with_trace(context.trace.child())
        .with_depth(context.depth.saturating_add(1));
        Stats::add(&self.stats.counters.events_out, 1);
        match self.route(event, false) {
            Ok(report) => {
                for rejected in report.rejected {
                    tracing::warn!(%function, error = %rejected, "invocation triggered by an output was not admitted");
                }
            }
            Err(error) => {
                tracing::warn!(%function, %error, "output event refused");
            }
        }
    }

    /// An event from outside the hub.
    pub(crate) fn publish(&self, event: Event) -> Result<PublishReport, PublishError> {
        Stats::add(&self.stats.counters.events_in, 1);
        if let Some(remote) = self.host.remote.get() {
            // Waits are the cloud runtime's, shared by every node.
            remote.event(&event);
        } else if self.engine.is_waiting_for_events() {
            // Durable executions waiting for this topic resume (off this thread).
            let (engine, copy) = (self.engine.clone(), event.clone());
            tokio::spawn(async move { engine.deliver(&copy).await });
        }
        self.route(event, true)
    }

    /// The longest chain of events and calls the hub lets one event start.
    pub(crate) fn max_depth(&self) -> u32 {
        self.max_depth
    }

    /// Routes an event made inside the hub (a function's publish, a shadow's document):
    /// counted as an output, and refused invocations are logged.
    pub(crate) fn route_internal(&self, event: Event) -> Result<PublishReport, PublishError> {
        Stats::add(&self.stats.counters.events_out, 1);
        let topic = event.topic.clone();
        let report = self.route(event, false)?;
        for rejected in &report.rejected {
            tracing::warn!(%topic, error = %rejected, "invocation triggered by a function's event was not admitted");
        }
        Ok(report)
    }

    /// Routes an event; `external` events (from outside the hub) start no invocation once
    /// shutdown has begun, while outputs of work already admitted still flow.
    fn route(&self, event: Event, external: bool) -> Result<PublishReport, PublishError> {
        let refuse = external && self.closing.load(std::sync::atomic::Ordering::Acquire);
        let dispatch = self.router.dispatch(event).inspect_err(|_| {
            Stats::add(&self.stats.counters.events_refused, 1);
        })?;
        let c = &self.stats.counters;
        Stats::add(&c.delivered, dispatch.delivered);
        Stats::add(&c.delivery_full, dispatch.full);
        Stats::add(&c.events_refused, dispatch.refused);
        let mut report = PublishReport {
            delivered: dispatch.delivered,
            full: dispatch.full,
            ..PublishReport::default()
        };
        for routed in dispatch.invocations {
            let invocation = invocation_for(routed.function, routed.event);
            if refuse {
                report.rejected.push(SubmitError::ShuttingDown(invocation));
                continue;
            }
            match self.overflows.submit(
                &self.scheduler,
                &self.stats,
                routed.flow,
                routed.overflow,
                invocation,
            ) {
                Ok(Placed::Admitted) => report.invocations += 1,
                Ok(Placed::Waiting) => report.waiting += 1,
                Err(e) => report.rejected.push(e),
            }
        }
        Stats::add(&c.rejected, report.rejected.len());
        Ok(report)
    }
}

/// Feeds the scheduler's load to the durable engine every second, while the hub lives.
async fn watch_load(hub: Weak<HubInner>, clock: Arc<dyn Clock>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        if hub.scheduler.is_closed() {
            return;
        }
        let snapshot = hub.scheduler.snapshot();
        hub.engine.check_load(&snapshot, clock.now()).await;
    }
}

/// Starts a durable execution for an invocation of a durable function.
async fn start_durable(
    engine: &Engine,
    host: &HubHost,
    invocation: Invocation,
    version: fnhub_core::Version,
) -> Outcome {
    use crate::durable::DurableEnd;
    let id = invocation.id;
    match engine.start(invocation, version).await {
        Ok(RunResult::Completed(outcome)) => {
            host.ended(id, DurableEnd::Completed);
            outcome
        }
        // Suspended: nothing to output yet. The execution's id is the invocation's.
        Ok(RunResult::Suspended {
            waiting_for, at, ..
        }) => {
            host.ended(id, DurableEnd::Suspended(waiting_for, at));
            Ok(Bytes::new())
        }
        Ok(_) => Err(FunctionError::new(
            ErrorKind::Rejected,
            "unknown run result",
        )),
        Err(e) => {
            host.ended(id, DurableEnd::Failed);
            Err(FunctionError::new(ErrorKind::Rejected, e.to_string()).with_type("DurableEngine"))
        }
    }
}

/// The invocation an event triggers: its payload, its topic, its trace context (or a new
/// trace) and its depth.
fn invocation_for(function: FunctionRef, event: Event) -> Invocation {
    let mut context = InvocationContext::default();
    if let Some(trace) = event.headers.trace() {
        context.trace = trace;
    }
    context.tracestate = event.headers.get("tracestate").map(str::to_owned);
    context.depth = event.headers.depth();
    context.topic = Some(event.topic);
    Invocation::new(function, event.payload).with_context(context)
}

/// An edge hub: routes events to functions and local subscribers, runs functions in warm
/// environments under a bounded scheduler, and publishes their outputs.
///
/// Cheap to clone; clones are handles to the same hub.
#[derive(Clone)]
pub struct EdgeHub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for EdgeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeHub")
            .field("name", &self.inner.name)
            .field("router", &self.inner.router)
            .field("scheduler", &self.inner.scheduler)
            .finish()
    }
}

impl EdgeHub {
    /// A builder with the defaults: 16 workers, a queue of 1024, a memory checkpoint store,
    /// the system clock.
    pub fn builder() -> EdgeHubBuilder {
        EdgeHubBuilder {
            name: "fnhub".to_owned(),
            workers: 16,
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
            load_policy: fnhub_checkpoint::durable::LoadPolicy::default(),
            durables: Vec::new(),
            #[cfg(feature = "wasm")]
            wasm_config: fnhub_sandbox::WasmConfig::default(),
            #[cfg(feature = "mqtt")]
            mqtt: None,
            #[cfg(feature = "mqtt")]
            remote: None,
            #[cfg(all(feature = "mqtt", feature = "config"))]
            shadow: None,
            metaevents: Vec::new(),
            metaevent_interval: std::time::Duration::from_secs(1),
        }
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Publishes an event from outside the hub: delivers it to local subscribers and starts
    /// the invocations its flows ask for. Does not wait for them.
    ///
    /// Invocations that admission refuses are handed back in
    /// [`PublishReport::rejected`]; an event the router refuses is handed back in the error.
    pub fn publish(&self, event: Event) -> Result<PublishReport, PublishError> {
        self.inner.publish(event)
    }

    /// Waits for the final outcome of a durable execution running on this hub.
    pub async fn durable_outcome(&self, execution: ExecutionId) -> Option<Outcome> {
        self.inner.engine.outcome(execution).await
    }

    /// The encoded checkpoint of a suspended durable execution, to move it to another hub
    /// with [`EdgeHub::import`]. Nothing changes here until [`EdgeHub::release`].
    pub async fn export(&self, execution: ExecutionId) -> Result<Bytes, EngineError> {
        self.inner.engine.export(execution).await
    }

    /// Takes in a durable execution exported by another hub; it resumes here when what it
    /// waits for arrives. Refused (the checkpoint stays where it was) when this hub lacks the
    /// exact function version or cannot read the checkpoint's format.
    pub async fn import(&self, checkpoint: &[u8]) -> Result<ExecutionId, EngineError> {
        self.inner.engine.import(checkpoint).await
    }

    /// Forgets an execution exported to another hub.
    pub async fn release(&self, execution: ExecutionId) -> Result<bool, EngineError> {
        self.inner.engine.release(execution).await
    }

    /// Runs `function` with `payload` and waits for its outcome. A refused admission hands
    /// the invocation back.
    pub async fn invoke(
        &self,
        function: FunctionRef,
        payload: impl Into<Bytes>,
    ) -> Result<Outcome, SubmitError> {
        let completion = self.call(Invocation::new(function, payload)).await?;
        Ok(completion.outcome)
    }

    /// [`EdgeHub::call`], also telling how the durable execution the invocation started
    /// (if it did) ended its first run.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) async fn call_tracked(
        &self,
        invocation: Invocation,
    ) -> Result<(Completion, Option<crate::durable::DurableEnd>), SubmitError> {
        let id = invocation.id;
        self.inner.host.track(id);
        let called = self.call(invocation).await;
        let suspension = self.inner.host.untrack(id);
        called.map(|c| (c, suspension))
    }

    /// Wakes a durable execution whose operation at journal position `at` has its result
    /// (see [`Engine::wake`]); with `take_over`, one found running (its node died) is
    /// continued from its journal (see [`Engine::take_over`]). The replay runs on one of
    /// the hub's workers, as an invocation of [`RESUME_FUNCTION`], so that admission and
    /// load see it; `Err` hands back what the hub did not admit.
    ///
    /// [`RESUME_FUNCTION`]: crate::RESUME_FUNCTION
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) async fn wake(
        &self,
        execution: ExecutionId,
        at: u32,
        result: Outcome,
        take_over: bool,
    ) -> Result<Result<fnhub_checkpoint::durable::Woken, EngineError>, SubmitError> {
        use fnhub_checkpoint::durable::Woken;
        let engine = self.inner.engine.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let replay: fnhub_core::BoxFuture<'static, ()> = Box::pin(async move {
            let woken = match engine.wake(execution, at, result).await {
                Ok(Woken::Running) if take_over => engine.take_over(execution).await,
                other => other,
            };
            let _ = tx.send(woken);
        });
        let function = crate::durable::RESUME_FUNCTION
            .parse()
            .unwrap_or_else(|_| unreachable!("a valid name"));
        let invocation = Invocation::new(function, Bytes::new());
        let id = invocation.id;
        self.inner.host.resumes.lock().insert(id, replay);
        let ticket = match self.admit(invocation, |s, i| s.try_submit(i)) {
            Ok(ticket) => ticket,
            Err(refused) => {
                self.inner.host.resumes.lock().remove(&id);
                return Err(refused);
            }
        };
        let completion = ticket.await;
        Ok(rx.await.unwrap_or_else(|_| {
            // Cut short (its timeout): it no longer runs, and a wake or take-over later
            // continues it from its journal.
            let reason = match completion.outcome {
                Err(e) => e.to_string(),
                Ok(_) => "the replay did not run".to_owned(),
            };
            Err(EngineError::Interrupted(reason))
        }))
    }

    /// Whether durable executions of low priority are being shed now, under load (see
    /// [`EdgeHubBuilder::load_policy`]).
    pub fn is_shedding(&self) -> bool {
        self.inner.engine.is_shedding()
    }

    /// Sends this hub's children to `remote` and lets it wake suspended executions; false
    /// if the hub already has one.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn attach_remote(&self, remote: Arc<dyn crate::durable::Remote>) -> bool {
        self.inner.host.remote.set(remote).is_ok()
    }

    /// Runs an invocation built by the caller (trace context, deadline, priority,
    /// principal...) and waits for its completion, with its start kind and timings.
    pub async fn call(&self, invocation: Invocation) -> Result<Completion, SubmitError> {
        let ticket = self.admit(invocation, |s, i| s.try_submit(i))?;
        Ok(ticket.await)
    }

    /// Admits an invocation from outside with `submit`, unless the hub is shutting down;
    /// every refusal is counted.
    fn admit<T>(
        &self,
        invocation: Invocation,
        submit: impl FnOnce(&Scheduler, Invocation) -> Result<T, SubmitError>,
    ) -> Result<T, SubmitError> {
        let closing = self
            .inner
            .closing
            .load(std::sync::atomic::Ordering::Acquire);
        let admitted = if closing {
            Err(SubmitError::ShuttingDown(invocation))
        } else {
            submit(&self.inner.scheduler, invocation)
        };
        admitted.inspect_err(|_| Stats::add(&self.inner.stats.counters.rejected, 1))
    }

    /// Admits an invocation without waiting for it (Lambda's `Event` invocation type); its
    /// outcome goes where its function's outputs go. A refused admission hands the
    /// invocation back.
    pub fn submit(&self, invocation: Invocation) -> Result<fnhub_core::InvocationId, SubmitError> {
        self.admit(invocation, |s, i| s.try_submit_detached(i))
    }

    /// Adds a flow at run time. Its function target must be deployed.
    pub fn add_flow(&self, flow: Flow) -> Result<FlowId, HubError> {
        if let Target::Function(function) = &flow.target {
            let deployed = self.inner.scheduler.deployed();
            if !deployed.iter().any(|s| s.name == function.name) {
                return Err(HubError::UnknownFlowTarget {
                    flow: format!("{} {} -> {}", flow.source, flow.filter, flow.target),
                    function: function.clone(),
                });
            }
        }
        Ok(self.inner.router.add_flow(flow))
    }

    /// Removes a flow, returning it.
    pub fn remove_flow(&self, id: FlowId) -> Option<Flow> {
        self.inner.router.remove_flow(id)
    }

    /// Deploys another function version at run time (in a sandbox the hub already has).
    ///
    /// An in-process spec whose handler is not registered is refused.
    pub fn deploy(&self, spec: FunctionSpec) -> Result<(), HubError> {
        if let Runtime::InProcess { handler } = &spec.runtime
            && !self.inner.in_process.contains(handler)
        {
            return Err(HubError::NoHandler {
                function: spec.name,
                handler: handler.clone(),
            });
        }
        self.inner.scheduler.deploy(spec)?;
        Ok(())
    }

    /// Subscribes to events on `filter` with a queue of `capacity`; see
    /// [`Subscription`]. A full queue skips (and counts) events rather than slowing the hub.
    pub fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, TopicError> {
        let filter: TopicFilter = filter.parse()?;
        Ok(self.inner.router.subscribe(filter, capacity))
    }

    /// The hub's local services (publish, invoke, a key-value store per principal, device
    /// shadows), as WebAssembly guests reach them through the `fnhub` imports; native code
    /// calls the same ones here.
    pub fn services(&self) -> Arc<dyn LocalServices> {
        self.inner.services.clone()
    }

    /// Every deployed function version.
    pub fn deployed(&self) -> Vec<Arc<FunctionSpec>> {
        self.inner.scheduler.deployed()
    }

    /// Every flow, with its id.
    pub fn flows(&self) -> Vec<(FlowId, Flow)> {
        self.inner.router.flows()
    }

    /// The checkpoint store.
    pub fn checkpoint_store(&self) -> &Arc<dyn CheckpointStore> {
        &self.inner.store
    }

    /// Counters and latency since start.
    pub fn stats(&self) -> HubStats {
        self.inner.stats.snapshot()
    }

    /// Stops admitting work from outside (publishes start no invocation, calls get
    /// [`SubmitError::ShuttingDown`]), runs every admitted invocation to completion together
    /// with the invocations their outputs trigger, then stops the workers. Durable
    /// executions that are suspended stay in the checkpoint store.
    pub async fn shutdown(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        // Let admitted work finish, and the invocations its outputs trigger (each a hop
        // deeper, so the cascade ends at the depth limit). Completions admit their outputs'
        // invocations before they stop counting as running, so an idle scheduler has none
        // left to admit.
        loop {
            let load = self.inner.scheduler.snapshot();
            if load.queued == 0 && load.running == 0 && self.inner.overflows.waiting() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.inner.scheduler.shutdown().await;
        #[cfg(feature = "mqtt")]
        self.stop_bridge().await;
    }
}

impl LoadProbe for EdgeHub {
    fn snapshot(&self) -> LoadSnapshot {
        self.inner.scheduler.snapshot()
    }
}
