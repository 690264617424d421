//! Execution environments for fnhub.
//!
//! A [`Sandbox`](fnhub_core::Sandbox) prepares an [`Environment`](fnhub_core::Environment)
//! from a [`FunctionSpec`](fnhub_core::FunctionSpec); the scheduler keeps environments warm
//! and runs invocations in them. This crate ships:
//!
//! - [`InProcessSandbox`]: native Rust [`Function`](fnhub_core::Function)s inside the hub
//!   process. A panic becomes an outcome of kind `Crashed`, the function's timeout and the
//!   invocation's deadline are enforced, and dropping the invocation future cancels it. It
//!   confines nothing, so it refuses a capability profile that asks for confinement unless
//!   told to run best effort.
//!
//! - [`ProcessSandbox`] (feature `process`, on by default): each environment is a process
//!   speaking the AWS Lambda Runtime API to a server on loopback that the environment owns,
//!   so unmodified Lambda runtime clients run as they do on Lambda (tested with the Rust
//!   `lambda_runtime` crate and Python's `awslambdaric`). Confinement by Landlock, a network
//!   namespace and `prlimit`, without a `pre_exec` hook; sidecars beside each environment.
//!   See [`process`] for what it enforces and how outcomes map.
//!
//! - [`WasmSandbox`] (feature `wasm`): each environment is a compiled, linked WebAssembly
//!   module on wasmtime; every invocation gets a fresh instance from a pooling allocator,
//!   with a memory cap, epoch-based timeouts (fuel when asked), WASI preview 1 limited to
//!   the profile's grants, and host imports that reach the hub's
//!   [`LocalServices`](fnhub_core::LocalServices). See [`wasm`] for the guest interface.
//!
//! # Example
//!
//! ```
//! use fnhub_core::{from_fn, FunctionName, FunctionSpec, Invocation, Sandbox};
//! use fnhub_sandbox::InProcessSandbox;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = InProcessSandbox::new();
//! sandbox.register("echo", from_fn(|inv: Invocation| async move { Ok(inv.payload) }));
//!
//! let spec = FunctionSpec::in_process(FunctionName::new("echo")?);
//! let env = sandbox.prepare(&spec).await?;
//! let out = env.invoke(Invocation::new(spec.name.clone().into(), "hi")).await?;
//! assert_eq!(&out[..], b"hi");
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `process` (default): the process backend. Without it the crate needs only tokio's
//!   timer.
//! - `wasm`: the WebAssembly backend (wasmtime 48 with cranelift; a cold release build
//!   takes about 14 minutes on two cores, so it is off by default).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "wasm")]
mod guard;
mod in_process;
mod limit;
#[cfg(feature = "process")]
pub mod process;

pub use in_process::{Enforcement, InProcessSandbox};
#[cfg(feature = "process")]
pub use process::{Confinement, Identity, ProcessLimits, ProcessSandbox};
#[cfg(feature = "sigv4")]
pub mod sigv4;
#[cfg(feature = "wasm")]
pub mod wasm;
#[cfg(feature = "wasm")]
pub use wasm::{WasmConfig, WasmError, WasmSandbox};

/// Lambda's limit on a synchronous response: 6 MiB. The default cap of every backend.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
