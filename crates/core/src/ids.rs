//! 128-bit identifiers shown in the UUID text form (`8-4-4-4-12` lowercase hex).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The text given to [`InvocationId::from_str`] or [`ExecutionId::from_str`] is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {text:?}: expected 32 hex digits, optionally in 8-4-4-4-12 groups")]
pub struct IdError {
    text: String,
}

/// A seed no other thread or process shares: a freshly keyed SipHash (std's
/// `RandomState`) of a process-wide counter.
fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

thread_local! {
    static WYRAND: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

/// A pseudo-random `u64` for ids; not for cryptography.
///
/// wyrand on a per-thread state seeded by [`seed`]: a few nanoseconds per call, and
/// unpredictable across processes.
pub(crate) fn random_u64() -> u64 {
    WYRAND.with(|state| {
        let x = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

pub(crate) fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

fn format_uuid(value: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let hex = format!("{value:032x}");
    write!(
        f,
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn parse_uuid(text: &str) -> Result<u128, IdError> {
    let err = || IdError {
        text: text.chars().take(64).collect(),
    };
    let grouped = text.len() == 36;
    if grouped {
        let dashes_ok = text
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
        if !dashes_ok {
            return Err(err());
        }
    } else if text.len() != 32 {
        return Err(err());
    }
    let mut value: u128 = 0;
    for c in text.chars().filter(|&c| c != '-') {
        let digit = c.to_digit(16).ok_or_else(err)?;
        value = (value << 4) | u128::from(digit);
    }
    Ok(value)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
        pub struct $name(u128);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                Self(random_u128())
            }

            /// The id with this numeric value.
            pub const fn from_u128(value: u128) -> Self {
                Self(value)
            }

            /// The numeric value of the id.
            pub const fn as_u128(self) -> u128 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                format_uuid(self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                format_uuid(self.0, f)?;
                f.write_str(")")
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                parse_uuid(text).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                text.parse()
            }
        }
    };
}

id_type!(
    /// Identifies one invocation: one request to run a function once. It is the request id
    /// that runtime clients see.
    InvocationId
);

id_type!(
    /// Identifies one durable execution, which may span several suspensions and resumptions
    /// (and several hubs). The first run of an invocation uses the invocation's id.
    ExecutionId
);

impl From<InvocationId> for ExecutionId {
    fn from(id: InvocationId) -> Self {
        ExecutionId(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = InvocationId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(text.parse::<InvocationId>().unwrap(), id);
        assert_eq!(
            "0123456789abcdef0011223344556677"
                .parse::<InvocationId>()
                .unwrap(),
            id
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "xyz",
            "01234567-89ab-cdef-0011-22334455667g",
            "0123456789ab-cdef-0011-223344556677-",
            "01234567-89ab-cdef-0011-2233445566778",
            "é1234567-89ab-cdef-0011-22334455667",
        ] {
            assert!(bad.parse::<ExecutionId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<_> =
            (0..10_000).map(|_| InvocationId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        let other_thread = std::thread::spawn(InvocationId::random).join().unwrap();
        assert!(!ids.contains(&other_thread));
    }
}
