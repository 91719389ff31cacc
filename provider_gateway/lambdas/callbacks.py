"""Waiting for a provider's callback: register a task token, then redeem it once, authenticated.

``register`` runs as a ``lambda:invoke.waitForTaskToken`` task. It stores the
task token under an unguessable callback id, with a secret of its own and an
expiry (DynamoDB TTL), and announces the callback URL and secret on the SNS
topic, to which the provider (or whoever relays to it) subscribes.

``receive`` serves ``POST /callbacks/{callback_id}`` (API Gateway HTTP API,
payload 2.0). The provider signs the body: header ``X-Signature-256:
sha256=<hex HMAC-SHA256 of the raw body with the secret>``. The body is JSON:

- ``{"status": "ready", ...}`` (or no status): SendTaskSuccess with the body
  as the task's output; the callback is used up.
- ``{"status": "failed", "error": "...", "cause": "..."}``: SendTaskFailure
  with error ``ProviderFailed``; the callback is used up.
- ``{"status": "in_progress"}``: SendTaskHeartbeat; the callback stays.
- any other ``status``: 400, and the callback stays.

Answers: 200 done, 202 heartbeat sent, 400 body not JSON (or nested too
deeply, or with an unknown status), 403 bad or missing signature, 404
unknown, expired or already used id, 413 body over the Step Functions limit,
503 (with Retry-After) only when Step Functions itself fails transiently, in
which case the callback stays usable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from provider_gateway import json_input
from provider_gateway.errors import TASK_GONE, InvalidRequest
from provider_gateway.lambdas.environment import (
    DEFAULT_CALLBACK_TTL_S,
    clients,
    failure,
    int_setting,
    setting,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-signature-256"
MAX_BODY_BYTES = 256 * 1024  # Step Functions' limit on a task's output
PROVIDER_FAILED = "ProviderFailed"
READY, FAILED, IN_PROGRESS = "ready", "failed", "in_progress"
STATUSES = {READY: READY, FAILED: FAILED, "failure": FAILED, "error": FAILED, IN_PROGRESS: IN_PROGRESS}
"""Each ``status`` a provider may send, and what it means."""


def _table() -> Any:
    return clients().resource("dynamodb").Table(setting("CALLBACK_TABLE"))


def sign(secret: str, body: bytes) -> str:
    """The ``X-Signature-256`` header value a provider sends with ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def register(event: dict[str, Any], context: Any = None, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Store ``event["task_token"]`` under a new callback id; return and announce its URL and secret.

    The event is the task's Payload: ``task_token`` (``$$.Task.Token``),
    ``execution`` (``$$.Execution.Id``) and ``provider``. ``clock`` gives the
    time in epoch seconds the expiry counts from.
    """
    token = event.get("task_token")
    if not isinstance(token, str) or not token:
        raise failure("InvalidRequest", "register: the event needs task_token ($$.Task.Token)")
    callback_id = secrets.token_urlsafe(32)
    secret = secrets.token_urlsafe(32)
    now = int(clock())
    ttl_s = event.get("ttl_s") or int_setting("CALLBACK_TTL_S", DEFAULT_CALLBACK_TTL_S)
    if not isinstance(ttl_s, int) or ttl_s < 1:
        raise failure("InvalidRequest", f"register: ttl_s must be a positive number of seconds, got {ttl_s!r}")
    expires_at = now + ttl_s
    item = {
        "callback_id": callback_id,
        "task_token": token,
        "secret": secret,
        "execution": str(event.get("execution", "")),
        "provider": str(event.get("provider", "")),
        "created_at": now,
        "expires_at": expires_at,
    }
    _table().put_item(Item=item, ConditionExpression="attribute_not_exists(callback_id)")
    announcement = {
        "callback_url": setting("CALLBACK_BASE_URL").rstrip("/") + "/" + callback_id,
        "secret": secret,
        "signature_header": "X-Signature-256",
        "expires_at": expires_at,
        "provider": item["provider"],
        "execution": item["execution"],
    }
    topic = setting("CALLBACK_TOPIC_ARN", "-")
    if topic != "-":
        clients().client("sns").publish(
            TopicArn=topic,
            Subject="provider-gateway callback",
            Message=json.dumps(announcement),
            MessageAttributes={"provider": {"DataType": "String", "StringValue": item["provider"] or "-"}},
        )
    log.info("callback %s… registered for %s, expires at %d", callback_id[:6], item["execution"], expires_at)
    return announcement


def receive(event: dict[str, Any], context: Any = None, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Handle ``POST /callbacks/{callback_id}`` from API Gateway; never answers 5xx for a bad caller.

    ``clock`` gives the time in epoch seconds the callback's expiry is checked against.
    """
    callback_id = (event.get("pathParameters") or {}).get("callback_id") or ""
    if not isinstance(callback_id, str):
        callback_id = ""
    body = _body(event)
    if body is None:
        return _answer(400, "the body is not valid base64 text")
    table = _table()
    item = table.get_item(Key={"callback_id": callback_id}, ConsistentRead=True).get("Item") if callback_id else None
    if item is None:
        return _answer(404, "no such callback")
    if int(item["expires_at"]) <= clock():
        table.delete_item(Key={"callback_id": callback_id})  # the TTL sweep can lag by hours
        return _answer(404, "no such callback")
    if not _signed(event, sign(str(item["secret"]), body)):
        log.warning("callback %s…: bad or missing signature", callback_id[:6])
        return _answer(403, "bad or missing X-Signature-256")
    if len(body) > MAX_BODY_BYTES:
        return _answer(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        message = json_input.load(body, "the body", max_bytes=MAX_BODY_BYTES)
    except InvalidRequest as exc:
        return _answer(400, exc.message)
    if not isinstance(message, dict):
        return _answer(400, "the body must be a JSON object")
    status = message.get("status", READY)
    if not isinstance(status, str) or status.lower() not in STATUSES:
        return _answer(400, f"status must be one of {', '.join(STATUSES)}; got {str(status)[:40]!r}")
    return _deliver(table, item, message, STATUSES[status.lower()])


def _signed(event: dict[str, Any], expected: str) -> bool:
    """Whether the request carries the signature ``expected``, compared in constant time."""
    headers = event.get("headers")
    found: Any = ""
    if isinstance(headers, dict):
        found = next((v for k, v in headers.items() if str(k).lower() == SIGNATURE_HEADER), "")
    # As bytes: compare_digest refuses str holding anything but ASCII, and a caller may send anything.
    given = found.encode("utf-8", "surrogatepass") if isinstance(found, str) else b""
    return hmac.compare_digest(given, expected.encode())


def _deliver(table: Any, item: dict[str, Any], message: dict[str, Any], status: str) -> dict[str, Any]:
    sfn = clients().sfn()
    token = str(item["task_token"])
    if status == IN_PROGRESS:
        try:
            sfn.send_task_heartbeat(taskToken=token)
        except ClientError as exc:
            return _gone_or_retry(table, item, exc, claimed=False)
        return _answer(202, "heartbeat sent")
    if not _claim(table, item):
        return _answer(404, "no such callback")
    try:
        if status == FAILED:
            sfn.send_task_failure(
                taskToken=token,
                error=PROVIDER_FAILED,
                cause=json.dumps({k: message[k] for k in ("error", "cause") if k in message})[:32768],
            )
        else:
            sfn.send_task_success(taskToken=token, output=json.dumps(message))
    except ClientError as exc:
        return _gone_or_retry(table, item, exc, claimed=True)
    log.info("callback %s… delivered (%s) to %s", str(item["callback_id"])[:6], status, item["execution"])
    return _answer(200, "delivered")


def _claim(table: Any, item: dict[str, Any]) -> bool:
    """Delete the callback if it is still there: of two concurrent deliveries, one wins."""
    try:
        table.delete_item(Key={"callback_id": item["callback_id"]}, ConditionExpression="attribute_exists(callback_id)")
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _gone_or_retry(table: Any, item: dict[str, Any], exc: ClientError, claimed: bool) -> dict[str, Any]:
    code = exc.response["Error"]["Code"]
    if code in TASK_GONE:
        if not claimed:
            table.delete_item(Key={"callback_id": item["callback_id"]})
        return _answer(404, "the workflow no longer waits for this callback")
    log.warning("Step Functions failed (%s): the callback stays usable", code)
    if claimed:
        table.put_item(Item=item)
    return _answer(503, "Step Functions is unavailable: try again later", {"retry-after": "30"})


def _body(event: dict[str, Any]) -> bytes | None:
    raw = event.get("body") or ""
    if not isinstance(raw, str):
        return None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            return None
    return raw.encode("utf-8", "surrogatepass")


def _answer(status: int, message: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps({"message": message}),
    }
