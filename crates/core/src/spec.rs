//! What a deployment declares about a function.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::name::{FunctionName, Version};

/// Where and how a function's code runs; each variant carries its own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Runtime {
    /// Native Rust code registered with the in-process sandbox under `handler`.
    InProcess {
        /// The name the handler was registered under.
        handler: String,
    },
    /// A process speaking the AWS Lambda Runtime API.
    Process {
        /// Program and arguments.
        command: Vec<String>,
        /// Working directory; `None` keeps the hub's.
        workdir: Option<PathBuf>,
        /// The `_HANDLER` passed to the runtime client.
        handler: Option<String>,
    },
    /// A WebAssembly module.
    Wasm {
        /// Path of the `.wasm` or `.wat` module.
        module: PathBuf,
        /// The exported function to call.
        export: String,
    },
}

impl Runtime {
    /// A short name of the kind: `in_process`, `process` or `wasm`.
    pub fn kind(&self) -> &'static str {
        match self {
            Runtime::InProcess { .. } => "in_process",
            Runtime::Process { .. } => "process",
            Runtime::Wasm { .. } => "wasm",
        }
    }
}

/// Resources granted to each environment of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Resources {
    /// Memory cap in MiB. Default 128, Lambda's smallest size.
    pub memory_mb: u32,
    /// Longest one invocation may run before it is stopped. Default 3 s, Lambda's default.
    pub timeout: Duration,
    /// Invocations one environment serves at once. Default 1.
    pub concurrency: u32,
    /// Most invocations of this function running at once across all environments;
    /// `None` leaves it to the pool's size.
    pub max_concurrency: Option<u32>,
    /// Workers set aside for this function: it can always run this many at once, and other
    /// functions cannot use them. `None` reserves nothing.
    pub reserved_concurrency: Option<u32>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            concurrency: 1,
            max_concurrency: None,
            reserved_concurrency: None,
        }
    }
}

/// Network a function may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum NetworkAccess {
    /// No network at all.
    #[default]
    None,
    /// Loopback only (hub-local services).
    Loopback,
    /// Any address.
    Any,
}

/// One directory a function may see.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PathGrant {
    /// The directory.
    pub path: PathBuf,
    /// Whether it may write there.
    pub writable: bool,
}

/// Files a function may see.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FilesystemAccess {
    /// Only these directories (empty: none).
    Only(Vec<PathGrant>),
    /// Whatever the hub process can see.
    Unrestricted,
}

impl Default for FilesystemAccess {
    fn default() -> Self {
        FilesystemAccess::Only(Vec::new())
    }
}

/// Environment variables a function sees.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EnvAccess {
    /// Only these variables (empty: none).
    Only(BTreeMap<String, String>),
    /// The hub's environment, plus these.
    Inherit(BTreeMap<String, String>),
}

impl Default for EnvAccess {
    fn default() -> Self {
        EnvAccess::Only(BTreeMap::new())
    }
}

/// The operating-system services a function may use. The default grants nothing: no
/// network, no files, no inherited environment.
///
/// A sandbox enforces the profile it is given or refuses to start the function, naming
/// what it cannot enforce (see [`Restriction`](crate::Restriction)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct CapabilityProfile {
    /// Network access.
    pub network: NetworkAccess,
    /// Filesystem access.
    pub filesystem: FilesystemAccess,
    /// Environment variables.
    pub env: EnvAccess,
    /// The hub's services it may use (invoke, publish, shadows).
    pub services: ServiceAccess,
}

/// Which of the hub's services a function may use: the functions it may invoke, the topics
/// it may publish on (MQTT filters), the things whose shadows it may read and change. The
/// default allows nothing; `"*"` allows any. An invoke entry `name` allows every version
/// and alias of it, `name:qualifier` that one only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ServiceAccess {
    /// Functions it may invoke.
    pub invoke: Vec<String>,
    /// MQTT filters of the topics it may publish on.
    pub publish: Vec<String>,
    /// Things whose shadows it may read, update and delete.
    pub shadows: Vec<String>,
}

impl ServiceAccess {
    /// Allows every service.
    pub fn all() -> ServiceAccess {
        ServiceAccess {
            invoke: vec!["*".into()],
            publish: vec!["#".into()],
            shadows: vec!["*".into()],
        }
    }

    /// Whether it may invoke `function` (`name` or `name:qualifier`).
    pub fn may_invoke(&self, function: &str) -> bool {
        let name = function.split(':').next().unwrap_or(function);
        self.invoke
            .iter()
            .any(|a| a == "*" || a == name || a == function)
    }

    /// Whether it may publish on `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish
            .iter()
            .any(|f| f == "*" || filter_matches(f, topic))
    }

    /// Whether it may read and change the shadows of `thing`.
    pub fn may_use_shadow(&self, thing: &str) -> bool {
        self.shadows.iter().any(|a| a == "*" || a == thing)
    }
}

/// MQTT filter matching: `+` one level, `#` this level and all below; a topic starting
/// with `$` is not matched by a wildcard in the first level.
fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !(first && topic.starts_with('$')),
            (Some("+"), Some(level)) => {
                if first && level.starts_with('$') {
                    return false;
                }
            }
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

impl CapabilityProfile {
    /// Grants everything the hub process has: for trusted code, such as native handlers
    /// compiled into the hub, which no sandbox can confine anyway.
    pub fn unrestricted() -> CapabilityProfile {
        CapabilityProfile {
            network: NetworkAccess::Any,
            filesystem: FilesystemAccess::Unrestricted,
            env: EnvAccess::Inherit(BTreeMap::new()),
            services: ServiceAccess::all(),
        }
    }

