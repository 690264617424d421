"""The edge hub example's Python function, run by the unmodified awslambdaric.

It receives every 100th count of a device's readings (the event is the count) and turns it
into a report; the hub publishes the return value on reports/{device}.
"""


def handler(event, context):
    topic = None
    if context.client_context is not None:
        topic = context.client_context.custom.get("topic")
    device = topic.split("/")[1] if topic else "unknown"
    return {"device": device, "readings": event, "request_id": context.aws_request_id}
