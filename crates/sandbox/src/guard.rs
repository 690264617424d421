//! The hub's services as one function may use them: its allow-list
//! ([`ServiceAccess`]) checked before each call reaches the hub.

use std::sync::Arc;

use bytes::Bytes;
use fnhub_core::{BoxFuture, LocalServices, ServiceAccess, ServiceCaller, ServiceError, ShadowRef};

/// `inner`, refusing what `access` does not allow (`ServiceError::Denied`, logged). The
/// key-value store is the caller's principal's own and is not restricted.
pub(crate) struct Guarded {
    pub(crate) inner: Arc<dyn LocalServices>,
    pub(crate) access: ServiceAccess,
}

fn denied<T: Send + 'static>(
    caller: &ServiceCaller,
    what: String,
) -> BoxFuture<'static, Result<T, ServiceError>> {
    tracing::warn!(function = %caller.function, what, "a call outside the function's allow-list");
    let message = format!("function {} may not use {what}", caller.function);
    Box::pin(async move { Err(ServiceError::Denied(message)) })
}

impl LocalServices for Guarded {
    fn publish<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        topic: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        if !self.access.may_publish(topic) {
            return denied(caller, format!("publish on {topic:?}"));
        }
        self.inner.publish(caller, topic, payload)
    }

    fn invoke<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        function: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        if !self.access.may_invoke(function) {
            return denied(caller, format!("invoking {function:?}"));
        }
        self.inner.invoke(caller, function, payload)
    }

    fn kv_get<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Bytes>, ServiceError>> {
        self.inner.kv_get(caller, key)
    }

    fn kv_put<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
        value: Bytes,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        self.inner.kv_put(caller, key, value)
    }

    fn kv_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, ServiceError>> {
        self.inner.kv_delete(caller, key)
    }

    fn shadow_get<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        if !self.access.may_use_shadow(shadow.thing()) {
            return denied(caller, shadow.to_string());
        }
        self.inner.shadow_get(caller, shadow)
    }

    fn shadow_update<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
        document: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        if !self.access.may_use_shadow(shadow.thing()) {
            return denied(caller, shadow.to_string());
        }
        self.inner.shadow_update(caller, shadow, document)
    }

    fn shadow_delete<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        shadow: &'a ShadowRef,
    ) -> BoxFuture<'a, Result<Bytes, ServiceError>> {
        if !self.access.may_use_shadow(shadow.thing()) {
            return denied(caller, shadow.to_string());
        }
        self.inner.shadow_delete(caller, shadow)
    }

    fn lambda_api<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        request: fnhub_core::ApiRequest<'a>,
    ) -> BoxFuture<'a, Result<(u16, Bytes), ServiceError>> {
        self.inner.lambda_api(caller, request)
    }

    fn shadow_list<'a>(
        &'a self,
        caller: &'a ServiceCaller,
        thing: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        if !self.access.may_use_shadow(thing) {
            return denied(caller, format!("the shadows of {thing:?}"));
        }
        self.inner.shadow_list(caller, thing)
    }
}
