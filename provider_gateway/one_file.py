"""One file from a provider into S3 without Step Functions.

The engine's copy (streaming, verification, resume, clean aborts) for the
``provider-gateway download`` command, the AWS Batch job that runs it, and the
streaming Lambda handler. The provider's settings come from ``collections.yml``
or, for a plain URL, from the URL itself.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from provider_gateway.config.model import Config, ConnConfig, GatewayConfig, ProviderConfig
from provider_gateway.errors import GatewayError, GatewayShutdown, InvalidRequest
from provider_gateway.messages import Checksum, FileRequest, FileResult, result_fields
from provider_gateway.protocols import (
    REGISTRY,
    URL_TYPES,
    Connection,
    ConnectionSettings,
    UrlSettings,
    check_url,
    connection_factory,
)
from provider_gateway.transfer.copy import CopyOptions, CopyOutcome, copy_file
from provider_gateway.transfer.stream import ProgressCallback, TransferStream
from provider_gateway.urls import parse_url, redact_url, url_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """How to reach one file: the provider's connection settings and the URL to fetch."""

    conn: ConnConfig
    url: str
    options: CopyOptions = field(default_factory=CopyOptions)
    settings: ConnectionSettings = field(default_factory=ConnectionSettings)
    allowed_buckets: tuple[str, ...] = ()


def source_from_provider(gateway: GatewayConfig, url: str) -> Source:
    """The file at ``url`` of a configured provider; InvalidRequest if the URL is not the provider's."""
    check_url(gateway.conn, url)
    return Source(
        conn=gateway.conn,
        url=url,
        options=gateway.copy_options,
        settings=gateway.connection_settings,
        allowed_buckets=gateway.allowed_buckets,
    )


def choose_provider(config: Config, url: str, provider_id: str | None) -> ProviderConfig:
    """The provider named ``provider_id``, or else the one provider that ``url`` belongs to."""
    if provider_id is not None:
        try:
            return config.provider(provider_id)
        except KeyError:
            raise InvalidRequest(f"no provider {provider_id!r} in the config") from None
    matching = []
    for provider in config.providers:
        try:
            check_url(provider.gateway.conn, url)
        except InvalidRequest:
            continue
        matching.append(provider)
    if len(matching) != 1:
        found = ", ".join(p.id for p in matching) or "none"
        raise InvalidRequest(
            f"{redact_url(url)} belongs to {len(matching)} configured providers ({found}): name one with --provider"
        )
    return matching[0]


def source_from_url(
    url: str,
    known_hosts_file: str | None = None,
    identity_file: str | None = None,
    ca_bundle: str | None = None,
) -> Source:
    """Connection settings read off the URL alone: scheme, host, port and any ``user:password@``.

    The credentials are moved out of the URL into the connection settings, so
    they are sent only to that host and never logged. An sftp URL needs a user
    name and a known host key (``known_hosts_file``, else ``~/.ssh/known_hosts``);
    it logs in with ``identity_file``, else the password, else as ``ssh`` does
    (ssh-agent's keys, then ``~/.ssh/id_rsa``, ``id_ecdsa``, ``id_ed25519``).
    ``ca_bundle`` verifies an https or ftps server against these CA certificates.
    ftp and sftp paths are absolute from the server's root.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if not host:
        raise InvalidRequest(f"{redact_url(url)} names no host")
    _check_option_files(scheme, identity_file, ca_bundle)
    if scheme not in URL_TYPES:
        raise InvalidRequest(f"scheme {parts.scheme or '(none)'!r} is not supported ({', '.join(URL_TYPES)})")
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    kind = URL_TYPES[scheme]
    conn = REGISTRY[kind].from_url(
        UrlSettings(
            type=kind,
            host=host,
            port=parts.port,
            netloc=netloc,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            known_hosts_file=known_hosts_file,
            identity_file=identity_file,
            ca_bundle=ca_bundle,
        )
    )
    check_url(conn, bare)
    return Source(conn=conn, url=bare)


def _check_option_files(scheme: str, identity_file: str | None, ca_bundle: str | None) -> None:
    for option, path, schemes in (
        ("--identity-file", identity_file, ("sftp",)),
        ("--ca-bundle", ca_bundle, ("https", "ftps")),
    ):
        if path is None:
            continue
        if scheme not in schemes:
            raise InvalidRequest(f"{option} applies to {' and '.join(schemes)} URLs, not {scheme}")
        if not Path(path).is_file():
            raise InvalidRequest(f"{option}: no file at {path}")


def _split(url: str) -> SplitResult:
    parse_url(url)  # InvalidRequest for anything two parsers could read differently
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InvalidRequest(f"not a valid URL: {redact_url(url)} ({exc})") from None
    return parts


def s3_target(target: str, url: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); a key ending in ``/`` (or none) gets the URL's file name."""
    parts = urlsplit(target)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidRequest(f"target {target!r} is not s3://BUCKET/KEY")
    key = parts.path.lstrip("/")
    if not key or key.endswith("/"):
        name = posixpath.basename(url_path(url))
        if not name:
            raise InvalidRequest(f"{redact_url(url)} names no file, so the target needs a full key")
        key += name
    return parts.netloc, key


