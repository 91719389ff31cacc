"""One exception root for everything the gateway reports.

Every error a task can end with carries its contract code (``code``) and
whether retrying the same request may help (``retryable``). Protocol modules
translate their library's exceptions into these at the protocol edge, so
nothing above them knows requests, ftplib or paramiko.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the gateway's errors; ``code`` is the contract's error code."""

    code = "GatewayError"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    """The task message is malformed or asks for something not allowed."""

    code = "InvalidRequest"


class SourceNotFound(GatewayError):
    """The file does not exist at the provider."""

    code = "SourceNotFound"


class SourceAccessDenied(GatewayError):
    """The provider refused the login or the file."""

    code = "SourceAccessDenied"


class SourceUnavailable(GatewayError):
    """The provider could not be reached or failed transiently."""

    code = "SourceUnavailable"
    retryable = True


class ResumeUnsupported(SourceUnavailable):
    """The provider cannot continue a file from an offset (it ignored HTTP Range): start it over."""


class IntegrityError(GatewayError):
    """The bytes received differ in size or checksum from what was promised."""

    code = "IntegrityError"
    retryable = True


class TargetWriteFailed(GatewayError):
    """S3 refused or failed the write."""

    code = "TargetWriteFailed"
    retryable = True


class OutputTooLarge(GatewayError):
    """The task's result is over the Step Functions limit and no payload bucket is set."""

    code = "OutputTooLarge"


class GatewayShutdown(GatewayError):
    """The gateway stopped before the task finished."""

    code = "GatewayShutdown"
    retryable = True


class TaskCancelled(GatewayError):
    """Step Functions no longer waits for the task (heartbeat refused)."""

    code = "TaskCancelled"


class InternalError(GatewayError):
    """An unexpected failure inside the gateway (a bug); the message says what."""

    code = "GatewayInternalError"


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""
