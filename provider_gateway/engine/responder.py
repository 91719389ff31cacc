"""Answering Step Functions: SendTaskSuccess / SendTaskFailure within the API's limits."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provider_gateway.errors import OutputTooLarge

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 262_144
MAX_CAUSE_CHARS = 32_768
MAX_ERROR_CHARS = 256


class Responder:
    """Sends a task's single answer; an output too large goes to ``payload_bucket``."""

    def __init__(self, sfn: Any, s3: Any, provider_id: str, payload_bucket: str | None) -> None:
        self._sfn = sfn
        self._s3 = s3
        self._provider = provider_id
        self._payload_bucket = payload_bucket

    def success(self, token: str, output: dict[str, Any]) -> None:
        """SendTaskSuccess with ``output``, moving its payload to S3 if it is too large."""
        text = json.dumps(output, separators=(",", ":"))
        if len(text.encode()) > MAX_OUTPUT_BYTES:
            try:
                text = self._offload(output)
            except OutputTooLarge as exc:
                self.failure(token, exc.code, exc.message)
                return
        self._send("success", self._sfn.send_task_success, taskToken=token, output=text)

    def failure(self, token: str, error: str, cause: str) -> None:
        """SendTaskFailure; ``cause`` is expected within limits (see :func:`bounded_cause`)."""
        self._send(
            "failure",
            self._sfn.send_task_failure,
            taskToken=token,
            error=error[:MAX_ERROR_CHARS],
            cause=cause[:MAX_CAUSE_CHARS],
        )

    def _offload(self, output: dict[str, Any]) -> str:
        if not self._payload_bucket:
            raise OutputTooLarge(
                f"the task's output is over {MAX_OUTPUT_BYTES} bytes and no payload_bucket is configured"
            )
        key = f"provider-gateway/payloads/{self._provider}/{uuid.uuid4()}.json"
        body = json.dumps(output.get("payload"), separators=(",", ":")).encode()
        self._s3.put_object(Bucket=self._payload_bucket, Key=key, Body=body, ContentType="application/json")
        slim = dict(output)
        slim["payload"] = {"Bucket": self._payload_bucket, "Key": key}
        text = json.dumps(slim, separators=(",", ":"))
        if len(text.encode()) > MAX_OUTPUT_BYTES:
            raise OutputTooLarge(f"the task's output is over {MAX_OUTPUT_BYTES} bytes even without its payload")
        return text

    def _send(self, what: str, call: Any, **kwargs: Any) -> None:
        try:
            call(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            log.warning("SendTask%s refused (%s): %s", what.capitalize(), code, exc)
        except BotoCoreError as exc:
            log.error("SendTask%s failed: %s", what.capitalize(), exc)


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
