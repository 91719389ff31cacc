"""Task messages: parsing a download task's input, and building its output.

The format is the contract's section 3, compatible with the messages the
original provider gateway consumed. Everything not understood here is passed
through untouched into the output.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from provider_gateway import json_input
from provider_gateway.errors import GatewayError, InvalidRequest
from provider_gateway.urls import redact_url, url_path

FROM_CONFIG = "FROM_CONFIG"
MAX_OBJECT_SIZE = 5 * 1024**4  # S3's largest object: 5 TiB
MAX_KEY_BYTES = 1024  # S3's longest key, in UTF-8 bytes
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.-]+)\}")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

PointerReader = Callable[[str, str, int], bytes]
"""Reads at most ``limit`` bytes of the object at (bucket, key, limit): how an S3 payload pointer is followed."""
RawInput = str | Mapping[str, Any] | None
"""A task's input: JSON text (as Step Functions delivers it) or the object already decoded (a Lambda event)."""


HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
"""The checksum algorithms a request may name, and the length of each one's hex digest."""
CHECKSUM_ALGORITHMS = tuple(HEX_LENGTHS)


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algorithm`` is one of :data:`CHECKSUM_ALGORITHMS`, ``value`` hex.

    ``url`` names a sidecar file at the provider (``name.sha256``) holding the
    value instead; it is read before the file itself.
    """

    algorithm: str
    value: str
    url: str | None = None

    @classmethod
    def parse(cls, algorithm: object, value: object, names: tuple[str, str] = ("type", "value")) -> Checksum:
        """The digest ``value`` of ``algorithm``, checked: InvalidRequest unless it is hex of the algorithm's length.

        ``names`` are what the caller calls the algorithm and the digest, for the message.
        """
        known = cls.algorithm_named(algorithm, names[0])
        length = HEX_LENGTHS[known]
        if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", value):
            raise InvalidRequest(f"{names[1]}: must be a {length}-digit hex {known} digest")
        return cls(algorithm=known, value=value.lower())

    @classmethod
    def from_text(cls, text: str) -> Checksum:
        """``ALGO:HEX`` as ``provider-gateway download --checksum`` takes it (either part in any case)."""
        algorithm, _, value = text.partition(":")
        return cls.parse(algorithm.strip().lower(), value.strip(), ("--checksum ALGO", "--checksum HEX"))

    @staticmethod
    def algorithm_named(algorithm: object, name: str = "type") -> str:
        """``algorithm`` if it is one of :data:`CHECKSUM_ALGORITHMS`, else InvalidRequest naming ``name``."""
        if not isinstance(algorithm, str) or algorithm not in HEX_LENGTHS:
            raise InvalidRequest(f"{name}: must be one of {', '.join(CHECKSUM_ALGORITHMS)}; got {_shown(algorithm)}")
        return algorithm


@dataclass(frozen=True)
class FileRequest:
    """One file of a task: where it comes from, where it goes, what it must be."""

    index: int
    url: str
    bucket: str
    key: str
    version: str | None = None
    size: int | None = None
    checksum: Checksum | None = None

    @property
    def path(self) -> str:
        """The decoded path of the source URL."""
        return url_path(self.url)


@dataclass(frozen=True)
class FileResult:
    """What happened to one file."""

    success: bool
    bytes: int = 0
    version_skip: bool = False
    error_code: str | None = None
    error: str | None = None
    checksum: Checksum | None = None

    @classmethod
    def failed(cls, error: GatewayError) -> FileResult:
        """The result of a file that failed with ``error``: its code and message."""
        return cls(False, error_code=error.code, error=error.message)


@dataclass(frozen=True)
class DownloadTask:
    """A parsed task: the original message, its file requests, and each file's input entry.

    ``kind`` is ``download`` (contract section 3) or ``sync`` (section 4); it
    decides the shape of the output.
    """

    message: dict[str, Any]
    payload: Any
    files: tuple[FileRequest, ...]
    entries: tuple[dict[str, Any], ...]
    kind: str = "download"


def parse_download_task(
    raw_input: RawInput,
    url_check: Callable[[str], object],
    allowed_buckets: tuple[str, ...] = (),
    read_pointer: PointerReader | None = None,
    payload_bucket: str | None = None,
) -> DownloadTask:
    """Parse and check a download task's input; InvalidRequest says what is wrong.

    ``url_check`` raises InvalidRequest for URLs that are not the provider's.
    An S3 payload pointer is followed only into ``allowed_buckets`` (when set)
    and ``payload_bucket``, and only when it is at most
    :data:`~provider_gateway.json_input.MAX_BYTES` long.
    """
    message = _json_object(raw_input)
    payload = _payload(message, _PointerPolicy(read_pointer, allowed_buckets, payload_bucket))
    files = payload.get("files")
    if not isinstance(files, list) or not files:
        raise InvalidRequest("payload.files: must be a non-empty list of files")
    requests = tuple(_file_request(i, entry, message, url_check, allowed_buckets) for i, entry in enumerate(files))
    return DownloadTask(message=message, payload=payload, files=requests, entries=tuple(files))


def parse_sync_task(
    raw_input: RawInput,
    url_check: Callable[[str], object],
    allowed_buckets: tuple[str, ...] = (),
    read_pointer: PointerReader | None = None,
    payload_bucket: str | None = None,
) -> DownloadTask:
    """Parse a sync task: ``payload`` is a list of ``{url, version}`` (plus ``size``, ``checksum``).

    Each entry becomes a download to its ``FROM_CONFIG`` target, from
    ``config.output`` or ``workflow_config_template.SyncHttpUrls.output``.
    """
    message = _json_object(raw_input)
    payload = _payload(message, _PointerPolicy(read_pointer, allowed_buckets, payload_bucket), expect=list)
    if not payload:
        raise InvalidRequest("payload: a sync request's payload must be a non-empty list of {url, version}")
    if output_config(message, "SyncHttpUrls") is None:
        raise InvalidRequest("config.output (or workflow_config_template.SyncHttpUrls.output) is required for sync")
    files = []
    for i, item in enumerate(payload):
        if not isinstance(item, dict):
            raise InvalidRequest(f"payload[{i}]: must be an object with url and version")
        source = {k: item[k] for k in ("url", "version", "size", "checksum") if k in item}
        entry = {"type": "download", "source": source, "target": FROM_CONFIG}
        files.append(_file_request(i, entry, message, url_check, allowed_buckets, template="SyncHttpUrls"))
    return DownloadTask(message=message, payload=payload, files=tuple(files), entries=tuple(payload), kind="sync")


def _json_object(raw_input: RawInput) -> dict[str, Any]:
    if raw_input is None or isinstance(raw_input, str):
        message = json_input.load(raw_input or "", "task input")
    else:
        message = raw_input
        json_input.check(message, "task input")
    if not isinstance(message, dict):
        raise InvalidRequest("task input must be a JSON object")
    return dict(message)


@dataclass(frozen=True)
class _PointerPolicy:
    """How an S3 payload pointer may be followed: with what, and into which buckets."""

    read: PointerReader | None
    allowed_buckets: tuple[str, ...]
    payload_bucket: str | None

    def buckets(self) -> tuple[str, ...]:
        extra = (self.payload_bucket,) if self.payload_bucket else ()
        return tuple(dict.fromkeys((*self.allowed_buckets, *extra)))

    def follow(self, pointer: dict[str, Any]) -> Any:
        bucket, key = pointer["Bucket"], pointer["Key"]
        if not isinstance(bucket, str) or not _BUCKET.match(bucket):
            raise InvalidRequest(f"payload.Bucket: an S3 pointer needs a valid bucket name; got {_shown(bucket)}")
        if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidRequest(f"payload.Key: an S3 pointer needs a key of 1 to {MAX_KEY_BYTES} bytes")
        if self.read is None:
            raise InvalidRequest("payload: an S3 pointer cannot be followed here")
        if bucket not in self.buckets():
            allowed = ", ".join(self.buckets()) or "none: set payload_bucket or allowed_buckets"
            raise InvalidRequest(f"payload.Bucket: S3 pointers are read only from allowed buckets ({allowed})")
        limit, where = json_input.MAX_BYTES, _shown(f"s3://{bucket}/{key}")
        try:
            data = self.read(bucket, key, limit + 1)
        except Exception as exc:  # botocore errors have many shapes; all mean "cannot read"
            raise InvalidRequest(f"payload: cannot read the S3 pointer {where}: {exc}") from exc
        return json_input.load(data, f"the payload at {where}", max_bytes=limit)


def _payload(message: dict[str, Any], pointers: _PointerPolicy, expect: type = dict) -> Any:
    payload = message.get("payload")
    if isinstance(payload, dict) and set(payload) == {"Bucket", "Key"}:
        payload = pointers.follow(payload)
    if not isinstance(payload, expect):
        raise InvalidRequest(
            "payload: required, an object with a 'files' list"
            if expect is dict
            else "payload: a sync request's payload must be a non-empty list of {url, version}"
        )
    return payload


def _file_request(
    index: int,
    entry: Any,
    message: dict[str, Any],
    url_check: Callable[[str], object],
    allowed_buckets: tuple[str, ...],
    template: str = "DownloadActivity",
) -> FileRequest:
    where = f"payload.files[{index}]" if template == "DownloadActivity" else f"payload[{index}]"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where}: must be an object")
    kind = entry.get("type", "download")
    if kind != "download":
        raise InvalidRequest(f"{where}.type: only 'download' is supported, got {_shown(kind)}")
    source = entry.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"{where}.source: required, an object with 'url'")
    url = source.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.source.url: required, a URL string")
    _check_url(url_check, url, f"{where}.source.url")
    bucket, key = _target(entry.get("target"), url, message, where, template)
    if allowed_buckets and bucket not in allowed_buckets:
        raise InvalidRequest(f"{where}.target.bucket: bucket {bucket!r} is not in allowed_buckets")
    return FileRequest(
        index=index,
        url=url,
        bucket=bucket,
        key=key,
        version=_optional_str(source, "version", where),
        size=_size(source.get("size"), where),
        checksum=_checksum(source.get("checksum"), where, url_check),
    )


def _check_url(url_check: Callable[[str], object], url: str, where: str) -> None:
    try:
        url_check(url)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {_without_url_secret(exc.message, url)}") from exc
    except ValueError as exc:  # a URL urllib cannot even split
        raise InvalidRequest(f"{where}: not a valid URL: {_without_url_secret(str(exc), url)}") from exc


def _target(target: Any, url: str, message: dict[str, Any], where: str, template: str) -> tuple[str, str]:
    if target == FROM_CONFIG:
        output = output_config(message, template)
        if output is None:
            raise InvalidRequest(
                f"{where}.target: FROM_CONFIG needs config.output (or workflow_config_template.{template}.output)"
            )
        return target_from_config(output, url, message, f"{where}.target")
    if not isinstance(target, dict):
        raise InvalidRequest(f'{where}.target: required, {{bucket, key}} or "FROM_CONFIG"')
    bucket, key = target.get("bucket"), target.get("key")
    if not isinstance(bucket, str) or not _BUCKET.match(bucket):
        raise InvalidRequest(f"{where}.target.bucket: required, a valid S3 bucket name; got {_shown(bucket)}")
    if not isinstance(key, str):
        raise InvalidRequest(f"{where}.target.key: required, a non-empty S3 key of at most {MAX_KEY_BYTES} bytes")
    _check_key(key, f"{where}.target.key")
    return bucket, key


def _check_key(key: str, where: str) -> None:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidRequest(f"{where}: must be a non-empty S3 key of at most {MAX_KEY_BYTES} bytes")
    control = _CONTROL.search(key)
    if control:
        raise InvalidRequest(f"{where}: holds the control character {control.group()!r}, which a key may not carry")


def output_config(message: dict[str, Any], template_name: str) -> dict[str, Any] | None:
    """``config.output``, else ``workflow_config_template.<template_name>.output``."""
    templates = message.get("workflow_config_template")
    for config in (
        message.get("config"),
        templates.get(template_name) if isinstance(templates, dict) else None,
    ):
        output = config.get("output") if isinstance(config, dict) else None
        if isinstance(output, dict):
            return output
    return None


def target_from_config(output: dict[str, Any], url: str, message: dict[str, Any], where: str) -> tuple[str, str]:
    """The (bucket, key) that ``FROM_CONFIG`` means for ``url``.

    The key ends with the decoded basename of the URL path, which must name a
    file: not empty, ``.`` or ``..``, and without control characters.
    """
    bucket = fill_placeholders(output.get("bucket"), message, f"{where}: config.output.bucket")
    prefix = fill_placeholders(output.get("key_prefix", ""), message, f"{where}: config.output.key_prefix")
    if not _BUCKET.match(bucket):
        raise InvalidRequest(f"{where}: config.output.bucket is not a valid bucket name: {_shown(bucket)}")
    try:
        name = posixpath.basename(url_path(url))
    except ValueError:
        name = ""
    if name in ("", ".", ".."):
        raise InvalidRequest(f"{where}: the URL {_shown(shown_url(url))} names no file, so FROM_CONFIG has no key")
    prefix = prefix.strip("/")
    key = f"{prefix}/{name}" if prefix else name
    _check_key(key, f"{where}: the FROM_CONFIG key for {_shown(shown_url(url))}")
    return bucket, key


def fill_placeholders(template: Any, message: dict[str, Any], where: str) -> str:
    """Replace each ``{a.b.c}`` in ``template`` with that path's value in the message."""
    if not isinstance(template, str):
        raise InvalidRequest(f"{where}: required, a string")

    def value(match: re.Match[str]) -> str:
        node: Any = message
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                raise InvalidRequest(f"{where}: placeholder {{{match.group(1)}}} is not in the message")
            node = node[part]
        if isinstance(node, dict | list):
            raise InvalidRequest(f"{where}: placeholder {{{match.group(1)}}} is not a plain value")
        return str(node)

    return _PLACEHOLDER.sub(value, template)


