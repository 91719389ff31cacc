"""Answering Step Functions: SendTaskSuccess / SendTaskFailure within the API's limits.

An answer counts as given only when a send went through, or when it failed
for good: errors that may pass (throttling, 5xx, a dropped connection) are
retried with backoff; a final failure is logged at ERROR and counted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from provider_gateway.errors import TASK_GONE, InternalError, OutputTooLarge, TargetWriteFailed, TaskCancelled

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 262_144
MAX_CAUSE_CHARS = 32_768
MAX_ERROR_CHARS = 256
# How long, and how often, an answer that may still pass is tried (botocore retries within each try).
ANSWER_RETRY_S = 60.0
ANSWER_ATTEMPTS = 8
ANSWER_RETRY_WAIT_MAX_S = 10.0
_PASSING_CODES = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalServerError",
    "InternalFailure",
    "RequestTimeout",
}


def may_pass(exc: BaseException) -> bool:
    """Whether a failed Step Functions call may succeed if made again."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in _PASSING_CODES or status == 429 or status >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def _code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


class Responder:
    """Sends a task's single answer; an output too large goes to ``payload_bucket``.

    ``on_lost`` is called when an answer could not be sent at all; ``sleep``
    is the backoff between tries.
    """

    def __init__(
        self,
        sfn: Any,
        s3: Any,
        provider_id: str,
        payload_bucket: str | None,
        on_lost: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_s: float = ANSWER_RETRY_S,
    ) -> None:
        self._sfn = sfn
        self._s3 = s3
        self._provider = provider_id
        self._payload_bucket = payload_bucket
        self._on_lost = on_lost
        self._sleep = sleep
        self._retry_s = retry_s

    def success(self, token: str, output: dict[str, Any]) -> bool:
        """SendTaskSuccess with ``output``, moving its payload to S3 if it is too large.

        An output that cannot be written to S3, or that Step Functions refuses
        for good, is answered with SendTaskFailure instead. True if an answer was sent.
        """
        try:
            text = json.dumps(output, separators=(",", ":"))
            if len(text.encode()) > MAX_OUTPUT_BYTES:
                text = self._offload(output)
        except (OutputTooLarge, TargetWriteFailed) as exc:
            log.warning("task …%s: %s", token[-12:], exc.message)
            return self.failure(token, exc.code, exc.message)
        except Exception as exc:  # output that cannot be rendered still gets an answer
            log.exception("task …%s: rendering the output failed", token[-12:])
            error = InternalError(f"the task's output could not be rendered: {type(exc).__name__}: {exc}"[:1000])
            return self.failure(token, error.code, error.message)
        refused = self._send("success", self._sfn.send_task_success, taskToken=token, output=text)
        if refused is None:
            return True
        if _code(refused) in TASK_GONE or may_pass(refused):
            return self._lost(token, "success", refused)
        error = InternalError(f"Step Functions refused the task's output: {refused}")
        return self.failure(token, error.code, error.message)

    def failure(self, token: str, error: str, cause: str) -> bool:
        """SendTaskFailure; ``cause`` is expected within limits (see :func:`bounded_cause`). True if sent."""
        refused = self._send(
            "failure",
            self._sfn.send_task_failure,
            taskToken=token,
            error=error[:MAX_ERROR_CHARS],
            cause=cause[:MAX_CAUSE_CHARS],
        )
        if refused is None:
            return True
        if error == TaskCancelled.code and _code(refused) in TASK_GONE:
            # Cancelled because Step Functions gave the task up: that it refuses the answer is expected.
            log.info("task …%s: not answered, Step Functions no longer waits for it (%s)", token[-12:], _code(refused))
            return False
        return self._lost(token, "failure", refused)

    def _offload(self, output: dict[str, Any]) -> str:
        if not self._payload_bucket:
            raise OutputTooLarge(
                f"the task's output is over {MAX_OUTPUT_BYTES} bytes and no payload_bucket is configured"
            )
        key = f"provider-gateway/payloads/{self._provider}/{uuid.uuid4()}.json"
        body = json.dumps(output.get("payload"), separators=(",", ":")).encode()
        try:
            self._s3.put_object(Bucket=self._payload_bucket, Key=key, Body=body, ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            raise TargetWriteFailed(
                f"the task's output is over {MAX_OUTPUT_BYTES} bytes and writing its payload to "
                f"s3://{self._payload_bucket}/{key} failed: {exc}"
            ) from exc
        slim = dict(output)
        slim["payload"] = {"Bucket": self._payload_bucket, "Key": key}
        text = json.dumps(slim, separators=(",", ":"))
        if len(text.encode()) > MAX_OUTPUT_BYTES:
            raise OutputTooLarge(f"the task's output is over {MAX_OUTPUT_BYTES} bytes even without its payload")
        return text

    def _send(self, what: str, call: Callable[..., Any], **kwargs: Any) -> Exception | None:
        """Make the call, retrying what may pass; None if it went through, else the last failure."""
        retrying = Retrying(
            stop=stop_after_delay(self._retry_s) | stop_after_attempt(ANSWER_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=ANSWER_RETRY_WAIT_MAX_S),
            retry=retry_if_exception(may_pass),
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "SendTask%s failed, retrying: %s", what.capitalize(), state.outcome and state.outcome.exception()
            ),
            reraise=True,
        )
        try:
            retrying(call, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is returned, logged and counted by the caller
            return exc
        return None

    def _lost(self, token: str, what: str, exc: Exception) -> bool:
        log.error(
            "task …%s: SendTask%s failed for good, the task is not answered: %s", token[-12:], what.capitalize(), exc
        )
        if self._on_lost is not None:
            self._on_lost()
        return False


def bounded_cause(entries: list[dict[str, Any]], limit: int = MAX_CAUSE_CHARS) -> str:
    """JSON of every file's result, cut to fit ``limit`` and still valid JSON."""
    text = json.dumps({"files": entries}, separators=(",", ":"))
    if len(text) <= limit:
        return text
    failed = [e for e in entries if not e.get("success")]
    kept: list[dict[str, Any]] = []
    for entry in failed:
        slim = {k: (v[:500] if isinstance(v, str) else v) for k, v in entry.items()}
        candidate = {"files": [*kept, slim], "omitted": len(entries) - len(kept) - 1}
        if len(json.dumps(candidate, separators=(",", ":"))) > limit:
            break
        kept.append(slim)
    return json.dumps({"files": kept, "omitted": len(entries) - len(kept)}, separators=(",", ":"))
