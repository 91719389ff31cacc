"""Lambda functions for moto's server that run this package's handlers in process.

moto runs a function's code in a Docker container, which a developer machine
or a CI runner may not have. The callback workflow's functions are all
handlers of :mod:`provider_gateway.lambdas`, so :func:`install` runs those
directly: the function's environment variables are applied for the call, the
event goes in as JSON, and an exception comes back as Lambda reports it
(``errorType`` = the exception's class name), which is what Step Functions'
Retry and Catch match. Any other handler still goes to moto's own runtime.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import traceback
from typing import Any

from moto.awslambda.models import LambdaFunction

HANDLER_PACKAGE = "provider_gateway.lambdas."
_env_lock = threading.Lock()
_installed = False


class _Context:
    """The part of the Lambda context object the handlers use."""

    def __init__(self, function_name: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.aws_request_id = f"local-{time.monotonic_ns()}"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def invoke_in_process(handler: str, variables: dict[str, str], event: Any, timeout_s: float) -> tuple[str, bool]:
    """Run ``module.function`` with ``event``; (JSON response, whether it failed), as Lambda answers."""
    module_name, _, function_name = handler.rpartition(".")
    with _env_lock:  # one call at a time: the function's environment is the process's for the call
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            function = getattr(importlib.import_module(module_name), function_name)
            result = function(event, _Context(function_name, timeout_s))
            return json.dumps(result), False
        except Exception as exc:  # noqa: BLE001 - reported to the caller the way Lambda reports it
            error = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            return json.dumps(error), True
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _invoke_lambda(original: Any) -> Any:
    def invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        handler = str(self.handler or "")
        if not handler.startswith(HANDLER_PACKAGE):
            return original(self, event)  # type: ignore[no-any-return]
        if isinstance(event, str):
            event = json.loads(event or "{}")
        response, errored = invoke_in_process(
            handler, dict(self.environment_vars or {}), event, float(self.timeout or 3)
        )
        return response, errored, ""

    return invoke


def install() -> None:
    """Run this package's handlers in process in this process's moto; idempotent."""
    global _installed
    with _env_lock:
        if _installed:
            return
        LambdaFunction._invoke_lambda = _invoke_lambda(LambdaFunction._invoke_lambda)  # type: ignore[method-assign]
        _installed = True
