//! The file's sections as serde reads them, and their checks into specs and flows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fnhub_core::{
    CapabilityProfile, EnvAccess, FilesystemAccess, FunctionName, FunctionSpec, NetworkAccess,
    PathGrant, Runtime, Version,
};
use fnhub_router::{Flow, Overflow};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) hub: HubSection,
    pub(super) http: Option<HttpSection>,
    pub(super) mqtt: Option<MqttSection>,
    #[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
    pub(super) shadows: Option<Spanned<ShadowsSection>>,
    pub(super) cloud: Option<super::cloud::CloudSection>,
    #[serde(default)]
    pub(super) function: Vec<Spanned<FunctionSection>>,
    #[serde(default)]
    pub(super) flow: Vec<Spanned<FlowSection>>,
    #[serde(default)]
    pub(super) alias: Vec<Spanned<AliasSection>>,
}

/// `[[alias]]`: a name for a version of a function, optionally sending a share of its
/// calls to a second version (Lambda's weighted alias).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AliasSection {
    pub(super) function: String,
    pub(super) name: String,
    pub(super) version: u32,
    /// `{ version = 3, weight = 0.1 }`: a tenth of the calls go to version 3.
    pub(super) additional: Option<AdditionalVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdditionalVersion {
    pub(super) version: u32,
    pub(super) weight: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HubSection {
    pub(super) name: String,
    pub(super) checkpoint_dir: Option<PathBuf>,
    pub(super) workers: Option<Spanned<u64>>,
    pub(super) queue_capacity: Option<Spanned<u64>>,
    /// `"enforced"` (the default: refuse what cannot be confined) or `"best-effort"`.
    pub(super) confinement: Option<Spanned<String>>,
    /// `"fixed"`, `"forecast"` or `"hybrid"` (the default), or a table with parameters.
    pub(super) reservation: Option<Spanned<super::reservation::ReservationSection>>,
    /// Whether Python functions fork from a template (default true).
    pub(super) python_templates: Option<bool>,
    /// The most resident memory of the templates together, in MiB.
    pub(super) python_templates_max_mb: Option<Spanned<u64>>,
    /// The most memory pre-warms bring idle environments to, in MiB.
    pub(super) max_warm_mb: Option<Spanned<u64>>,
}

/// The largest memory a function may ask for, in MiB (1 TiB).
pub(super) const MAX_MEMORY_MB: u32 = 1 << 20;
/// The longest timeout a function may have: a day.
pub(super) const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// The most invocations one environment may serve at once.
pub(super) const MAX_CONCURRENCY: u32 = 1024;
/// The longest a flow may hold an invocation waiting for room: a day.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `value` when it lies in `min..=max`, else the message that says so.
pub(super) fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if value < min || value > max {
        Err(format!("{value} is not between {min} and {max}"))
    } else {
        Ok(value)
    }
}