def _optional_str(source: dict[str, Any], key: str, where: str) -> str | None:
    value = source.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidRequest(f"{where}.source.{key}: must be a string")
    return str(value)


def _size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"{where}.source.size: must be a non-negative integer, got {_shown(value)}")
    if value > MAX_OBJECT_SIZE:
        raise InvalidRequest(f"{where}.source.size: {value} is over S3's largest object, 5 TiB ({MAX_OBJECT_SIZE})")
    return value


def _checksum(value: Any, where: str, url_check: Callable[[str], object]) -> Checksum | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}.source.checksum: must be {{type, value}} or {{type, url}}")
    names = (f"{where}.source.checksum.type", f"{where}.source.checksum.value")
    algorithm = Checksum.algorithm_named(value.get("type"), names[0])
    digest, sidecar = value.get("value"), value.get("url")
    if sidecar is not None and digest is None:
        if not isinstance(sidecar, str):
            raise InvalidRequest(f"{where}.source.checksum.url: must be a URL string")
        _check_url(url_check, sidecar, f"{where}.source.checksum.url")
        return Checksum(algorithm=algorithm, value="", url=sidecar)
    return Checksum.parse(algorithm, digest, names)


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters: a message stays readable whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def shown_url(url: str) -> str:
    """:func:`redact_url`, or a placeholder for a URL too broken to split: never raises."""
    try:
        return redact_url(url)
    except ValueError:
        return "(an invalid URL)"


