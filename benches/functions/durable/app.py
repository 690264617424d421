"""Durable workflows for the durable-functions bench, written with AWS's SDK: `ten` runs
ten steps (ten checkpoints), `zero` none, so their difference is ten checkpoint round
trips."""
from aws_durable_execution_sdk_python import DurableContext, durable_execution


def _workflow(event, context, steps):
    total = event.get("n", 0)
    for i in range(steps):
        total = context.step(lambda _, t=total, i=i: t + i, name=f"s{i}")
    return {"total": total}


@durable_execution
def ten(event, context: DurableContext):
    return _workflow(event, context, 10)


@durable_execution
def zero(event, context: DurableContext):
    return _workflow(event, context, 0)
