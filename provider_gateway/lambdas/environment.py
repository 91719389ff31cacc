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
from provider_gateway.config import ProviderConfig, parse_config, unresolved_resources
from provider_gateway.config.loader import gateway_entries
from provider_gateway.config.yaml_source import parse_yaml, read_text
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
def _document(location: str) -> Any:
    return parse_yaml(read_text(location, clients().s3), location)


@functools.cache
def _provider(location: str, provider_id: str) -> ProviderConfig | None:
    document = _document(location)
    if provider_id not in gateway_entries(document):
        return None
    (provider,) = parse_config(document, unresolved_resources, (provider_id,)).providers
    return provider


def provider_config(provider_id: str) -> ProviderConfig | None:
    """Provider ``provider_id`` of ``GATEWAY_CONFIG`` (read once per container), or None if there is none.

    Only that provider's ``gateway_config`` is expanded and checked: the
    function needs no other provider's secrets in its environment.
    """
    location = os.environ.get("GATEWAY_CONFIG")
    return _provider(location, provider_id) if location else None


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
