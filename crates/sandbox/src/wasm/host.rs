//! The `fnhub` import module: host functions a guest calls to reach hub-local services.

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{ErrorKind, FunctionError, LocalServices, ServiceCaller, ServiceError, ShadowRef};
use wasmtime::{Caller, Extern, Linker, ResourceLimiter, Result, Trap, format_err};
use wasmtime_wasi::p1::WasiP1Ctx;

/// The name of the import module.
pub(super) const MODULE: &str = "fnhub";

/// What one instance's store holds.
pub(super) struct Guest {
    /// WASI preview 1, built only for modules that import it.
    pub(super) wasi: Option<WasiP1Ctx>,
    pub(super) cap: MemoryCap,
    /// The answer of the last host call, read by `fnhub.result`.
    pub(super) result: Bytes,
    /// Set by `fnhub.fail`: the invocation ends with this error.
    pub(super) failure: Option<FunctionError>,
    pub(super) caller: ServiceCaller,
    /// When the invocation's time is up: a host call still waiting then ends it.
    pub(super) stop_at: tokio::time::Instant,
    pub(super) services: Arc<dyn LocalServices>,
}

/// The per-invocation memory cap. A growth past it fails (`memory.grow` answers -1, as the
/// spec allows); if the guest then traps, the trap is reported as out of memory.
pub(super) struct MemoryCap {
    pub(super) limit: usize,
    /// The size a denied growth asked for.
    pub(super) denied: Option<usize>,
}

/// Tables are capped too, so a guest cannot use them to get around the memory cap.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.limit {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The error a host function returns to stop the guest at once after `fnhub.fail`.
#[derive(Debug)]
pub(super) struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the guest called fnhub.fail")
    }
}

impl std::error::Error for Failed {}

fn memory(caller: &mut Caller<'_, Guest>) -> Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(format_err!("the module exports no memory named `memory`")),
    }
}

/// Copies `len` bytes at `ptr` out of the guest. Out of bounds is the guest's bug: a trap.
fn read(caller: &mut Caller<'_, Guest>, ptr: i32, len: i32, what: &str) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    start
        .checked_add(len)
        .and_then(|end| mem.data(&caller).get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            format_err!("fnhub.{what}: {len} bytes at {start} lie outside the guest's memory")
        })
}

/// A string argument; bad UTF-8 is a bad request, not a trap.
fn read_str(
    caller: &mut Caller<'_, Guest>,
    ptr: i32,
    len: i32,
    what: &str,
) -> Result<Result<String, ServiceError>> {
    let bytes = read(caller, ptr, len, what)?;
    Ok(String::from_utf8(bytes)
        .map_err(|_| ServiceError::Invalid(format!("fnhub.{what}: the name is not UTF-8"))))
}

/// Leaves a call's answer for `fnhub.result` and returns its length, or the error's code
/// with its message left instead.
fn answer(caller: &mut Caller<'_, Guest>, r: Result<Bytes, ServiceError>) -> i32 {
    match r {
        Ok(bytes) => {
            let n = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            caller.data_mut().result = bytes;
            n
        }
        Err(e) => {
            let message = match &e {
                // The shape of Lambda's error payload, so a guest parses one format.
                ServiceError::Function(f) => f.lambda_body(f.kind.as_str()).to_string(),
                other => other.to_string(),
            };
            caller.data_mut().result = Bytes::from(message);
            e.code()
        }
    }
}

/// One service call from the guest: reads its name argument (and its payload, when it has
/// one), runs `op` until the invocation's time is up, and answers (see [`answer`]). An
/// argument outside the guest's memory is a trap; a name that is not UTF-8 a bad request.
async fn serve<Op, Fut>(
    caller: &mut Caller<'_, Guest>,
    what: &str,
    (name_ptr, name_len): (i32, i32),
    payload: Option<(i32, i32)>,
    op: Op,
) -> Result<i32>
where
    Op: FnOnce(Arc<dyn LocalServices>, ServiceCaller, String, Bytes) -> Fut,
    Fut: Future<Output = Result<Bytes, ServiceError>>,
{
    let name = read_str(caller, name_ptr, name_len, what)?;
    let payload = match payload {
        Some((ptr, len)) => Bytes::from(read(caller, ptr, len, what)?),
        None => Bytes::new(),
    };
    let g = caller.data();
    let (services, who, stop_at) = (g.services.clone(), g.caller.clone(), g.stop_at);
    let r = match name {
        // The epoch stops a guest that computes, not one waiting on the host.
        Ok(name) => tokio::time::timeout_at(stop_at, op(services, who, name, payload))
            .await
            .map_err(|_| wasmtime::Error::new(Trap::Interrupt))?,
        Err(e) => Err(e),
    };
    Ok(answer(caller, r))
}

