//! The hub's config file (feature `config`, on by default): TOML declaring the hub, its
//! functions, flows, the MQTT bridge and the HTTP listener.
//!
//! ```toml
//! [hub]
//! name = "hub-a"
//! checkpoint_dir = "./data/checkpoints"   # optional: a DirStore there for durable
//!                                         # executions (Rust and Lambda ones), the durable
//!                                         # queue of `Event` invocations in its `events/`,
//!                                         # device shadows in its `shadows/`
//! workers = 16                            # optional
//! confinement = "enforced"                # optional: or "best-effort" for a hub not run
//!                                         # as root (reported at start and in /healthz)
//! queue_capacity = 1024                   # optional
//! reservation = "hybrid"                  # optional: "fixed", "forecast" or "hybrid" (the
//!                                         # default), or a table with parameters: see
//!                                         # [`Reservation`] and why hybrid is the default
//! python_templates = true                 # optional: Python functions fork their
//!                                         # environments from a template that has imported
//!                                         # the runtime client and the handler's libraries
//! python_templates_max_mb = 256           # optional: their resident memory together
//! max_warm_mb = 1024                      # optional: pre-warms load as many environments
//!                                         # as the reservation policy forecasts, within it
//!
//! [http]                                  # needs feature `http` (on by default)
//! listen = "127.0.0.1:9000"
//! auth = "none"                           # or "sigv4" with [[http.credentials]]
//! # [[http.credentials]]
//! # access_key = "AKID…"
//! # secret_key = "…"
//! # principal = "tenant-a"
//! # allow = { invoke = ["hello", "report:2"] }   # optional; without it, every function
//!
//! [mqtt]                                  # needs feature `mqtt` (on by default)
//! url = "mqtt://127.0.0.1:1883"
//! client_id = "hub-a"
//! inbound = ["sensors/#"]                 # optional: upstream filters brought in
//! outbound = ["alerts/#"]                 # optional: local filters sent up
//! # url = "mqtts://…iot.eu-west-1.amazonaws.com"   # TLS (port 8883 unless given), and:
//! # ca_file = "certs/AmazonRootCA1.pem"   # the broker's CA (the system's roots without it)
//! # cert_file = "certs/hub.pem.crt"       # the hub's X.509 client certificate, and its key
//! # key_file = "certs/hub.private.key"
//! # username = "hub-a"                    # and password: for a broker that wants them
//! # password = "…"
//!
//! [shadows]                               # optional, with [mqtt]
//! mqtt = ["lamp-1"]                       # devices' $aws/things/{thing}/shadow/... answered
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
//! name = "order"                          # a Lambda durable function (AWS's durable SDK)
//! runtime = "process"
//! command = ["python3", "-m", "awslambdaric", "order.handler"]
//! workdir = "functions/order"
//! durable = { execution_timeout_s = 900, retention_days = 7 }   # both optional
//!
//! [[function]]
//! name = "checkout"                       # JavaScript: Node.js 22 and AWS's aws-lambda-ric
//! runtime = "process"
//! command = ["/usr/local/bin/node", "node_modules/aws-lambda-ric/index.mjs"]
//! handler = "app.handler"                 # app.mjs's export `handler` (Lambda's _HANDLER)
//! workdir = "functions/checkout"          # app.mjs and its node_modules (npm install)
//!
//! [[function]]
//! name = "scale"
//! runtime = "wasm"                        # needs feature `wasm`
//! module = "functions/scale.wat"
//! export = "handle"
//!
//! [[alias]]                               # optional: Lambda's aliases
//! function = "hello"
//! name = "live"
//! version = 1
//! additional = { version = 2, weight = 0.1 }   # optional: a tenth of the calls to v2
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
//! read), `network = true` (unconfined network) and
//! `allow = { invoke = [..], publish = [..], shadows = [..] }` (what it may call on its
//! endpoint: function names, MQTT filters, thing names; `"*"` for any; nothing without it)
//! for its capability profile.
//!
//! Every number is bounded, and a value outside says the bounds: `workers` 1 to 4096,
//! `queue_capacity` 1 to 1,048,576, `memory_mb` and `python_templates_max_mb` 1 to 1,048,576,
//! `max_warm_mb` 1 to 2^30, `timeout_ms` 1 to a day,
//! `concurrency` 1 to 1024, `durable.execution_timeout_s` 1 to 31,622,400 (366 days,
//! default a day), `durable.retention_days` 1 to 90 (default 14), a flow's `wait:` up to a day, `[mqtt] max_message_bytes` (the
//! largest inbound payload taken; default 128 KiB, AWS IoT's) 1 to 256 MiB. Refused too: a function declared
//! twice; a `files` grant of `/`; a grant or `workdir` that holds this file or the
//! checkpoint folder (the keys and checkpoints are the hub's alone); an empty or repeated
//! access key.
//!
//! With a `[cloud]` section the hub is also a node of a cloud runtime deployment (feature
//! `nats`; see [`CloudNode`] for its keys): its front door sends the calls of functions it
//! lacks, or has no room for, to the nodes that have them, and `/healthz` reports its
//! link to NATS.
//!
//! The HTTP listener serves the Lambda Invoke API ([`crate::http`]), `GET /metrics`
//! (Prometheus text rendered by the recorder the application installed and passed to
//! [`HubConfig::start`]) and
//! `GET /healthz` (`200` when every deployed function started an environment at start and
//! its program, folder or module is still there, else `503` naming each function that
//! cannot start and why, as JSON; it also says whether confinement is best-effort). At
//! start the hub starts one environment of each function, so an import error, a missing
//! program or folder or a profile that cannot be enforced is found then.

