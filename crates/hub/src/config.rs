//! The hub's config file (feature `config`, on by default): TOML declaring the hub, its
//! functions, flows, the MQTT bridge and the HTTP listener.
//!
//! ```toml
//! [hub]
//! name = "hub-a"
//! checkpoint_dir = "./data/checkpoints"   # optional: a DirStore there
//! workers = 16                            # optional
//! queue_capacity = 1024                   # optional
//!
//! [http]                                  # needs feature `http` (on by default)
//! listen = "127.0.0.1:9000"
//! auth = "none"                           # or "sigv4" with [[http.credentials]]
//! # [[http.credentials]]
//! # access_key = "AKID…"
//! # secret_key = "…"
//! # principal = "tenant-a"
//!
//! [mqtt]                                  # needs feature `mqtt` (on by default)
//! url = "mqtt://127.0.0.1:1883"
//! client_id = "hub-a"
//! inbound = ["sensors/#"]                 # optional: upstream filters brought in
//! outbound = ["alerts/#"]                 # optional: local filters sent up
//!
//! [[function]]
//! name = "hello"
//! runtime = "process"                     # the Lambda Runtime API
//! command = ["python3", "-m", "awslambdaric", "app.handler"]
//! workdir = "functions/hello"
//! memory_mb = 128
//! timeout_ms = 3000
//!
//! [[function]]
//! name = "scale"
//! runtime = "wasm"                        # needs feature `wasm`
//! module = "functions/scale.wat"
//! export = "handle"
//!
//! [[flow]]
//! source = "any"
//! topic = "sensors/+/temperature"
//! target = "function:hello"
//! overflow = "reject"                     # optional: "drop_oldest", "wait:5s"
//! ```
//!
//! Relative paths resolve against the config file's folder. Unknown keys and invalid values
//! are errors naming the key and its line. A function may also set `version`, `handler`,
//! `concurrency`, `output_topic`, and `env` (variables it sees), `files` (folders it may
//! read) and `network = true` (unconfined network) for its capability profile.
//!
//! The HTTP listener serves the Lambda Invoke API ([`crate::http`]), `GET /metrics`
//! (Prometheus text rendered by the recorder the application installed and passed to
//! [`HubConfig::start`]) and
//! `GET /healthz` (`200` when every deployed function has a sandbox that can run it and
//! its program or module is there, else `503` naming those that cannot start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fnhub_core::{
    CapabilityProfile, EnvAccess, FilesystemAccess, FunctionName, FunctionSpec, NetworkAccess,
    PathGrant, Runtime, Version,
};
use fnhub_router::{Flow, Overflow};
use serde::Deserialize;
use toml::Spanned;