/// Defines the `fnhub` module in `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<Guest>) -> Result<()> {
    linker.func_wrap(
        MODULE,
        "fail",
        |mut caller: Caller<'_, Guest>, ptr: i32, len: i32| -> Result<()> {
            let message =
                String::from_utf8_lossy(&read(&mut caller, ptr, len, "fail")?).into_owned();
            caller.data_mut().failure = Some(FunctionError::new(ErrorKind::Handled, message));
            Err(wasmtime::Error::new(Failed))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "log",
        |mut caller: Caller<'_, Guest>, level: i32, ptr: i32, len: i32| -> Result<()> {
            let bytes = read(&mut caller, ptr, len, "log")?;
            let line = String::from_utf8_lossy(&bytes);
            let who = &caller.data().caller;
            let (function, request_id) = (&who.function, &who.invocation);
            macro_rules! emit {
                ($level:ident) => {
                    tracing::$level!(target: "fnhub::function", %function, %request_id, stream = "log", "{line}")
                };
            }
            match level {
                0 => emit!(error),
                1 => emit!(warn),
                2 => emit!(info),
                3 => emit!(debug),
                _ => emit!(trace),
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "result",
        |mut caller: Caller<'_, Guest>, ptr: i32, cap: i32| -> Result<i32> {
            let mem = memory(&mut caller)?;
            let result = caller.data().result.clone();
            let n = result.len().min(cap.max(0) as usize);
            mem.write(&mut caller, ptr as u32 as usize, &result[..n])
                .map_err(|_| {
                    format_err!("fnhub.result: {n} bytes at {ptr} lie outside the guest's memory")
                })?;
            Ok(n as i32)
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "publish",
        |mut c: Caller<'_, Guest>, (tp, tl, pp, pl): (i32, i32, i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "publish",
                    (tp, tl),
                    Some((pp, pl)),
                    |s, who, topic, payload| async move {
                        s.publish(&who, &topic, payload)
                            .await
                            .map(|()| Bytes::new())
                    },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "invoke",
        |mut c: Caller<'_, Guest>, (np, nl, pp, pl): (i32, i32, i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "invoke",
                    (np, nl),
                    Some((pp, pl)),
                    |s, who, name, payload| async move { s.invoke(&who, &name, payload).await },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "kv_get",
        |mut c: Caller<'_, Guest>, (kp, kl): (i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "kv_get",
                    (kp, kl),
                    None,
                    |s, who, key, _| async move {
                        s.kv_get(&who, &key).await.and_then(|v| {
                            v.ok_or_else(|| {
                                ServiceError::NotFound(format!("key {key:?} is not set"))
                            })
                        })
                    },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "kv_put",
        |mut c: Caller<'_, Guest>, (kp, kl, vp, vl): (i32, i32, i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "kv_put",
                    (kp, kl),
                    Some((vp, vl)),
                    |s, who, key, value| async move {
                        s.kv_put(&who, &key, value).await.map(|()| Bytes::new())
                    },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "kv_delete",
        |mut c: Caller<'_, Guest>, (kp, kl): (i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "kv_delete",
                    (kp, kl),
                    None,
                    |s, who, key, _| async move {
                        match s.kv_delete(&who, &key).await? {
                            true => Ok(Bytes::new()),
                            false => Err(ServiceError::NotFound(format!("key {key:?} is not set"))),
                        }
                    },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "shadow_get",
        |mut c: Caller<'_, Guest>, (tp, tl): (i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "shadow_get",
                    (tp, tl),
                    None,
                    |s, who, thing, _| async move {
                        s.shadow_get(&who, &ShadowRef::parse(&thing)?).await
                    },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "shadow_update",
        |mut c: Caller<'_, Guest>, (tp, tl, dp, dl): (i32, i32, i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "shadow_update",
                    (tp, tl),
                    Some((dp, dl)),
                    |s, who, thing, doc| async move {
                        s.shadow_update(&who, &ShadowRef::parse(&thing)?, doc).await
                    },
                )
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "shadow_delete",
        |mut c: Caller<'_, Guest>, (tp, tl): (i32, i32)| {
            Box::new(async move {
                serve(
                    &mut c,
                    "shadow_delete",
                    (tp, tl),
                    None,
                    |s, who, thing, _| async move {
                        s.shadow_delete(&who, &ShadowRef::parse(&thing)?).await
                    },
                )
                .await
            })
        },
    )?;
    Ok(())
}
