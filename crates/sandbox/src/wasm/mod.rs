//! The WebAssembly backend: functions as WebAssembly modules on wasmtime.
//!
//! An environment holds the compiled module, already linked (wasmtime's `InstancePre`);
//! every invocation gets a fresh instance from a pooling allocator, so nothing one
//! invocation leaves in memory is seen by the next, and an environment serves as many
//! invocations at once as the function's `concurrency` allows.
//!
//! # The guest's side
//!
//! A module exports `memory` and the handler named by [`Runtime::Wasm`]'s `export`, of type
//! `(param i32 i32) (result i64)`: it gets the payload's address and length and returns its
//! output as `(address << 32) | length`. A module that takes payloads also exports
//! `fnhub_alloc: (param i32) (result i32)`, which the host calls to get room for the
//! payload (it is not called for an empty payload). A WASI reactor's `_initialize` runs
//! first on every instance.
//!
//! It may import, from module `fnhub`:
//!
//! | import | does |
//! | --- | --- |
//! | `fail(msg, len)` | ends the invocation at once with a `Handled` error carrying the message |
//! | `log(level, msg, len)` | a `tracing` event: 0 error, 1 warn, 2 info, 3 debug, else trace |
//! | `publish(topic, tlen, payload, plen) -> i32` | publishes an event |
//! | `invoke(name, nlen, payload, plen) -> i32` | invokes another function (`name`, `name:version`, `name:alias`) and waits |
//! | `kv_get(key, klen) -> i32`, `kv_put(key, klen, val, vlen) -> i32`, `kv_delete(key, klen) -> i32` | the hub's key-value store |
//! | `shadow_get(thing, len) -> i32`, `shadow_update(thing, len, doc, dlen) -> i32`, `shadow_delete(thing, len) -> i32` | device shadows, JSON in the AWS IoT shape; `thing` is `"{thing}"` (the classic shadow) or `"{thing}/{name}"` (a named one) |
//! | `result(dst, cap) -> i32` | copies the last call's answer to `dst`, at most `cap` bytes; returns how many |
//!
//! A call answers the length of its result (0 when there is none), or a negative
//! [`ServiceError::code`](fnhub_core::ServiceError::code) with the error's message left for
//! `result` (for a failed `invoke`, Lambda's `{"errorType","errorMessage"}` JSON). These are
//! the operations of the cloud SDK (IoT Data Plane, Lambda `Invoke`), answered by the hub:
//! the sandbox passes them to the [`LocalServices`] it was given, held to the function's
//! allow-list ([`ServiceAccess`](fnhub_core::ServiceAccess) in its profile, closed by
//! default): `publish`, `invoke` and the shadow calls outside it answer `Denied`. The
//! key-value store is the caller's principal's own and is not restricted.
//!
//! It may import WASI preview 1 (`wasi_snapshot_preview1`): it sees only the directories
//! the capability profile grants (each at its own path, read-only or writable as granted)
//! and only the granted environment variables; there are no sockets. Its stdout and stderr
//! become `tracing` events with target `fnhub::function` and the request id, up to a byte
//! budget per invocation.
//!
//! # Limits and outcomes
//!
//! | what happens | outcome |
//! | --- | --- |
//! | the handler returns | `Ok(bytes)` |
//! | `fnhub.fail` | `Handled` with the guest's message |
//! | the timeout or the deadline passes | `Timeout` / `DeadlineExceeded` (epoch interruption) |
//! | the fuel runs out ([`WasmConfig::fuel`]) | `Timeout`, type `Wasm.OutOfFuel` |
//! | memory grows past the function's `memory_mb`, then a trap | `OutOfMemory`, type `Wasm.MemoryLimit` |
//! | a trap (`unreachable`, out-of-bounds access, stack overflow, ...) | `Crashed`, type `Wasm.Trap`, with the wasm backtrace |
//! | WASI `proc_exit(n)` | `Ok` with no output for 0, else `Crashed`, type `Wasm.Exit` |
//! | a response over the limit (6 MiB by default) | `Unhandled`, type `Function.ResponseSizeTooLarge` |
//! | the pool has no free instance slot | `Rejected`, type `Wasm.PoolExhausted` |
//!
//! Whatever one invocation does, the engine and the environment keep serving the next.
//! Dropping the invocation future stops the guest at its next epoch tick.
//!
//! A WebAssembly guest can reach nothing but what it is handed, so this backend enforces
//! every capability profile: network (none), filesystem, environment, memory and CPU.

