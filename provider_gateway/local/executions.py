"""Waiting on Step Functions executions: for the demo, the benchmarks and the tests."""

from __future__ import annotations

import time
from typing import Any


def wait_for_execution(sfn: Any, execution_arn: str, timeout_s: float = 300) -> dict[str, Any]:
    """DescribeExecution once the execution has left RUNNING; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.1)
    raise TimeoutError(f"execution {execution_arn} still RUNNING after {timeout_s}s")
