//! The hub's local services: what a sandboxed function reaches through
//! [`LocalServices`] — publish on the hub's router, invoke through its scheduler, a
//! key-value store per principal, and device shadows in the shape of AWS IoT's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fnhub_core::{
    BoxFuture, Clock, Event, EventSource, FunctionRef, Invocation, LocalServices, Principal,
    ServiceCaller, ServiceError,
};
use fnhub_router::topic::TopicName;
use fnhub_scheduler::{Scheduler, SubmitError, WeakScheduler};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::edge::route::{Routes, too_deep};

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
    shadows: Mutex<HashMap<String, Shadow>>,
}

impl HubServices {
    pub(crate) fn new(
        routes: Arc<Routes>,
        scheduler: WeakScheduler,
        clock: Arc<dyn Clock>,
    ) -> HubServices {
        HubServices {
            routes,
            scheduler,
            clock,
            kv: Mutex::new(HashMap::new()),
            shadows: Mutex::new(HashMap::new()),
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
fn check_thing(thing: &str) -> Result<(), ServiceError> {
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
            let shadows = self.shadows.lock();
            let shadow = shadows
                .get(thing)
                .ok_or_else(|| ServiceError::NotFound(format!("no shadow for {thing:?}")))?;
            Ok(Bytes::from(shadow.document().to_string()))
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
            let update = ShadowUpdate::parse(&document)?;
            let now = self.clock.system_time();
            let (accepted, delta) = {
                let mut shadows = self.shadows.lock();
                let shadow = shadows.entry(thing.to_owned()).or_default();
                shadow.apply(update, now)?
            };
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
            self.shadows
                .lock()
                .remove(thing)
                .map(drop)
                .ok_or_else(|| ServiceError::NotFound(format!("no shadow for {thing:?}")))
        })
    }
}

/// One device shadow: desired and reported state, and a version that counts updates.
#[derive(Debug, Default)]
struct Shadow {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    version: u64,
    timestamp: u64,
}

/// A parsed update: `{"state":{"desired":..,"reported":..},"version":N}`, each part
/// optional; `null` for a section clears it.
#[derive(Debug)]
struct ShadowUpdate {
    desired: Option<Value>,
    reported: Option<Value>,
    version: Option<u64>,
    state: Value,
}

impl ShadowUpdate {
    fn parse(document: &[u8]) -> Result<ShadowUpdate, ServiceError> {
        let invalid = |m: &str| ServiceError::Invalid(format!("shadow document: {m}"));
        if document.len() > MAX_SHADOW_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "shadow document: {} bytes, over the {MAX_SHADOW_BYTES}-byte limit",
                document.len()
            )));
        }
        let value: Value =
            serde_json::from_slice(document).map_err(|e| invalid(&format!("not JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(invalid("not a JSON object"));
        };
        let version = match top.remove("version") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| invalid("version is not a count"))?,
            ),
        };
        let state = top.remove("state").ok_or_else(|| invalid("no \"state\""))?;
        let Value::Object(sections) = &state else {
            return Err(invalid("\"state\" is not an object"));
        };
        let section = |name: &str| -> Result<Option<Value>, ServiceError> {
            match sections.get(name) {
                None => Ok(None),
                Some(v @ (Value::Object(_) | Value::Null)) => Ok(Some(v.clone())),
                Some(_) => Err(invalid(&format!(
                    "\"state.{name}\" is not an object or null"
                ))),
            }
        };
        let (desired, reported) = (section("desired")?, section("reported")?);
        if let Some(other) = sections
            .keys()
            .find(|k| *k != "desired" && *k != "reported")
        {
            return Err(invalid(&format!("unknown section \"state.{other}\"")));
        }
        if desired.is_none() && reported.is_none() {
            return Err(invalid("\"state\" has neither desired nor reported"));
        }
        Ok(ShadowUpdate {
            desired,
            reported,
            version,
            state,
        })
    }
}

impl Shadow {
    /// Applies `update`: the accepted document, and the delta document when desired and
    /// reported now differ. A version that is not the current one changes nothing.
    fn apply(
        &mut self,
        update: ShadowUpdate,
        now: SystemTime,
    ) -> Result<(Value, Option<Value>), ServiceError> {
        if let Some(v) = update.version
            && v != self.version
        {
            return Err(ServiceError::Conflict(format!(
                "version conflict: the update is for version {v}, the shadow is at {}",
                self.version
            )));
        }
        for (section, change) in [
            (&mut self.desired, update.desired),
            (&mut self.reported, update.reported),
        ] {
            match change {
                Some(Value::Object(fields)) => merge(section, fields),
                Some(_) => section.clear(),
                None => {}
            }
        }
        self.version += 1;
        self.timestamp = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let accepted = json!({
            "state": update.state,
            "version": self.version,
            "timestamp": self.timestamp,
        });
        let delta = self
            .delta()
            .map(|d| json!({"state": d, "version": self.version, "timestamp": self.timestamp}));
        Ok((accepted, delta))
    }

