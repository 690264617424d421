//! The edge hub: router + scheduler + sandboxes + checkpoint store.
//!
//! [`EdgeHub`] is the one handle to a running hub. Its parts each hold only what they use:
//! the routes ([`route`]: router, overflow state, counters) and a weak handle to the
//! scheduler for the observer, the durable host and the local services, which the
//! scheduler itself reaches; the MQTT bridge, metaevents, the HTTP front door and the
//! cloud runtime attach to a built hub through its methods.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use fnhub_checkpoint::durable::{Engine, EngineError, Woken};
use fnhub_core::{
    CheckpointStore, Event, ExecutionId, FunctionRef, FunctionSpec, Invocation, LoadProbe,
    LoadSnapshot, LocalServices, Outcome, Runtime,
};
use fnhub_router::topic::{TopicError, TopicFilter};
use fnhub_router::{Flow, FlowId, RouteError, Subscription, Target};
use fnhub_sandbox::InProcessSandbox;
use fnhub_scheduler::{Completion, Scheduler, SubmitError};

use crate::durable::{CloudLink, DurableEnd, HubHost};
use crate::services::HubServices;
use crate::stats::{HubStats, Stats};

mod builder;
#[cfg(feature = "wasm")]
mod lazy_wasm;
pub(crate) mod route;

pub use builder::{EdgeHubBuilder, HubError};
pub use route::PublishReport;
use route::{Origin, Routes};

/// An edge hub: routes events to functions and local subscribers, runs functions in warm
/// environments under a bounded scheduler, and publishes their outputs.
///
/// Cheap to clone; clones are handles to the same hub. Dropping the last one closes it;
/// [`EdgeHub::shutdown`] drains it first.
#[derive(Clone)]
pub struct EdgeHub {
    parts: Arc<Parts>,
}

/// A handle to an [`EdgeHub`] that does not keep it alive, for tasks attached to a hub
/// (the MQTT bridge's, metaevents') that should end with it.
#[derive(Clone)]
pub struct WeakHub(Weak<Parts>);

impl std::fmt::Debug for WeakHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakHub").finish_non_exhaustive()
    }
}

impl WeakHub {
    /// The hub, while some [`EdgeHub`] handle keeps it.
    pub fn upgrade(&self) -> Option<EdgeHub> {
        self.0.upgrade().map(|parts| EdgeHub { parts })
    }
}

/// What a hub is made of. Only [`EdgeHub`]'s own methods see it.
struct Parts {
    name: String,
    /// The durable queue of `Event` invocations, if the hub keeps one.
    events: Option<Arc<crate::events::EventLog>>,
    scheduler: Scheduler,
    routes: Arc<Routes>,
    engine: Engine,
    host: Arc<HubHost>,
    in_process: InProcessSandbox,
    store: Arc<dyn CheckpointStore>,
    services: Arc<HubServices>,
    /// Lambda durable functions and their executions.
    dex: Arc<crate::dex::Dex>,
    /// How many durable executions the take-up of the store handed back to run, once it
    /// has run (see [`EdgeHub::recover_durable`]).
    taken_up: tokio::sync::Mutex<Option<usize>>,
    /// The functions that could not start an environment when last checked, and why.
    start_failures: parking_lot::Mutex<std::collections::BTreeMap<String, String>>,
    /// Whether process functions run with best-effort confinement.
    best_effort: bool,
    clock: Arc<dyn fnhub_core::Clock>,
    /// The tails of watched invocations' output, kept by the hub's process sandbox.
    #[cfg(feature = "process")]
    log_tails: Arc<fnhub_sandbox::process::LogTails>,
    /// The hub's own process sandbox (a handle).
    #[cfg(feature = "process")]
    process: fnhub_sandbox::ProcessSandbox,
    #[cfg(feature = "mqtt")]
    bridge: parking_lot::Mutex<Option<fnhub_router::mqtt::MqttBridge>>,
}

impl std::fmt::Debug for EdgeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeHub")
            .field("name", &self.parts.name)
            .field("router", &self.parts.routes.router)
            .field("scheduler", &self.parts.scheduler)
            .finish()
    }
}

