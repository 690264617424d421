//! Helpers shared by the process-sandbox tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fnhub_core::{CapabilityProfile, EnvAccess, FunctionName, FunctionSpec, Runtime};
use serde_json::Value;

/// The `lambda_runtime` fixture binary of this package.
pub(crate) fn rust_fixture() -> String {
    env!("CARGO_BIN_EXE_rust_lambda").to_owned()
}

/// A profile that grants network and files but no inherited environment, plus `vars`.
pub(crate) fn open_profile(vars: &[(&str, &str)]) -> CapabilityProfile {
    let mut profile = CapabilityProfile::unrestricted();
    profile.env = EnvAccess::Only(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    profile
}

/// A process function running `command`.
pub(crate) fn spec(name: &str, command: Vec<String>, profile: CapabilityProfile) -> FunctionSpec {
    FunctionSpec::new(
        FunctionName::new(name).unwrap(),
        Runtime::Process {
            command,
            workdir: None,
            handler: Some("fixture.handle".into()),
        },
    )
    .with_capabilities(profile)
    .with_timeout(Duration::from_secs(5))
}

pub(crate) fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes));
    })
}

/// The Python interpreter that has `awslambdaric`, if any. Under `CI=true` a missing one is
/// a failure: `.ci/run` installs it.
pub(crate) fn python_with_ric() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, awslambdaric; print(sys.executable)"])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 with awslambdaric is required under CI (pip install awslambdaric)"
            );
            eprintln!(
                "skipping: python3 with awslambdaric is not installed (pip install awslambdaric)"
            );
            None
        }
    }
}
