//! Hub-local services a sandboxed function may call: publish an event, invoke another
//! function, a key-value store, device shadows.
//!
//! These are the operations a cloud SDK offers a Lambda function (IoT Data Plane `Publish`,
//! `GetThingShadow`, `UpdateThingShadow`, `DeleteThingShadow`; Lambda `Invoke`; a table's
//! get / put / delete), answered by the hub instead of the cloud: Greengrass's "local
//! interface override". A sandbox hands them to its guests (the WebAssembly backend as host
//! functions); the hub implements them over its router, its scheduler and its own stores.

use std::fmt;

use bytes::Bytes;

use crate::function::BoxFuture;
use crate::ids::InvocationId;
use crate::invocation::InvocationContext;
use crate::name::{FunctionName, Version};
use crate::outcome::FunctionError;

/// Who calls a service: the function and the invocation the call is made from. The
/// service reads the principal (for scoping and access), the trace (to continue it) and the
/// depth (to stop loops) from `context`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceCaller {
    /// The calling function.
    pub function: FunctionName,
    /// Its version.
    pub version: Version,
    /// The invocation the call is made from.
    pub invocation: InvocationId,
    /// That invocation's context.
    pub context: InvocationContext,
}

impl ServiceCaller {
    /// A caller running `invocation` of `function` at `version`.
    pub fn new(
        function: FunctionName,
        version: Version,
        invocation: InvocationId,
        context: InvocationContext,
    ) -> ServiceCaller {
        ServiceCaller {
            function,
            version,
            invocation,
            context,
        }
    }
}

/// Why a service call failed. Each kind has a stable negative code that guests see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The thing asked for does not exist (a function, a shadow).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed (a bad topic, a document that is not JSON).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The caller may not do this.
    #[error("denied: {0}")]
    Denied(String),
    /// The hub cannot take it now (queue full, shutting down).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The invoked function ran and failed.
    #[error("the function failed: {0}")]
    Function(FunctionError),
    /// This service is not offered here.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request conflicts with the current state (a shadow update for another version).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is over a size limit (a shadow document over 8 KB).
    #[error("too large: {0}")]
    TooLarge(String),
    /// An AWS API's own error: HTTP status, error type, message.
    #[error("{1}: {2}")]
    Api(u16, String, String),
}

impl ServiceError {
    /// The code a guest sees for this error: always negative, stable across releases.
    pub fn code(&self) -> i32 {
        match self {
            ServiceError::NotFound(_) => -1,
            ServiceError::Invalid(_) => -2,
            ServiceError::Denied(_) => -3,
            ServiceError::Overloaded(_) => -4,
            ServiceError::Function(_) => -5,
            ServiceError::Unavailable(_) => -6,
            ServiceError::Conflict(_) => -7,
            ServiceError::TooLarge(_) => -8,
            ServiceError::Api(..) => -9,
        }
    }
}

/// A device shadow: a thing's classic (unnamed) shadow, or one of its named shadows. Names
/// follow AWS IoT: a thing is 1 to 128 of `[a-zA-Z0-9:_-]`, a shadow name 1 to 64 of the
/// same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShadowRef {
    thing: String,
    name: Option<String>,
}

fn check_shadow_part(what: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "{what} {value:?} is not 1 to {max} of [a-zA-Z0-9:_-]"
        )))
    }
}

impl ShadowRef {
    /// The longest thing name.
    pub const MAX_THING: usize = 128;
    /// The longest shadow name.
    pub const MAX_NAME: usize = 64;

    /// The classic shadow of `thing`.
    pub fn classic(thing: &str) -> Result<ShadowRef, ServiceError> {
        ShadowRef::new(thing, None)
    }

    /// The shadow named `name` of `thing`.
    pub fn named(thing: &str, name: &str) -> Result<ShadowRef, ServiceError> {
        ShadowRef::new(thing, Some(name))
    }

