//! What Lambda tells a runtime: its environment variables, the X-Ray trace id, the client
//! context.

use std::time::{SystemTime, UNIX_EPOCH};

use fnhub_core::{FunctionSpec, TraceParent};

use super::*;

/// `PATH` as Lambda sets it.
pub(super) const LAMBDA_PATH: &str = "/usr/local/bin:/usr/bin/:/bin:/opt/bin";

/// The variables Lambda defines for a runtime.
pub(super) fn lambda_env(
    config: &Config,
    spec: &FunctionSpec,
    task_root: &std::path::Path,
    api_address: &str,
) -> Vec<(String, String)> {
    let name = spec.name.as_str();
    let version = spec.version.to_string();
    let task_root = task_root.display().to_string();
    let today = humantime_date(config.clock.system_time());
    let stream = format!("{today}/[{version}]{}", fnhub_core::InvocationId::random());
    [
        ("AWS_LAMBDA_RUNTIME_API", api_address.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", version),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.resources.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", config.region.clone()),
        ("AWS_DEFAULT_REGION", config.region.clone()),
        ("AWS_EXECUTION_ENV", "fnhub".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("PATH", LAMBDA_PATH.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `YYYY/MM/DD` of `t` in UTC, as Lambda's log stream names start.
pub(super) fn humantime_date(t: SystemTime) -> String {
    let days = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}/{month:02}/{day:02}")
}

/// The X-Ray form of a W3C trace context, as `Lambda-Runtime-Trace-Id` carries it.
pub(super) fn xray_trace_id(trace: &TraceParent) -> String {
    let id = format!("{:032x}", trace.trace_id());
    format!(
        "Root=1-{}-{};Parent={:016x};Sampled={}",
        &id[..8],
        &id[8..],
        trace.parent_id(),
        u8::from(trace.is_sampled())
    )
}

/// The tenant of a call, as Lambda's tenant isolation hands it to a function
/// (`Lambda-Runtime-Aws-Tenant-Id`, read as `context.tenant_id`): the principal it runs
/// for; none for an anonymous caller.
pub(super) fn tenant(context: &fnhub_core::InvocationContext) -> Option<String> {
    let p = context.principal.as_str();
    (p != fnhub_core::Principal::ANONYMOUS).then(|| p.to_owned())
}

/// Lambda's client context for an invocation triggered by an event: the `custom` map tells
/// the function which topic spoke, for whom, and in which trace.
pub(super) fn client_context(context: &fnhub_core::InvocationContext) -> Option<String> {
    // The caller's own, as it came (Lambda's `ClientContext`), before the hub's.
    if let Some(own) = &context.client_context {
        return Some(own.clone());
    }
    let topic = context.topic.as_deref()?;
    let custom = serde_json::json!({
        "custom": {
            "topic": topic,
            "principal": context.principal.as_str(),
            "traceparent": context.trace.to_string(),
        }
    });
    Some(custom.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_ids_split_the_w3c_trace_id() {
        let trace =
            TraceParent::from_parts(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef, 0x42, 1).unwrap();
        assert_eq!(
            xray_trace_id(&trace),
            "Root=1-01234567-89abcdef0123456789abcdef;Parent=0000000000000042;Sampled=1"
        );
    }

    #[test]
    fn log_stream_dates_are_civil_utc() {
        assert_eq!(humantime_date(UNIX_EPOCH), "1970/01/01");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_910_400); // 2026-11-29
        assert_eq!(humantime_date(t), "2026/11/29");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(humantime_date(leap), "2000/02/29");
    }
}
