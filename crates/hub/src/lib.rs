//! fnhub: an embeddable edge hub and cloud runtime for running functions on demand.
//!
//! This crate assembles the fnhub libraries. [`EdgeHub`] puts together the router
//! (`fnhub-router`: topics, flows, local bus), the scheduler (`fnhub-scheduler`: bounded
//! admission, priority and deadline order, warm environments), the sandboxes
//! (`fnhub-sandbox`: native handlers in-process, and processes speaking the AWS Lambda
//! Runtime API) and a checkpoint store (`fnhub-checkpoint`).
//!
//! The way of one event: [`EdgeHub::publish`] hands it to the router, which delivers it to
//! local subscribers and returns the functions its flows target; each becomes an
//! [`Invocation`] carrying the event's topic, trace context and depth; the scheduler runs it
//! in a warm environment; a successful, non-empty output is published on the function's
//! output topic, a hop deeper.
//!
//! # Example
//!
//! ```
//! use fnhub::{EdgeHub, Event, EventSource, Flow, FunctionName, FunctionSpec, Invocation, from_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let double = from_fn(|inv: Invocation| async move {
//!     let n: f64 = std::str::from_utf8(&inv.payload).unwrap_or("").parse().unwrap_or(0.0);
//!     Ok((n * 2.0).to_string().into())
//! });
//! let hub = EdgeHub::builder()
//!     .function(
//!         FunctionSpec::in_process(FunctionName::new("double")?).with_output_topic("doubled/{1}"),
//!         double,
//!     )
//!     .flow(Flow::parse("device:*", "sensors/+/value", "function:double")?)
//!     .build()?;
//!
//! let mut doubled = hub.subscribe("doubled/#", 16)?;
//! hub.publish(Event::new("sensors/d1/value", "21", EventSource::Device("d1".into())))?;
//! let out = doubled.recv().await.expect("an output");
//! assert_eq!((out.topic.as_str(), &out.payload[..]), ("doubled/d1", &b"42"[..]));
//!
//! assert_eq!(hub.invoke("double".parse()?, "1.5").await?, Ok("3".into()));
//! hub.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `process` (default): functions as processes over the AWS Lambda Runtime API, run by
//!   unmodified Lambda runtime clients ([`ProcessSandbox`],
//!   added to every hub; see its module for confinement).
//! - `wasm`: functions as WebAssembly modules on wasmtime ([`WasmSandbox`], added to every
//!   hub, its guests reaching the hub's [`services`] through the `fnhub` imports). Off by
//!   default: a cold build of wasmtime takes minutes.
//! - `mqtt` (in `edge`): a bridge to an MQTT broker ([`Bridge`], attached to a built hub;
//!   see [`fnhub_router::mqtt`]): upstream topics in, local topics out, QoS 0 and 1,
//!   buffered while offline, trace context in MQTT 5 user properties; the remote interface
//!   ([`bridge`]) and, with `config`, deployment from a device shadow ([`shadow`]).
//! - `http` (in `edge`): the HTTP front door ([`http`]): the AWS Lambda Invoke API, so the AWS CLI and
//!   SDKs invoke the hub's functions; AWS SigV4 authentication (or none, on loopback only)
//!   and an allow-list of who may invoke what; `/metrics` and `/healthz`.
//! - `config` (in `edge`): the hub from a TOML file ([`config`]).
//! - `edge`: `process`, `config`, `http` and `mqtt`: what the edge hub binary serves.
//! - `nats`: the cloud runtime on NATS JetStream ([`cloud`]): nodes sharing a work-queue
//!   stream, the function registry in KV, checkpoints in the object store, durable
//!   executions resumed on any node.
//! - `serde`: serde support for the core data types.
//! - `zstd`: Zstandard compression of checkpoints.
//!
//! # How the hub is put together
//!
//! [`EdgeHub`] is the one handle to a hub; its parts hold only what they use. The scheduler
//! is built first; what the scheduler itself reaches and that calls back into it (the
//! observer that publishes outputs, the local services a WebAssembly guest calls, the
//! durable engine's host) holds a [`WeakScheduler`](fnhub_scheduler::WeakScheduler), so no
//! part is bound after construction and no reference cycle keeps a dropped hub alive.
//! The MQTT [`Bridge`], [`Metaevents`], the [`http`] front door and the cloud runtime attach
//! to a built hub through its methods. Waiting for room or for the hub to drain uses the
//! scheduler's readiness ([`Scheduler::room`](fnhub_scheduler::Scheduler::room),
//! [`Scheduler::idle`](fnhub_scheduler::Scheduler::idle)), not polling.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "mqtt")]
pub mod bridge;
#[cfg(feature = "nats")]
pub mod cloud;
#[cfg(feature = "config")]
pub mod config;
mod describe;
#[cfg(feature = "mqtt")]
mod device_shadows;
mod dex;
mod durable;
mod edge;
mod events;
mod files;
#[cfg(feature = "http")]
pub mod http;
pub mod metaevents;
mod overflow;
pub mod replay;
pub mod services;
#[cfg(all(feature = "mqtt", feature = "config"))]
pub mod shadow;
mod shadows;
mod stats;
mod wakes;