    /// `thing`'s shadow `name`, or its classic shadow.
    pub fn new(thing: &str, name: Option<&str>) -> Result<ShadowRef, ServiceError> {
        check_shadow_part("thing name", thing, ShadowRef::MAX_THING)?;
        if let Some(name) = name {
            check_shadow_part("shadow name", name, ShadowRef::MAX_NAME)?;
        }
        Ok(ShadowRef {
            thing: thing.to_owned(),
            name: name.map(str::to_owned),
        })
    }

    /// `"{thing}"` (the classic shadow) or `"{thing}/{name}"`: how a guest names a shadow
    /// in one string.
    pub fn parse(text: &str) -> Result<ShadowRef, ServiceError> {
        match text.split_once('/') {
            None => ShadowRef::classic(text),
            Some((thing, name)) => ShadowRef::named(thing, name),
        }
    }

    /// The thing.
    pub fn thing(&self) -> &str {
        &self.thing
    }

    /// The shadow's name; `None` for the classic shadow.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The prefix of its reserved MQTT topics: `$aws/things/{thing}/shadow` or
    /// `$aws/things/{thing}/shadow/name/{name}`.
    pub fn topic_prefix(&self) -> String {
        match &self.name {
            None => format!("$aws/things/{}/shadow", self.thing),
            Some(name) => format!("$aws/things/{}/shadow/name/{name}", self.thing),
        }
    }
}

impl fmt::Display for ShadowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => write!(f, "the shadow of {:?}", self.thing),
            Some(name) => write!(f, "the shadow {name:?} of {:?}", self.thing),
        }
    }
}

/// `%XX` sequences of an AWS API path segment or query value decoded; `None` when they are
/// malformed or do not make UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One Lambda control-plane request, as [`LocalServices::lambda_api`] takes it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ApiRequest<'a> {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'a str,
    /// The path after `/2025-12-01/`, still percent-encoded.
    pub path: &'a str,
    /// The query string.
    pub query: &'a str,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> ApiRequest<'a> {
    /// A request.
    pub fn new(method: &'a str, path: &'a str, query: &'a str, body: &'a [u8]) -> Self {
        ApiRequest {
            method,
            path,
            query,
            body,
        }
    }
}

/// The name of a service operation, for errors and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceOp {
    /// Publish an event.
    Publish,
    /// Invoke a function and wait for its outcome.
    Invoke,
    /// Read a key.
    KvGet,
    /// Write a key.
    KvPut,
    /// Delete a key.
    KvDelete,
    /// Read a shadow document.
    ShadowGet,
    /// Update a shadow document.
    ShadowUpdate,
    /// Delete a shadow document.
    ShadowDelete,
    /// List a thing's named shadows.
    ShadowList,
    /// A Lambda control-plane request (the durable execution API).
    LambdaApi,
}

impl fmt::Display for ServiceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceOp::Publish => "publish",
            ServiceOp::Invoke => "invoke",
            ServiceOp::KvGet => "kv_get",
            ServiceOp::KvPut => "kv_put",
            ServiceOp::KvDelete => "kv_delete",
            ServiceOp::ShadowGet => "shadow_get",
            ServiceOp::ShadowUpdate => "shadow_update",
            ServiceOp::ShadowDelete => "shadow_delete",
            ServiceOp::ShadowList => "shadow_list",
            ServiceOp::LambdaApi => "lambda_api",
        })
    }
}

fn unavailable<T: Send + 'static>(op: ServiceOp) -> BoxFuture<'static, Result<T, ServiceError>> {
    Box::pin(async move {
        Err(ServiceError::Unavailable(format!(
            "{op} is not offered by this host"
        )))
    })
}