mod env;
mod host;
mod log;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use fnhub_core::{
    BoxFuture, EnvAccess, Environment, FilesystemAccess, FunctionSpec, IsolationReport,
    LocalServices, NoServices, PrepareError, Restriction, Runtime, Sandbox,
};
use parking_lot::Mutex;
use wasmtime::{Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig};

use self::host::Guest;
use env::WasmEnv;

/// How the WebAssembly engine is set up. Shared by every environment of one
/// [`WasmSandbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WasmConfig {
    /// Instances alive at once across the sandbox: the size of the pooling allocator.
    /// Default 128.
    pub instances: u32,
    /// The largest linear memory any instance may have, in MiB; a function's `memory_mb`
    /// above it is refused at prepare time. Default 1024.
    pub max_memory_mb: u32,
    /// Fuel per invocation, for deterministic metering of work (each wasm operator costs
    /// about one unit); `None` (the default) meters time only.
    pub fuel: Option<u64>,
    /// How often the epoch advances: the precision of timeouts, and how often a running
    /// guest yields to other tasks. Default 5 ms.
    pub epoch_tick: Duration,
    /// The largest output a handler may return. Default 6 MiB, Lambda's limit.
    pub max_response_bytes: usize,
    /// Bytes of stdout and stderr kept per invocation and stream. Default 64 KiB.
    pub max_log_bytes: usize,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            instances: 128,
            max_memory_mb: 1024,
            fuel: None,
            epoch_tick: Duration::from_millis(5),
            max_response_bytes: crate::DEFAULT_MAX_RESPONSE_BYTES,
            max_log_bytes: 64 * 1024,
        }
    }
}

impl WasmConfig {
    /// Sets the pool size.
    pub fn with_instances(mut self, instances: u32) -> WasmConfig {
        self.instances = instances;
        self
    }

    /// Sets the largest memory of any instance.
    pub fn with_max_memory_mb(mut self, mb: u32) -> WasmConfig {
        self.max_memory_mb = mb;
        self
    }

    /// Meters every invocation with `fuel` units.
    pub fn with_fuel(mut self, fuel: u64) -> WasmConfig {
        self.fuel = Some(fuel);
        self
    }

    /// Sets the largest output a handler may return.
    pub fn with_max_response_bytes(mut self, bytes: usize) -> WasmConfig {
        self.max_response_bytes = bytes;
        self
    }

    /// Sets the epoch tick.
    pub fn with_epoch_tick(mut self, tick: Duration) -> WasmConfig {
        self.epoch_tick = tick;
        self
    }

    /// The wasmtime configuration these settings make: the pooling allocator, epoch
    /// interruption, fuel when asked. Public so that a benchmark or a test can build a
    /// bare engine with exactly the same settings.
    pub fn engine_config(&self) -> wasmtime::Config {
        let mut pool = PoolingAllocationConfig::default();
        let max_memory = (self.max_memory_mb as usize).saturating_mul(1 << 20);
        pool.total_core_instances(self.instances)
            .total_memories(self.instances)
            .total_tables(self.instances)
            .total_stacks(self.instances)
            .max_memory_size(max_memory);
        let mut config = wasmtime::Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .consume_fuel(self.fuel.is_some());
        config
    }
}

