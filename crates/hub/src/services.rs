//! The hub's local services: what a sandboxed function reaches through
//! [`LocalServices`] — publish on the hub's router, invoke through its scheduler, a
//! key-value store per principal, and device shadows in the shape of AWS IoT's.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Clock, Event, EventSource, FunctionRef, Invocation, LocalServices, Principal,
    ServiceCaller, ServiceError, ShadowRef,
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
    /// Lambda durable executions, and the hub that runs them (set once it is built).
    dex: Arc<crate::dex::Dex>,
    hub: std::sync::OnceLock<crate::WeakHub>,
}

impl HubServices {
    pub(crate) fn new(
        routes: Arc<Routes>,
        scheduler: WeakScheduler,
        clock: Arc<dyn Clock>,
        shadows: ShadowStore,
        dex: Arc<crate::dex::Dex>,
    ) -> HubServices {
        HubServices {
            routes,
            scheduler,
            clock,
            kv: Mutex::new(HashMap::new()),
            shadows,
            dex,
            hub: std::sync::OnceLock::new(),
        }
    }

    /// The hub these services belong to, once built.
    pub(crate) fn set_hub(&self, hub: crate::WeakHub) {
        let _ = self.hub.set(hub);
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
            let ticket = match scheduler.try_submit_child(invocation) {
                Ok(ticket) => ticket,
                Err(SubmitError::UnknownFunction(i)) => {
                    // Not here: on a cloud runtime node, the node that has it runs it,
                    // with the caller's context (trace, deadline, principal, depth).
                    #[cfg(feature = "nats")]
                    if let Some(link) = self.hub.get().and_then(|h| h.upgrade()?.cloud_link()) {
                        return match link.invoke(i).await {
                            Err(e) if e.error_type.as_deref() == Some("CloudRuntime") => {
                                Err(ServiceError::NotFound(e.message))
                            }
                            outcome => outcome.map_err(ServiceError::Function),
                        };
                    }
                    return Err(ServiceError::NotFound(format!(
                        "function {} is not deployed",
                        i.function
                    )));
                }
                Err(other) => return Err(ServiceError::Overloaded(other.to_string())),
            };
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
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            let document = self
                .shadows
                .get(shadow)
                .ok_or_else(|| ServiceError::NotFound(format!("no {shadow}")))?;
            Ok(Bytes::from(document.to_string()))
        })
    }

    fn shadow_update<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
        document: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            let updated = self
                .shadows
                .update(shadow, &document, self.clock.system_time())?;
            let prefix = shadow.topic_prefix();
            self.announce(
                caller,
                format!("{prefix}/update/accepted"),
                &updated.accepted,
            );
            if let Some(delta) = &updated.delta {
                self.announce(caller, format!("{prefix}/update/delta"), delta);
            }
            self.announce(
                caller,
                format!("{prefix}/update/documents"),
                &updated.documents,
            );
            Ok(Bytes::from(updated.accepted.to_string()))
        })
    }

    fn shadow_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        Box::pin(async move {
            let Some(gone) = self.shadows.delete(shadow, self.clock.system_time())? else {
                return Err(ServiceError::NotFound(format!("no {shadow}")));
            };
            self.announce(
                caller,
                format!("{}/delete/accepted", shadow.topic_prefix()),
                &gone,
            );
            Ok(Bytes::from(gone.to_string()))
        })
    }

    fn lambda_api<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        request: fnhub_core::ApiRequest<'a>,
    ) -> BoxFuture<'a, Result<(u16, Bytes), ServiceError>> {
        Box::pin(async move {
            let hub = self
                .hub
                .get()
                .ok_or_else(|| ServiceError::Unavailable("the hub is starting".into()))?;
            // A function may checkpoint its own execution and answer callbacks; the
            // rest of the API is the operator's, at the front door.
            let asker = crate::dex::api::Asker {
                from_function: true,
                may_invoke: &|_| false,
            };
            let body = Bytes::copy_from_slice(request.body);
            crate::dex::api::serve_anywhere(
                &self.dex,
                hub,
                &asker,
                request.method,
                request.path,
                request.query,
                &body,
            )
            .await
            .map(|(status, body)| (status, Bytes::from(body.to_string())))
            .map_err(|e| ServiceError::Api(e.status, e.kind.to_owned(), e.message))
        })
    }

    fn shadow_list<'a>(
        &'a self,
        _caller: &'a ServiceCaller,
        thing: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        Box::pin(async move {
            ShadowRef::classic(thing)?;
            Ok(self.shadows.names(thing))
        })
    }
}
