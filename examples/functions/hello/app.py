"""The shipped hub.toml's first function, run by the unmodified awslambdaric: it greets,
and what it prints and logs shows in the hub's log with its request id."""
import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"hello, {name}")
    logger.info("greeted %s", name)
    return {"greeting": f"hello, {name}", "request_id": context.aws_request_id}
