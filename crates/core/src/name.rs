//! Function names, versions, aliases and references.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;

/// A name, version, alias or function reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The text was empty.
    #[error("{what} is empty")]
    Empty {
        /// What was being parsed ("function name", "alias", ...).
        what: &'static str,
    },
    /// The text was longer than allowed.
    #[error("{what} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// What was being parsed.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text held a character outside `[A-Za-z0-9_-]`.
    #[error("{what} {text:?} holds {found:?}; only letters, digits, '-' and '_' are allowed")]
    BadCharacter {
        /// What was being parsed.
        what: &'static str,
        /// The text (cut to 64 characters).
        text: String,
        /// The first character that is not allowed.
        found: char,
    },
    /// A version was not a positive decimal number.
    #[error("version {text:?} is not a positive integer")]
    BadVersion {
        /// The text (cut to 64 characters).
        text: String,
    },
    /// An alias name was all digits, which would read as a version.
    #[error("alias {text:?} is all digits and would read as a version")]
    NumericAlias {
        /// The text.
        text: String,
    },
    /// Alias weights did not describe a valid split.
    #[error("alias weight {weight} is out of range: it is in basis points, 1..=9999")]
    BadWeight {
        /// The weight given, in basis points.
        weight: u16,
    },
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

fn validate_identifier(what: &'static str, text: &str, max: usize) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty { what });
    }
    if text.len() > max {
        return Err(NameError::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    if let Some(found) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadCharacter {
            what,
            text: clip(text),
            found,
        });
    }
    Ok(())
}

macro_rules! string_name {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
        pub struct $name(Arc<str>);

        impl $name {
            /// The longest name allowed, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `text` as a name.
            pub fn new(text: &str) -> Result<Self, NameError> {
                validate_identifier($what, text, $max)?;
                let extra: fn(&str) -> Result<(), NameError> = $extra;
                extra(text)?;
                Ok(Self(Arc::from(text)))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::new(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0.to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(text: String) -> Result<Self, NameError> {
                Self::new(&text)
            }
        }
    };
}

string_name!(
    /// The name of a deployed function: 1 to 64 characters from `[A-Za-z0-9_-]`, the rule of
    /// AWS Lambda function names. Cheap to clone.
    FunctionName,
    "function name",
    64,
    |_| Ok(())
);

string_name!(
    /// The name of an alias: 1 to 128 characters from `[A-Za-z0-9_-]`, not all digits (that
    /// would read as a version). Cheap to clone.
    AliasName,
    "alias",
    128,
    |text| {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            Err(NameError::NumericAlias {
                text: text.to_owned(),
            })
        } else {
            Ok(())
        }
    }
);

/// An immutable, numbered version of a function, starting at 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Version(NonZeroU32);

impl Version {
    /// Version 1.
    pub const FIRST: Version = Version(NonZeroU32::MIN);

    /// The version numbered `n`, or `None` for 0.
    pub const fn new(n: u32) -> Option<Version> {
        match NonZeroU32::new(n) {
            Some(n) => Some(Version(n)),
            None => None,
        }
    }

    /// The version number.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The version after this one, or `None` at `u32::MAX`.
    pub fn next(self) -> Option<Version> {
        self.0.checked_add(1).map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl FromStr for Version {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Self, NameError> {
        let bad = || NameError::BadVersion { text: clip(text) };
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.parse::<NonZeroU32>().map(Version).map_err(|_| bad())
    }
}

/// An alias: a named pointer to one version, or to two with a weighted split (a canary).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Alias {
    name: AliasName,
    primary: Version,
    secondary: Option<(Version, u16)>,
}

impl Alias {
    /// Basis points in a whole (100%).
    pub const WHOLE: u16 = 10_000;

    /// An alias that sends everything to `version`.
    pub fn new(name: AliasName, version: Version) -> Alias {
        Alias {
            name,
            primary: version,
            secondary: None,
        }
    }

    /// Sends `weight` basis points (1..=9999, out of 10 000) of the traffic to `version`
    /// and the rest to the primary version.
    pub fn with_split(mut self, version: Version, weight: u16) -> Result<Alias, NameError> {
        if weight == 0 || weight >= Self::WHOLE {
            return Err(NameError::BadWeight { weight });
        }
        self.secondary = Some((version, weight));
        Ok(self)
    }

    /// The alias name.
    pub fn name(&self) -> &AliasName {
        &self.name
    }

    /// The version that gets the traffic not split off.
    pub fn primary(&self) -> Version {
        self.primary
    }

    /// The second version and its share in basis points, if the alias is split.
    pub fn secondary(&self) -> Option<(Version, u16)> {
        self.secondary
    }