impl EdgeHub {
    /// A builder with the defaults: 16 workers, a queue of 1024, a memory checkpoint store,
    /// the system clock.
    pub fn builder() -> EdgeHubBuilder {
        EdgeHubBuilder::default()
    }

    /// Runs one maintenance pass now, at the hub clock's time: idle environments past their
    /// reservation windows stop, and due pre-warms start (and are awaited). The hub runs
    /// this every [maintenance interval](EdgeHubBuilder::maintenance_interval).
    pub async fn maintain(&self) {
        self.parts.scheduler.maintain().await;
    }

    /// A handle that does not keep the hub alive.
    pub fn downgrade(&self) -> WeakHub {
        WeakHub(Arc::downgrade(&self.parts))
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// Publishes an event from outside the hub: delivers it to local subscribers and starts
    /// the invocations its flows ask for. Does not wait for them.
    ///
    /// Invocations that admission refuses are handed back in
    /// [`PublishReport::rejected`]; an event the router refuses is handed back in the error.
    pub fn publish(&self, event: Event) -> Result<PublishReport, RouteError> {
        let parts = &*self.parts;
        Stats::add(&parts.routes.stats.counters.events_in, 1);
        if let Some(remote) = parts.host.cloud.get() {
            // Waits are the cloud runtime's, shared by every node.
            remote.event(&event);
        } else if parts.engine.is_waiting_for_events() {
            // Durable executions waiting for this topic resume (off this thread).
            let (engine, copy) = (parts.engine.clone(), event.clone());
            tokio::spawn(async move { engine.deliver(&copy).await });
        }
        parts.routes.route(&parts.scheduler, event, Origin::Outside)
    }

    /// Publishes an event made inside the hub (by an attached part, such as a metaevent):
    /// it flows on during shutdown and counts as an output.
    pub(crate) fn publish_internal(&self, event: Event) -> Result<PublishReport, RouteError> {
        self.parts
            .routes
            .route_internal(&self.parts.scheduler, event)
    }

    /// Takes up the durable executions its checkpoint store holds, as a hub started again on
    /// the store of one that stopped or died must: timers, event waits and executions shed
    /// under load wait again, and executions that were running (or waiting for a child)
    /// continue from their journals, each as an invocation of its function, so no completed
    /// step runs again. Returns how many were handed back to run.
    ///
    /// A hub on a store of its own (a `DirStore`, the default memory store) does this
    /// itself when it is built, once; this waits for that pass and answers its count (a
    /// pass that failed runs again). On a shared store
    /// ([`CheckpointStore::is_shared`](fnhub_core::CheckpointStore::is_shared)) the hub
    /// leaves it to its caller, and a hub serving a cloud runtime to the deployment's
    /// wakes and take-overs (this answers 0). The Lambda durable executions in the same
    /// store are taken up by the hub itself when it is built (requests about them wait for
    /// it).
    pub async fn recover_durable(&self) -> Result<usize, EngineError> {
        let parts = &*self.parts;
        if parts.store.is_shared() && parts.host.cloud.get().is_some() {
            return Ok(0);
        }
        let mut taken_up = parts.taken_up.lock().await;
        if let Some(count) = *taken_up {
            return Ok(count);
        }
        let ran = parts.engine.recover_except(crate::dex::is_lambda).await?;
        if !ran.is_empty() || parts.engine.is_waiting_for_events() {
            tracing::info!(
                ran = ran.len(),
                "durable executions taken up from the checkpoint store"
            );
        }
        *taken_up = Some(ran.len());
        Ok(ran.len())
    }

    /// Waits for the final outcome of a durable execution running on this hub.
    pub async fn durable_outcome(&self, execution: ExecutionId) -> Option<Outcome> {
        self.parts.engine.outcome(execution).await
    }

    /// The encoded checkpoint of a suspended durable execution, to move it to another hub
    /// with [`EdgeHub::import`]. Nothing changes here until [`EdgeHub::release`].
    pub async fn export(&self, execution: ExecutionId) -> Result<Bytes, EngineError> {
        self.parts.engine.export(execution).await
    }

    /// Takes in a durable execution exported by another hub; it resumes here when what it
    /// waits for arrives. Refused (the checkpoint stays where it was) when this hub lacks the
    /// exact function version or cannot read the checkpoint's format.
    pub async fn import(&self, checkpoint: &[u8]) -> Result<ExecutionId, EngineError> {
        self.parts.engine.import(checkpoint).await
    }

    /// Forgets an execution exported to another hub.
    pub async fn release(&self, execution: ExecutionId) -> Result<bool, EngineError> {
        self.parts.engine.release(execution).await
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
    ) -> Result<(Completion, Option<DurableEnd>), SubmitError> {
        let id = invocation.id;
        self.parts.host.track(id);
        let called = self.call(invocation).await;
        let suspension = self.parts.host.untrack(id);
        called.map(|c| (c, suspension))
    }

    /// Carries out a wake of a durable execution (see [`HubHost::wake`]) on one of the
    /// hub's workers.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) async fn wake(
        &self,
        wake: fnhub_core::Wake,
    ) -> Result<Result<Woken, EngineError>, SubmitError> {
        let parts = &*self.parts;
        let admit = |i| self.admit(i, |s, i| s.try_submit(i));
        parts.host.wake(&parts.engine, admit, wake).await
    }