use crate::edge::{EdgeHub, EdgeHubBuilder};

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line of the offending key or value, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but makes no sense (a bad topic, a missing command...).
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line of the key, from 1.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The hub could not be built from it.
    #[error("the hub could not be built: {0}")]
    Hub(#[from] crate::HubError),
    /// The HTTP listener could not start.
    #[cfg(feature = "http")]
    #[error("the HTTP listener could not start: {0}")]
    Http(#[from] crate::http::HttpError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    hub: HubSection,
    http: Option<HttpSection>,
    mqtt: Option<MqttSection>,
    #[serde(default)]
    function: Vec<Spanned<FunctionSection>>,
    #[serde(default)]
    flow: Vec<Spanned<FlowSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubSection {
    name: String,
    checkpoint_dir: Option<PathBuf>,
    workers: Option<usize>,
    queue_capacity: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Spanned<String>,
    #[serde(default = "default_auth")]
    auth: Spanned<String>,
    #[serde(default)]
    credentials: Vec<CredentialSection>,
}

fn default_auth() -> Spanned<String> {
    Spanned::new(0..0, "sigv4".to_owned())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
struct CredentialSection {
    access_key: String,
    secret_key: String,
    principal: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
struct MqttSection {
    url: Spanned<String>,
    client_id: String,
    #[serde(default)]
    inbound: Vec<Spanned<String>>,
    #[serde(default)]
    outbound: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionSection {
    name: String,
    runtime: String,
    version: Option<u32>,
    command: Option<Vec<String>>,
    workdir: Option<PathBuf>,
    handler: Option<String>,
    module: Option<PathBuf>,
    export: Option<String>,
    memory_mb: Option<u32>,
    timeout_ms: Option<u64>,
    concurrency: Option<u32>,
    output_topic: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<PathBuf>,
    #[serde(default)]
    network: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowSection {
    source: String,
    topic: String,
    target: String,
    overflow: Option<String>,
}

/// A loaded config file: what it declares, checked, with paths resolved.
#[derive(Debug)]
pub struct HubConfig {
    path: PathBuf,
    name: String,
    checkpoint_dir: Option<PathBuf>,
    workers: Option<usize>,
    queue_capacity: Option<usize>,
    functions: Vec<FunctionSpec>,
    flows: Vec<Flow>,
    #[cfg(feature = "http")]
    http: Option<(SocketAddr, crate::http::HttpConfig)>,
    #[cfg(feature = "mqtt")]
    mqtt: Option<fnhub_router::mqtt::MqttConfig>,
}

/// The line (from 1) of byte `offset`; counted on bytes, so any offset is safe.
fn line_of(text: &str, offset: usize) -> usize {
    let bytes = text.as_bytes();
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn parse_overflow(text: &str) -> Option<Overflow> {
    match text {
        "reject" => Some(Overflow::Reject),
        "drop_oldest" => Some(Overflow::DropOldest),
        _ => {
            let d = text.strip_prefix("wait:")?;
            let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit())?);
            let n: u64 = n.parse().ok()?;
            Some(Overflow::Wait(match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                _ => return None,
            }))
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
        if mb == 0 {
            return Err((key("memory_mb"), "must be at least 1".to_owned()));
        }
        spec.resources.memory_mb = mb;
    }
    if let Some(ms) = f.timeout_ms {
        if ms == 0 {
            return Err((key("timeout_ms"), "must be at least 1".to_owned()));
        }
        spec.resources.timeout = Duration::from_millis(ms);
    }
    if let Some(c) = f.concurrency {
        spec.resources.concurrency = c.max(1);
    }
    if let Some(t) = &f.output_topic {
        let probe = t.replace(['{', '}'], "");
        fnhub_router::topic::TopicName::new(&probe)
            .map_err(|e| (key("output_topic"), e.to_string()))?;
        spec.output_topic = Some(t.clone());
    }
    let mut profile = CapabilityProfile::default();
    profile.env = EnvAccess::Only(f.env.clone());
    let mut grants: Vec<PathGrant> = f
        .files
        .iter()
        .map(|p| PathGrant {
            path: resolve(p),
            writable: false,
        })
        .collect();
    if let Some(dir) = f.workdir.as_deref() {
        grants.push(PathGrant {
            path: resolve(dir),
            writable: false,
        });
    }
    profile.filesystem = FilesystemAccess::Only(grants);
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
                format!("{o:?} is not \"reject\", \"drop_oldest\" or \"wait:DURATION\""),
            )
        })?);
    }
    Ok(flow)
}

