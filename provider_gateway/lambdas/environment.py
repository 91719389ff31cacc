"""What the Lambda handlers share: settings from the environment, clients, the config, errors.

Settings (environment variables of the functions):

- ``CALLBACK_TABLE``: DynamoDB table of waiting callbacks (key ``callback_id``, TTL ``expires_at``)
- ``CALLBACK_BASE_URL``: public URL the callback ids are appended to
- ``CALLBACK_TTL_S``: how long a callback waits (default 86400)
- ``CALLBACK_TOPIC_ARN``: optional SNS topic told of every new callback URL
- ``GATEWAY_CONFIG``: ``collections.yml`` (path or ``s3://``), for providers' settings
- ``LAMBDA_MAX_BYTES``: files up to this size are downloaded in Lambda (default 2 GiB)
"""

from __future__ import annotations

import functools
import os
from typing import Any

from provider_gateway.aws import AwsClients
from provider_gateway.config import Config, load_config, unresolved_resources
from provider_gateway.errors import ConfigError, GatewayError

DEFAULT_CALLBACK_TTL_S = 86400
DEFAULT_LAMBDA_MAX_BYTES = 2 * 1024**3


def setting(name: str, default: str | None = None) -> str:
    """An environment setting; a missing required one is a configuration error naming it."""
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"the function's environment has no {name}")
    return value


def int_setting(name: str, default: int) -> int:
    try:
        return int(setting(name, str(default)))
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {os.environ.get(name)!r}") from None


@functools.cache
def clients() -> AwsClients:
    """One set of clients per Lambda container, reused across invocations."""
    return AwsClients(max_pool=16)


@functools.cache
def _config(location: str) -> Config:
    return load_config(location, resolver=unresolved_resources, s3_client_factory=clients().s3)


def gateway_config() -> Config | None:
    """The providers of ``GATEWAY_CONFIG`` (read once per container), or None when it is not set."""
    location = os.environ.get("GATEWAY_CONFIG")
    return _config(location) if location else None


class LambdaError(Exception):
    """Root of the errors a handler raises for Step Functions to match in Retry and Catch."""


@functools.cache
def _error_class(code: str) -> type[LambdaError]:
    # Lambda reports an exception's class name as errorType, and Step Functions matches
    # ErrorEquals against it: the class is named after the contract's error code.
    return type(code, (LambdaError,), {"__module__": __name__})


def failure(code: str, message: str) -> LambdaError:
    """An exception whose ``errorType`` in Lambda is ``code``."""
    return _error_class(code)(message)


def from_gateway_error(exc: GatewayError) -> LambdaError:
    return failure(exc.code, exc.message)


def remaining_ms(context: Any, default: int = 900_000) -> int:
    """Milliseconds the invocation has left (the Lambda context's clock)."""
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return int(getter()) if callable(getter) else default
