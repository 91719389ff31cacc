"""One exception root for everything the gateway reports, and what each error means to its callers.

Every error a task can end with carries its contract code (``code``) and what
follows from it, as class attributes:

- ``retryable``: the failure may be transient. The gateway's own retries
  apply to it (reopening a source, resuming a read), and a task's cancel
  reason is reported instead of it when the two meet.
- ``workflow_retry``: a state machine should retry a task that failed with
  it. :mod:`provider_gateway.workflow` and the shipped examples take their
  ``Retry`` lists from this.
- ``drops_connection``: the connection the file was read over may be broken:
  a connection thread replaces it before the next file.
- ``exit_status``: the exit status of ``provider-gateway download``, so that
  an AWS Batch ``retryStrategy`` can retry exactly what a workflow retries.

Protocol modules translate their library's exceptions into these at the
protocol edge, so nothing above them knows requests, ftplib or paramiko.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

EXIT_OTHER = 1
"""The exit status of a download that failed with anything not given a status of its own."""

TASK_GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
"""Step Functions' error codes (answering SendTaskHeartbeat, SendTaskSuccess or SendTaskFailure)
meaning it no longer waits for the task: the answer has nobody to go to."""


class GatewayError(Exception):
    """Root of the gateway's errors; ``code`` is the contract's error code."""

    code: ClassVar[str] = "GatewayError"
    retryable: ClassVar[bool] = False
    workflow_retry: ClassVar[bool] = False
    drops_connection: ClassVar[bool] = False
    exit_status: ClassVar[int] = EXIT_OTHER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    """The task message is malformed or asks for something not allowed."""

    code = "InvalidRequest"
    exit_status = 2


class SourceNotFound(GatewayError):
    """The file does not exist at the provider."""

    code = "SourceNotFound"
    exit_status = 3


class SourceAccessDenied(GatewayError):
    """The provider refused the login or the file."""

    code = "SourceAccessDenied"
    exit_status = 4


class SourceUnavailable(GatewayError):
    """The provider could not be reached or failed transiently."""

    code = "SourceUnavailable"
    retryable = True
    workflow_retry = True
    drops_connection = True
    exit_status = 5


class ResumeUnsupported(SourceUnavailable):
    """The provider cannot continue a file from an offset (it ignored HTTP Range): start it over."""


class IntegrityError(GatewayError):
    """The bytes received differ in size or checksum from what was promised."""

    code = "IntegrityError"
    retryable = True
    workflow_retry = True
    exit_status = 6


class TargetWriteFailed(GatewayError):
    """S3 refused or failed the write.

    Not retried by a workflow: S3's transient failures are retried by the
    gateway (botocore, then each part) before this is raised, so what is left
    is mostly a refusal (access, bucket, key, KMS) that a new attempt repeats
    after downloading the whole file again.
    """

    code = "TargetWriteFailed"
    retryable = True
    exit_status = 7


class OutputTooLarge(GatewayError):
    """The task's result is over the Step Functions limit and no payload bucket is set."""

    code = "OutputTooLarge"


class GatewayShutdown(GatewayError):
    """The gateway stopped before the task finished."""

    code = "GatewayShutdown"
    retryable = True
    workflow_retry = True
    drops_connection = True
    exit_status = 8


class TaskCancelled(GatewayError):
    """Step Functions no longer waits for the task (heartbeat refused)."""

    code = "TaskCancelled"
    drops_connection = True


class InternalError(GatewayError):
    """An unexpected failure inside the gateway (a bug); the message says what."""

    code = "GatewayInternalError"
    drops_connection = True


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


def error_classes() -> tuple[type[GatewayError], ...]:
    """One class per code: the root, then the others as defined (a subclass sharing its code is left out)."""
    found: dict[str, type[GatewayError]] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:  # breadth first: __subclasses__() lists a class's subclasses in the order they were defined
        cls = pending.pop(0)
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return tuple(found.values())


def error_class(code: str) -> type[GatewayError]:
    """The class of the code ``code``; the root for a code the gateway does not define."""
    return next((cls for cls in error_classes() if cls.code == code), GatewayError)


def codes_where(predicate: Callable[[type[GatewayError]], bool]) -> tuple[str, ...]:
    """The codes whose class satisfies ``predicate`` (``lambda e: e.workflow_retry``), in definition order."""
    return tuple(cls.code for cls in error_classes() if predicate(cls))


def exit_status(code: str | None) -> int:
    """The exit status of a download that ended with ``code``: 0 for none (success)."""
    return 0 if code is None else error_class(code).exit_status