impl HubConfig {
    /// Reads and checks `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<HubConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        HubConfig::parse(&text, path)
    }

    /// Checks `text`, the contents of the file at `path` (relative paths in it resolve
    /// against `path`'s folder).
    pub fn parse(text: &str, path: &Path) -> Result<HubConfig, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let invalid = |span: Range<usize>, key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key: key.to_owned(),
            message,
        };

        let mut functions = Vec::new();
        for f in &file.function {
            let span = f.span();
            let spec = function_spec(f.get_ref(), &resolve)
                .map_err(|(key, message)| invalid(span, &key, message))?;
            functions.push(spec);
        }

        let mut flows = Vec::new();
        for (i, f) in file.flow.iter().enumerate() {
            let span = f.span();
            let flow =
                flow(f.get_ref(), i).map_err(|(key, message)| invalid(span, &key, message))?;
            flows.push(flow);
        }

        #[cfg(feature = "http")]
        let http = match &file.http {
            None => None,
            Some(h) => {
                let addr: SocketAddr = h.listen.get_ref().parse().map_err(|_| {
                    invalid(
                        h.listen.span(),
                        "http.listen",
                        format!("{:?} is not an address:port", h.listen.get_ref()),
                    )
                })?;
                let config = match h.auth.get_ref().as_str() {
                    "none" => crate::http::HttpConfig::unauthenticated_loopback(),
                    "sigv4" => {
                        if h.credentials.is_empty() {
                            return Err(invalid(
                                h.auth.span(),
                                "http.credentials",
                                "sigv4 needs at least one [[http.credentials]]".into(),
                            ));
                        }
                        crate::http::HttpConfig::sigv4(
                            h.credentials
                                .iter()
                                .map(|c| {
                                    crate::http::Credentials::new(
                                        &c.access_key,
                                        &c.secret_key,
                                        fnhub_core::Principal::new(&c.principal),
                                    )
                                })
                                .collect(),
                        )
                    }
                    other => {
                        return Err(invalid(
                            h.auth.span(),
                            "http.auth",
                            format!("{other:?} is not \"none\" or \"sigv4\""),
                        ));
                    }
                };
                if matches!(config.auth, crate::http::HttpAuth::None) && !addr.ip().is_loopback() {
                    return Err(invalid(
                        h.listen.span(),
                        "http.listen",
                        "auth = \"none\" is for loopback addresses only".into(),
                    ));
                }
                Some((addr, config))
            }
        };
        #[cfg(not(feature = "http"))]
        if let Some(h) = &file.http {
            return Err(invalid(
                h.listen.span(),
                "http",
                "the HTTP listener needs fnhub built with feature `http`".into(),
            ));
        }

        #[cfg(feature = "mqtt")]
        let mqtt = match &file.mqtt {
            None => None,
            Some(m) => {
                let mut config =
                    fnhub_router::mqtt::MqttConfig::from_url(m.url.get_ref(), &m.client_id)
                        .map_err(|e| invalid(m.url.span(), "mqtt.url", e.to_string()))?;
                for f in &m.inbound {
                    let filter =
                        f.get_ref()
                            .parse()
                            .map_err(|e: fnhub_router::topic::TopicError| {
                                invalid(f.span(), "mqtt.inbound", e.to_string())
                            })?;
                    config = config.inbound(fnhub_router::mqtt::InboundRule::new(filter));
                }
                for f in &m.outbound {
                    let filter =
                        f.get_ref()
                            .parse()
                            .map_err(|e: fnhub_router::topic::TopicError| {
                                invalid(f.span(), "mqtt.outbound", e.to_string())
                            })?;
                    config = config.outbound(fnhub_router::mqtt::OutboundRule::new(filter));
                }
                Some(config)
            }
        };
        #[cfg(not(feature = "mqtt"))]
        if let Some(m) = &file.mqtt {
            return Err(invalid(
                m.url.span(),
                "mqtt",
                "the MQTT bridge needs fnhub built with feature `mqtt`".into(),
            ));
        }

        Ok(HubConfig {
            path: path.to_owned(),
            name: file.hub.name,
            checkpoint_dir: file.hub.checkpoint_dir.as_deref().map(resolve),
            workers: file.hub.workers,
            queue_capacity: file.hub.queue_capacity,
            functions,
            flows,
            #[cfg(feature = "http")]
            http,
            #[cfg(feature = "mqtt")]
            mqtt,
        })
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The functions it declares.
    pub fn functions(&self) -> &[FunctionSpec] {
        &self.functions
    }

    /// The flows it declares.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// A builder with everything the file declares, for the caller to add to (native
    /// functions, sandboxes) before [`build`](EdgeHubBuilder::build).
    pub fn builder(&self) -> Result<EdgeHubBuilder, ConfigError> {
        let mut b = EdgeHub::builder().name(self.name.clone());
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        if let Some(q) = self.queue_capacity {
            b = b.queue_capacity(q);
        }
        if let Some(dir) = &self.checkpoint_dir {
            let (store, _) =
                fnhub_checkpoint::DirStore::open(dir).map_err(|e| ConfigError::Invalid {
                    path: self.path.clone(),
                    line: 1,
                    key: "hub.checkpoint_dir".into(),
                    message: e.to_string(),
                })?;
            b = b.checkpoint_store(Arc::new(store));
        }
        for spec in &self.functions {
            b = b.deploy(spec.clone());
        }
        for flow in &self.flows {
            b = b.flow(flow.clone());
        }
        Ok(b)
    }

    /// Builds the hub and starts what the file declares: the MQTT bridge, and the HTTP
    /// listener with `/healthz` and `/metrics` (which answers what `metrics` renders: the
    /// application installs the process's recorder, not this library).
    pub async fn start(
        &self,
        builder: EdgeHubBuilder,
        #[cfg(feature = "http")] metrics: Option<crate::http::RenderMetrics>,
    ) -> Result<Running, ConfigError> {
        let hub = builder.build()?;
        #[cfg(feature = "mqtt")]
        if let Some(m) = &self.mqtt {
            crate::bridge::Bridge::new(m.clone()).attach(&hub)?;
        }
        #[cfg(feature = "http")]
        let http = match &self.http {
            Some((addr, config)) => {
                let ops = crate::http::Ops { metrics };
                Some(crate::http::serve_with_ops(&hub, *addr, config.clone(), ops).await?)
            }
            None => None,
        };
        Ok(Running {
            hub,
            #[cfg(feature = "http")]
            http,
        })
    }
}

