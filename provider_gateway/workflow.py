"""The state machine a workflow uses to hand downloads to the gateway.

``examples/download-state-machine.asl.json`` is this definition with
placeholder ARNs; the demo creates it on the embedded stack.
"""

from __future__ import annotations

import re
from typing import Any

from provider_gateway.errors import codes_where

RETRYABLE_ERRORS = [*codes_where(lambda error: error.workflow_retry), "States.Timeout"]
"""What a workflow retries: the gateway's codes a new attempt can fix, and a gateway that died (no heartbeat)."""
FATAL_ERRORS = ["States.ALL"]


def download_state_machine(activity_arn: str, heartbeat_s: int = 120, timeout_s: int = 86_400) -> dict[str, Any]:
    """An ASL definition: download through the gateway's activity, retry what a retry can fix.

    ``HeartbeatSeconds`` must exceed the gateway's ``heartbeat_interval_s``
    (with margin): a task whose gateway died is then retried after at most
    ``heartbeat_s`` seconds instead of waiting for the whole timeout.
    """
    return {
        "Comment": "Download files from a provider into S3 through Provider Gateway",
        "StartAt": "Download",
        "States": {
            "Download": {
                "Type": "Task",
                "Resource": activity_arn,
                "HeartbeatSeconds": heartbeat_s,
                "TimeoutSeconds": timeout_s,
                "Retry": [
                    {
                        "ErrorEquals": RETRYABLE_ERRORS,
                        "IntervalSeconds": 30,
                        "BackoffRate": 2.0,
                        "MaxAttempts": 4,
                    }
                ],
                "Catch": [{"ErrorEquals": FATAL_ERRORS, "ResultPath": "$.error", "Next": "DownloadFailed"}],
                "Next": "Downloaded",
            },
            "Downloaded": {"Type": "Succeed"},
            "DownloadFailed": {
                "Type": "Fail",
                "ErrorPath": "$.error.Error",
                "CausePath": "$.error.Cause",
            },
        },
    }


CALLBACK_PLACEHOLDERS = (
    "RegisterCallbackFunctionArn",
    "ListFilesFunctionArn",
    "DownloadFunctionArn",
    "SummarizeFunctionArn",
    "GatewayActivityArn",
    "JobQueueArn",
    "JobDefinitionArn",
)


def substitute(definition: str, values: dict[str, str]) -> str:
    """``${Name}`` placeholders filled as SAM's DefinitionSubstitutions does; KeyError names a missing one."""
    found = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", definition))
    missing = sorted(found - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return re.sub(r"\$\{([A-Za-z0-9]+)\}", lambda m: values[m.group(1)], definition)
