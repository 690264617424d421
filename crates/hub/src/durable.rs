//! Durable functions on the edge hub: the engine's host is the hub itself.

use std::sync::{OnceLock, Weak};

use fnhub_checkpoint::durable::DurableHost;
use fnhub_core::{BoxFuture, ErrorKind, FunctionError, Invocation, Outcome};
use fnhub_router::topic::{TopicFilter, TopicName};

use crate::edge::HubInner;

/// Runs a durable execution's children on the hub's scheduler and matches its waits with
/// MQTT topic filters.
pub(crate) struct HubHost {
    pub(crate) hub: OnceLock<Weak<HubInner>>,
}

impl DurableHost for HubHost {
    fn invoke(&self, child: Invocation) -> BoxFuture<'static, Outcome> {
        let hub = self.hub.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(hub) = hub else {
                return Err(FunctionError::new(ErrorKind::Cancelled, "the hub is gone"));
            };
            match hub.scheduler.try_submit(child) {
                Ok(ticket) => ticket.await.outcome,
                Err(e) => Err(FunctionError::new(ErrorKind::Rejected, e.to_string())),
            }
        })
    }

    fn matches(&self, filter: &str, topic: &str) -> bool {
        match (filter.parse::<TopicFilter>(), topic.parse::<TopicName>()) {
            (Ok(f), Ok(t)) => f.matches(&t),
            _ => false,
        }
    }
}
