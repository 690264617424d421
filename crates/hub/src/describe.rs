//! `# HELP` for every metric fnhub records, through the `metrics` facade: described to the
//! recorder installed when a hub is built, or by the application with
//! [`describe_metrics`] after it installs one.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Describes every metric family fnhub records (its `# HELP` line and unit) to the
/// recorder installed now. [`EdgeHubBuilder::build`](crate::EdgeHubBuilder::build) calls it.
pub fn describe_metrics() {
    describe_counter!(
        "fnhub_invocations_total",
        "Invocations completed, by function, version, outcome (ok or the error kind) and start (warm or cold)."
    );
    describe_histogram!(
        "fnhub_invocation_queued_seconds",
        Unit::Seconds,
        "Time an invocation waited in the queue before it started."
    );
    describe_histogram!(
        "fnhub_invocation_run_seconds",
        Unit::Seconds,
        "Time an invocation ran, cold start included."
    );
    describe_counter!(
        "fnhub_submit_rejected_total",
        "Invocations refused at admission, by reason."
    );
    describe_counter!(
        "fnhub_children_deferred_total",
        "Child invocations deferred under load (started before their latest safe start)."
    );
    describe_counter!(
        "fnhub_prewarms_total",
        "Environments started ahead of demand."
    );
    describe_counter!("fnhub_evictions_total", "Idle environments stopped.");
    describe_counter!(
        "fnhub_cloud_redelivered_total",
        "Invocations a cloud runtime node took that had been delivered before (to a node that died, or was too slow to acknowledge)."
    );
    describe_counter!(
        "fnhub_cloud_refused_total",
        "Work messages a cloud runtime node refused, by reason (missing or invalid header, a deadline too far ahead, a depth over the limit)."
    );
    describe_counter!(
        "fnhub_cloud_wakes_without_checkpoint_total",
        "Wakes of durable executions that found neither a checkpoint nor a result (a replica catching up): each comes again a second later."
    );
    describe_gauge!("fnhub_queue_depth", "Invocations waiting for a worker.");
    describe_gauge!("fnhub_running", "Invocations running now.");
    describe_gauge!("fnhub_workers", "Workers of the scheduler.");
    describe_gauge!(
        "fnhub_python_templates",
        "Templates of Python functions alive (environments are forked from them)."
    );
    describe_gauge!(
        "fnhub_python_template_bytes",
        Unit::Bytes,
        "Resident memory of the templates of Python functions: warm memory."
    );
    describe_gauge!(
        "fnhub_function_queued",
        "Invocations of a function waiting, by function."
    );
    describe_gauge!(
        "fnhub_function_running",
        "Invocations of a function running, by function."
    );
    describe_gauge!(
        "fnhub_function_mean_wait_seconds",
        Unit::Seconds,
        "Mean queue wait of a function's recent invocations, by function."
    );
    describe_counter!(
        "fnhub_events_dropped_total",
        "Events the local bus dropped, by reason (a full subscriber, a refused republish)."
    );
    describe_counter!(
        "fnhub_flow_overflow_dropped_total",
        "Events a flow's overflow policy dropped, by policy."
    );
    describe_counter!(
        "fnhub_metaevents_fired_total",
        "Metaevent rules fired, by rule."
    );
    describe_counter!(
        "fnhub_durable_waits_total",
        "Waits of Rust durable executions, by whether they suspended."
    );
    describe_counter!(
        "fnhub_durable_executions_total",
        "Lambda durable executions started and ended, by status."
    );
    describe_counter!(
        "fnhub_durable_execution_writes_total",
        "Writes of Lambda durable executions to the hub's checkpoint store, by result (ok, or failed: tried again, and the change's answer is a 503)."
    );
    describe_counter!(
        "fnhub_http_requests_total",
        "HTTP requests answered by the front door, by route and status."
    );
    describe_counter!(
        "fnhub_mqtt_messages_total",
        "MQTT messages through the bridge, by direction (in from the broker, out acknowledged by it)."
    );
    describe_counter!(
        "fnhub_mqtt_connects_total",
        "Connections of the MQTT bridge to its broker, the first included."
    );
    describe_gauge!(
        "fnhub_mqtt_buffered",
        "Outbound MQTT messages held for the broker."
    );
    describe_counter!(
        "fnhub_mqtt_inbound_dropped_total",
        "Inbound MQTT messages dropped, by reason."
    );
    describe_counter!(
        "fnhub_mqtt_outbound_dropped_total",
        "Outbound MQTT messages dropped because the buffer was full."
    );
    describe_counter!(
        "fnhub_log_lines_dropped_total",
        "Log lines the binary's bounded log writer dropped under a flood."
    );
}