    /// The restrictions a sandbox must enforce to honour this profile.
    pub fn restrictions(&self) -> Vec<crate::Restriction> {
        use crate::Restriction;
        let mut out = Vec::new();
        if self.network != NetworkAccess::Any {
            out.push(Restriction::Network);
        }
        if self.filesystem != FilesystemAccess::Unrestricted {
            out.push(Restriction::Filesystem);
        }
        if matches!(self.env, EnvAccess::Only(_)) {
            out.push(Restriction::Environment);
        }
        out
    }
}

/// A process started beside each environment of a function, for its whole life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SidecarSpec {
    /// A name for logs and metrics.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
}

impl SidecarSpec {
    /// A sidecar running `command`.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> SidecarSpec {
        SidecarSpec {
            name: name.into(),
            command,
        }
    }
}

/// Where a function may run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Placement {
    /// CPU features the host must have (`avx2`, `neon`, ...).
    pub cpu_features: Vec<String>,
    /// Labels the worker class must carry.
    pub labels: BTreeMap<String, String>,
}

/// What a deployment declares about one version of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct FunctionSpec {
    /// The function.
    pub name: FunctionName,
    /// This version.
    pub version: Version,
    /// How its code runs.
    pub runtime: Runtime,
    /// Memory, timeout, concurrency.
    pub resources: Resources,
    /// What it may touch. Default: nothing.
    pub capabilities: CapabilityProfile,
    /// Processes started beside each environment.
    pub sidecars: Vec<SidecarSpec>,
    /// Host requirements.
    pub placement: Placement,
    /// Topic its successful outputs are published on, if any. `{N}` stands for level `N`
    /// (from 0) of the topic of the event that triggered the invocation, so
    /// `smoothed/{1}` turns `sensors/dev-7/temperature` into `smoothed/dev-7`. Empty outputs
    /// are not published.
    pub output_topic: Option<String>,
}

impl FunctionSpec {
    /// Version 1 of `name`, running on `runtime`, with default resources and an empty
    /// capability profile.
    pub fn new(name: FunctionName, runtime: Runtime) -> FunctionSpec {
        FunctionSpec {
            name,
            version: Version::FIRST,
            runtime,
            resources: Resources::default(),
            capabilities: CapabilityProfile::default(),
            sidecars: Vec::new(),
            placement: Placement::default(),
            output_topic: None,
        }
    }

    /// A native handler registered in-process under the function's own name, with an
    /// [unrestricted](CapabilityProfile::unrestricted) profile: code compiled into the hub
    /// is trusted and cannot be confined.
    pub fn in_process(name: FunctionName) -> FunctionSpec {
        let handler = name.as_str().to_owned();
        let mut spec = FunctionSpec::new(name, Runtime::InProcess { handler });
        spec.capabilities = CapabilityProfile::unrestricted();
        spec
    }

    /// Sets the version.
    pub fn with_version(mut self, version: Version) -> FunctionSpec {
        self.version = version;
        self
    }

    /// Sets the timeout of one invocation.
    pub fn with_timeout(mut self, timeout: Duration) -> FunctionSpec {
        self.resources.timeout = timeout;
        self
    }

    /// Sets the memory cap in MiB.
    pub fn with_memory_mb(mut self, memory_mb: u32) -> FunctionSpec {
        self.resources.memory_mb = memory_mb;
        self
    }

    /// Sets how many invocations one environment serves at once.
    pub fn with_concurrency(mut self, concurrency: u32) -> FunctionSpec {
        self.resources.concurrency = concurrency;
        self
    }

    /// Sets the capability profile.
    pub fn with_capabilities(mut self, capabilities: CapabilityProfile) -> FunctionSpec {
        self.capabilities = capabilities;
        self
    }

    /// Publishes successful outputs on `topic`.
    pub fn with_output_topic(mut self, topic: impl Into<String>) -> FunctionSpec {
        self.output_topic = Some(topic.into());
        self
    }

    /// Adds a sidecar.
    pub fn with_sidecar(mut self, sidecar: SidecarSpec) -> FunctionSpec {
        self.sidecars.push(sidecar);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Restriction;

    #[test]
    fn default_profile_restricts_everything() {
        let p = CapabilityProfile::default();
        assert_eq!(
            p.restrictions(),
            vec![
                Restriction::Network,
                Restriction::Filesystem,
                Restriction::Environment
            ]
        );
        assert!(CapabilityProfile::unrestricted().restrictions().is_empty());
    }

    #[test]
    fn in_process_spec_is_trusted() {
        let spec = FunctionSpec::in_process(FunctionName::new("f").unwrap());
        assert_eq!(spec.runtime.kind(), "in_process");
        assert!(spec.capabilities.restrictions().is_empty());
        assert_eq!(spec.resources.timeout, Duration::from_secs(3));
    }

    #[test]
    fn service_access_is_closed_by_default_and_matches_filters() {
        let none = ServiceAccess::default();
        assert!(!none.may_invoke("f") && !none.may_publish("a") && !none.may_use_shadow("t"));
        let some = ServiceAccess {
            invoke: vec!["double".into(), "half:2".into()],
            publish: vec!["alerts/#".into(), "s/+/t".into()],
            shadows: vec!["lamp-1".into()],
        };
        assert!(some.may_invoke("double") && some.may_invoke("double:3"));
        assert!(some.may_invoke("half:2") && !some.may_invoke("half") && !some.may_invoke("other"));
        assert!(some.may_publish("alerts") && some.may_publish("alerts/x/y"));
        assert!(
            some.may_publish("s/1/t") && !some.may_publish("s/1/u") && !some.may_publish("s/t")
        );
        assert!(!some.may_publish("other/x"));
        assert!(some.may_use_shadow("lamp-1") && !some.may_use_shadow("lamp-2"));
        let all = ServiceAccess::all();
        assert!(all.may_publish("a/b") && !all.may_publish("$aws/things/x"));
    }
}
