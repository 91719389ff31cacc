"""GridFTP providers through the Grid Community Toolkit's ``globus-url-copy``.

Each file is one ``globus-url-copy`` run whose destination is its standard
output, read here through a pipe: the bytes never touch a disk. The source
URL, with any password in it, goes through the program's standard input
(``-f -``), never its command line. A resumed file starts at
``-partial-offset``. X.509 credentials reach the program through the
standard ``X509_*`` variables of its environment, set from ``conn_config``.

A connection thread runs at most one such program at a time, so the server
sees at most one control session per thread, as ``num_connections``
promises. The program cannot take more files once started, so every file
opens a session of its own. gfal2, which could keep one open, holds a second
control session during every read (its open checks the file's existence on
another session), which would double what the provider sees.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import threading
from urllib.parse import quote, urlsplit

from provider_gateway.config.fields import Fields
from provider_gateway.config.model import GridftpConnConfig
from provider_gateway.errors import ConfigError, GatewayError, SourceAccessDenied, SourceNotFound, SourceUnavailable
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.spec import ProtocolSpec, UrlSettings, present, read_fields

PROGRAM = "globus-url-copy"
PIPE_SIZE = 1 << 20  # fewer, larger reads than the default 64 KiB pipe
EXIT_WAIT_S = 10.0
# Checked in this order: a failed login or credential says nothing about the file.
_LOGIN_REFUSED = re.compile(
    r"\b53[02]\b|login incorrect|not authorized|authenticat|credential|certificate|gss|proxy", re.IGNORECASE
)
_NOT_FOUND = re.compile(r"no such file|not found|PATH_NOT_FOUND", re.IGNORECASE)
_DENIED = re.compile(r"permission denied|PERMISSION_DENIED", re.IGNORECASE)
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def program() -> str:
    """The path of ``globus-url-copy``; SourceUnavailable naming the package if it is missing."""
    found = shutil.which(PROGRAM)
    if found is None:
        raise SourceUnavailable(
            f"{PROGRAM} is not installed: gridftp providers need it "
            "(Debian/Ubuntu: apt-get install globus-gass-copy-progs)"
        )
    return found


def translate(stderr: str, returncode: int | None, what: str, secrets: tuple[str, ...] = ()) -> GatewayError:
    """The contract error for a failed run, from what the program printed."""
    text = _USERINFO.sub("", stderr)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****").replace(quote(secret, safe=""), "****")
    text = " ".join(text.replace("error:", " ").split())[:600] or f"exit status {returncode}"
    if _LOGIN_REFUSED.search(text):
        return SourceAccessDenied(f"{what}: {text}")
    if _NOT_FOUND.search(text):
        return SourceNotFound(f"{what}: {text}")
    if _DENIED.search(text):
        return SourceAccessDenied(f"{what}: {text}")
    return SourceUnavailable(f"{what}: {text}")


class GridftpStream:
    """The output of one ``globus-url-copy`` run."""

    def __init__(self, owner: GridftpConnection, process: subprocess.Popen[bytes], what: str) -> None:
        self._owner = owner
        self._process = process
        self._what = what
        self.size: int | None = None  # globus-url-copy does not say; the task's size is checked instead
        self._ended = False
        assert process.stdout is not None  # started with stdout=PIPE
        self._fd = process.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._poll = select.poll()  # unlike select(), any descriptor number
        self._poll.register(self._fd, select.POLLIN)

    def read(self, amount: int) -> bytes:
        if self._ended:
            return b""
        if not self._poll.poll(self._owner.read_timeout_s * 1000):
            self._stop()
            raise SourceUnavailable(f"{self._what}: no data for {self._owner.read_timeout_s:g} s")
        try:
            piece = os.read(self._fd, min(amount, PIPE_SIZE))
        except (OSError, ValueError) as exc:  # the pipe was closed under us
            raise SourceUnavailable(f"{self._what}: reading {PROGRAM}'s output failed: {exc}") from exc
        if piece:
            return piece
        self._ended = True
        self._finish()
        return b""

    def _finish(self) -> None:
        """At the end of the output: the run must have succeeded, or the file is not whole."""
        try:
            self._process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self._stop()
            raise SourceUnavailable(f"{self._what}: {PROGRAM} did not exit after its output ended") from None
        assert self._process.stderr is not None  # started with stderr=PIPE
        err = self._process.stderr.read().decode("utf-8", "replace")
        self._release()
        if self._owner.aborted:
            raise SourceUnavailable(f"{self._what}: aborted ({PROGRAM} killed)")
        if self._process.returncode != 0:
            raise translate(err, self._process.returncode, self._what, self._owner.secrets)

    def _stop(self) -> None:
        if self._process.poll() is None:
            _kill(self._process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=EXIT_WAIT_S)
        self._release()

    def _release(self) -> None:
        for pipe in (self._process.stdout, self._process.stderr):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        if not self._ended or self._process.poll() is None:
            self._stop()


class GridftpConnection:
    """A connection thread's access to one GridFTP provider, one session per file."""

    def __init__(self, conn: GridftpConnConfig, settings: ConnectionSettings) -> None:
        self._conn = conn
        self._program = program()
        self.read_timeout_s = settings.read_timeout_s
        self.secrets = (conn.password or "",)
        self._env = self._environment()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self.aborted = False
        """Set by :meth:`abort`: the connection runs nothing more."""

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        conn = self._conn
        for name, value in (
            ("X509_USER_PROXY", conn.x509_user_proxy),
            ("X509_USER_CERT", conn.x509_user_cert),
            ("X509_USER_KEY", conn.x509_user_key or conn.x509_user_cert),
            ("X509_CERT_DIR", conn.x509_cert_dir),
        ):
            if value:
                env[name] = value
        if conn.x509_user_cert:
            env.pop("X509_USER_PROXY", None)  # a configured certificate wins over an inherited proxy
        return env

    def source_url(self, url: str) -> str:
        """``url`` at this provider's port, with the configured login for ``ftp://``."""
        parts = urlsplit(url)
        conn = self._conn
        userinfo = ""
        if conn.username:
            userinfo = quote(conn.username, safe="")
            if conn.password and parts.scheme.lower() == "ftp":
                userinfo += ":" + quote(conn.password, safe="")
            userinfo += "@"
        path = parts.path or "/"
        return f"{parts.scheme.lower()}://{userinfo}{conn.host}:{conn.port}{path}"

    def open(self, url: str, offset: int = 0) -> GridftpStream:
        parts = urlsplit(url)
        what = f"{parts.scheme}://{self._conn.host}:{self._conn.port}{parts.path}"
        if self.aborted:
            raise SourceUnavailable(f"{what}: the connection was aborted")
        command = [self._program, "-st", str(int(self.read_timeout_s))]
        if not self._conn.data_channel_auth:
            command.append("-nodcau")
        if offset:
            command += ["-partial-offset", str(offset)]
        command += ["-f", "-"]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                start_new_session=True,  # killed as a group, never by a terminal's signals
            )
        except OSError as exc:
            raise SourceUnavailable(f"{what}: cannot run {PROGRAM}: {exc}") from exc
        with self._lock:
            self._process = process
            aborted = self.aborted
        if aborted:  # abort() ran while the program started: it did not see it
            _kill(process)
        assert process.stdin is not None  # started with stdin=PIPE
        try:
            process.stdin.write(f"{self.source_url(url)} file:///dev/stdout\n".encode())
            process.stdin.close()
        except OSError:
            pass  # it exited already: its output and status say why
        return GridftpStream(self, process, what)

    def check(self) -> bool:
        return not self.aborted  # otherwise nothing is held open between files

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """Kill the running ``globus-url-copy`` (its whole process group): a blocked read sees its end at once."""
        with self._lock:
            self.aborted = True
            process = self._process
        if process is not None:
            _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's process group (it runs in a session of its own); never blocks."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _read_config(fields: Fields, kind: str) -> GridftpConnConfig:
    conn = read_fields(fields, GridftpConnConfig, kind)
    if conn.password and not conn.username:
        raise ConfigError(f"{fields.key_path('password')}: a password needs a username")
    if conn.x509_user_proxy and (conn.x509_user_cert or conn.x509_user_key):
        raise ConfigError(f"{fields.key_path('x509_user_proxy')}: give a proxy or a certificate and key, not both")
    if conn.x509_user_key and not conn.x509_user_cert:
        raise ConfigError(f"{fields.key_path('x509_user_key')}: a key needs x509_user_cert")
    return conn


def _from_url(url: UrlSettings) -> GridftpConnConfig:
    # The X.509 credential comes from the standard X509_* variables, as for globus-url-copy itself.
    return GridftpConnConfig(type="gridftp", host=url.host, username=url.username, **present(port=url.port))


SPEC = ProtocolSpec(
    schemes={"gridftp": ("gsiftp", "ftp")},
    url_types={"gsiftp": "gridftp"},
    config_class=GridftpConnConfig,
    connect=GridftpConnection,
    from_url=_from_url,
    read_config=_read_config,
    ready=program,
)
