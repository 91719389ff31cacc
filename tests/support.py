"""Helpers for tests that drive the gateway through its real interfaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from provider_gateway.local.executions import wait_for_execution

ROLE_ARN = "arn:aws:iam::123456789012:role/provider-gateway-tests"
POLL_S = 0.05

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None],
    what: str,
    timeout_s: float = 30,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """The first truthy value ``check()`` returns, asked every POLL_S; fails after ``timeout_s``.

    An exception of a type in ``ignoring`` counts as not yet (an endpoint still starting).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except ignoring:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(POLL_S)


def metrics_args(port: int) -> tuple[str, ...]:
    """``run`` arguments serving /metrics, /healthz and /status on ``port`` of loopback."""
    return ("--metrics-port", str(port), "--metrics-host", "127.0.0.1")


def cli_path() -> str:
    """The installed ``provider-gateway`` console script of this environment."""
    return str(Path(sys.executable).parent / "provider-gateway")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_activity(sfn: Any, prefix: str = "act") -> str:
    return str(sfn.create_activity(name=unique(prefix))["activityArn"])


def create_state_machine(sfn: Any, activity_arn: str, heartbeat_s: int = 30, timeout_s: int = 300) -> str:
    """A one-state machine whose Task uses ``activity_arn`` (no Retry: tests see every failure)."""
    definition = {
        "StartAt": "Download",
        "States": {
            "Download": {
                "Type": "Task",
                "Resource": activity_arn,
                "HeartbeatSeconds": heartbeat_s,
                "TimeoutSeconds": timeout_s,
                "End": True,
            }
        },
    }
    return str(
        sfn.create_state_machine(name=unique("sm"), definition=json.dumps(definition), roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
    )


def start(sfn: Any, state_machine_arn: str, message: Any) -> str:
    body = message if isinstance(message, str) else json.dumps(message)
    return str(sfn.start_execution(stateMachineArn=state_machine_arn, input=body)["executionArn"])


def wait_done(sfn: Any, execution_arn: str, timeout_s: float = 60) -> dict[str, Any]:
    """DescribeExecution once the execution has left RUNNING."""
    return wait_for_execution(sfn, execution_arn, timeout_s)


def download_message(files: list[tuple[str, str, str]], **source_extra: Any) -> dict[str, Any]:
    """A download task for (url, bucket, key) triples."""
    return {
        "payload": {
            "files": [
                {"type": "download", "source": {"url": url, **source_extra}, "target": {"bucket": b, "key": k}}
                for url, b, k in files
            ]
        }
    }


def write_config(path: Path, providers: list[dict[str, Any]]) -> Path:
    """collections.yml with these providers (each: id + gateway_config mapping)."""
    document = {"providers": [{"id": p["id"], "config": {"gateway_config": p["gateway_config"]}} for p in providers]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class GatewayProcess:
    """``provider-gateway run`` as a child process, logging to a file."""

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        log_path: Path,
        run_args: tuple[str, ...] = (),
        launcher: tuple[str, ...] | None = None,
    ) -> None:
        self.log_path = log_path
        self.killed = False
        self._log = log_path.open("wb")
        command = list(launcher) if launcher else [cli_path()]
        self.proc = subprocess.Popen(
            [*command, "--log-level", "debug", "run", "--config", str(config), *run_args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a host or container that dies; the process is then not expected to exit 0."""
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 40) -> int:
        """SIGTERM, then wait; returns the exit code (kills the group if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"gateway did not stop within {timeout_s}s:\n{self.log()[-3000:]}") from None
        finally:
            self._log.close()


CONTRACT_CODES = (
    "InvalidRequest",
    "SourceNotFound",
    "SourceAccessDenied",
    "SourceUnavailable",
    "IntegrityError",
    "TargetWriteFailed",
    "OutputTooLarge",
    "GatewayShutdown",
)
"""The error codes CONTRACT.md names, written out here so that the tests check the code against them."""