mod cloud;
mod reservation;
mod sections;
#[cfg(test)]
mod tests;

pub use cloud::CloudNode;
pub use reservation::Reservation;

#[cfg(feature = "http")]
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fnhub_core::FunctionSpec;
use fnhub_router::Flow;
use toml::Spanned;

use crate::edge::{EdgeHub, EdgeHubBuilder};
#[cfg(test)]
use sections::parse_overflow;
use sections::{File, bounded, line_of, normalized};
#[cfg(feature = "mqtt")]
pub(crate) use sections::{FlowSection, FunctionSection};
pub(crate) use sections::{flow, function_spec};

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
    /// The cloud runtime node could not join its deployment.
    #[cfg(feature = "nats")]
    #[error("the cloud runtime node could not start: {0}")]
    Cloud(#[from] crate::cloud::CloudError),
}

/// A loaded config file: what it declares, checked, with paths resolved.
#[derive(Debug)]
pub struct HubConfig {
    path: PathBuf,
    name: String,
    checkpoint_dir: Option<PathBuf>,
    workers: Option<usize>,
    queue_capacity: Option<usize>,
    best_effort: bool,
    reservation: Reservation,
    python_templates: bool,
    python_templates_max_mb: Option<u32>,
    max_warm_mb: Option<u64>,
    functions: Vec<FunctionSpec>,
    /// Lambda durable functions.
    durables: Vec<(String, crate::DurableConfig)>,
    aliases: Vec<(fnhub_core::FunctionName, fnhub_core::Alias)>,
    flows: Vec<Flow>,
    #[cfg(feature = "http")]
    http: Option<(SocketAddr, crate::http::HttpConfig)>,
    #[cfg(feature = "mqtt")]
    mqtt: Option<fnhub_router::mqtt::MqttConfig>,
    /// Things whose shadows devices on the broker may use.
    #[cfg(feature = "mqtt")]
    device_shadows: Vec<String>,
    /// `[cloud]`: the deployment this hub is a node of.
    cloud: Option<CloudNode>,
}