    /// The desired fields whose reported value differs.
    fn delta(&self) -> Option<Value> {
        let d = diff(&self.desired, &self.reported);
        (!d.is_empty()).then_some(Value::Object(d))
    }

    fn document(&self) -> Value {
        let mut state = Map::new();
        if !self.desired.is_empty() {
            state.insert("desired".into(), Value::Object(self.desired.clone()));
        }
        if !self.reported.is_empty() {
            state.insert("reported".into(), Value::Object(self.reported.clone()));
        }
        if let Some(delta) = self.delta() {
            state.insert("delta".into(), delta);
        }
        json!({"state": state, "version": self.version, "timestamp": self.timestamp})
    }
}

/// Merges `fields` into `into`: objects merge field by field, `null` deletes, anything else
/// replaces.
fn merge(into: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (k, v) in fields {
        match v {
            Value::Null => {
                into.remove(&k);
            }
            Value::Object(inner) => match into.get_mut(&k) {
                Some(Value::Object(existing)) => merge(existing, inner),
                _ => {
                    let mut fresh = Map::new();
                    merge(&mut fresh, inner);
                    into.insert(k, Value::Object(fresh));
                }
            },
            other => {
                into.insert(k, other);
            }
        }
    }
}

fn diff(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, want) in desired {
        match (want, reported.get(k)) {
            (Value::Object(w), Some(Value::Object(r))) => {
                let inner = diff(w, r);
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            (w, Some(r)) if w == r => {}
            (w, _) => {
                out.insert(k.clone(), w.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn update(shadow: &mut Shadow, doc: &str) -> Result<(Value, Option<Value>), ServiceError> {
        shadow.apply(ShadowUpdate::parse(doc.as_bytes())?, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn desired_and_reported_merge_and_the_delta_is_what_differs() {
        let mut s = Shadow::default();
        let (accepted, delta) = update(
            &mut s,
            r#"{"state":{"desired":{"on":true,"color":{"r":255,"g":0}}}}"#,
        )
        .unwrap();
        assert_eq!(accepted["version"], 1);
        assert_eq!(
            delta.unwrap()["state"],
            json!({"on": true, "color": {"r": 255, "g": 0}})
        );
        let (_, delta) = update(
            &mut s,
            r#"{"state":{"reported":{"on":true,"color":{"r":255,"g":9}}}}"#,
        )
        .unwrap();
        assert_eq!(delta.unwrap()["state"], json!({"color": {"g": 0}}));
        // null deletes a field; matching reports leave no delta.
        let (_, delta) = update(
            &mut s,
            r#"{"state":{"desired":{"color":null},"reported":{"extra":1}}}"#,
        )
        .unwrap();
        assert!(delta.is_none());
        let doc = s.document();
        assert_eq!(doc["state"]["desired"], json!({"on": true}));
        assert_eq!(doc["version"], 3);
        assert!(doc["state"].get("delta").is_none());
    }

    #[test]
    fn bad_documents_and_stale_versions_change_nothing() {
        let mut s = Shadow::default();
        update(&mut s, r#"{"state":{"reported":{"t":1}}}"#).unwrap();
        for bad in [
            "not json",
            "[1]",
            r#"{"nostate":{}}"#,
            r#"{"state":5}"#,
            r#"{"state":{"desired":3}}"#,
            r#"{"state":{"wanted":{}}}"#,
            r#"{"state":{}}"#,
            r#"{"state":{"reported":{"t":2}},"version":"x"}"#,
        ] {
            let err = update(&mut s, bad).unwrap_err();
            assert!(matches!(err, ServiceError::Invalid(_)), "{bad}: {err}");
        }
        let err = update(&mut s, r#"{"state":{"reported":{"t":2}},"version":0}"#).unwrap_err();
        assert!(matches!(err, ServiceError::Conflict(_)), "{err}");
        update(&mut s, r#"{"state":{"reported":{"t":3}},"version":1}"#).unwrap();
        assert_eq!(s.document()["state"]["reported"], json!({"t": 3}));
        assert_eq!(s.version, 2);
        let huge = format!(
            r#"{{"state":{{"reported":{{"x":"{}"}}}}}}"#,
            "a".repeat(MAX_SHADOW_BYTES)
        );
        assert!(matches!(
            update(&mut s, &huge),
            Err(ServiceError::TooLarge(_))
        ));
    }

    #[test]
    fn thing_names_follow_aws() {
        assert!(check_thing("lamp-1:kitchen_A").is_ok());
        for bad in ["", "a/b", "a b", "+", &"x".repeat(129)] {
            assert!(check_thing(bad).is_err(), "{bad:?}");
        }
    }
}
