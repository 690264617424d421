//! The WebAssembly sandbox beside raw wasmtime, in the same run: instantiate a trivial
//! export's module and call it, through `WasmSandbox` (a fresh instance from the pool per
//! invocation, limits, the invocation's bookkeeping) and through wasmtime alone
//! (`InstancePre::instantiate_async` + `call_async` on an engine with exactly the same
//! configuration, from `WasmConfig::engine_config`).
//!
//! ```text
//! cargo bench -p fnhub-benches --features wasm --bench wasm
//! ```

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fnhub::libs::core::Sandbox;
use fnhub::{FunctionName, FunctionSpec, Invocation, Runtime, WasmConfig, WasmSandbox};
use wasmtime::{Engine, Linker, Module, Store};

fn module_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/sandbox-it/fixtures/wasm/basic.wat")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = WasmConfig::default();

    // Ours.
    let sandbox = WasmSandbox::new().expect("sandbox");
    let spec = FunctionSpec::new(
        FunctionName::new("noop").expect("name"),
        Runtime::Wasm {
            module: module_path(),
            export: "noop".into(),
        },
    );
    let env = rt.block_on(sandbox.prepare(&spec)).expect("prepare");

    // The peer: the same module on a bare engine of the same configuration, its imports
    // defined as no-ops.
    let engine = Engine::new(&config.engine_config()).expect("engine");
    let module = Module::from_file(&engine, module_path()).expect("module");
    let mut linker: Linker<()> = Linker::new(&engine);
    linker
        .func_wrap("fnhub", "fail", |_: i32, _: i32| {})
        .expect("fail");
    linker
        .func_wrap("fnhub", "log", |_: i32, _: i32, _: i32| {})
        .expect("log");
    let pre = linker.instantiate_pre(&module).expect("pre");

    let group = "wasm_instantiate_and_call";
    let mut g = c.benchmark_group(group);
    g.bench_function("wasm_sandbox_invoke", |b| {
        b.to_async(&rt).iter(|| async {
            let inv = Invocation::new(spec.name.clone().into(), Bytes::new());
            let out = env.invoke(inv).await.expect("ok");
            assert!(out.is_empty());
        })
    });
    g.bench_function("raw_wasmtime", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = pre.instantiate_async(&mut store).await.expect("instance");
            let f = instance
                .get_typed_func::<(i32, i32), i64>(&mut store, "noop")
                .expect("export");
            let out = f.call_async(&mut store, (0, 0)).await.expect("call");
            assert_eq!(out, 0);
        })
    });
    g.finish();
    fnhub_benches::print_ratio(group, "wasm_sandbox_invoke", "raw_wasmtime");
}

fn config() -> Criterion {
    fnhub_benches::criterion(Duration::from_secs(1), Duration::from_secs(3)).sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
