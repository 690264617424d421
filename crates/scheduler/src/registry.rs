//! Deployed functions: versions and aliases, and how references resolve to them.

use std::collections::BTreeMap;
use std::sync::Arc;

use fnhub_core::{Alias, AliasName, FunctionName, FunctionRef, FunctionSpec, Qualifier, Version};

use crate::deployed::Deployed;

/// A deployment was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// Versions are immutable: this version is already deployed with a different spec.
    #[error("{name} version {version} is already deployed with a different spec")]
    VersionConflict {
        /// The function.
        name: FunctionName,
        /// The version.
        version: Version,
    },
    /// No sandbox of this scheduler runs the spec's runtime kind.
    #[error("no sandbox runs {runtime} functions (function {name})")]
    NoSandbox {
        /// The function.
        name: FunctionName,
        /// The runtime kind.
        runtime: &'static str,
    },
    /// The alias points at a version that is not deployed.
    #[error("alias {alias} of {name} points at version {version}, which is not deployed")]
    UnknownVersion {
        /// The function.
        name: FunctionName,
        /// The alias.
        alias: AliasName,
        /// The missing version.
        version: Version,
    },
    /// Reserving these workers would leave none for other functions.
    #[error(
        "{name} reserves workers so that {total} of {workers} would be reserved; at least one must stay unreserved"
    )]
    ReservationExceeded {
        /// The function.
        name: FunctionName,
        /// Workers that would be reserved in all.
        total: u32,
        /// The scheduler's workers.
        workers: usize,
    },
    /// The function is not deployed.
    #[error("function {0} is not deployed")]
    UnknownFunction(FunctionName),
    /// The function's placement asks for what this scheduler's host does not have.
    #[error("{name} cannot be placed here: the host lacks {}", .missing.join(", "))]
    Placement {
        /// The function.
        name: FunctionName,
        /// CPU features and `key=value` labels the host lacks.
        missing: Vec<String>,
    },
    /// The spec is not valid (zero concurrency, zero timeout...).
    #[error("invalid spec for {name}: {reason}")]
    InvalidSpec {
        /// The function.
        name: FunctionName,
        /// What is wrong.
        reason: &'static str,
    },
}

struct Entry {
    slot: usize,
    versions: BTreeMap<Version, Arc<Deployed>>,
    aliases: crate::FastMap<AliasName, Alias>,
    /// Versions deployed but not yet the latest: they run only when named exactly, until
    /// [`Registry::promote`] (a new version warming before it takes traffic).
    staged: std::collections::BTreeSet<Version>,
}

impl Entry {
    /// The newest version that is not staged.
    fn latest(&self) -> Option<Version> {
        self.versions
            .keys()
            .rev()
            .find(|v| !self.staged.contains(v))
            .copied()
    }
}

/// The checks a spec must pass on its own (nonzero concurrency and timeout, coherent
/// limits).
fn validate(spec: &FunctionSpec) -> Result<(), DeployError> {
    let reason = if spec.resources.concurrency == 0 {
        Some("resources.concurrency must be at least 1")
    } else if spec.resources.timeout.is_zero() {
        Some("resources.timeout must be above zero")
    } else if spec.resources.max_concurrency == Some(0) {
        Some("resources.max_concurrency must be at least 1 when set")
    } else if let (Some(r), Some(m)) = (
        spec.resources.reserved_concurrency,
        spec.resources.max_concurrency,
    ) && r > m
    {
        Some("resources.reserved_concurrency must not exceed max_concurrency")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(DeployError::InvalidSpec {
            name: spec.name.clone(),
            reason,
        });
    }
    Ok(())
}

/// The functions a scheduler can run.
#[derive(Default)]
pub(crate) struct Registry {
    functions: crate::FastMap<FunctionName, Entry>,
}