impl HubConfig {
    /// Reads and checks `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<HubConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = HubConfig::parse(&text, path)?;
        // Secret keys in a file others can read: said, not refused (the file is the
        // operator's); functions never see it (their jail has no view of it).
        #[cfg(feature = "http")]
        {
            use std::os::unix::fs::PermissionsExt;
            let has_secrets = matches!(&config.http, Some((_, h)) if matches!(h.auth, crate::http::HttpAuth::SigV4(_)));
            if has_secrets
                && let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the config file holds secret keys and others may read it: chmod 600 it"
                );
            }
        }
        Ok(config)
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

        // A count of the [hub] table, checked against 1..=max.
        let count = |value: &Option<Spanned<u64>>, key: &str, max: usize| {
            value
                .as_ref()
                .map(|v| {
                    bounded(*v.get_ref(), 1, max as u64)
                        .map(|n| n as usize)
                        .map_err(|m| invalid(v.span(), key, m))
                })
                .transpose()
        };
        let workers = count(
            &file.hub.workers,
            "hub.workers",
            fnhub_scheduler::Scheduler::MAX_WORKERS,
        )?;
        let queue_capacity = count(
            &file.hub.queue_capacity,
            "hub.queue_capacity",
            fnhub_scheduler::Scheduler::MAX_QUEUE_CAPACITY,
        )?;
        let best_effort = match &file.hub.confinement {
            None => false,
            Some(c) => match c.get_ref().as_str() {
                "enforced" => false,
                "best-effort" => true,
                other => {
                    return Err(invalid(
                        c.span(),
                        "hub.confinement",
                        format!("{other:?} is not \"enforced\" or \"best-effort\""),
                    ));
                }
            },
        };
        let python_templates_max_mb = match &file.hub.python_templates_max_mb {
            None => None,
            Some(mb) => Some(
                bounded(*mb.get_ref(), 1, u64::from(sections::MAX_MEMORY_MB))
                    .map_err(|m| invalid(mb.span(), "hub.python_templates_max_mb", m))?
                    as u32,
            ),
        };
        let max_warm_mb = match &file.hub.max_warm_mb {
            None => None,
            Some(mb) => Some(
                bounded(*mb.get_ref(), 1, 1 << 30)
                    .map_err(|m| invalid(mb.span(), "hub.max_warm_mb", m))?,
            ),
        };
        let reservation = match &file.hub.reservation {
            None => Reservation::default(),
            Some(r) => r
                .get_ref()
                .reservation()
                .map_err(|(key, message)| invalid(r.span(), &key, message))?,
        };
        let checkpoint_dir = file
            .hub
            .checkpoint_dir
            .as_deref()
            .map(|d| normalized(&resolve(d)));
        // What no function may read: this file (its keys) and the hub's checkpoints.
        let own = normalized(&resolve(path));
        let mut functions: Vec<FunctionSpec> = Vec::new();
        let mut durables = Vec::new();
        for f in &file.function {
            let span = f.span();
            let spec = function_spec(f.get_ref(), &resolve)
                .map_err(|(key, message)| invalid(span.clone(), &key, message))?;
            if functions
                .iter()
                .any(|s| s.name == spec.name && s.version == spec.version)
            {
                return Err(invalid(
                    span,
                    &format!("function.{}", spec.name),
                    format!("{} version {} is declared twice", spec.name, spec.version),
                ));
            }
            if let fnhub_core::FilesystemAccess::Only(grants) = &spec.capabilities.filesystem {
                for g in grants {
                    let exposes = |p: &Path| p.starts_with(&g.path);
                    if exposes(&own) || checkpoint_dir.as_deref().is_some_and(exposes) {
                        return Err(invalid(
                            span,
                            &format!("function.{}.files", spec.name),
                            format!(
                                "{} holds the hub's own config or checkpoints; grant a folder that does not",
                                g.path.display()
                            ),
                        ));
                    }
                }
            }
            if let Some(d) = &f.get_ref().durable {
                let config = d.config().map_err(|(key, message)| {
                    invalid(
                        span.clone(),
                        &format!("function.{}.{key}", spec.name),
                        message,
                    )
                })?;
                durables.push((spec.name.to_string(), config));
            }
            functions.push(spec);
        }

        let mut flows = Vec::new();
        for (i, f) in file.flow.iter().enumerate() {
            let span = f.span();
            let flow =
                flow(f.get_ref(), i).map_err(|(key, message)| invalid(span, &key, message))?;
            flows.push(flow);
        }

        let mut aliases = Vec::new();
        for (i, a) in file.alias.iter().enumerate() {
            let span = a.span();
            let a = a.get_ref();
            let key = format!("alias[{i}]");
            let bad = |what: &str, message: String| {
                invalid(span.clone(), &format!("{key}.{what}"), message)
            };
            let function = fnhub_core::FunctionName::new(&a.function)
                .map_err(|e| bad("function", e.to_string()))?;
            if !functions.iter().any(|f| f.name == function) {
                return Err(bad(
                    "function",
                    format!("{:?} is not a declared function", a.function),
                ));
            }
            let has = |v: u32| {
                functions
                    .iter()
                    .any(|f| f.name == function && f.version.get() == v)
            };
            let version = fnhub_core::Version::new(a.version)
                .filter(|v| has(v.get()))
                .ok_or_else(|| {
                    bad(
                        "version",
                        format!("{} is not a declared version of {}", a.version, a.function),
                    )
                })?;
            let name: fnhub_core::AliasName = a
                .name
                .parse()
                .map_err(|e: fnhub_core::NameError| bad("name", e.to_string()))?;
            let mut alias = fnhub_core::Alias::new(name, version);
            if let Some(extra) = &a.additional {
                let other = fnhub_core::Version::new(extra.version)
                    .filter(|v| has(v.get()) && *v != version)
                    .ok_or_else(|| {
                        bad(
                            "additional.version",
                            format!(
                                "{} is not another declared version of {}",
                                extra.version, a.function
                            ),
                        )
                    })?;
                if !(extra.weight > 0.0 && extra.weight < 1.0) {
                    return Err(bad(
                        "additional.weight",
                        format!("{} is not between 0 and 1 (exclusive)", extra.weight),
                    ));
                }
                let basis = (extra.weight * f64::from(fnhub_core::Alias::WHOLE)).round() as u16;
                alias = alias
                    .with_split(other, basis.clamp(1, fnhub_core::Alias::WHOLE - 1))
                    .map_err(|e| bad("additional.weight", e.to_string()))?;
            }
            if aliases
                .iter()
                .any(|(f, x): &(fnhub_core::FunctionName, fnhub_core::Alias)| {
                    *f == function && x.name() == alias.name()
                })
            {
                return Err(bad(
                    "name",
                    format!("alias {} of {} is declared twice", a.name, a.function),
                ));
            }
            aliases.push((function, alias));
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
                        let mut seen = std::collections::BTreeSet::new();
                        for c in &h.credentials {
                            if c.access_key.is_empty() || c.secret_key.is_empty() {
                                return Err(invalid(
                                    h.auth.span(),
                                    "http.credentials",
                                    "an access key and its secret must not be empty".into(),
                                ));
                            }
                            if !seen.insert(c.access_key.as_str()) {
                                return Err(invalid(
                                    h.auth.span(),
                                    "http.credentials",
                                    format!("access key {:?} is listed twice", c.access_key),
                                ));
                            }
                        }
                        let mut config = crate::http::HttpConfig::sigv4(
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
                        );
                        // A key with `allow` invokes only what it lists; once one key has
                        // an allow-list, keys without one keep invoking everything.
                        if h.credentials.iter().any(|c| c.allow.is_some()) {
                            for c in &h.credentials {
                                let principal = fnhub_core::Principal::new(&c.principal);
                                match &c.allow {
                                    Some(allow) => {
                                        for target in &allow.invoke {
                                            config =
                                                config.allow(principal.clone(), target.clone());
                                        }
                                        if allow.invoke.is_empty() {
                                            config
                                                .allow
                                                .get_or_insert_with(Default::default)
                                                .entry(principal)
                                                .or_default();
                                        }
                                    }
                                    None => config = config.allow(principal, "*"),
                                }
                            }
                        }
                        config
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
                let url_error = |e: fnhub_router::mqtt::MqttConfigError| {
                    invalid(m.url.span(), "mqtt.url", e.to_string())
                };
                let mut config =
                    if m.ca_file.is_some() || m.cert_file.is_some() || m.key_file.is_some() {
                        let path = |p: &Option<PathBuf>| p.as_deref().map(&resolve);
                        let tls = fnhub_router::mqtt::MqttTls::load(
                            path(&m.ca_file).as_deref(),
                            path(&m.cert_file).as_deref(),
                            path(&m.key_file).as_deref(),
                        )
                        .map_err(|e| invalid(m.url.span(), "mqtt.tls", e.to_string()))?;
                        fnhub_router::mqtt::MqttConfig::from_url_with_tls(
                            m.url.get_ref(),
                            &m.client_id,
                            tls,
                        )
                        .map_err(url_error)?
                    } else {
                        fnhub_router::mqtt::MqttConfig::from_url(m.url.get_ref(), &m.client_id)
                            .map_err(url_error)?
                    };
                match (&m.username, &m.password) {
                    (Some(user), Some(password)) => {
                        config = config.with_credentials(user.clone(), password.clone());
                    }
                    (None, None) => {}
                    _ => {
                        return Err(invalid(
                            m.url.span(),
                            "mqtt.username",
                            "username and password go together".into(),
                        ));
                    }
                }
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
                if let Some(max) = &m.max_message_bytes {
                    let max = bounded(*max.get_ref(), 1, 256 * 1024 * 1024)
                        .map_err(|msg| invalid(max.span(), "mqtt.max_message_bytes", msg))?;
                    config = config.with_max_message_bytes(max as u32);
                }
                Some(config)
            }
        };
        #[cfg(feature = "mqtt")]
        let device_shadows = match &file.shadows {
            Some(section) => {
                if mqtt.is_none() {
                    return Err(invalid(
                        section.span(),
                        "shadows.mqtt",
                        "answering devices' shadow requests needs an [mqtt] bridge".into(),
                    ));
                }
                for thing in &section.get_ref().mqtt {
                    if thing != "*"
                        && let Err(e) = fnhub_core::ShadowRef::classic(thing)
                    {
                        return Err(invalid(section.span(), "shadows.mqtt", e.to_string()));
                    }
                }
                section.get_ref().mqtt.clone()
            }
            None => Vec::new(),
        };
        let cloud = match &file.cloud {
            None => None,
            Some(section) => {
                if cfg!(not(feature = "nats")) {
                    return Err(invalid(
                        section.nats.span(),
                        "cloud",
                        "a cloud runtime node needs fnhub built with feature `nats`".into(),
                    ));
                }
                let node =
                    section
                        .node(&file.hub.name, &resolve)
                        .map_err(|(span, key, message)| {
                            invalid(span.unwrap_or_else(|| section.nats.span()), &key, message)
                        })?;
                Some(node)
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
            checkpoint_dir,
            workers,
            queue_capacity,
            best_effort,
            reservation,
            python_templates: file.hub.python_templates.unwrap_or(true),
            python_templates_max_mb,
            max_warm_mb,
            functions,
            durables,
            aliases,
            flows,
            #[cfg(feature = "http")]
            http,
            #[cfg(feature = "mqtt")]
            mqtt,
            #[cfg(feature = "mqtt")]
            device_shadows,
            cloud,
        })
    }

    /// The deployment this hub is a node of (`[cloud]`), if it is one.
    pub fn cloud(&self) -> Option<&CloudNode> {
        self.cloud.as_ref()
    }

    /// The reservation policy it chose (`[hub] reservation`; the hybrid histogram unless
    /// it says otherwise).
    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    /// Whether Python functions fork from templates (`[hub] python_templates`, on unless
    /// the file turns it off).
    pub fn python_templates(&self) -> bool {
        self.python_templates
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
    /// functions, sandboxes) before [`build`](EdgeHubBuilder::build). With `[cloud]` (and
    /// the `nats` feature), the running Lambda durable executions the hub takes up from its
    /// `checkpoint_dir` are driven once the cloud runtime node started on the hub has
    /// claimed them, as [`start`](Self::start) does.
    pub fn builder(&self) -> Result<EdgeHubBuilder, ConfigError> {
        let mut b = EdgeHub::builder().name(self.name.clone());
        if cfg!(feature = "nats") && self.cloud.is_some() {
            b = b.hold_lambda_drivers();
        }
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        if let Some(q) = self.queue_capacity {
            b = b.queue_capacity(q);
        }
        if self.best_effort {
            b = b.best_effort_confinement();
        }
        b = b.reservation_policy(self.reservation.policy());
        b = b.python_templates(self.python_templates);
        if let Some(mb) = self.python_templates_max_mb {
            b = b.python_templates_max_mb(mb);
        }
        if let Some(mb) = self.max_warm_mb {
            b = b.max_warm_mb(mb);
        }
        if let Some(dir) = &self.checkpoint_dir {
            let (store, _) =
                fnhub_checkpoint::DirStore::open(dir).map_err(|e| ConfigError::Invalid {
                    path: self.path.clone(),
                    line: 1,
                    key: "hub.checkpoint_dir".into(),
                    message: e.to_string(),
                })?;
            // The hub's state is the hub's alone.
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            b = b
                .checkpoint_store(Arc::new(store))
                .event_log(dir.join("events"))
                .shadow_dir(dir.join("shadows"))
                .import_durable_dir(dir.join("durable-executions"));
        }
        for spec in &self.functions {
            b = b.deploy(spec.clone());
        }
        for (function, config) in &self.durables {
            b = b.lambda_durable(function.clone(), *config);
        }
        for flow in &self.flows {
            b = b.flow(flow.clone());
        }
        for (function, alias) in &self.aliases {
            b = b.alias(function.clone(), alias.clone());
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
        if hub.best_effort_confinement() {
            tracing::warn!(
                "confinement is best-effort: what this machine cannot enforce is left out"
            );
        }
        // One environment per function now: what cannot start is said here and in
        // /healthz, not on its first call.
        hub.check_functions().await;
        #[cfg(feature = "mqtt")]
        if let Some(m) = &self.mqtt {
            crate::bridge::Bridge::new(m.clone())
                .device_shadows(self.device_shadows.clone())
                .attach(&hub)?;
        }
        #[cfg(feature = "nats")]
        let cloud = match &self.cloud {
            Some(node) => {
                let client = node.connect().await?;
                let runtime = crate::cloud::CloudRuntime::start_with(
                    client,
                    node.node.clone(),
                    hub.clone(),
                    node.config.clone(),
                )
                .await?;
                tracing::info!(
                    node = %node.node,
                    deployment = %node.config.deployment,
                    servers = %node.servers.join(","),
                    "joined the cloud runtime deployment"
                );
                Some(runtime)
            }
            None => None,
        };
        #[cfg(feature = "http")]
        let http = match &self.http {
            Some((addr, config)) => {
                #[allow(unused_mut)]
                let mut ops = crate::http::Ops::default();
                if let Some(render) = metrics {
                    ops = ops.with_metrics(render);
                }
                #[cfg(feature = "nats")]
                if let Some(runtime) = &cloud {
                    ops = ops.with_dispatch(runtime.client(), runtime.connection_probe());
                }
                Some(crate::http::serve_with_ops(&hub, *addr, config.clone(), ops).await?)
            }
            None => None,
        };
        Ok(Running {
            hub,
            #[cfg(feature = "http")]
            http,
            #[cfg(feature = "nats")]
            cloud,
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
    /// Its cloud runtime node, when the file has `[cloud]`.
    #[cfg(feature = "nats")]
    pub cloud: Option<crate::cloud::CloudRuntime>,
}

impl Running {
    /// Stops taking requests, drains the hub and stops it.
    pub async fn shutdown(self) {
        #[cfg(feature = "http")]
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        // Takes no more work; what it runs finishes as the hub drains.
        #[cfg(feature = "nats")]
        drop(self.cloud);
        self.hub.shutdown().await;
    }
}
