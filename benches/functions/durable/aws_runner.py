"""The peer: the same ten-step workflow, N executions on AWS's own local runner
(aws-durable-execution-sdk-python-testing, in process, its filesystem store). Prints the
elapsed nanoseconds."""
import pathlib
import sys
import tempfile
import time

from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestRunner

import app


def main():
    n = int(sys.argv[1])
    store = None
    try:
        from aws_durable_execution_sdk_python_testing.stores.filesystem import (
            FileSystemExecutionStore,
        )

        store = FileSystemExecutionStore(pathlib.Path(tempfile.mkdtemp()))
    except Exception:  # an older runner: its in-memory store
        store = None
    runner = DurableFunctionTestRunner(handler=app.ten, store=store)
    runner.run(input='{"n": 1}', execution_name="warm")
    start = time.perf_counter_ns()
    for i in range(n):
        result = runner.run(input='{"n": 1}', execution_name=f"e{i}")
        assert result.status.value == "SUCCEEDED", result
    print(time.perf_counter_ns() - start)


main()