impl Registry {
    /// The aliases of `function`, by name.
    pub(crate) fn aliases(&self, function: &FunctionName) -> Vec<Alias> {
        let mut out: Vec<Alias> = self
            .functions
            .get(function)
            .map(|e| e.aliases.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name().as_str().cmp(b.name().as_str()));
        out
    }

    pub(crate) fn deploy(&mut self, spec: FunctionSpec) -> Result<Arc<Deployed>, DeployError> {
        validate(&spec)?;
        let slot = self.functions.len();
        let entry = self
            .functions
            .entry(spec.name.clone())
            .or_insert_with(|| Entry {
                slot,
                versions: BTreeMap::new(),
                aliases: crate::FastMap::default(),
                staged: Default::default(),
            });
        match entry.versions.get(&spec.version) {
            Some(existing) if *existing.spec == spec => Ok(existing.clone()),
            Some(_) => Err(DeployError::VersionConflict {
                name: spec.name,
                version: spec.version,
            }),
            None => {
                let deployed = Arc::new(Deployed::new(spec, entry.slot));
                entry.versions.insert(deployed.version, deployed.clone());
                Ok(deployed)
            }
        }
    }

    /// Marks `version` of `name` staged: deployed, not the latest (see [`Entry::staged`]).
    pub(crate) fn stage(&mut self, name: &FunctionName, version: Version) {
        if let Some(entry) = self.functions.get_mut(name) {
            entry.staged.insert(version);
        }
    }

    /// Makes a staged version of `name` eligible as the latest.
    pub(crate) fn promote(&mut self, name: &FunctionName, version: Version) {
        if let Some(entry) = self.functions.get_mut(name) {
            entry.staged.remove(&version);
        }
    }

    /// Whether `name` has a version unqualified calls resolve to.
    pub(crate) fn has_latest(&self, name: &FunctionName) -> bool {
        self.functions.get(name).and_then(Entry::latest).is_some()
    }

    /// Forgets every version and alias of `name`; its slot stays its own. The slot, when
    /// it had versions.
    pub(crate) fn remove_all(&mut self, name: &FunctionName) -> Option<usize> {
        let entry = self.functions.get_mut(name)?;
        if entry.versions.is_empty() {
            return None;
        }
        entry.versions.clear();
        entry.aliases.clear();
        entry.staged.clear();
        Some(entry.slot)
    }

    /// Whether `spec` could be deployed: valid, and not a different spec under a version
    /// already deployed (as [`deploy`](Self::deploy) checks).
    pub(crate) fn check(&self, spec: &FunctionSpec) -> Result<(), DeployError> {
        validate(spec)?;
        if let Some(existing) = self
            .functions
            .get(&spec.name)
            .and_then(|e| e.versions.get(&spec.version))
            && *existing.spec != *spec
        {
            return Err(DeployError::VersionConflict {
                name: spec.name.clone(),
                version: spec.version,
            });
        }
        Ok(())
    }

    /// Removes a version just deployed (a later check refused it).
    pub(crate) fn undeploy(&mut self, deployed: &Deployed) {
        if let Some(entry) = self.functions.get_mut(&deployed.name) {
            entry.versions.remove(&deployed.version);
            entry.staged.remove(&deployed.version);
        }
    }

    pub(crate) fn set_alias(
        &mut self,
        name: &FunctionName,
        alias: Alias,
    ) -> Result<(), DeployError> {
        let entry = self
            .functions
            .get_mut(name)
            .ok_or_else(|| DeployError::UnknownFunction(name.clone()))?;
        let targets = std::iter::once(alias.primary()).chain(alias.secondary().map(|(v, _)| v));
        for version in targets {
            if !entry.versions.contains_key(&version) {
                return Err(DeployError::UnknownVersion {
                    name: name.clone(),
                    alias: alias.name().clone(),
                    version,
                });
            }
        }
        entry.aliases.insert(alias.name().clone(), alias);
        Ok(())
    }

