"""One file streamed from the provider into S3 inside Lambda: memory only, no /tmp."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from provider_gateway import one_file
from provider_gateway.errors import GatewayError, GatewayShutdown, InvalidRequest
from provider_gateway.lambdas.environment import (
    clients,
    failure,
    from_gateway_error,
    provider_config,
    remaining_ms,
)
from provider_gateway.messages import parse_download_task

log = logging.getLogger(__name__)

# Time kept back from Lambda's limit to abort the multipart upload and answer.
SAFETY_MARGIN_S = 20.0


def download(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Copy the one file of ``event["task"]`` (a download task, contract section 3).

    ``event["provider"]`` names its provider in ``GATEWAY_CONFIG``; without it
    the URL's own settings are used. Returns the result line (as the download
    command prints it). A failure raises an error whose type is the contract's
    code, so the state machine can Retry or Catch it; running out of Lambda
    time aborts the upload and raises ``GatewayShutdown``, which the workflow
    sends on to AWS Batch.
    """
    try:
        source, request = _request(event)
    except GatewayError as exc:
        raise from_gateway_error(exc) from exc
    stop = threading.Event()
    budget_s = remaining_ms(context) / 1000 - SAFETY_MARGIN_S
    timer = threading.Timer(max(budget_s, 1.0), stop.set)
    timer.daemon = True
    timer.start()
    try:
        outcome = one_file.download(
            source,
            request,
            clients().s3(),
            stop,
            stop_reason=lambda: GatewayShutdown("Lambda's time limit is near: the file needs AWS Batch"),
        )
    finally:
        timer.cancel()
    line = one_file.result_line(request, outcome)
    log.info(json.dumps(line))
    if not outcome.result.success:
        raise failure(str(outcome.result.error_code), str(outcome.result.error))
    return line


def _request(event: dict[str, Any]) -> tuple[one_file.Source, Any]:
    task = event.get("task")
    if not isinstance(task, dict):
        raise InvalidRequest("download: the event needs 'task', a download task with one file")
    provider_id = event.get("provider") or task.get("provider")
    provider = provider_config(str(provider_id)) if provider_id else None
    if provider_id and provider is None and os.environ.get("GATEWAY_CONFIG"):
        raise InvalidRequest(f"no provider {str(provider_id)[:80]!r} in the config")

    def source_for(url: str) -> one_file.Source:
        """The URL's provider settings; InvalidRequest if the URL is not that provider's (the parse's URL check)."""
        if provider is not None:
            return one_file.source_from_provider(provider.gateway, url)
        return one_file.source_from_url(url)

    parsed = parse_download_task(task, source_for)
    if len(parsed.files) != 1:
        raise InvalidRequest(f"download: the task must hold one file, it holds {len(parsed.files)}")
    (file,) = parsed.files
    source = source_for(file.url)
    request = one_file.file_request(
        source, file.bucket, file.key, version=file.version, size=file.size, checksum=file.checksum
    )
    return source, request