def _without_url_secret(text: str, url: str) -> str:
    """``text`` with every copy of ``url`` shown without its userinfo."""
    shown = shown_url(url)
    return text.replace(repr(url), repr(shown)).replace(url, shown) if shown != url else text


def parse_sidecar(text: bytes, algorithm: str, where: str) -> str:
    """The digest in a sidecar checksum file (``md5sum`` style: the first hex word of the right length)."""
    match = re.search(rb"\b([0-9a-fA-F]{%d})\b" % HEX_LENGTHS[algorithm], text)
    if match is None:
        raise InvalidRequest(f"{where}: no {algorithm} digest in the sidecar checksum file")
    return match.group(1).decode().lower()


def file_output(entry: dict[str, Any], request: FileRequest, result: FileResult) -> dict[str, Any]:
    """The output form of one ``payload.files[i]``: the input plus what happened."""
    out = copy.deepcopy(entry)
    holder = out["source"] if isinstance(out.get("source"), dict) else out
    if isinstance(holder.get("url"), str):
        holder["url"] = shown_url(holder["url"])  # a password in a URL is not passed on
    out["target"] = {"bucket": request.bucket, "key": request.key}
    out.update(result_fields(result))
    return out


def result_fields(result: FileResult) -> dict[str, Any]:
    """What happened to a file, as every output shows it: success, bytes, skip, checksum, error."""
    fields: dict[str, Any] = {"success": result.success, "bytes": result.bytes}
    if result.version_skip:
        fields["version_skip"] = True
    if result.checksum is not None:
        fields["checksum"] = {"type": result.checksum.algorithm, "value": result.checksum.value}
    if not result.success:
        fields["error_code"] = result.error_code
        fields["error"] = result.error
    return fields


def download_output(task: DownloadTask, results: list[FileResult]) -> dict[str, Any]:
    """The output of a download task: the input with every file given its result."""
    message = copy.deepcopy(task.message)
    payload = copy.deepcopy(task.payload)
    payload["files"] = [file_output(task.entries[r.index], r, results[r.index]) for r in task.files]
    message["payload"] = payload
    return message


def sync_output(task: DownloadTask, results: list[FileResult]) -> dict[str, Any]:
    """The output of a sync task: ``payload`` lists every file now in S3.

    ``exception`` is ``NotNeededWorkflowError`` when nothing was new, and
    ``RemoteResourceError`` when a file failed (``per_file`` mode).
    """
    message = copy.deepcopy(task.message)
    message["payload"] = [
        {"Bucket": request.bucket, "Key": request.key}
        for request, result in zip(task.files, results, strict=True)
        if result.success
    ]
    if any(not r.success for r in results):
        message["exception"] = "RemoteResourceError"
    elif all(r.version_skip for r in results):
        message["exception"] = "NotNeededWorkflowError"
    return message


def task_output(task: DownloadTask, results: list[FileResult]) -> dict[str, Any]:
    """The output for the task's kind."""
    return sync_output(task, results) if task.kind == "sync" else download_output(task, results)