    /// Picks the version for one invocation given a uniformly random `roll`.
    ///
    /// Deterministic in `roll`, so callers choose their randomness (or a hash of an
    /// affinity key, so one key keeps to one version).
    pub fn pick(&self, roll: u64) -> Version {
        match self.secondary {
            Some((version, weight)) if roll % u64::from(Self::WHOLE) < u64::from(weight) => version,
            _ => self.primary,
        }
    }
}

/// Which version of a function a reference means.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Qualifier {
    /// The newest deployed version (`$LATEST`, or no qualifier).
    #[default]
    Latest,
    /// One exact version.
    Version(Version),
    /// Whatever an alias points at when the invocation is admitted.
    Alias(AliasName),
}

/// A function name plus the version or alias meant: `name`, `name:7`, `name:prod` or
/// `name:$LATEST`, the forms of the Lambda `Qualifier`.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
pub struct FunctionRef {
    /// The function.
    pub name: FunctionName,
    /// The version or alias.
    pub qualifier: Qualifier,
}

impl FunctionRef {
    /// The newest version of `name`.
    pub fn latest(name: FunctionName) -> FunctionRef {
        FunctionRef {
            name,
            qualifier: Qualifier::Latest,
        }
    }

    /// Exactly `version` of `name`.
    pub fn version(name: FunctionName, version: Version) -> FunctionRef {
        FunctionRef {
            name,
            qualifier: Qualifier::Version(version),
        }
    }

    /// Parses a qualifier as Lambda does: `$LATEST`, digits for a version, else an alias.
    pub fn parse_qualifier(text: &str) -> Result<Qualifier, NameError> {
        if text == "$LATEST" {
            Ok(Qualifier::Latest)
        } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().map(Qualifier::Version)
        } else {
            AliasName::new(text).map(Qualifier::Alias)
        }
    }
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.qualifier {
            Qualifier::Latest => write!(f, "{}", self.name),
            Qualifier::Version(v) => write!(f, "{}:{v}", self.name),
            Qualifier::Alias(a) => write!(f, "{}:{a}", self.name),
        }
    }
}

impl fmt::Debug for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FunctionRef({self})")
    }
}

impl FromStr for FunctionRef {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Self, NameError> {
        let (name, qualifier) = match text.split_once(':') {
            Some((name, qualifier)) => (name, FunctionRef::parse_qualifier(qualifier)?),
            None => (text, Qualifier::Latest),
        };
        Ok(FunctionRef {
            name: FunctionName::new(name)?,
            qualifier,
        })
    }
}

impl From<FunctionName> for FunctionRef {
    fn from(name: FunctionName) -> Self {
        FunctionRef::latest(name)
    }
}

impl From<FunctionRef> for String {
    fn from(r: FunctionRef) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for FunctionRef {
    type Error = NameError;
    fn try_from(text: String) -> Result<Self, NameError> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        assert!(FunctionName::new("temp-smoother_2").is_ok());
        assert!(matches!(
            FunctionName::new(""),
            Err(NameError::Empty { .. })
        ));
        assert!(matches!(
            FunctionName::new(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            FunctionName::new("a/b"),
            Err(NameError::BadCharacter { found: '/', .. })
        ));
        assert!(FunctionName::new("a\0").is_err());
    }

    #[test]
    fn references_round_trip() {
        for text in ["f", "f:3", "f:prod", "f-1:canary_2"] {
            let r: FunctionRef = text.parse().unwrap();
            assert_eq!(r.to_string(), text);
        }
        let latest: FunctionRef = "f:$LATEST".parse().unwrap();
        assert_eq!(latest.qualifier, Qualifier::Latest);
        assert_eq!(latest.to_string(), "f");
        let v: FunctionRef = "f:12".parse().unwrap();
        assert_eq!(v.qualifier, Qualifier::Version(Version::new(12).unwrap()));
    }

    #[test]
    fn bad_references() {
        for text in ["", ":3", "f:", "f:0", "f:99999999999", "f:a:b", "f:pr od"] {
            assert!(text.parse::<FunctionRef>().is_err(), "{text:?} accepted");
        }
        assert!(matches!(
            AliasName::new("123"),
            Err(NameError::NumericAlias { .. })
        ));
    }

    #[test]
    fn alias_split_follows_weight() {
        let v1 = Version::FIRST;
        let v2 = v1.next().unwrap();
        let alias = Alias::new(AliasName::new("prod").unwrap(), v1)
            .with_split(v2, 2_500)
            .unwrap();
        let to_v2 = (0..10_000u64).filter(|&r| alias.pick(r) == v2).count();
        assert_eq!(to_v2, 2_500);
        assert!(alias.clone().with_split(v2, 0).is_err());
        assert!(alias.with_split(v2, 10_000).is_err());
    }
}
