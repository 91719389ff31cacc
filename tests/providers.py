"""One interface over the test providers of every protocol, for the contract suite."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme

from provider_gateway.local.ftp_server import FileFTPServer
from provider_gateway.local.http_server import FileHTTPServer
from provider_gateway.local.sftp_server import InProcessSFTPServer
from tests.gridftp_server import GLOBUS_URL_COPY, GRIDFTP_SERVER, GridftpServer
from tests.servers import SSHD, CountingProxy, Sshd

PROTOCOLS = ["http", "ftp", "ftps", "sftp", "gridftp"]


@dataclass
class Provider:
    """A running provider: where to put files, how to name them, how to connect."""

    kind: str
    put: Callable[[str, bytes], None]
    url: Callable[[str], str]
    conn_config: Callable[[bool], dict[str, Any]]
    sessions_max: Callable[[], int]
    sessions_total: Callable[[], int]
    logins: Callable[[], int]
    drop_sessions: Callable[[], int]
    notes: list[str] = field(default_factory=list)
    non_ascii_names: bool = True
    # cut(name, at): the next transfer of ``name`` breaks after about ``at`` bytes, and the server
    # withholds the size where its protocol allows; returns a check that the cut happened.
    cut: Callable[[str, int], Callable[[], bool]] | None = None


@contextmanager
def http_provider(tmp: Path) -> Iterator[Provider]:
    with FileHTTPServer(basic_auth=("provider", "secret")) as server:

        def conn(valid: bool) -> dict[str, Any]:
            return {
                "type": "http",
                "host": server.host,
                "username": "provider",
                "password": "secret" if valid else "wrong",
            }

        yield Provider(
            "http",
            put=lambda name, data: server.files.__setitem__("/data/" + name, data),
            url=lambda name: server.url("/data/" + quote(name)),
            conn_config=conn,
            sessions_max=lambda: server.connections.max,
            sessions_total=lambda: server.connections.total,
            logins=lambda: server.connections.total,
            drop_sessions=lambda: 0,
            cut=lambda name, at: _fraction_cut(server.resets, "/data/" + name, at / len(server.files["/data/" + name])),
        )


@contextmanager
def ftp_provider(tmp: Path, tls: bool) -> Iterator[Provider]:
    root = tmp / "ftp-root"
    root.mkdir()
    cert = None
    tls_keys: dict[str, Any] = {}
    if tls:
        authority = trustme.CA()
        cert = tmp / "ftp-cert.pem"
        authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
        authority.cert_pem.write_to_path(str(tmp / "ftp-ca.pem"))
        tls_keys = {"ca_bundle": str(tmp / "ftp-ca.pem")}
    kind = "ftps" if tls else "ftp"
    with FileFTPServer(root, tls_cert=cert) as server:

        def conn(valid: bool) -> dict[str, Any]:
            return {
                "type": kind,
                "host": "127.0.0.1",
                "port": server.port,
                "username": "provider",
                "password": "secret" if valid else "wrong",
                **tls_keys,
            }

        yield Provider(
            kind,
            put=lambda name, data: (root / name).write_bytes(data),
            url=lambda name: f"ftp://127.0.0.1:{server.port}/{quote(name)}",
            conn_config=conn,
            sessions_max=lambda: server.connections.max,
            sessions_total=lambda: server.connections.total,
            logins=lambda: server.logins,
            drop_sessions=server.drop_sessions,
            cut=lambda name, at: _ftp_cut(server, name, at),
        )


def _fraction_cut(resets: dict[str, list[float]], key: str, fraction: float) -> Callable[[], bool]:
    resets[key] = [fraction]
    return lambda: resets[key] == []


def _ftp_cut(server: FileFTPServer, name: str, at: int) -> Callable[[], bool]:
    server.size_allowed = False
    return _fraction_cut(server.resets, name, at / (server.root / name).stat().st_size)


def _proxy_cut(proxy: CountingProxy, at: int) -> Callable[[], bool]:
    proxy.cuts = [proxy.relayed + at]
    return lambda: proxy.cuts == []


def _gridftp_cut(server: GridftpServer, at: int) -> Callable[[], bool]:
    """Kill the session process once it has read ``at`` bytes (its data connections bypass the proxy)."""
    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in server.session_pids():
                if server.bytes_read(pid) > at:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.005)

    threading.Thread(target=watch, name="gridftp-cut", daemon=True).start()
    return lambda: bool(killed)


@contextmanager
def sftp_provider(tmp: Path) -> Iterator[Provider]:
    root = tmp / "sftp-root"
    root.mkdir()
    if SSHD is None:
        if os.environ.get("CI"):
            pytest.fail("OpenSSH sshd is missing in CI: .ci/run must install openssh-server")
        with in_process_sftp(root) as provider:
            yield provider
        return
    with ExitStack() as stack:
        sshd = Sshd(tmp / "sshd")
        stack.callback(sshd.stop)
        proxy = CountingProxy(sshd.port)
        stack.callback(proxy.close)

        def conn(valid: bool) -> dict[str, Any]:
            key = sshd.client_key if valid else sshd.other_key
            return {
                "type": "sftp",
                "host": "127.0.0.1",
                "port": proxy.port,
                "username": sshd.user,
                "private_key_file": str(key),
                "host_key": sshd.host_key_line,
            }

        yield Provider(
            "sftp",
            put=lambda name, data: (root / name).write_bytes(data),
            url=lambda name: f"sftp://127.0.0.1:{proxy.port}{quote(str(root / name))}",
            conn_config=conn,
            sessions_max=lambda: proxy.max_open,
            sessions_total=lambda: proxy.total,
            logins=lambda: sshd.logins,
            drop_sessions=proxy.drop,
            cut=lambda name, at: _proxy_cut(proxy, at),
        )


@contextmanager
def in_process_sftp(root: Path) -> Iterator[Provider]:
    message = "OpenSSH sshd is not installed: SFTP tests use the in-process paramiko server instead"
    warnings.warn(message, stacklevel=2)
    print(f"\nNOTE: {message}", file=sys.stderr)
    with InProcessSFTPServer(root) as server:

        def conn(valid: bool) -> dict[str, Any]:
            return {
                "type": "sftp",
                "host": "127.0.0.1",
                "port": server.port,
                "username": "provider",
                "password": "secret" if valid else "wrong",
                "host_key": server.host_key_line,
            }

        yield Provider(
            "sftp",
            put=lambda name, data: (root / name).write_bytes(data),
            url=lambda name: f"sftp://127.0.0.1:{server.port}/{quote(name)}",
            conn_config=conn,
            sessions_max=lambda: server.connections.max,
            sessions_total=lambda: server.connections.total,
            logins=lambda: server.logins,
            drop_sessions=server.drop_sessions,
            notes=[message],
        )


def require_gridftp() -> None:
    """Fail in CI, skip with the reason elsewhere, when the Grid Community Toolkit is missing."""
    missing = [
        name
        for name, path in (("globus-gridftp-server", GRIDFTP_SERVER), ("globus-url-copy", GLOBUS_URL_COPY))
        if not path
    ]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not installed: .ci/run installs globus-gridftp-server-progs and globus-gass-copy-progs"
    )
    (pytest.fail if os.environ.get("CI") else pytest.skip)(message)  # in CI a missing server is an error


@contextmanager
def gridftp_provider(tmp: Path) -> Iterator[Provider]:
    require_gridftp()
    with ExitStack() as stack:
        server = GridftpServer(tmp / "gridftp", users={"provider": "secret"})
        stack.callback(server.stop)
        proxy = CountingProxy(server.port)  # control sessions pass through it; data connections go direct
        stack.callback(proxy.close)

        def conn(valid: bool) -> dict[str, Any]:
            return {
                "type": "gridftp",
                "host": "127.0.0.1",
                "port": proxy.port,
                "username": "provider",
                "password": "secret" if valid else "wrong",
            }

        yield Provider(
            "gridftp",
            put=server.put,
            url=lambda name: f"ftp://127.0.0.1:{proxy.port}{quote(server.path(name))}",
            conn_config=conn,
            sessions_max=lambda: proxy.max_open,
            sessions_total=lambda: proxy.total,
            logins=lambda: server.connections.total,
            drop_sessions=proxy.drop,
            # globus-gridftp-server drops the bytes of a command that are not ASCII.
            non_ascii_names=False,
            cut=lambda name, at: _gridftp_cut(server, at),
        )


@contextmanager
def provider_for(kind: str, tmp: Path) -> Iterator[Provider]:
    """The running test provider for ``kind``."""
    if kind == "http":
        with http_provider(tmp) as provider:
            yield provider
    elif kind in ("ftp", "ftps"):
        with ftp_provider(tmp, tls=kind == "ftps") as provider:
            yield provider
    elif kind == "gridftp":
        with gridftp_provider(tmp) as provider:
            yield provider
    else:
        with sftp_provider(tmp) as provider:
            yield provider


__all__ = ["PROTOCOLS", "Provider", "provider_for", "require_gridftp"]