/// `path` with `.` dropped and `..` applied, without touching the filesystem (the path
/// may not exist yet).
pub(super) fn normalized(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(super) struct HttpSection {
    pub(super) listen: Spanned<String>,
    #[serde(default = "default_auth")]
    pub(super) auth: Spanned<String>,
    #[serde(default)]
    pub(super) credentials: Vec<CredentialSection>,
}

pub(super) fn default_auth() -> Spanned<String> {
    Spanned::new(0..0, "sigv4".to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(super) struct CredentialSection {
    pub(super) access_key: String,
    pub(super) secret_key: String,
    pub(super) principal: String,
    /// What the key may invoke: `{ invoke = ["name", "name:qualifier", "*"] }`. Without it,
    /// every function.
    pub(super) allow: Option<CredentialAllow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(super) struct CredentialAllow {
    #[serde(default)]
    pub(super) invoke: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
pub(super) struct MqttSection {
    pub(super) url: Spanned<String>,
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) inbound: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) outbound: Vec<Spanned<String>>,
    pub(super) max_message_bytes: Option<Spanned<u64>>,
    /// With `mqtts://`: the broker's CA (PEM; the system's roots without it), and the
    /// hub's client certificate and key (PEM).
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

/// `[shadows]`: whose shadows devices on the bridged broker may use (`"*"`: any thing).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
pub(super) struct ShadowsSection {
    #[serde(default)]
    pub(super) mqtt: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionSection {
    pub(super) name: String,
    pub(super) runtime: String,
    pub(super) version: Option<u32>,
    pub(super) command: Option<Vec<String>>,
    pub(super) workdir: Option<PathBuf>,
    pub(super) handler: Option<String>,
    pub(super) module: Option<PathBuf>,
    pub(super) export: Option<String>,
    pub(super) memory_mb: Option<u32>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) concurrency: Option<u32>,
    pub(super) output_topic: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) files: Vec<PathBuf>,
    #[serde(default)]
    pub(super) network: bool,
    /// What it may do on its endpoint: `{ invoke = [..], publish = [..], shadows = [..] }`.
    #[serde(default)]
    pub(super) allow: AllowSection,
    /// A Lambda durable function: `{ execution_timeout_s = N, retention_days = N }`.
    pub(super) durable: Option<DurableSection>,
}

/// Lambda's `DurableConfig`, both parts optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DurableSection {
    pub(super) execution_timeout_s: Option<u64>,
    pub(super) retention_days: Option<u64>,
}

impl DurableSection {
    /// The config it declares; `(key, message)` for values out of Lambda's ranges.
    pub(super) fn config(&self) -> Result<crate::DurableConfig, (String, String)> {
        let mut config = crate::DurableConfig::default();
        if let Some(s) = self.execution_timeout_s {
            if !(1..=31_622_400).contains(&s) {
                return Err((
                    "durable.execution_timeout_s".into(),
                    format!("{s} is not 1 to 31622400 seconds (366 days)"),
                ));
            }
            config = config.with_execution_timeout(std::time::Duration::from_secs(s));
        }
        if let Some(d) = self.retention_days {
            if !(1..=90).contains(&d) {
                return Err((
                    "durable.retention_days".into(),
                    format!("{d} is not 1 to 90 days"),
                ));
            }
            config = config.with_retention(std::time::Duration::from_secs(d * 86_400));
        }
        Ok(config)
    }
}

/// A function's allow-list of the hub's services (see `fnhub_core::ServiceAccess`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowSection {
    #[serde(default)]
    pub(super) invoke: Vec<String>,
    #[serde(default)]
    pub(super) publish: Vec<String>,
    #[serde(default)]
    pub(super) shadows: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowSection {
    pub(super) source: String,
    pub(super) topic: String,
    pub(super) target: String,
    pub(super) overflow: Option<String>,
}

/// The line (from 1) of byte `offset`; counted on bytes, so any offset is safe.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let bytes = text.as_bytes();
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub(super) fn parse_overflow(text: &str) -> Option<Overflow> {
    match text {
        "reject" => Some(Overflow::Reject),
        "drop_oldest" => Some(Overflow::DropOldest),
        _ => {
            let d = text.strip_prefix("wait:")?;
            let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit())?);
            let n: u64 = n.parse().ok()?;
            let wait = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.checked_mul(60)?),
                _ => return None,
            };
            // Past a day is a mistake, not a policy (and large counts must not wrap).
            (wait <= MAX_WAIT).then_some(Overflow::Wait(wait))
        }
    }
}

