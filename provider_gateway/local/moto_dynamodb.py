"""DynamoDB in moto's server with atomic conditional writes, as DynamoDB has them.

moto evaluates a ConditionExpression and then writes, with nothing between
concurrent requests: two PutItems conditional on the same absent item can
both succeed. Connection leases rest on exactly that condition, so
:func:`install` serializes moto's item writes and reads behind one lock.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

_lock = threading.RLock()
_installed = False


def _serialized(method: Any) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    return call


def install() -> None:
    """Make moto's DynamoDB item operations atomic with respect to each other (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        for name in ("put_item", "update_item", "delete_item", "get_item", "query"):
            setattr(DynamoDBBackend, name, _serialized(getattr(DynamoDBBackend, name)))
        _installed = True
