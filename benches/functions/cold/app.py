"""A Python Lambda function as users write them: boto3 imported at the top (a client made
at first use), the handler answering the event."""
import json

import boto3  # noqa: F401

_client = None


def handler(event, context):
    return {"ok": True, "echo": event, "request_id": context.aws_request_id, "size": len(json.dumps(event))}