/// Services a hub offers the functions it runs. Every method has a default that answers
/// [`ServiceError::Unavailable`], so an implementation offers only what it has.
///
/// Shadow documents are JSON in the shape of AWS IoT device shadows: an update is
/// `{"state":{"desired":{..},"reported":{..}}}` and a read returns `state.desired`,
/// `state.reported`, `state.delta`, `version` and `timestamp`.
pub trait LocalServices: Send + Sync + 'static {
    /// Publishes `payload` on `topic` as an event from the caller.
    fn publish<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        topic: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        let _ = (caller, topic, payload);
        unavailable(ServiceOp::Publish)
    }

    /// Invokes `function` (a name, `name:version` or `name:alias`) with `payload` and waits
    /// for its output.
    fn invoke<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        function: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        let _ = (caller, function, payload);
        unavailable(ServiceOp::Invoke)
    }

    /// Reads `key`; `None` when it is not set.
    fn kv_get<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Bytes>, ServiceError>> {
        let _ = (caller, key);
        unavailable(ServiceOp::KvGet)
    }

    /// Sets `key` to `value`.
    fn kv_put<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        let _ = (caller, key, value);
        unavailable(ServiceOp::KvPut)
    }

    /// Deletes `key`; whether it was set.
    fn kv_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, ServiceError>> {
        let _ = (caller, key);
        unavailable(ServiceOp::KvDelete)
    }

    /// The document of `shadow`.
    fn shadow_get<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        let _ = (caller, shadow);
        unavailable(ServiceOp::ShadowGet)
    }

    /// Merges `document` into `shadow`; the accepted document.
    fn shadow_update<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
        document: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        let _ = (caller, shadow, document);
        unavailable(ServiceOp::ShadowUpdate)
    }

    /// Deletes `shadow`; AWS's answer (`{"version": N, "timestamp": T}`).
    fn shadow_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        let _ = (caller, shadow);
        unavailable(ServiceOp::ShadowDelete)
    }

    /// A Lambda control-plane request the function made (the durable execution API under
    /// `/2025-12-01/`): `method`, the path after that prefix, the query and the body. The
    /// answer's status and JSON body, or an AWS error (status, type, message) in
    /// [`ServiceError::Api`].
    fn lambda_api<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        request: ApiRequest<'a>,
    ) -> BoxFuture<'a, Result<(u16, Bytes), ServiceError>> {
        let _ = (caller, request);
        unavailable(ServiceOp::LambdaApi)
    }

    /// The names of `thing`'s named shadows, in order.
    fn shadow_list<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        thing: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        let _ = (caller, thing);
        unavailable(ServiceOp::ShadowList)
    }
}

/// Offers nothing: every call answers [`ServiceError::Unavailable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoServices;

impl LocalServices for NoServices {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_takes_aws_segments_and_refuses_garbage() {
        assert_eq!(percent_decode("a%2Fb%3A1").as_deref(), Some("a/b:1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "%ff", "%c3"] {
            assert!(percent_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn shadow_names_follow_aws() {
        let classic = ShadowRef::classic("lamp-1:kitchen_A").unwrap();
        assert_eq!(
            classic.topic_prefix(),
            "$aws/things/lamp-1:kitchen_A/shadow"
        );
        let named = ShadowRef::named("lamp-1", "config").unwrap();
        assert_eq!(named.name(), Some("config"));
        assert_eq!(
            named.topic_prefix(),
            "$aws/things/lamp-1/shadow/name/config"
        );
        for bad in ["", "a/b", "a b", "+", "#", "a\nb", &"x".repeat(129)] {
            assert!(ShadowRef::classic(bad).is_err(), "{bad:?}");
        }
        assert!(ShadowRef::named("t", &"x".repeat(64)).is_ok());
        assert_eq!(ShadowRef::parse("lamp-1/config").unwrap(), named);
        assert_eq!(ShadowRef::parse("lamp-1:kitchen_A").unwrap(), classic);
        assert!(ShadowRef::parse("a/b/c").is_err());
        for bad in ["", "n/m", "$", &"x".repeat(65)] {
            assert!(ShadowRef::named("t", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_distinct_and_negative() {
        let all = [
            ServiceError::NotFound(String::new()),
            ServiceError::Invalid(String::new()),
            ServiceError::Denied(String::new()),
            ServiceError::Overloaded(String::new()),
            ServiceError::Function(FunctionError::handled("x")),
            ServiceError::Unavailable(String::new()),
        ];
        let mut codes: Vec<i32> = all.iter().map(ServiceError::code).collect();
        assert!(codes.iter().all(|c| *c < 0));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
