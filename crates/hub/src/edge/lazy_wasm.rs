//! The WebAssembly backend of a hub, made when the first WebAssembly function's
//! environment is: a hub that runs none (most edge hubs built with the `wasm` feature run
//! only processes) does not pay for wasmtime's engine, about 3 MiB resident and a thread.

use std::sync::{Arc, OnceLock};

use fnhub_core::{
    BoxFuture, Clock, Environment, FunctionSpec, LocalServices, PrepareError, Runtime, Sandbox,
};
use fnhub_sandbox::{WasmConfig, WasmSandbox};
use parking_lot::Mutex;

/// What the sandbox is made of.
type Parts = (WasmConfig, Arc<dyn LocalServices>, Arc<dyn Clock>);

pub(super) struct LazyWasm {
    /// Taken when the sandbox is made.
    parts: Mutex<Option<Parts>>,
    made: OnceLock<Result<WasmSandbox, String>>,
}

impl LazyWasm {
    pub(super) fn new(
        config: WasmConfig,
        services: Arc<dyn LocalServices>,
        clock: Arc<dyn Clock>,
    ) -> LazyWasm {
        LazyWasm {
            parts: Mutex::new(Some((config, services, clock))),
            made: OnceLock::new(),
        }
    }

    fn sandbox(&self) -> Result<&WasmSandbox, PrepareError> {
        let made = self.made.get_or_init(|| {
            let (config, services, clock) = self
                .parts
                .lock()
                .take()
                .ok_or_else(|| "the WebAssembly engine could not be made".to_owned())?;
            WasmSandbox::with_config(config, services)
                .map(|s| s.with_clock(clock))
                .map_err(|e| e.to_string())
        });
        made.as_ref()
            .map_err(|e| PrepareError::Start(e.clone().into()))
    }
}

impl Sandbox for LazyWasm {
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
        match self.sandbox() {
            Ok(sandbox) => sandbox.prepare(spec),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}
