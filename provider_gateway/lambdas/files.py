"""The provider's file list, as the Map state of the callback workflow iterates it."""

from __future__ import annotations

import functools
import os
import posixpath
from typing import Any

from provider_gateway import json_input, one_file
from provider_gateway.config import ProviderConfig
from provider_gateway.errors import GatewayError, InvalidRequest
from provider_gateway.lambdas.environment import (
    DEFAULT_LAMBDA_MAX_BYTES,
    from_gateway_error,
    int_setting,
    provider_config,
)
from provider_gateway.messages import FileRequest, parse_download_task, shown_url
from provider_gateway.protocols import check_url
from provider_gateway.urls import url_path

MAX_LIST_BYTES = 16 * 1024 * 1024


def list_files(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Turn the callback's file list into one routed item per file.

    The event: ``provider`` (an id in ``GATEWAY_CONFIG``, optional),
    ``callback`` (the provider's callback body, with ``files`` inline or a
    ``files_url`` to a JSON list fetched with the provider's settings),
    ``target`` (``bucket`` and ``key_prefix``) and optionally ``use_gateway``
    (default: true when the provider is configured). A file is a URL string or
    ``{"url", "size", "version", "checksum": {"type", "value"}, "key"}``.

    Each item carries the download task for the gateway activity and for the
    Lambda (``task``), the AWS Batch job parameters (``batch``), and what the
    Choice state routes on: ``connection_limited`` and ``size`` (-1 if unknown).
    A malformed list fails whole with InvalidRequest, naming the bad entry.
    """
    try:
        return _list_files(event)
    except GatewayError as exc:
        raise from_gateway_error(exc) from exc


def _list_files(event: dict[str, Any]) -> dict[str, Any]:
    provider = _provider(event.get("provider"))
    callback = event.get("callback")
    if not isinstance(callback, dict):
        raise InvalidRequest("list_files: the event needs the provider's callback body under 'callback'")
    raw = callback.get("files")
    if raw is None:
        raw = _fetch_list(callback.get("files_url"), provider)
    if isinstance(raw, dict) and "files" in raw:
        raw = raw["files"]
    if not isinstance(raw, list):
        raise InvalidRequest('the file list must be a JSON list (or {"files": [...]})')
    target = event.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("bucket"), str):
        raise InvalidRequest("list_files: the event needs target.bucket (and target.key_prefix)")
    prefix = str(target.get("key_prefix", "")).strip("/")
    entries = [_entry(i, item, target["bucket"], prefix) for i, item in enumerate(raw)]
    url_check = functools.partial(check_url, provider.gateway.conn) if provider else _any_supported_url
    allowed = provider.gateway.allowed_buckets if provider else ()
    task = parse_download_task({"payload": {"files": entries}}, url_check, allowed)
    limited = provider is not None and event.get("use_gateway", True) is not False
    files = [_item(entry, request, provider, limited) for entry, request in zip(entries, task.files, strict=True)]
    return {
        "provider": provider.id if provider else event.get("provider"),
        "count": len(files),
        "lambda_max_bytes": int_setting("LAMBDA_MAX_BYTES", DEFAULT_LAMBDA_MAX_BYTES),
        "files": files,
    }


def _provider(provider_id: Any) -> ProviderConfig | None:
    # An unknown provider is not connection-limited: reached with the URL's own settings.
    return None if provider_id is None else provider_config(str(provider_id))


def _any_supported_url(url: str) -> object:
    return one_file.source_from_url(url)


def _fetch_list(url: Any, provider: ProviderConfig | None) -> Any:
    if not isinstance(url, str):
        raise InvalidRequest("the callback body has neither 'files' nor a 'files_url' string")
    source = one_file.source_from_provider(provider.gateway, url) if provider else one_file.source_from_url(url)
    data = one_file.fetch(source, MAX_LIST_BYTES)
    return json_input.load(data, f"the file list at {shown_url(url)}", max_bytes=MAX_LIST_BYTES)


def _entry(index: int, item: Any, bucket: str, prefix: str) -> dict[str, Any]:
    """A file of the list as a download entry of the contract (section 3)."""
    if isinstance(item, str):
        item = {"url": item}
    if not isinstance(item, dict) or not isinstance(item.get("url"), str):
        raise InvalidRequest(f"file list [{index}]: must be a URL or an object with a 'url' string")
    try:
        name = item.get("key") or posixpath.basename(url_path(item["url"]))
    except ValueError:
        raise InvalidRequest(f"file list [{index}]: not a valid URL: {shown_url(item['url'])!r}") from None
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"file list [{index}]: {shown_url(item['url'])!r} names no file; give it a 'key'")
    source = {k: item[k] for k in ("url", "size", "version", "checksum") if item.get(k) is not None}
    key = f"{prefix}/{name.lstrip('/')}" if prefix else name.lstrip("/")
    return {"type": "download", "source": source, "target": {"bucket": bucket, "key": key}}


def _item(
    entry: dict[str, Any], request: FileRequest, provider: ProviderConfig | None, limited: bool
) -> dict[str, Any]:
    checksum = request.checksum
    return {
        "url": request.url,
        "key": request.key,
        "size": request.size if request.size is not None else -1,
        "provider": provider.id if provider else None,
        "connection_limited": limited,
        "task": {"payload": {"files": [entry]}, **({"provider": provider.id} if provider else {})},
        "batch": {
            "source": request.url,
            "target": f"s3://{request.bucket}/{request.key}",
            "provider": provider.id if provider else "",
            "config": os.environ.get("GATEWAY_CONFIG", "") if provider else "",
            "version": request.version or "",
            "checksum": f"{checksum.algorithm}:{checksum.value}" if checksum and checksum.value else "",
            "size": str(request.size) if request.size is not None else "",
        },
    }