def file_request(
    source: Source,
    bucket: str,
    key: str,
    version: str | None = None,
    size: int | None = None,
    checksum: Checksum | None = None,
) -> FileRequest:
    """The request for ``source``'s file, refused if the bucket is not allowed for its provider."""
    if source.allowed_buckets and bucket not in source.allowed_buckets:
        raise InvalidRequest(f"bucket {bucket!r} is not in allowed_buckets")
    return FileRequest(index=0, url=source.url, bucket=bucket, key=key, version=version, size=size, checksum=checksum)


def download(
    source: Source,
    request: FileRequest,
    s3: Any,
    stop: threading.Event,
    progress: ProgressCallback | None = None,
    on_size: Callable[[int | None], None] | None = None,
    stop_reason: Callable[[], GatewayError] = lambda: GatewayShutdown("stopped before the file was complete"),
) -> CopyOutcome:
    """Copy one file over a connection of its own, closed at the end.

    Setting ``stop`` cancels the copy: the upload is aborted and the result
    carries ``stop_reason()``'s code.
    """
    holder: list[Connection] = []
    factory = connection_factory(source.conn)

    def connection() -> Connection:
        if holder and not holder[0].check():
            _close(holder.pop())
        if not holder:
            holder.append(factory(source.conn, source.settings))
        return holder[0]

    def cancelled() -> GatewayError | None:
        return stop_reason() if stop.is_set() else None

    try:
        return copy_file(connection, request, s3, source.options, stop, cancelled, progress, on_size)
    finally:
        if holder:
            _close(holder.pop())


def _close(connection: Connection) -> None:
    try:
        connection.close()
    except Exception:  # a connection that fails to close is gone either way
        log.debug("closing the connection failed", exc_info=True)


def result_line(request: FileRequest, outcome: CopyOutcome) -> dict[str, Any]:
    """The JSON-ready summary of one download: what the command prints and the Lambda returns."""
    result: FileResult = outcome.result
    line: dict[str, Any] = {
        "source": redact_url(request.url),
        "target": {"bucket": request.bucket, "key": request.key},
        **result_fields(result),
        "seconds": round(outcome.seconds, 3),
    }
    if outcome.seconds > 0 and result.bytes:
        line["mb_per_s"] = round(result.bytes / outcome.seconds / 1e6, 2)
    if request.version is not None:
        line["version"] = request.version
    return line


def fetch(source: Source, max_bytes: int) -> bytes:
    """The whole (small) file at ``source.url``, such as a provider's file list.

    More than ``max_bytes`` is an InvalidRequest: this is not the way to copy data.
    """
    connection = connection_factory(source.conn)(source.conn, source.settings)
    try:
        stream = connection.open(source.url, 0)
        try:
            data = TransferStream(stream, None, None, lambda: None).read(max_bytes + 1)
        finally:
            stream.close()
    finally:
        _close(connection)
    if len(data) > max_bytes:
        raise InvalidRequest(f"{redact_url(source.url)} is over {max_bytes} bytes")
    return data
