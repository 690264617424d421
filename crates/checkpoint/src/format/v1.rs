//! Format version 1 of the checkpoint body: a frozen mirror of the core types, so that a
//! change to `fnhub-core` cannot silently change the bytes. Its postcard encoding is pinned
//! by the golden files in `tests/golden/`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fnhub_core::{
    Checkpoint, ErrorKind, ExecutionId, FunctionError, FunctionName, FunctionRef,
    InvocationContext, InvocationId, JournalEntry, Operation, PendingDependency, Principal,
    Priority, TraceParent, Version,
};
use serde::{Deserialize, Serialize};

use super::{DecodeError, EncodeError};

/// A byte string: borrowed from the checkpoint when encoding, from the input when decoding,
/// so the large fields (input, state, step results) are never copied on the way.
#[derive(Debug, PartialEq)]
struct Blob<'a>(Cow<'a, [u8]>);

impl Serialize for Blob<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Blob<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Blob<'de>, E> {
                Ok(Blob(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob<'de>, E> {
                Ok(Blob(Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob<'de>, E> {
                Ok(Blob(Cow::Owned(v)))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

impl<'a> Blob<'a> {
    fn of(b: &'a Bytes) -> Blob<'a> {
        Blob(Cow::Borrowed(&b[..]))
    }

    /// The bytes, sharing `backing`'s memory when they were borrowed from it, copied
    /// otherwise.
    fn to_bytes(&self, backing: Option<&Bytes>) -> Bytes {
        if let (Cow::Borrowed(slice), Some(backing)) = (&self.0, backing) {
            let (start, end) = (
                backing.as_ptr() as usize,
                backing.as_ptr() as usize + backing.len(),
            );
            let at = slice.as_ptr() as usize;
            if at >= start && at + slice.len() <= end {
                return backing.slice_ref(slice);
            }
        }
        Bytes::copy_from_slice(&self.0)
    }
}

/// Seconds and nanoseconds since the Unix epoch.
type Time = (u64, u32);

fn time_out(t: SystemTime) -> Time {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (d.as_secs(), d.subsec_nanos())
}

fn time_in((secs, nanos): Time) -> Result<SystemTime, DecodeError> {
    if nanos >= 1_000_000_000 {
        return Err(DecodeError::Invalid(
            "a timestamp has more than 10^9 nanoseconds",
        ));
    }
    UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .ok_or(DecodeError::Invalid("a timestamp is out of range"))
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(super) struct CheckpointV1<'a> {
    execution_id: u128,
    function: String,
    version: u32,
    #[serde(borrow)]
    input: Blob<'a>,
    context: ContextV1,
    #[serde(borrow)]
    journal: Vec<EntryV1<'a>>,
    #[serde(borrow)]
    state: Option<Blob<'a>>,
    pending: Option<PendingV1>,
    #[serde(borrow)]
    resolution: Option<Result<Blob<'a>, ErrorV1>>,
    origin_hub: String,
    created_at: Time,
    updated_at: Time,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ContextV1 {
    trace: (u128, u64, u8),
    tracestate: Option<String>,
    deadline: Option<Time>,
    priority: u8,
    principal: String,
    affinity_key: Option<String>,
    parent: Option<u128>,
    attempt: u32,
    topic: Option<String>,
    depth: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct EntryV1<'a> {
    seq: u32,
    name: String,
    operation: OperationV1,
    #[serde(borrow)]
    result: Result<Blob<'a>, ErrorV1>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum OperationV1 {
    Step,
    Invoke { child: u128, function: String },
    Sleep,
    WaitFor { filter: String },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ErrorV1 {
    kind: u8,
    message: String,
    error_type: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum PendingV1 {
    Child(u128),
    Timer(Time),
    Event { filter: String },
    Load,
}

/// Stable codes of error kinds in format 1.
fn kind_out(kind: &ErrorKind) -> Result<u8, EncodeError> {
    Ok(match kind {
        ErrorKind::Handled => 1,
        ErrorKind::Unhandled => 2,
        ErrorKind::Timeout => 3,
        ErrorKind::DeadlineExceeded => 4,
        ErrorKind::OutOfMemory => 5,
        ErrorKind::Crashed => 6,
        ErrorKind::Cancelled => 7,
        ErrorKind::Rejected => 8,
        _ => {
            return Err(EncodeError::Unsupported(
                "an error kind newer than format 1",
            ));
        }
    })
}

fn kind_in(code: u8) -> Result<ErrorKind, DecodeError> {
    Ok(match code {
        1 => ErrorKind::Handled,
        2 => ErrorKind::Unhandled,
        3 => ErrorKind::Timeout,
        4 => ErrorKind::DeadlineExceeded,
        5 => ErrorKind::OutOfMemory,
        6 => ErrorKind::Crashed,
        7 => ErrorKind::Cancelled,
        8 => ErrorKind::Rejected,
        _ => return Err(DecodeError::Invalid("unknown error kind")),
    })
}

fn error_out(e: &FunctionError) -> Result<ErrorV1, EncodeError> {
    Ok(ErrorV1 {
        kind: kind_out(&e.kind)?,
        message: e.message.clone(),
        error_type: e.error_type.clone(),
    })
}

fn error_in(e: ErrorV1) -> Result<FunctionError, DecodeError> {
    let mut out = FunctionError::new(kind_in(e.kind)?, e.message);
    out.error_type = e.error_type;
    Ok(out)
}

impl<'a> CheckpointV1<'a> {
    pub(super) fn from_core(c: &'a Checkpoint) -> Result<CheckpointV1<'a>, EncodeError> {
        let ctx = &c.context;
        let journal = c
            .journal
            .iter()
            .map(|e| {
                Ok(EntryV1 {
                    seq: e.seq,
                    name: e.name.clone(),
                    operation: match &e.operation {
                        Operation::Step => OperationV1::Step,
                        Operation::Invoke { child, function } => OperationV1::Invoke {
                            child: child.as_u128(),
                            function: function.to_string(),
                        },
                        Operation::Sleep => OperationV1::Sleep,
                        Operation::WaitFor { filter } => OperationV1::WaitFor {
                            filter: filter.clone(),
                        },
                        _ => {
                            return Err(EncodeError::Unsupported(
                                "an operation newer than format 1",
                            ));
                        }
                    },
                    result: match &e.result {
                        Ok(b) => Ok(Blob::of(b)),
                        Err(err) => Err(error_out(err)?),
                    },
                })
            })
            .collect::<Result<Vec<_>, EncodeError>>()?;
        let pending = match &c.pending {
            None => None,
            Some(PendingDependency::Child(id)) => Some(PendingV1::Child(id.as_u128())),
            Some(PendingDependency::Timer(t)) => Some(PendingV1::Timer(time_out(*t))),
            Some(PendingDependency::Event { filter }) => Some(PendingV1::Event {
                filter: filter.clone(),
            }),
            Some(PendingDependency::Load) => Some(PendingV1::Load),
            Some(_) => return Err(EncodeError::Unsupported("a dependency newer than format 1")),
        };
        Ok(CheckpointV1 {
            execution_id: c.execution_id.as_u128(),
            function: c.function.to_string(),
            version: c.version.get(),
            input: Blob::of(&c.input),
            context: ContextV1 {
                trace: (
                    ctx.trace.trace_id(),
                    ctx.trace.parent_id(),
                    ctx.trace.flags(),
                ),
                tracestate: ctx.tracestate.clone(),
                deadline: ctx.deadline.map(time_out),
                priority: ctx.priority.0,
                principal: ctx.principal.as_str().to_owned(),
                affinity_key: ctx.affinity_key.clone(),
                parent: ctx.parent.map(ExecutionId::as_u128),
                attempt: ctx.attempt,
                topic: ctx.topic.clone(),
                depth: ctx.depth,
            },
            journal,
            state: c.state.as_ref().map(Blob::of),
            pending,
            resolution: match &c.resolution {
                None => None,
                Some(Ok(b)) => Some(Ok(Blob::of(b))),
                Some(Err(e)) => Some(Err(error_out(e)?)),
            },
            origin_hub: c.origin_hub.clone(),
            created_at: time_out(c.created_at),
            updated_at: time_out(c.updated_at),
        })
    }

    /// The core checkpoint; its byte strings share `backing` when they were read from it.
    pub(super) fn into_core(self, backing: Option<&Bytes>) -> Result<Checkpoint, DecodeError> {
        let name = FunctionName::new(&self.function)
            .map_err(|_| DecodeError::Invalid("the function name is invalid"))?;
        let version =
            Version::new(self.version).ok_or(DecodeError::Invalid("the version is zero"))?;
        let mut c = Checkpoint::new(
            ExecutionId::from_u128(self.execution_id),
            name,
            version,
            self.input.to_bytes(backing),
            self.origin_hub,
            time_in(self.created_at)?,
        );
        c.updated_at = time_in(self.updated_at)?;
        let x = self.context;
        let (trace_id, parent_id, flags) = x.trace;
        let mut ctx = InvocationContext::default();
        ctx.trace = TraceParent::from_parts(trace_id, parent_id, flags)
            .ok_or(DecodeError::Invalid("the trace context has a zero id"))?;
        ctx.tracestate = x.tracestate;
        ctx.deadline = x.deadline.map(time_in).transpose()?;
        ctx.priority = Priority(x.priority);
        ctx.principal = Principal::new(x.principal);
        ctx.affinity_key = x.affinity_key;
        ctx.parent = x.parent.map(ExecutionId::from_u128);
        ctx.attempt = x.attempt;
        ctx.topic = x.topic;
        ctx.depth = x.depth;
        c.context = ctx;
        c.journal = self
            .journal
            .into_iter()
            .map(|e| {
                let operation = match e.operation {
                    OperationV1::Step => Operation::Step,
                    OperationV1::Invoke { child, function } => Operation::Invoke {
                        child: InvocationId::from_u128(child),
                        function: function.parse::<FunctionRef>().map_err(|_| {
                            DecodeError::Invalid("a journal call names an invalid function")
                        })?,
                    },
                    OperationV1::Sleep => Operation::Sleep,
                    OperationV1::WaitFor { filter } => Operation::WaitFor { filter },
                };
                let result = match e.result {
                    Ok(b) => Ok(b.to_bytes(backing)),
                    Err(err) => Err(error_in(err)?),
                };
                Ok(JournalEntry::new(e.seq, e.name, operation, result))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        c.state = self.state.map(|s| s.to_bytes(backing));
        c.resolution = match self.resolution {
            None => None,
            Some(Ok(b)) => Some(Ok(b.to_bytes(backing))),
            Some(Err(e)) => Some(Err(error_in(e)?)),
        };
        c.pending = match self.pending {
            None => None,
            Some(PendingV1::Child(id)) => {
                Some(PendingDependency::Child(InvocationId::from_u128(id)))
            }
            Some(PendingV1::Timer(t)) => Some(PendingDependency::Timer(time_in(t)?)),
            Some(PendingV1::Event { filter }) => Some(PendingDependency::Event { filter }),
            Some(PendingV1::Load) => Some(PendingDependency::Load),
        };
        Ok(c)
    }
}
