//! Where functions may run: the host's CPU features and labels.

use std::collections::{BTreeMap, BTreeSet};

use fnhub_core::Placement;

/// What a scheduler's host offers to placement requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostInfo {
    /// CPU features, lower case with `_` for `.` (`avx2`, `sse4_2`, `neon`).
    pub cpu_features: BTreeSet<String>,
    /// Labels of this worker class (`gpu=none`, `zone=edge-3`).
    pub labels: BTreeMap<String, String>,
}

/// Spelling used for comparison: lower case, `.` and `-` as `_`.
fn normalize(feature: &str) -> String {
    feature.trim().to_ascii_lowercase().replace(['.', '-'], "_")
}

impl HostInfo {
    /// The machine this runs on: CPU features from `/proc/cpuinfo` on Linux (its `flags`
    /// or `Features` line), and no labels.
    pub fn detect() -> HostInfo {
        let mut host = HostInfo::default();
        if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
            host.cpu_features = parse_cpuinfo(&text);
        }
        host
    }

    /// Adds CPU features (spelled as in `/proc/cpuinfo`).
    pub fn with_cpu_features<I, S>(mut self, features: I) -> HostInfo
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.cpu_features
            .extend(features.into_iter().map(|f| normalize(f.as_ref())));
        self
    }

    /// Sets a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> HostInfo {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// What `placement` requires that this host lacks: CPU features, then labels as
    /// `key=value`. Empty when the function may run here.
    pub fn missing(&self, placement: &Placement) -> Vec<String> {
        let mut missing: Vec<String> = placement
            .cpu_features
            .iter()
            .filter(|f| !self.cpu_features.contains(&normalize(f)))
            .cloned()
            .collect();
        missing.extend(
            placement
                .labels
                .iter()
                .filter(|(k, v)| self.labels.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}={v}")),
        );
        missing
    }
}

fn parse_cpuinfo(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(k.trim(), "flags" | "Features"))
        .flat_map(|(_, v)| v.split_whitespace().map(normalize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_flags() {
        let text = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2\nprocessor\t: 1\nflags\t\t: fpu sse4_2 avx2\n";
        let f = parse_cpuinfo(text);
        assert_eq!(f.into_iter().collect::<Vec<_>>(), ["avx2", "fpu", "sse4_2"]);
        let arm = parse_cpuinfo("Features\t: fp asimd neon\n");
        assert!(arm.contains("neon"));
    }

    #[test]
    fn reports_what_is_missing() {
        let host = HostInfo::default()
            .with_cpu_features(["avx2", "SSE4.2"])
            .with_label("zone", "edge");
        let mut p = Placement::default();
        p.cpu_features = vec!["sse4.2".into(), "avx2".into()];
        p.labels.insert("zone".into(), "edge".into());
        assert!(host.missing(&p).is_empty());
        p.cpu_features.push("avx512f".into());
        p.labels.insert("gpu".into(), "a100".into());
        assert_eq!(host.missing(&p), ["avx512f", "gpu=a100"]);
    }
}
