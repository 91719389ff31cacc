"""Running ``provider-gateway download``: one file into S3, a JSON line, an exit status per error code.

Imported only when the command runs, so that the other commands start without the transfer code.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import click
from tqdm import tqdm

from provider_gateway import one_file
from provider_gateway.aws import AwsClients
from provider_gateway.config import Config
from provider_gateway.errors import GatewayError, exit_status
from provider_gateway.messages import Checksum, FileRequest, FileResult, result_fields
from provider_gateway.urls import redact_url


def run_download(
    source_url: str,
    target: str,
    *,
    config: Config | None,
    provider_id: str | None,
    version: str | None,
    checksum: str | None,
    size: int | None,
    known_hosts: str | None,
    progress: bool,
    identity_file: str | None = None,
    ca_bundle: str | None = None,
) -> int:
    """Copy ``source_url`` to ``target``; print the JSON result line; return the exit status."""
    try:
        if config is None:
            source = one_file.source_from_url(source_url, known_hosts, identity_file, ca_bundle)
        else:
            source = one_file.source_from_provider(
                one_file.choose_provider(config, source_url, provider_id).gateway, source_url
            )
        bucket, key = one_file.s3_target(target, source.url)
        request = one_file.file_request(
            source,
            bucket,
            key,
            version=version,
            size=size,
            checksum=Checksum.from_text(checksum) if checksum else None,
        )
    except GatewayError as exc:
        return _refused(source_url, target, exc)

    stop = threading.Event()
    previous = _stop_on_signals(stop)
    bar = _progress_bar(request, progress)
    try:
        outcome = one_file.download(
            source,
            request,
            AwsClients(max_pool=16).s3(),
            stop,
            progress=_counter(bar) if bar is not None else None,
            on_size=_sizer(bar) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _report(one_file.result_line(request, outcome), outcome.result)


def _refused(source_url: str, target: str, exc: GatewayError) -> int:
    result = FileResult.failed(exc)
    return _report({"source": redact_url(source_url), "target": target, **result_fields(result)}, result)


def _report(line: dict[str, Any], result: FileResult) -> int:
    """Print the JSON line (and a failure's code and message on stderr); return the exit status."""
    click.echo(json.dumps(line))
    if not result.success:
        click.echo(f"error: {result.error_code}: {result.error}", err=True)
    return exit_status(result.error_code)


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM (AWS Batch stopping the job) and SIGINT abort the upload cleanly."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        click.echo(f"{signal.Signals(signum).name}: aborting the upload", err=True)
        stop.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    return previous


def _counter(bar: tqdm[Any]) -> Callable[[int], None]:
    def count(n: int) -> None:
        bar.update(n)

    return count


def _sizer(bar: tqdm[Any]) -> Callable[[int | None], None]:
    def size(total: int | None) -> None:
        # Set again on a restart from byte 0, so the bar starts over with the file.
        bar.reset(total=total)

    return size


def _progress_bar(request: FileRequest, enabled: bool) -> tqdm[Any] | None:
    if not enabled:
        return None
    return tqdm(
        total=request.size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=request.key.rsplit("/", 1)[-1],
        file=sys.stderr,
        dynamic_ncols=True,
    )
