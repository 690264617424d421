//! The hub's local services: what a sandboxed function reaches through
//! [`LocalServices`] — publish on the hub's router, invoke through its scheduler, a
//! key-value store per principal, and device shadows in the shape of AWS IoT's.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Clock, Event, EventSource, FunctionRef, Invocation, LocalServices, Principal,
    ServiceCaller, ServiceError,
};
use fnhub_router::topic::TopicName;
use fnhub_scheduler::{Scheduler, SubmitError, WeakScheduler};
use parking_lot::Mutex;
use serde_json::Value;

use crate::edge::route::{Routes, too_deep};
use crate::shadows::ShadowStore;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value, in bytes (DynamoDB's item limit).
pub const MAX_VALUE_BYTES: usize = 400 * 1024;
/// The largest shadow update document, in bytes (AWS IoT's limit).
pub const MAX_SHADOW_BYTES: usize = 8 * 1024;

/// The services of one hub: its routes, and its scheduler through a weak handle (a
/// sandbox that hands these services to its guests lives inside the scheduler).
pub(crate) struct HubServices {
    routes: Arc<Routes>,
    scheduler: WeakScheduler,
    clock: Arc<dyn Clock>,
    kv: Mutex<HashMap<(Principal, String), Bytes>>,
    shadows: ShadowStore,
}

impl HubServices {
    pub(crate) fn new(
        routes: Arc<Routes>,
        scheduler: WeakScheduler,
        clock: Arc<dyn Clock>,
        shadows: ShadowStore,
    ) -> HubServices {
        HubServices {
            routes,
            scheduler,
            clock,
            kv: Mutex::new(HashMap::new()),
            shadows,
        }
    }

    fn scheduler(&self) -> Result<Scheduler, ServiceError> {
        self.scheduler
            .upgrade()
            .ok_or_else(|| ServiceError::Unavailable("the hub is gone".into()))
    }

    /// Publishes a hub-made event (a shadow's accepted and delta documents) on the local bus.
    fn announce(&self, caller: &ServiceCaller, topic: String, body: &Value) {
        let Ok(scheduler) = self.scheduler() else {
            return;
        };
        let event = Event::new(topic, Bytes::from(body.to_string()), EventSource::Local)
            .caused_by(&caller.context);
        if let Err(error) = self.routes.route_internal(&scheduler, event) {
            tracing::warn!(%error, "shadow event refused");
        }
    }
}

fn key_of(caller: &ServiceCaller, key: &str) -> Result<(Principal, String), ServiceError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ServiceError::Invalid(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes, not {}",
            key.len()
        )));
    }
    Ok((caller.context.principal.clone(), key.to_owned()))
}

/// Thing names as AWS IoT allows them: 1 to 128 of `[a-zA-Z0-9:_-]`.
pub(crate) fn check_thing(thing: &str) -> Result<(), ServiceError> {
    let ok = !thing.is_empty()
        && thing.len() <= 128
        && thing
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "thing name {thing:?} is not 1 to 128 of [a-zA-Z0-9:_-]"
        )))
    }
}

impl LocalServices for HubServices {
    fn publish<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        topic: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            topic
                .parse::<TopicName>()
                .map_err(|e| ServiceError::Invalid(format!("topic {topic:?}: {e}")))?;
            let scheduler = self.scheduler()?;
            let event = Event::new(
                topic,
                payload,
                EventSource::Function(caller.function.clone()),
            )
            .caused_by(&caller.context);
            self.routes
                .route_internal(&scheduler, event)
                .map_err(|e| ServiceError::Denied(e.to_string()))?;
            Ok(())
        })
    }

    fn invoke<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        function: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            let target: FunctionRef = function
                .parse()
                .map_err(|e| ServiceError::Invalid(format!("function {function:?}: {e}")))?;
            let scheduler = self.scheduler()?;
            let context = caller.context.child(caller.invocation.into());
            if let Some(refusal) = too_deep(&function, &context, self.routes.max_depth()) {
                return Err(ServiceError::Denied(refusal));
            }
            let invocation = Invocation::new(target, payload).with_context(context);
            let ticket = scheduler
                .try_submit_child(invocation)
                .map_err(|e| match e {
                    SubmitError::UnknownFunction(i) => {
                        ServiceError::NotFound(format!("function {} is not deployed", i.function))
                    }
                    other => ServiceError::Overloaded(other.to_string()),
                })?;
            ticket.await.outcome.map_err(ServiceError::Function)
        })
    }

    fn kv_get<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Bytes>, ServiceError>> {
        Box::pin(async move {
            let k = key_of(caller, key)?;
            Ok(self.kv.lock().get(&k).cloned())
        })
    }

    fn kv_put<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let k = key_of(caller, key)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(ServiceError::Invalid(format!(
                    "a value is at most {MAX_VALUE_BYTES} bytes, not {}",
                    value.len()
                )));
            }
            self.kv.lock().insert(k, value);
            Ok(())
        })
    }

    fn kv_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, ServiceError>> {
        Box::pin(async move {
            let k = key_of(caller, key)?;
            Ok(self.kv.lock().remove(&k).is_some())
        })
    }

    fn shadow_get<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        thing: &'a str,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            check_thing(thing)?;
            let document = self
                .shadows
                .get(thing)
                .ok_or_else(|| ServiceError::NotFound(format!("no shadow for {thing:?}")))?;
            Ok(Bytes::from(document.to_string()))
        })
    }

    fn shadow_update<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        thing: &'a str,
        document: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            check_thing(thing)?;
            let (accepted, delta) =
                self.shadows
                    .update(thing, &document, self.clock.system_time())?;
            self.announce(
                caller,
                format!("$aws/things/{thing}/shadow/update/accepted"),
                &accepted,
            );
            if let Some(delta) = delta {
                self.announce(
                    caller,
                    format!("$aws/things/{thing}/shadow/update/delta"),
                    &delta,
                );
            }
            Ok(Bytes::from(accepted.to_string()))
        })
    }

    fn shadow_delete<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        thing: &'a str,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            check_thing(thing)?;
            if self.shadows.delete(thing)? {
                Ok(())
            } else {
                Err(ServiceError::NotFound(format!("no shadow for {thing:?}")))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_aws() {
        assert!(check_thing("lamp-1:kitchen_A").is_ok());
        for bad in ["", "a/b", "a b", "+", &"x".repeat(129)] {
            assert!(check_thing(bad).is_err(), "{bad:?}");
        }
    }
}
