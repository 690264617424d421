//! One environment of a WebAssembly function: a pre-instantiated module, a fresh
//! instance per invocation, its limits and its answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Environment, ErrorKind, FunctionError, Invocation, IsolationReport, Outcome,
    ServiceCaller,
};
use wasmtime::{Instance, InstancePre, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::host::{Failed, Guest, MemoryCap};
use super::log::LogPipe;
use super::{Shape, Shared};
use crate::limit::Limit;

pub(super) struct WasmEnv {
    pub(super) shared: Arc<Shared>,
    pub(super) clock: Arc<dyn fnhub_core::Clock>,
    pub(super) pre: InstancePre<Guest>,
    pub(super) export: String,
    pub(super) shape: Shape,
    pub(super) uses_wasi: bool,
    pub(super) grants: Vec<(PathBuf, bool)>,
    /// Whether to inherit the hub's environment, and the granted variables.
    pub(super) env: (bool, Vec<(String, String)>),
    pub(super) function: Arc<str>,
    pub(super) spec_name: fnhub_core::FunctionName,
    pub(super) version: fnhub_core::Version,
    pub(super) timeout: Duration,
    pub(super) memory_limit: usize,
    pub(super) report: IsolationReport,
    /// The hub's services, held to this function's allow-list.
    pub(super) services: Arc<dyn fnhub_core::LocalServices>,
}

/// How one run ended, before it becomes an outcome.
pub(super) enum Ended {
    /// The handler (or what ran before it) returned or failed; the instance.
    Returned(Result<i64, wasmtime::Error>, Option<Instance>),
    Before(FunctionError),
}

impl WasmEnv {
    fn wasi(
        &self,
        request_id: &str,
    ) -> Result<(wasmtime_wasi::p1::WasiP1Ctx, [LogPipe; 2]), FunctionError> {
        let budget = self.shared.config.max_log_bytes;
        let pipe = |stream| {
            LogPipe::new(
                self.function.clone(),
                self.version.get(),
                request_id.to_owned(),
                stream,
                budget,
            )
        };
        let (out, err) = (pipe("stdout"), pipe("stderr"));
        let mut b = WasiCtxBuilder::new();
        b.stdout(out.clone())
            .stderr(err.clone())
            .arg(&*self.function);
        if self.env.0 {
            b.inherit_env();
        }
        for (k, v) in &self.env.1 {
            b.env(k, v);
        }
        for (path, writable) in &self.grants {
            let perms = if *writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            let guest = path.to_string_lossy();
            b.preopened_dir(path, &*guest, perms).map_err(|e| {
                FunctionError::new(
                    ErrorKind::Rejected,
                    format!(
                        "the granted directory {} cannot be opened: {e:#}",
                        path.display()
                    ),
                )
                .with_type("Wasm.Grant")
            })?;
        }
        Ok((b.build_p1(), [out, err]))
    }

    async fn run(&self, invocation: Invocation) -> Outcome {
        let limit = Limit::new(
            self.timeout,
            invocation.context.deadline,
            self.clock.system_time(),
        )?;
        let stop_at = self.clock.now() + limit.limit;
        let (wasi, pipes) = if self.uses_wasi {
            let (ctx, pipes) = self.wasi(&invocation.id.to_string())?;
            (Some(ctx), Some(pipes))
        } else {
            (None, None)
        };
        let payload = invocation.payload;
        let caller = ServiceCaller::new(
            self.spec_name.clone(),
            self.version,
            invocation.id,
            invocation.context,
        );
        let mut store = Store::new(
            &self.shared.engine,
            Guest {
                wasi,
                cap: MemoryCap {
                    limit: self.memory_limit,
                    denied: None,
                },
                result: Bytes::new(),
                failure: None,
                caller,
                stop_at: stop_at.into(),
                services: self.services.clone(),
            },
        );
        store.limiter(|g| &mut g.cap);
        if let Some(fuel) = self.shared.config.fuel
            && let Err(e) = store.set_fuel(fuel)
        {
            return Err(FunctionError::new(ErrorKind::Rejected, format!("{e:#}")));
        }
        store.set_epoch_deadline(1);
        let clock = self.clock.clone();
        store.epoch_deadline_callback(move |_| {
            Ok(if clock.now() >= stop_at {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        // The epoch stops a guest that computes, and the `fnhub` imports stop at the
        // deadline themselves; a WASI call (a sleep) needs a timer around the whole call.
        let ended = if self.uses_wasi {
            let ended =
                tokio::time::timeout_at(stop_at.into(), self.call(&mut store, payload)).await;
            if let Some(pipes) = &pipes {
                pipes.iter().for_each(LogPipe::finish);
            }
            match ended {
                Ok(ended) => ended,
                Err(_) => return Err(limit.error()),
            }
        } else {
            self.call(&mut store, payload).await
        };
        let returned = match ended {
            Ended::Before(e) => return Err(e),
            Ended::Returned(r, memory) => (r, memory),
        };
        match returned {
            (Ok(packed), instance) => self.output(&mut store, instance, packed),
            (Err(error), _) => self.failure(error, store.data_mut(), limit),
        }
    }

    /// Instantiates, hands over the payload, and calls the handler.
    async fn call(&self, store: &mut Store<Guest>, payload: Bytes) -> Ended {
        let instance = match self.pre.instantiate_async(&mut *store).await {
            Ok(i) => i,
            Err(e) => {
                if e.downcast_ref::<Trap>().is_some() || store.data().cap.denied.is_some() {
                    return Ended::Returned(Err(e), None);
                }
                return Ended::Before(
                    FunctionError::new(
                        ErrorKind::Rejected,
                        format!("no instance could be made: {e:#}"),
                    )
                    .with_type("Wasm.PoolExhausted"),
                );
            }
        };
        if self.shape.initialize {
            let init = match instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
                Ok(f) => f,
                Err(e) => return Ended::Returned(Err(e), None),
            };
            if let Err(e) = init.call_async(&mut *store, ()).await {
                return Ended::Returned(Err(e), None);
            }
        }
        let (ptr, len) = if payload.is_empty() {
            (0, 0)
        } else if !self.shape.alloc {
            return Ended::Before(bad_guest(
                "the module takes no payload (it exports no `fnhub_alloc`)",
            ));
        } else {
            let Ok(len) = i32::try_from(payload.len()) else {
                return Ended::Before(bad_guest("the payload is over 2 GiB"));
            };
            let alloc = match instance.get_typed_func::<i32, i32>(&mut *store, "fnhub_alloc") {
                Ok(f) => f,
                Err(e) => return Ended::Returned(Err(e), None),
            };
            let ptr = match alloc.call_async(&mut *store, len).await {
                Ok(p) => p,
                Err(e) => return Ended::Returned(Err(e), None),
            };
            let Some(memory) = instance.get_memory(&mut *store, "memory") else {
                return Ended::Before(bad_guest("the instance has no memory"));
            };
            if memory
                .write(&mut *store, ptr as u32 as usize, &payload)
                .is_err()
            {
                return Ended::Before(bad_guest(&format!(
                    "fnhub_alloc({len}) returned {ptr}, outside the guest's memory"
                )));
            }
            (ptr, len)
        };
        let handler = match instance.get_typed_func::<(i32, i32), i64>(&mut *store, &self.export) {
            Ok(f) => f,
            Err(e) => return Ended::Returned(Err(e), None),
        };
        Ended::Returned(
            handler.call_async(&mut *store, (ptr, len)).await,
            Some(instance),
        )
    }

    fn output(&self, store: &mut Store<Guest>, instance: Option<Instance>, packed: i64) -> Outcome {
        let (ptr, len) = (
            (packed as u64 >> 32) as usize,
            (packed as u64 & 0xffff_ffff) as usize,
        );
        if len == 0 {
            return Ok(Bytes::new());
        }
        let max = self.shared.config.max_response_bytes;
        if len > max {
            return Err(FunctionError::new(
                ErrorKind::Unhandled,
                format!("the response is {len} bytes, over the {max}-byte limit"),
            )
            .with_type("Function.ResponseSizeTooLarge"));
        }
        let Some(memory) = instance.and_then(|i| i.get_memory(&mut *store, "memory")) else {
            return Err(bad_guest("the instance has no memory"));
        };
        ptr.checked_add(len)
            .and_then(|end| memory.data(&*store).get(ptr..end))
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| {
                bad_guest(&format!(
                    "the handler returned {len} bytes at {ptr}, outside the guest's memory"
                ))
            })
    }

    fn failure(&self, error: wasmtime::Error, guest: &mut Guest, limit: Limit) -> Outcome {
        if let Some(failure) = guest.failure.take()
            && error.is::<Failed>()
        {
            return Err(failure);
        }
        if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return match exit.0 {
                0 => Ok(Bytes::new()),
                code => Err(FunctionError::new(
                    ErrorKind::Crashed,
                    format!("the guest exited with code {code}"),
                )
                .with_type("Wasm.Exit")),
            };
        }
        let trace = error
            .downcast_ref::<WasmBacktrace>()
            .map(|bt| format!("\n{bt}"))
            .unwrap_or_default();
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Err(limit.error()),
            Some(Trap::OutOfFuel) => Err(FunctionError::new(
                ErrorKind::Timeout,
                format!(
                    "ran out of fuel ({} units)",
                    self.shared.config.fuel.unwrap_or_default()
                ),
            )
            .with_type("Wasm.OutOfFuel")),
            _ if guest.cap.denied.is_some() => {
                let asked = guest.cap.denied.unwrap_or_default();
                Err(FunctionError::new(
                    ErrorKind::OutOfMemory,
                    format!(
                        "memory grew to {} MiB, over the cap of {} MiB: {error}",
                        asked >> 20,
                        self.memory_limit >> 20
                    ),
                )
                .with_type("Wasm.MemoryLimit"))
            }
            Some(trap) => Err(FunctionError::new(
                ErrorKind::Crashed,
                format!("wasm trap: {trap}{trace}"),
            )
            .with_type("Wasm.Trap")),
            None => Err(
                FunctionError::new(ErrorKind::Crashed, format!("{error:#}{trace}"))
                    .with_type("Wasm.Error"),
            ),
        }
    }
}

pub(super) fn bad_guest(message: &str) -> FunctionError {
    FunctionError::new(ErrorKind::Crashed, message).with_type("Wasm.BadGuest")
}

impl Environment for WasmEnv {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(self.run(invocation))
    }

    fn isolation(&self) -> &IsolationReport {
        &self.report
    }
}
