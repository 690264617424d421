//! W3C Trace Context: the `traceparent` header.

use std::fmt;
use std::str::FromStr;

use crate::ids::random_u64;

/// A `traceparent` header could not be parsed (W3C Trace Context, level 1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Shorter than 55 characters, or a version-00 header of any length but 55, or a
    /// future-version header whose 56th character is not `-`.
    #[error("traceparent has the wrong length ({0} bytes)")]
    Length(usize),
    /// The fields are not separated by `-` where the format puts them.
    #[error("traceparent fields are not separated by '-'")]
    Delimiter,
    /// The version is not two lowercase hex digits, or is the forbidden `ff`.
    #[error("traceparent version is invalid")]
    Version,
    /// The trace id is not 32 lowercase hex digits, or is all zeros.
    #[error("traceparent trace-id is invalid")]
    TraceId,
    /// The parent id is not 16 lowercase hex digits, or is all zeros.
    #[error("traceparent parent-id is invalid")]
    ParentId,
    /// The flags are not two lowercase hex digits.
    #[error("traceparent trace-flags are invalid")]
    Flags,
}

/// The W3C `traceparent` of a call: the trace it belongs to, the caller's span, and flags.
///
/// Parsing follows W3C Trace Context §3.2: lowercase hex only, all-zero ids rejected,
/// version `ff` rejected; headers of a future version are accepted when their first four
/// fields parse, and are formatted back as version `00`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(into = "String", try_from = "String"))]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// Length of a version-00 header.
    pub const LEN: usize = 55;
    /// The `sampled` bit of the trace flags.
    pub const SAMPLED: u8 = 0x01;

    /// A context from raw parts; `None` when either id is zero.
    pub fn from_parts(trace_id: u128, parent_id: u64, flags: u8) -> Option<TraceParent> {
        (trace_id != 0 && parent_id != 0).then_some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Starts a new, sampled trace with random ids.
    pub fn new_root() -> TraceParent {
        let nonzero = |v: u64| if v == 0 { 1 } else { v };
        TraceParent {
            trace_id: (u128::from(random_u64()) << 64) | u128::from(nonzero(random_u64())),
            parent_id: nonzero(random_u64()),
            flags: Self::SAMPLED,
        }
    }

    /// The same trace with a new random span id: what a callee passes on to its own callees.
    pub fn child(&self) -> TraceParent {
        let mut id = random_u64();
        if id == 0 {
            id = 1;
        }
        TraceParent {
            parent_id: id,
            ..*self
        }
    }

    /// The 128-bit trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The 64-bit id of the calling span.
    pub fn parent_id(&self) -> u64 {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller recorded this trace.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }
}

impl Default for TraceParent {
    /// A new root trace.
    fn default() -> Self {
        TraceParent::new_root()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

fn lower_hex(field: &[u8], err: TraceParentError) -> Result<u128, TraceParentError> {
    let mut value: u128 = 0;
    for &b in field {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(err),
        };
        value = (value << 4) | u128::from(digit);
    }
    Ok(value)
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(text: &str) -> Result<Self, TraceParentError> {
        let b = text.as_bytes();
        if b.len() < Self::LEN {
            return Err(TraceParentError::Length(b.len()));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceParentError::Delimiter);
        }
        let version = lower_hex(&b[0..2], TraceParentError::Version)?;
        if version == 0xff {
            return Err(TraceParentError::Version);
        }
        if (version == 0 && b.len() != Self::LEN) || (b.len() > Self::LEN && b[Self::LEN] != b'-') {
            return Err(TraceParentError::Length(b.len()));
        }
        let trace_id = lower_hex(&b[3..35], TraceParentError::TraceId)?;
        if trace_id == 0 {
            return Err(TraceParentError::TraceId);
        }
        let parent_id = lower_hex(&b[36..52], TraceParentError::ParentId)?;
        if parent_id == 0 {
            return Err(TraceParentError::ParentId);
        }
        let flags = lower_hex(&b[53..55], TraceParentError::Flags)?;
        Ok(TraceParent {
            trace_id,
            // Both fit: 16 and 2 hex digits.
            parent_id: parent_id as u64,
            flags: flags as u8,
        })
    }
}

impl From<TraceParent> for String {
    fn from(t: TraceParent) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for TraceParent {
    type Error = TraceParentError;
    fn try_from(text: String) -> Result<Self, TraceParentError> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let t: TraceParent = GOOD.parse().unwrap();
        assert_eq!(t.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id(), 0x00f067aa0ba902b7);
        assert!(t.is_sampled());
        assert_eq!(t.to_string(), GOOD);
    }

    #[test]
    fn rejects_malformed_headers() {
        use TraceParentError::*;
        let cases: &[(&str, TraceParentError)] = &[
            ("", Length(0)),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                Length(54),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Length(56),
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Delimiter,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                Delimiter,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceId,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bZ-01",
                ParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                Flags,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                Length(56),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<TraceParent>(), Err(*expected), "{text:?}");
        }
        // A multi-byte character where a delimiter belongs must not panic.
        assert!(
            "00-4bf92f3577b34da6a3ce929d0e0e473é00f067aa0ba902b7-01"
                .parse::<TraceParent>()
                .is_err()
        );
    }

    #[test]
    fn accepts_future_versions() {
        let t: TraceParent =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
                .parse()
                .unwrap();
        assert_eq!(t.to_string(), GOOD);
    }

    #[test]
    fn child_keeps_the_trace() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.parent_id(), root.parent_id());
        assert_eq!(child.flags(), root.flags());
    }

    proptest! {
        #[test]
        fn round_trip(trace in 1u128.., parent in 1u64.., flags: u8) {
            let t = TraceParent::from_parts(trace, parent, flags).unwrap();
            prop_assert_eq!(t.to_string().parse::<TraceParent>(), Ok(t));
        }

        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<TraceParent>();
        }

        #[test]
        fn never_panics_near_valid(mut bytes in proptest::collection::vec(any::<u8>(), 55..=60), keep in 0usize..55) {
            bytes[..keep].copy_from_slice(&GOOD.as_bytes()[..keep]);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = text.parse::<TraceParent>();
            }
        }
    }
}