pub use describe::describe_metrics;
pub use dex::{DurableConfig, DurableExecution, DurableStartError};
pub use durable::RESUME_FUNCTION;
pub use edge::{EdgeHub, EdgeHubBuilder, HubError, PublishReport, WeakHub};
pub use events::EventError;
pub use metaevents::{MetaAction, MetaRule, Metaevents};
pub use stats::{FunctionStats, HubStats, LatencySummary};

#[cfg(feature = "mqtt")]
pub use bridge::{Bridge, RemoteInvoke};
pub use fnhub_checkpoint::durable::{
    DurableContext, DurableFunction, EngineError, LoadPolicy, SuspendPolicy, durable_fn,
};
pub use fnhub_core::{
    Alias, AliasName, CapabilityProfile, Checkpoint, CheckpointStore, Clock, ErrorKind, Event,
    EventSource, ExecutionId, Function, FunctionError, FunctionName, FunctionRef, FunctionSpec,
    Headers, Invocation, InvocationContext, InvocationId, LoadProbe, LoadSnapshot, ManualClock,
    Outcome, Principal, Priority, Qualifier, Runtime, SystemClock, TraceParent, Version, from_fn,
};
pub use fnhub_core::{
    EnvAccess, FilesystemAccess, NetworkAccess, PathGrant, ServiceAccess, SidecarSpec,
};
pub use fnhub_core::{LocalServices, ServiceCaller, ServiceError};
#[cfg(feature = "mqtt")]
pub use fnhub_router::mqtt::{
    BridgeStats, InboundRule, MqttConfig, MqttConfigError, MqttTls, OutboundRule, Qos,
};
pub use fnhub_router::{Flow, FlowId, Overflow, RouteError, SourceFilter, Subscription, Target};
#[cfg(feature = "process")]
pub use fnhub_sandbox::{Confinement, Identity, ProcessLimits, ProcessSandbox};
#[cfg(feature = "wasm")]
pub use fnhub_sandbox::{WasmConfig, WasmSandbox};
pub use fnhub_scheduler::{Completion, Start, SubmitError};

/// The libraries this crate assembles, for what it does not re-export.
pub mod libs {
    pub use fnhub_checkpoint as checkpoint;
    pub use fnhub_core as core;
    pub use fnhub_router as router;
    pub use fnhub_sandbox as sandbox;
    pub use fnhub_scheduler as scheduler;
}

/// The longest name of a cloud runtime deployment.
#[cfg(any(feature = "nats", feature = "config"))]
pub(crate) const MAX_DEPLOYMENT: usize = 32;

/// Checks a cloud runtime deployment's name: 1 to 32 letters, digits, `-` or `_` (it is
/// part of stream names and subjects).
#[cfg(any(feature = "nats", feature = "config"))]
pub(crate) fn check_deployment(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_DEPLOYMENT).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: a deployment is 1 to {MAX_DEPLOYMENT} letters, digits, '-' or '_'"
        ))
    }
}
