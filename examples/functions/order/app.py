"""A Lambda durable function written with AWS's own SDK (pip install
aws-durable-execution-sdk-python), run unchanged on the hub: each step is checkpointed in the
hub's checkpoint_dir through the hub's function endpoint, the wait frees the environment
(the hub invokes the function again when it is over, and the SDK replays), and a hub killed
in between carries the order on when it starts again on the same checkpoint_dir."""
from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration


@durable_execution
def handler(event, context: DurableContext):
    order = event.get("order", "o-1")
    reserved = context.step(lambda _: f"reserved {order}", name="reserve")
    context.wait(Duration.from_seconds(event.get("cool_off_s", 2)), name="cool-off")
    shipped = context.step(lambda _: f"shipped {order}", name="ship")
    return {"order": order, "steps": [reserved, shipped]}