    pub(crate) fn resolve(&self, function: &FunctionRef, roll: u64) -> Option<Arc<Deployed>> {
        let entry = self.functions.get(&function.name)?;
        let version = match &function.qualifier {
            Qualifier::Latest => entry.latest()?,
            Qualifier::Version(v) => *v,
            Qualifier::Alias(a) => entry.aliases.get(a)?.pick(roll),
            _ => return None,
        };
        entry.versions.get(&version).cloned()
    }

    /// The slot of `name` and the versions something resolves to by default: the latest,
    /// every alias target, and the staged ones (warming). Other versions run only when
    /// named exactly.
    pub(crate) fn live_versions(&self, name: &FunctionName) -> Option<(usize, Vec<Version>)> {
        let entry = self.functions.get(name)?;
        let mut live: Vec<Version> = entry.latest().into_iter().collect();
        live.extend(entry.staged.iter().copied());
        for alias in entry.aliases.values() {
            live.push(alias.primary());
            live.extend(alias.secondary().map(|(v, _)| v));
        }
        live.sort();
        live.dedup();
        Some((entry.slot, live))
    }

    pub(crate) fn specs(&self) -> impl Iterator<Item = &Arc<FunctionSpec>> {
        self.functions
            .values()
            .flat_map(|e| e.versions.values().map(|d| &d.spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, version: u32) -> FunctionSpec {
        FunctionSpec::in_process(FunctionName::new(name).unwrap())
            .with_version(Version::new(version).unwrap())
    }

    #[test]
    fn resolves_latest_version_and_alias() {
        let mut r = Registry::default();
        r.deploy(spec("f", 1)).unwrap();
        r.deploy(spec("f", 2)).unwrap();
        let name = FunctionName::new("f").unwrap();
        let latest = r.resolve(&FunctionRef::latest(name.clone()), 0).unwrap();
        assert_eq!(latest.version.get(), 2);
        let v1 = r.resolve(&"f:1".parse().unwrap(), 0).unwrap();
        assert_eq!(v1.version.get(), 1);
        assert!(r.resolve(&"f:3".parse().unwrap(), 0).is_none());
        assert!(r.resolve(&"g".parse().unwrap(), 0).is_none());

        let alias = Alias::new(AliasName::new("prod").unwrap(), Version::FIRST);
        r.set_alias(&name, alias).unwrap();
        let prod = r.resolve(&"f:prod".parse().unwrap(), 0).unwrap();
        assert_eq!(prod.version.get(), 1);
        assert!(r.resolve(&"f:beta".parse().unwrap(), 0).is_none());
    }

    #[test]
    fn versions_are_immutable() {
        let mut r = Registry::default();
        r.deploy(spec("f", 1)).unwrap();
        r.deploy(spec("f", 1)).unwrap();
        let changed = spec("f", 1).with_memory_mb(256);
        assert!(matches!(
            r.deploy(changed),
            Err(DeployError::VersionConflict { .. })
        ));
    }

    #[test]
    fn alias_to_missing_version_is_refused() {
        let mut r = Registry::default();
        r.deploy(spec("f", 1)).unwrap();
        let name = FunctionName::new("f").unwrap();
        let alias = Alias::new(AliasName::new("prod").unwrap(), Version::new(9).unwrap());
        assert!(matches!(
            r.set_alias(&name, alias),
            Err(DeployError::UnknownVersion { .. })
        ));
        let missing = FunctionName::new("g").unwrap();
        let alias = Alias::new(AliasName::new("prod").unwrap(), Version::FIRST);
        assert!(matches!(
            r.set_alias(&missing, alias),
            Err(DeployError::UnknownFunction(_))
        ));
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut r = Registry::default();
        let zero = spec("f", 1).with_concurrency(0);
        assert!(matches!(
            r.deploy(zero),
            Err(DeployError::InvalidSpec { .. })
        ));
        let zero = spec("f", 1).with_timeout(std::time::Duration::ZERO);
        assert!(matches!(
            r.deploy(zero),
            Err(DeployError::InvalidSpec { .. })
        ));
    }
}