/// The spec a `[[function]]` declares; `(key, message)` when it cannot.
pub(crate) fn function_spec(
    f: &FunctionSection,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<FunctionSpec, (String, String)> {
    let key = |k: &str| format!("function.{}.{k}", f.name);
    let name = FunctionName::new(&f.name).map_err(|e| (key("name"), e.to_string()))?;
    let runtime = match f.runtime.as_str() {
        "process" => {
            let command = f.command.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
                (
                    key("command"),
                    "a process function needs a command".to_owned(),
                )
            })?;
            Runtime::Process {
                command,
                workdir: f.workdir.as_deref().map(resolve),
                handler: f.handler.clone(),
            }
        }
        "wasm" => {
            if !cfg!(feature = "wasm") {
                return Err((
                    key("runtime"),
                    "wasm functions need fnhub built with feature `wasm` (cargo run --features wasm …)".to_owned(),
                ));
            }
            let module = f
                .module
                .as_deref()
                .ok_or_else(|| (key("module"), "a wasm function needs a module".to_owned()))?;
            Runtime::Wasm {
                module: resolve(module),
                export: f.export.clone().unwrap_or_else(|| "handle".into()),
            }
        }
        other => {
            return Err((
                key("runtime"),
                format!("{other:?} is not \"process\" or \"wasm\""),
            ));
        }
    };
    let mut spec = FunctionSpec::new(name, runtime);
    if let Some(v) = f.version {
        spec.version =
            Version::new(v).ok_or_else(|| (key("version"), "versions count from 1".to_owned()))?;
    }
    if let Some(mb) = f.memory_mb {
        spec.resources.memory_mb =
            bounded(mb, 1, MAX_MEMORY_MB).map_err(|m| (key("memory_mb"), m))?;
    }
    if let Some(ms) = f.timeout_ms {
        let ms = bounded(ms, 1, MAX_TIMEOUT_MS).map_err(|m| (key("timeout_ms"), m))?;
        spec.resources.timeout = Duration::from_millis(ms);
    }
    if let Some(c) = f.concurrency {
        spec.resources.concurrency =
            bounded(c, 1, MAX_CONCURRENCY).map_err(|m| (key("concurrency"), m))?;
    }
    if let Some(t) = &f.output_topic {
        let probe = t.replace(['{', '}'], "");
        fnhub_router::topic::TopicName::new(&probe)
            .map_err(|e| (key("output_topic"), e.to_string()))?;
        spec.output_topic = Some(t.clone());
    }
    let mut profile = CapabilityProfile::default();
    profile.env = EnvAccess::Only(f.env.clone());
    let mut grants: Vec<PathGrant> = Vec::with_capacity(f.files.len() + 1);
    for p in &f.files {
        let path = normalized(&resolve(p));
        // Granting the root grants everything, the hub's own files included: never what
        // a function needs, so refused rather than taken at its word.
        if path.parent().is_none() {
            return Err((
                key("files"),
                format!(
                    "{} grants the whole filesystem; name the folders the function reads",
                    p.display()
                ),
            ));
        }
        grants.push(PathGrant {
            path,
            writable: false,
        });
    }
    if let Some(dir) = f.workdir.as_deref() {
        grants.push(PathGrant {
            path: normalized(&resolve(dir)),
            writable: false,
        });
    }
    profile.filesystem = FilesystemAccess::Only(grants);
    for filter in &f.allow.publish {
        if filter != "*" {
            filter
                .parse::<fnhub_router::topic::TopicFilter>()
                .map_err(|e| (key("allow.publish"), format!("{filter:?}: {e}")))?;
        }
    }
    for name in f.allow.invoke.iter().filter(|n| *n != "*") {
        name.parse::<fnhub_core::FunctionRef>()
            .map_err(|e| (key("allow.invoke"), format!("{name:?}: {e}")))?;
    }
    profile.services.invoke = f.allow.invoke.clone();
    profile.services.publish = f.allow.publish.clone();
    profile.services.shadows = f.allow.shadows.clone();
    if f.network {
        profile.network = NetworkAccess::Any;
    }
    spec.capabilities = profile;
    Ok(spec)
}

/// The flow a `[[flow]]` (the `i`th) declares; `(key, message)` when it cannot.
pub(crate) fn flow(f: &FlowSection, i: usize) -> Result<Flow, (String, String)> {
    let mut flow = Flow::parse(&f.source, &f.topic, &f.target)
        .map_err(|e| (format!("flow[{i}]"), e.to_string()))?;
    if let Some(o) = &f.overflow {
        flow = flow.with_overflow(parse_overflow(o).ok_or_else(|| {
            (
                format!("flow[{i}].overflow"),
                format!("{o:?} is not \"reject\", \"drop_oldest\" or \"wait:DURATION\" (ms, s or m; a day at most)"),
            )
        })?);
    }
    Ok(flow)
}