/// Why the WebAssembly backend could not start or load a module. The source of
/// [`PrepareError::Start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The engine could not be made (the pooling allocator reserves its memory up front).
    #[error("the wasm engine could not start: {0}")]
    Engine(String),
    /// The module file could not be read.
    #[error("cannot read the module {path}: {source}")]
    Read {
        /// The module.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The module is not valid WebAssembly or WAT.
    #[error("the module {path} does not compile: {message}")]
    Compile {
        /// The module.
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
    /// The module does not fit the guest interface (a missing or mistyped export, an
    /// import the host does not offer).
    #[error("the module {path} does not fit the guest interface: {message}")]
    Interface {
        /// The module.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The function asks for more memory than the pool gives any instance.
    #[error("memory_mb {asked} is over the wasm pool's largest memory, {max} MiB")]
    MemoryTooLarge {
        /// The function's `memory_mb`.
        asked: u32,
        /// [`WasmConfig::max_memory_mb`].
        max: u32,
    },
    /// A directory the profile grants cannot be opened.
    #[error("the granted directory {path} cannot be opened: {source}")]
    Grant {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

struct Shared {
    engine: Engine,
    linker: Linker<Guest>,
    config: WasmConfig,
    services: Arc<dyn LocalServices>,
    /// Compiled modules by path, with the file's modification time when compiled.
    modules: Mutex<HashMap<PathBuf, (Option<SystemTime>, Module)>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Runs functions of [`Runtime::Wasm`] on wasmtime. See the [module documentation](self)
/// for the guest interface, the limits and how outcomes map.
///
/// ```no_run
/// use fnhub_core::{FunctionName, FunctionSpec, Invocation, Runtime, Sandbox};
/// use fnhub_sandbox::WasmSandbox;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let spec = FunctionSpec::new(
///     FunctionName::new("scale")?,
///     Runtime::Wasm { module: "functions/scale.wat".into(), export: "handle".into() },
/// );
/// let sandbox = WasmSandbox::new()?;
/// let env = sandbox.prepare(&spec).await?;
/// let out = env.invoke(Invocation::new(spec.name.clone().into(), "21.5")).await?;
/// println!("{}", String::from_utf8_lossy(&out));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WasmSandbox {
    shared: Arc<Shared>,
    clock: Arc<dyn fnhub_core::Clock>,
}

impl std::fmt::Debug for WasmSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSandbox")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl WasmSandbox {
    /// A sandbox with the default [`WasmConfig`] and no hub services (every `fnhub` call
    /// answers "unavailable").
    pub fn new() -> Result<WasmSandbox, WasmError> {
        WasmSandbox::with_config(WasmConfig::default(), Arc::new(NoServices))
    }

    /// A sandbox with `config`, whose guests reach `services` through the `fnhub` imports.
    pub fn with_config(
        config: WasmConfig,
        services: Arc<dyn LocalServices>,
    ) -> Result<WasmSandbox, WasmError> {
        let engine = Engine::new(&config.engine_config())
            .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |g: &mut Guest| {
            // Built for every instance of a module that imports WASI, so always there
            // when WASI is called.
            g.wasi
                .as_mut()
                .expect("WASI context of a module that imports WASI")
        })
        .map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        host::add_to_linker(&mut linker).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), config.epoch_tick, stop.clone())
            .map_err(|e| WasmError::Engine(format!("epoch thread: {e}")))?;
        Ok(WasmSandbox {
            shared: Arc::new(Shared {
                engine,
                linker,
                config,
                services,
                modules: Mutex::new(HashMap::new()),
                stop,
            }),
            clock: Arc::new(fnhub_core::SystemClock),
        })
    }

    /// Reads deadlines and times runs on `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn fnhub_core::Clock>) -> WasmSandbox {
        self.clock = clock;
        self
    }

    /// The engine's settings.
    pub fn config(&self) -> &WasmConfig {
        &self.shared.config
    }

    /// The compiled module at `path`, from the cache while the file is unchanged.
    async fn module(&self, path: &Path) -> Result<Module, WasmError> {
        let mtime = std::fs::metadata(path)
            .map_err(|source| WasmError::Read {
                path: path.to_owned(),
                source,
            })?
            .modified()
            .ok();
        if let Some((when, module)) = self.shared.modules.lock().get(path)
            && *when == mtime
            && mtime.is_some()
        {
            return Ok(module.clone());
        }
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.to_owned(),
            source,
        })?;
        let engine = self.shared.engine.clone();
        let owned = path.to_owned();
        // Compiling takes milliseconds to seconds: off the async workers.
        let compiled = tokio::task::spawn_blocking(move || Module::new(&engine, &bytes))
            .await
            .map_err(|e| WasmError::Compile {
                path: owned.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| WasmError::Compile {
                path: owned,
                message: format!("{e:#}"),
            })?;
        self.shared
            .modules
            .lock()
            .insert(path.to_owned(), (mtime, compiled.clone()));
        Ok(compiled)
    }

    async fn prepare_env(&self, spec: &FunctionSpec) -> Result<WasmEnv, PrepareError> {
        let Runtime::Wasm { module, export } = &spec.runtime else {
            return Err(PrepareError::UnsupportedRuntime {
                sandbox: "wasm",
                runtime: spec.runtime.kind(),
            });
        };
        let start = |e: WasmError| PrepareError::Start(Box::new(e));
        let max = self.shared.config.max_memory_mb;
        if spec.resources.memory_mb > max {
            return Err(start(WasmError::MemoryTooLarge {
                asked: spec.resources.memory_mb,
                max,
            }));
        }
        let compiled = self.module(module).await.map_err(start)?;
        let interface = |message: String| {
            start(WasmError::Interface {
                path: module.clone(),
                message,
            })
        };
        let shape = check_exports(&compiled, export).map_err(interface)?;
        let pre = self
            .shared
            .linker
            .instantiate_pre(&compiled)
            .map_err(|e| interface(format!("{e:#}")))?;
        let uses_wasi = compiled.imports().any(|i| i.module().starts_with("wasi_"));
        let grants = grants(spec).map_err(start)?;
        let mut enforced = spec.capabilities.restrictions();
        enforced.extend([Restriction::Memory, Restriction::Cpu]);
        Ok(WasmEnv {
            shared: self.shared.clone(),
            clock: self.clock.clone(),
            pre,
            export: export.clone(),
            shape,
            uses_wasi,
            grants,
            env: match &spec.capabilities.env {
                EnvAccess::Only(vars) => (false, vars.clone().into_iter().collect()),
                EnvAccess::Inherit(vars) => (true, vars.clone().into_iter().collect()),
                _ => (false, Vec::new()),
            },
            function: Arc::from(spec.name.as_str()),
            spec_name: spec.name.clone(),
            version: spec.version,
            timeout: spec.resources.timeout,
            memory_limit: (spec.resources.memory_mb as usize).saturating_mul(1 << 20),
            report: IsolationReport::new("wasm", enforced, Vec::new()),
            services: Arc::new(crate::guard::Guarded {
                inner: self.shared.services.clone(),
                access: spec.capabilities.services.clone(),
            }),
        })
    }
}