    /// How many entries the hub's timer table holds.
    #[cfg(test)]
    pub(crate) fn armed_timers(&self) -> usize {
        self.parts.host.timers.len()
    }

    /// Runs what a timer of the hub's table woke (see [`crate::wakes`]): an engine
    /// execution's wake, as an invocation of its function (on a task when the hub does not
    /// admit it), or a Lambda execution's next round.
    pub(crate) fn fire(&self, due: crate::wakes::Due) {
        let parts = &*self.parts;
        match due {
            crate::wakes::Due::Engine {
                function,
                version,
                wake,
            } => parts.engine.resume_later(&function, version, wake),
            crate::wakes::Due::Lambda(id) => parts.dex.kick(&id),
        }
    }

    /// Whether durable executions of low priority are being shed now, under load (see
    /// [`EdgeHubBuilder::load_policy`]).
    pub fn is_shedding(&self) -> bool {
        self.parts.engine.is_shedding()
    }

    /// Sends this hub's children to `remote` and lets it wake suspended executions; false
    /// if the hub already has one.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn attach_cloud(&self, remote: Arc<dyn CloudLink>) -> bool {
        self.parts.host.cloud.set(remote).is_ok()
    }

    /// The cloud runtime the hub serves, if it serves one.
    #[cfg(feature = "nats")]
    pub(crate) fn cloud_link(&self) -> Option<Arc<dyn CloudLink>> {
        self.parts.host.cloud.get().cloned()
    }

    /// Runs an invocation built by the caller (trace context, deadline, priority,
    /// principal...) and waits for its completion, with its start kind and timings.
    pub async fn call(&self, invocation: Invocation) -> Result<Completion, SubmitError> {
        // Awaited at once: when a worker is free and nothing waits, the function runs
        // here, on the caller's task, without a hop to a worker.
        let call = self.admit(invocation, |s, i| s.try_call(i))?;
        Ok(call.await)
    }

    /// Admits an invocation from outside with `submit`, unless the hub is shutting down;
    /// every refusal is counted.
    fn admit<T>(
        &self,
        invocation: Invocation,
        submit: impl FnOnce(&Scheduler, Invocation) -> Result<T, SubmitError>,
    ) -> Result<T, SubmitError> {
        let parts = &*self.parts;
        let admitted = if parts.routes.is_closing() {
            Err(SubmitError::ShuttingDown(invocation))
        } else {
            submit(&parts.scheduler, invocation)
        };
        admitted.inspect_err(|_| {
            Stats::refused(
                &parts.routes.stats.counters.rejected,
                "refused by admission",
                1,
            )
        })
    }

    /// Admits an invocation without waiting for it (Lambda's `Event` invocation type); its
    /// outcome goes where its function's outputs go. A refused admission hands the
    /// invocation back.
    pub fn submit(&self, invocation: Invocation) -> Result<fnhub_core::InvocationId, SubmitError> {
        self.admit(invocation, |s, i| s.try_submit_detached(i))
    }

    /// Accepts an `Event` invocation (Lambda's asynchronous invocation): with an event log
    /// ([`EdgeHubBuilder::event_log`]) it is in the durable queue before this returns `Ok`,
    /// and until it has run it runs again after a restart (at least once); without one, as
    /// [`submit`](Self::submit). A refused admission hands the invocation back and leaves
    /// nothing queued.
    pub async fn submit_event(
        &self,
        invocation: Invocation,
    ) -> Result<fnhub_core::InvocationId, crate::events::EventError> {
        let Some(log) = &self.parts.events else {
            return Ok(self.submit(invocation)?);
        };
        if self.parts.routes.is_closing() {
            Stats::refused(
                &self.parts.routes.stats.counters.rejected,
                "refused: closing",
                1,
            );
            return Err(SubmitError::ShuttingDown(invocation).into());
        }
        log.append(&invocation)
            .await
            .map_err(crate::events::EventError::Storage)?;
        let id = invocation.id;
        match self.admit(invocation, |s, i| s.try_submit(i)) {
            Ok(ticket) => {
                crate::events::end_when_done(log.clone(), ticket);
                Ok(id)
            }
            Err(refused) => {
                log.ended(id);
                Err(refused.into())
            }
        }
    }

    /// Adds a flow at run time. Its function target must be deployed.
    pub fn add_flow(&self, flow: Flow) -> Result<FlowId, HubError> {
        if let Target::Function(function) = &flow.target {
            let deployed = self.parts.scheduler.deployed();
            if !deployed.iter().any(|s| s.name == function.name) {
                return Err(HubError::UnknownFlowTarget {
                    flow: format!("{} {} -> {}", flow.source, flow.filter, flow.target),
                    function: function.clone(),
                });
            }
        }
        Ok(self.parts.routes.router.add_flow(flow))
    }

    /// Removes a flow, returning it.
    pub fn remove_flow(&self, id: FlowId) -> Option<Flow> {
        self.parts.routes.router.remove_flow(id)
    }

    /// Deploys another function version at run time (in a sandbox the hub already has).
    ///
    /// An in-process spec whose handler is not registered is refused, and so is a spec
    /// with sidecars on a backend that cannot run them.
    pub fn deploy(&self, spec: FunctionSpec) -> Result<(), HubError> {
        self.check_deploy(&spec)?;
        let (name, version, runtime) = (spec.name.clone(), spec.version, spec.runtime.kind());
        self.parts.scheduler.deploy(spec)?;
        tracing::info!(function = %name, %version, runtime, "deployed");
        Ok(())
    }

    /// Deploys `spec` warm: its version is deployed staged, one environment of it is
    /// started, and only then do unqualified calls move to it; until then they keep going
    /// to the version before, so a deploy under load meets no cold start and drops no
    /// call. A version that cannot start is withdrawn and the error returned: the old
    /// version keeps the traffic. The first version of a function is deployed at once and
    /// warmed in the background.
    pub async fn deploy_warm(&self, spec: FunctionSpec) -> Result<(), HubError> {
        self.check_deploy(&spec)?;
        let (name, version, runtime) = (spec.name.clone(), spec.version, spec.runtime.kind());
        let scheduler = &self.parts.scheduler;
        let exact = FunctionRef::version(name.clone(), version);
        if scheduler
            .resolve(&FunctionRef::latest(name.clone()))
            .is_none()
        {
            // Nothing to keep serving meanwhile: deployed at once, warmed in the background
            // (what cannot start shows in /healthz, as for any deploy).
            self.deploy(spec)?;
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                if let Err(error) = scheduler.prewarm(&exact).await {
                    tracing::warn!(function = %exact, %error, "could not start an environment ahead");
                }
            });
            return Ok(());
        }
        scheduler.deploy_staged(spec)?;
        if let Err(error) = scheduler.prewarm(&exact).await {
            tracing::warn!(function = %name, %version, %error, "the new version could not start: withdrawn");
            scheduler.withdraw(&name, version);
            return Err(HubError::WarmFailed {
                function: name,
                version,
                reason: error.to_string(),
            });
        }
        scheduler.promote(&name, version);
        tracing::info!(function = %name, %version, runtime, "deployed warm");
        Ok(())
    }

    /// What [`EdgeHub::deploy`] would refuse, without deploying.
    pub(crate) fn check_deploy(&self, spec: &FunctionSpec) -> Result<(), HubError> {
        match &spec.runtime {
            Runtime::InProcess { handler } if !self.parts.in_process.contains(handler) => {
                return Err(HubError::NoHandler {
                    function: spec.name.clone(),
                    handler: handler.clone(),
                });
            }
            Runtime::Process { .. } => {}
            _ if !spec.sidecars.is_empty() => {
                return Err(HubError::SidecarsUnsupported {
                    function: spec.name.clone(),
                    runtime: spec.runtime.kind(),
                });
            }
            _ => {}
        }
        self.parts.scheduler.check_deploy(spec)?;
        Ok(())
    }

    /// Subscribes to events on `filter` with a queue of `capacity`; see
    /// [`Subscription`]. A full queue skips (and counts) events rather than slowing the hub.
    pub fn subscribe(&self, filter: &str, capacity: usize) -> Result<Subscription, TopicError> {
        let filter: TopicFilter = filter.parse()?;
        Ok(self.subscribe_filter(filter, capacity))
    }

    /// [`EdgeHub::subscribe`] with a parsed filter.
    pub(crate) fn subscribe_filter(&self, filter: TopicFilter, capacity: usize) -> Subscription {
        self.parts.routes.router.subscribe(filter, capacity)
    }

    /// The hub's services, as the hub itself holds them.
    pub(crate) fn services_handle(&self) -> &Arc<HubServices> {
        &self.parts.services
    }

    /// Starts one environment of every deployed function (what its first call would
    /// start) and remembers those that cannot start, with why: an import error, a missing
    /// program or folder, a profile that cannot be enforced. The failures, by
    /// `name:version`; [`start_failures`](EdgeHub::start_failures) keeps them until the
    /// next check.
    pub async fn check_functions(&self) -> std::collections::BTreeMap<String, String> {
        let mut failures = std::collections::BTreeMap::new();
        for spec in self.deployed() {
            let target = FunctionRef::version(spec.name.clone(), spec.version);
            if let Err(error) = self.parts.scheduler.prewarm(&target).await {
                tracing::error!(function = %spec.name, version = %spec.version, %error, "the function cannot start");
                failures.insert(format!("{}:{}", spec.name, spec.version), error.to_string());
            }
        }
        self.parts.start_failures.lock().clone_from(&failures);
        failures
    }

    /// What the last [`check_functions`](EdgeHub::check_functions) found failing.
    pub fn start_failures(&self) -> std::collections::BTreeMap<String, String> {
        self.parts.start_failures.lock().clone()
    }

    /// Whether the hub's process functions run with best-effort confinement (see
    /// [`EdgeHubBuilder::best_effort_confinement`]).
    pub fn best_effort_confinement(&self) -> bool {
        self.parts.best_effort
    }

    /// The engine of the hub's durable Rust functions.
    pub(crate) fn engine(&self) -> &Engine {
        &self.parts.engine
    }

    /// Lambda durable functions and their executions.
    pub(crate) fn dex(&self) -> &Arc<crate::dex::Dex> {
        &self.parts.dex
    }

    /// The tails of watched invocations' output (Lambda's `--log-type Tail`), kept by the
    /// hub's own process sandbox for its process functions: watch an invocation before
    /// calling it, take its tail after. Functions of other sandboxes leave it empty.
    #[cfg(feature = "process")]
    pub fn log_tails(&self) -> &fnhub_sandbox::process::LogTails {
        &self.parts.log_tails
    }

    /// What the templates of the hub's Python functions hold now (`[hub] python_templates`):
    /// how many, and their resident memory, which is warm memory as much as an idle
    /// environment's. Also in `/metrics` as `fnhub_python_templates` and
    /// `fnhub_python_template_bytes`.
    #[cfg(feature = "process")]
    pub fn python_templates(&self) -> fnhub_sandbox::process::TemplateUsage {
        self.parts.process.templates()
    }

    /// The hub's local services (publish, invoke, a key-value store per principal, device
    /// shadows), as WebAssembly guests reach them through the `fnhub` imports; native code
    /// calls the same ones here.
    pub fn services(&self) -> Arc<dyn LocalServices> {
        self.parts.services.clone()
    }

    /// The deployed version `function` names now (a version, an alias's pick, or the
    /// latest), if any.
    pub fn resolve(&self, function: &FunctionRef) -> Option<Arc<FunctionSpec>> {
        self.parts.scheduler.resolve(function)
    }

    /// Every deployed function version.
    pub fn deployed(&self) -> Vec<Arc<FunctionSpec>> {
        self.deployed_specs()
    }

    /// The aliases of `function`, by name.
    pub fn aliases(&self, function: &fnhub_core::FunctionName) -> Vec<fnhub_core::Alias> {
        self.parts.scheduler.aliases(function)
    }

    /// Creates or moves an alias of `function` (a name that sends its calls to a version,
    /// or splits them between two by weight).
    pub fn set_alias(
        &self,
        function: &fnhub_core::FunctionName,
        alias: fnhub_core::Alias,
    ) -> Result<(), fnhub_scheduler::DeployError> {
        self.parts.scheduler.set_alias(function, alias)
    }

    fn deployed_specs(&self) -> Vec<Arc<FunctionSpec>> {
        self.parts.scheduler.deployed()
    }

    /// Every flow, with its id.
    pub fn flows(&self) -> Vec<(FlowId, Flow)> {
        self.parts.routes.router.flows()
    }

    /// The checkpoint store.
    pub fn checkpoint_store(&self) -> &Arc<dyn CheckpointStore> {
        &self.parts.store
    }

    /// The hub's scheduler, for the parts that attach to a built hub.
    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.parts.scheduler
    }

    /// The hub's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn fnhub_core::Clock> {
        &self.parts.clock
    }

    /// How deep a chain of calls may go (see [`EdgeHubBuilder::max_depth`]).
    pub fn max_depth(&self) -> u32 {
        self.parts.routes.max_depth()
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.parts.routes.is_closing()
    }

    /// Counters and latency since start.
    pub fn stats(&self) -> HubStats {
        self.parts.routes.stats.snapshot()
    }

    /// The MQTT bridge's counters (feature `mqtt`); `None` without a bridge (see
    /// [`Bridge`](crate::bridge::Bridge)).
    #[cfg(feature = "mqtt")]
    pub fn mqtt_stats(&self) -> Option<fnhub_router::mqtt::BridgeStats> {
        self.parts
            .bridge
            .lock()
            .as_ref()
            .map(fnhub_router::mqtt::MqttBridge::stats)
    }

    /// The running MQTT bridge (feature `mqtt`), set by [`crate::bridge::Bridge::attach`].
    #[cfg(feature = "mqtt")]
    pub(crate) fn bridge_slot(
        &self,
    ) -> &parking_lot::Mutex<Option<fnhub_router::mqtt::MqttBridge>> {
        &self.parts.bridge
    }

    /// Stops admitting work from outside (publishes start no invocation, calls get
    /// [`SubmitError::ShuttingDown`]), runs every admitted invocation to completion together
    /// with the invocations their outputs trigger, then stops the workers and the MQTT
    /// bridge (after it sent what the last invocations published). Durable executions that
    /// are suspended stay in the checkpoint store.
    pub async fn shutdown(&self) {
        let parts = &*self.parts;
        parts.routes.close();
        // Admitted work finishes, with the invocations its outputs trigger (each a hop
        // deeper, so the cascade ends at the depth limit). Completions admit their outputs'
        // invocations before they stop counting as running, so an idle scheduler has none
        // left to admit; but an output may wait in a flow for room, so both must be empty.
        loop {
            parts.routes.overflows.emptied().await;
            parts.scheduler.idle().await;
            if parts.routes.overflows.waiting() == 0 {
                break;
            }
        }
        parts.scheduler.shutdown().await;
        if let Some(log) = &parts.events {
            log.settle().await;
        }
        #[cfg(feature = "mqtt")]
        crate::bridge::stop(self).await;
    }
}

impl LoadProbe for EdgeHub {
    fn snapshot(&self) -> LoadSnapshot {
        self.parts.scheduler.snapshot()
    }
}
