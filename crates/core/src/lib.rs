//! The vocabulary and contracts of fnhub.
//!
//! `fnhub-core` holds the plain data every other fnhub crate speaks — function names,
//! versions and aliases, [`FunctionSpec`], [`Invocation`] and its [`InvocationContext`],
//! [`Outcome`] and [`FunctionError`], [`Event`], [`Checkpoint`] — and the traits that
//! backends implement: [`Function`], [`Sandbox`] / [`Environment`], [`CheckpointStore`],
//! [`EventSink`], [`Clock`], [`LoadProbe`] and the hub-local [`LocalServices`] a sandboxed
//! function may call.
//!
//! It has no async runtime, no I/O and no wire formats: the checkpoint byte format lives in
//! `fnhub-checkpoint`, the topic grammar in `fnhub-router`.
//!
//! # Example
//!
//! ```
//! use fnhub_core::{FunctionError, FunctionRef, Invocation, Outcome, TraceParent};
//! use bytes::Bytes;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target: FunctionRef = "smoother:prod".parse()?;
//! let mut invocation = Invocation::new(target, Bytes::from_static(b"21.5"));
//! invocation.context.trace =
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse::<TraceParent>()?;
//! assert_eq!(invocation.function.to_string(), "smoother:prod");
//!
//! let failed: Outcome = Err(FunctionError::handled("reading out of range"));
//! assert!(failed.is_err());
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `serde` (off by default): `Serialize` / `Deserialize` for the plain data types. Names and
//!   trace contexts are validated when deserialized.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod checkpoint;
mod clock;
mod event;
mod function;
mod ids;
mod invocation;
mod load;
mod name;
mod outcome;
mod sandbox;
mod services;
mod sink;
mod spec;
mod store;
mod trace;

pub use checkpoint::{Checkpoint, JournalEntry, Operation, PendingDependency, Wake};
pub use clock::{Clock, ManualClock, SystemClock};
pub use event::{Event, EventSource, Headers};
pub use function::{BoxFuture, DynFunction, FnFunction, Function, from_fn};
pub use ids::{ExecutionId, IdError, InvocationId};
pub use invocation::{Invocation, InvocationContext, Principal, Priority};
pub use load::{FunctionLoad, LoadProbe, LoadSnapshot};
pub use name::{Alias, AliasName, FunctionName, FunctionRef, NameError, Qualifier, Version};
pub use outcome::{ErrorKind, FunctionError, Outcome};
pub use sandbox::{Environment, IsolationReport, PrepareError, Restriction, Sandbox};
pub use services::{
    ApiRequest, LocalServices, NoServices, ServiceCaller, ServiceError, ServiceOp, ShadowRef,
    percent_decode,
};
pub use sink::{EventSink, PublishError};
pub use spec::{
    CapabilityProfile, EnvAccess, FilesystemAccess, FunctionSpec, NetworkAccess, PathGrant,
    Placement, Resources, Runtime, ServiceAccess, SidecarSpec,
};
pub use store::{CheckpointStore, StoreError};
pub use trace::{TraceParent, TraceParentError};