/// A hub started from a config file.
#[derive(Debug)]
#[non_exhaustive]
pub struct Running {
    /// The hub.
    pub hub: EdgeHub,
    /// Its HTTP listener, when the file has `[http]`.
    #[cfg(feature = "http")]
    pub http: Option<crate::http::HttpServer>,
}

impl Running {
    /// Stops taking requests, drains the hub and stops it.
    pub async fn shutdown(self) {
        #[cfg(feature = "http")]
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        self.hub.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SAMPLE: &str = r#"
[hub]
name = "hub-a"
checkpoint_dir = "./data/checkpoints"

[http]
listen = "127.0.0.1:9000"
auth = "none"

[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "hub-a"

[[function]]
name = "hello"
runtime = "process"
command = ["python3", "-m", "awslambdaric", "app.handler"]
workdir = "functions/hello"
memory_mb = 128
timeout_ms = 3000

[[flow]]
source = "any"
topic = "sensors/+/temperature"
target = "function:hello"
"#;

    #[test]
    fn the_sample_loads_with_paths_resolved() {
        let c = HubConfig::parse(SAMPLE, Path::new("/etc/fnhub/hub.toml")).unwrap();
        assert_eq!(c.name(), "hub-a");
        assert_eq!(
            c.checkpoint_dir.as_deref(),
            Some(Path::new("/etc/fnhub/./data/checkpoints"))
        );
        let f = &c.functions()[0];
        assert_eq!(f.resources.timeout, Duration::from_millis(3000));
        match &f.runtime {
            Runtime::Process {
                workdir, command, ..
            } => {
                assert_eq!(
                    workdir.as_deref(),
                    Some(Path::new("/etc/fnhub/functions/hello"))
                );
                assert_eq!(command[0], "python3");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.flows().len(), 1);
    }

    fn error(text: &str) -> String {
        HubConfig::parse(text, Path::new("hub.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let e = error("[hub]\nname = \"a\"\ncolour = \"red\"\n");
        assert!(e.starts_with("hub.toml:3:") && e.contains("colour"), "{e}");
        let e = error(
            "[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\ntimeout_ms = \"soon\"\n",
        );
        assert!(e.starts_with("hub.toml:6:"), "{e}");
        let e = error("[hub]\nname = \"a\"\n\n[[function]]\nname = \"f\"\nruntime = \"lisp\"\n");
        assert!(
            e.contains("hub.toml:4:") && e.contains("function.f.runtime"),
            "{e}"
        );
        let e = error("[hub]\nname = \"a\"\n[[function]]\nname = \"f\"\nruntime = \"process\"\n");
        assert!(e.contains("function.f.command"), "{e}");
        let e = error(
            "[hub]\nname = \"a\"\n[[flow]]\nsource = \"any\"\ntopic = \"a/#/b\"\ntarget = \"function:f\"\n",
        );
        assert!(e.contains("hub.toml:3:") && e.contains("flow[0]"), "{e}");
        let e = error(
            "[hub]\nname = \"a\"\n[[flow]]\nsource = \"any\"\ntopic = \"a\"\ntarget = \"function:f\"\noverflow = \"later\"\n",
        );
        assert!(e.contains("flow[0].overflow"), "{e}");
        let e = error("[hub]\nname = \"a\"\n[http]\nlisten = \"0.0.0.0:80\"\nauth = \"none\"\n");
        assert!(e.contains("hub.toml:4:") && e.contains("loopback"), "{e}");
        let e = error("[hub]\nname = \"a\"\n[http]\nlisten = \"127.0.0.1:80\"\nauth = \"sigv4\"\n");
        assert!(e.contains("http.credentials"), "{e}");
        let e = error("[hub]\nname = \"a\"\n[mqtt]\nurl = \"tcp://x\"\nclient_id = \"a\"\n");
        assert!(e.contains("hub.toml:4:") && e.contains("mqtt.url"), "{e}");
        let e = error("not toml at all [");
        assert!(e.starts_with("hub.toml:1:"), "{e}");
        assert!(
            error("[http]\nlisten = \"x\"\n").contains("hub"),
            "the [hub] table is required"
        );
    }

    #[test]
    fn overflow_values() {
        assert_eq!(
            parse_overflow("wait:5s"),
            Some(Overflow::Wait(Duration::from_secs(5)))
        );
        assert_eq!(
            parse_overflow("wait:250ms"),
            Some(Overflow::Wait(Duration::from_millis(250)))
        );
        assert_eq!(parse_overflow("drop_oldest"), Some(Overflow::DropOldest));
        assert_eq!(parse_overflow("wait:"), None);
        assert_eq!(parse_overflow("wait:5y"), None);
    }

    /// `SAMPLE` with the bytes in `cut` replaced by `insert` (SAMPLE is ASCII, so every
    /// index is a character boundary).
    fn spliced(cut: std::ops::Range<usize>, insert: &str) -> String {
        let (start, end) = (cut.start.min(SAMPLE.len()), cut.end.min(SAMPLE.len()));
        let end = end.max(start);
        format!("{}{insert}{}", &SAMPLE[..start], &SAMPLE[end..])
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_config_or_an_error(text in "\\PC{0,300}") {
            let _ = HubConfig::parse(&text, Path::new("/nonexistent/hub.toml"));
        }

        #[test]
        fn a_damaged_sample_is_a_config_or_an_error_that_says_why(
            start in 0usize..600,
            len in 0usize..40,
            insert in "[\\[\\]=\"a-z0-9#\n .{},_+-]{0,12}",
        ) {
            let text = spliced(start..start + len, &insert);
            if let Err(e) = HubConfig::parse(&text, Path::new("/nonexistent/hub.toml")) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