fn spawn_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("fnhub-wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .map(drop)
}

/// Which optional exports a module has.
#[derive(Debug, Clone, Copy)]
struct Shape {
    alloc: bool,
    initialize: bool,
}

fn check_exports(module: &Module, export: &str) -> Result<Shape, String> {
    use wasmtime::{ExternType, ValType};
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(f)) => Some(Ok(f)),
        Some(_) => Some(Err(format!("the export `{name}` is not a function"))),
        None => None,
    };
    let is = |t: &wasmtime::FuncType, params: &[ValType], results: &[ValType]| {
        t.params().map(|p| p.to_string()).collect::<Vec<_>>()
            == params.iter().map(|p| p.to_string()).collect::<Vec<_>>()
            && t.results().map(|p| p.to_string()).collect::<Vec<_>>()
                == results.iter().map(|p| p.to_string()).collect::<Vec<_>>()
    };
    let handler = func(export).ok_or_else(|| format!("no export named `{export}`"))??;
    if !is(&handler, &[ValType::I32, ValType::I32], &[ValType::I64]) {
        return Err(format!(
            "`{export}` has type {handler}, not (param i32 i32) (result i64)"
        ));
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err("no memory exported as `memory`".into());
    }
    let alloc = match func("fnhub_alloc") {
        Some(f) => {
            let f = f?;
            if !is(&f, &[ValType::I32], &[ValType::I32]) {
                return Err(format!(
                    "`fnhub_alloc` has type {f}, not (param i32) (result i32)"
                ));
            }
            true
        }
        None => false,
    };
    let initialize = match func("_initialize") {
        Some(f) => {
            let f = f?;
            if !is(&f, &[], &[]) {
                return Err(format!(
                    "`_initialize` has type {f}, not a function of no values"
                ));
            }
            true
        }
        None => false,
    };
    Ok(Shape { alloc, initialize })
}

/// The preopened directories a profile grants: `/` for an unrestricted one.
fn grants(spec: &FunctionSpec) -> Result<Vec<(PathBuf, bool)>, WasmError> {
    let list: Vec<(PathBuf, bool)> = match &spec.capabilities.filesystem {
        FilesystemAccess::Only(grants) => grants
            .iter()
            .map(|g| (g.path.clone(), g.writable))
            .collect(),
        _ => vec![(PathBuf::from("/"), true)],
    };
    for (path, _) in &list {
        std::fs::read_dir(path).map_err(|source| WasmError::Grant {
            path: path.clone(),
            source,
        })?;
    }
    Ok(list)
}

impl Sandbox for WasmSandbox {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn supports(&self, spec: &FunctionSpec) -> bool {
        matches!(spec.runtime, Runtime::Wasm { .. })
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a FunctionSpec,
    ) -> BoxFuture<'a, Result<Box<dyn Environment>, PrepareError>> {
        Box::pin(async move {
            // Sidecars are processes this backend cannot start: refused in every mode.
            if !spec.sidecars.is_empty() {
                return Err(PrepareError::CannotEnforce {
                    sandbox: self.name(),
                    missing: vec![fnhub_core::Restriction::Sidecars],
                });
            }
            let env = self.prepare_env(spec).await?;
            Ok(Box::new(env) as Box<dyn Environment>)
        })
    }
}
