//! Event flows: which events go where.

use std::fmt;
use std::str::FromStr;

use fnhub_core::{EventSource, FunctionName, FunctionRef, NameError};

use crate::topic::{TopicError, TopicFilter};

/// Which publishers a flow takes events from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceFilter {
    /// Every publisher.
    Any,
    /// Any device (`None`) or one device by id.
    Device(Option<String>),
    /// Outputs of one function.
    Function(FunctionName),
    /// Messages from the cloud.
    Cloud,
    /// The embedding application, timers and the hub itself.
    Local,
}

impl SourceFilter {
    /// Whether events from `source` pass.
    pub fn admits(&self, source: &EventSource) -> bool {
        match (self, source) {
            (SourceFilter::Any, _) => true,
            (SourceFilter::Device(None), EventSource::Device(_)) => true,
            (SourceFilter::Device(Some(want)), EventSource::Device(id)) => want == id,
            (SourceFilter::Function(want), EventSource::Function(name)) => want == name,
            (SourceFilter::Cloud, EventSource::Cloud) => true,
            (SourceFilter::Local, EventSource::Local) => true,
            _ => false,
        }
    }
}

/// Text is not a valid flow source or target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowParseError {
    /// The text is none of the known forms.
    #[error(
        "unknown flow endpoint {0:?}; expected any, local, cloud, device:<id|*>, function:<name>, or topic:<template>"
    )]
    Unknown(String),
    /// A function name or reference is invalid.
    #[error("invalid function in flow endpoint")]
    Function(#[from] NameError),
    /// A topic is invalid.
    #[error("invalid topic in flow endpoint")]
    Topic(#[from] TopicError),
}

impl FromStr for SourceFilter {
    type Err = FlowParseError;

    /// `any`, `local`, `cloud`, `device:*`, `device:<id>` or `function:<name>`.
    fn from_str(text: &str) -> Result<Self, FlowParseError> {
        Ok(match text.split_once(':') {
            None if text == "any" => SourceFilter::Any,
            None if text == "local" => SourceFilter::Local,
            None if text == "cloud" => SourceFilter::Cloud,
            Some(("device", "*")) => SourceFilter::Device(None),
            Some(("device", id)) if !id.is_empty() => SourceFilter::Device(Some(id.to_owned())),
            Some(("function", name)) => SourceFilter::Function(name.parse()?),
            _ => return Err(FlowParseError::Unknown(text.to_owned())),
        })
    }
}

impl fmt::Display for SourceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceFilter::Any => f.write_str("any"),
            SourceFilter::Device(None) => f.write_str("device:*"),
            SourceFilter::Device(Some(id)) => write!(f, "device:{id}"),
            SourceFilter::Function(n) => write!(f, "function:{n}"),
            SourceFilter::Cloud => f.write_str("cloud"),
            SourceFilter::Local => f.write_str("local"),
        }
    }
}

/// Where a flow sends matching events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Invoke a function with the event's payload.
    Function(FunctionRef),
    /// Publish the event again on another topic; `{N}` in the template is level `N` of the
    /// event's topic (see [`expand_template`](crate::topic::expand_template)).
    Republish(String),
}

impl FromStr for Target {
    type Err = FlowParseError;

    /// `function:<name>[:<qualifier>]` or `topic:<template>`.
    fn from_str(text: &str) -> Result<Self, FlowParseError> {
        match text.split_once(':') {
            Some(("function", r)) => Ok(Target::Function(r.parse()?)),
            Some(("topic", t)) => {
                // Validate the template's fixed text now; placeholders resolve per event.
                let probe = t.replace(['{', '}'], "");
                crate::topic::TopicName::new(&probe)?;
                Ok(Target::Republish(t.to_owned()))
            }
            _ => Err(FlowParseError::Unknown(text.to_owned())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Function(r) => write!(f, "function:{r}"),
            Target::Republish(t) => write!(f, "topic:{t}"),
        }
    }
}

/// What a flow to a function does when the hub will not take another invocation now (its
/// queue, the function's or the tenant's limit is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Hand the refused invocation back to the publisher (the default): nothing is
    /// dropped unseen, and the publisher decides.
    #[default]
    Reject,
    /// Make room by cancelling the oldest invocation of this flow that is still waiting,
    /// and count it; when none waits, reject.
    DropOldest,
    /// Hold the invocation until the hub takes it, at most this long; later invocations of
    /// the flow wait behind it, so order is kept. Past the time it is dropped and counted.
    Wait(std::time::Duration),
}

/// One route: events from `source` on topics matching `filter` go to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flow {
    /// Which publishers.
    pub source: SourceFilter,
    /// Which topics.
    pub filter: TopicFilter,
    /// Where to.
    pub target: Target,
    /// What a function target does when the hub is full.
    pub overflow: Overflow,
}

impl Flow {
    /// A flow from `source` on `filter` to `target`.
    pub fn new(source: SourceFilter, filter: TopicFilter, target: Target) -> Flow {
        Flow {
            source,
            filter,
            target,
            overflow: Overflow::Reject,
        }
    }

    /// Parses the three parts from text, as a config file gives them.
    ///
    /// ```
    /// use fnhub_router::Flow;
    /// let flow = Flow::parse("device:*", "sensors/+/temperature", "function:smoother")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(source: &str, filter: &str, target: &str) -> Result<Flow, FlowParseError> {
        Ok(Flow::new(source.parse()?, filter.parse()?, target.parse()?))
    }

    /// Sets what it does when the hub is full.
    pub fn with_overflow(mut self, overflow: Overflow) -> Flow {
        self.overflow = overflow;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        for s in [
            "any",
            "local",
            "cloud",
            "device:*",
            "device:d-1",
            "function:f",
        ] {
            assert_eq!(s.parse::<SourceFilter>().unwrap().to_string(), s);
        }
        for t in ["function:f", "function:f:prod", "topic:alerts/{1}"] {
            assert_eq!(t.parse::<Target>().unwrap().to_string(), t);
        }
        for bad in ["", "devices:x", "device:", "function:a/b", "everything"] {
            assert!(bad.parse::<SourceFilter>().is_err(), "{bad:?}");
        }
        for bad in ["", "fn:x", "topic:a/#", "function:"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn source_filters_admit() {
        let d1 = EventSource::Device("d1".into());
        assert!(SourceFilter::Any.admits(&d1));
        assert!(SourceFilter::Device(None).admits(&d1));
        assert!(SourceFilter::Device(Some("d1".into())).admits(&d1));
        assert!(!SourceFilter::Device(Some("d2".into())).admits(&d1));
        assert!(!SourceFilter::Cloud.admits(&d1));
        assert!(SourceFilter::Local.admits(&EventSource::Local));
        let f = FunctionName::new("f").unwrap();
        assert!(SourceFilter::Function(f.clone()).admits(&EventSource::Function(f)));
    }
}
