"""Real provider servers on loopback for the tests: OpenSSH sshd, and a counting TCP proxy."""

from __future__ import annotations

import contextlib
import getpass
import http.client
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def wait_for_port(port: int, timeout_s: float = 10) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new passphrase-less key pair of ``kind`` (ed25519, ecdsa, rsa) at ``path`` (and ``path.pub``)."""
    size = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-f", str(path)], check=True, capture_output=True)
    return path


# The host keys of a stock OpenSSH install.
STOCK_HOST_KEYS = ("rsa", "ecdsa", "ed25519")


class Sshd:
    """OpenSSH's sshd on a loopback port, with its own config, host keys and authorized key.

    ``host_key_types`` picks the host keys; the first is ``host_key``.
    """

    def __init__(self, workdir: Path, host_key_types: tuple[str, ...] = ("ed25519",)) -> None:
        if SSHD is None:
            raise RuntimeError("OpenSSH sshd is not installed")
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host_keys = {kind: keygen(workdir / f"host_{kind}_key", kind) for kind in host_key_types}
        self.host_key = self.host_keys[host_key_types[0]]
        self.client_key = keygen(workdir / "client_key")
        self.other_key = keygen(workdir / "unauthorized_key")
        (workdir / "authorized_keys").write_text((workdir / "client_key.pub").read_text())
        self.user = getpass.getuser()
        self.port = free_port()
        self.log_path = workdir / "sshd.log"
        config = workdir / "sshd_config"
        host_key_lines = "\n".join(f"HostKey {path}" for path in self.host_keys.values())
        config.write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
{host_key_lines}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
Subsystem sftp internal-sftp
LogLevel VERBOSE
MaxStartups 100
MaxSessions 100
"""
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"sshd did not start:\n{self.log_path.read_text()}") from None

    @property
    def host_key_line(self) -> str:
        """The server's (first) public key, as ``conn_config.host_key`` takes it."""
        return self.key_line(next(iter(self.host_keys)))

    def key_line(self, kind: str) -> str:
        """The server's public key of ``kind`` (rsa, ecdsa, ed25519) as ``TYPE BASE64``."""
        key_type, body = Path(f"{self.host_keys[kind]}.pub").read_text().split()[:2]
        return f"{key_type} {body}"

    def signal_sessions(self, signum: int) -> list[int]:
        """Send ``signum`` to every session process of this sshd (SIGSTOP: it stalls, its sockets open)."""
        pids = _descendants(self.proc.pid)
        for pid in pids:
            os.kill(pid, signum)
        return pids

    @property
    def logins(self) -> int:
        return self.log_path.read_text(errors="replace").count("Accepted publickey")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ConnectionRecord:
    """One connection through a :class:`CountingProxy` (epoch milliseconds)."""

    opened_ms: int
    closed_ms: int | None = None
    last_sent_ms: int | None = None


class CountingProxy:
    """A TCP proxy on loopback that counts the connections passing through it.

    Put in front of a server, it shows what the server sees: connections in
    all and the most open at once. :meth:`drop` cuts every live connection;
    :meth:`stall` holds every byte (new connections too) until :meth:`unstall`.
    ``history`` records, per connection, when it opened and closed and when
    the client last sent bytes (wall clock, epoch milliseconds).
    """

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.total = 0
        self.open = 0
        self.max_open = 0
        self.relayed = 0  # bytes from the server to clients, all connections together
        self.cuts: list[int] = []  # fault injection: cut the connection as ``relayed`` crosses each
        self._live: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self.history: dict[tuple[socket.socket, socket.socket], ConnectionRecord] = {}
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the proxy as an HTTP endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def stall(self) -> None:
        """Hold every byte in both directions, as a server that stopped answering."""
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for sock in (client, upstream):  # relay small packets at once, as the endpoints send them
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.total += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self._live.add((client, upstream))
                self.history[(client, upstream)] = ConnectionRecord(opened_ms=_now_ms())
            done = threading.Event()
            pair = (client, upstream)
            for a, b, downstream in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(a, b, done, downstream, pair), daemon=True).start()
            threading.Thread(target=self._closed_when, args=(done, pair), daemon=True).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        done: threading.Event,
        downstream: bool,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        try:
            while chunk := source.recv(1 << 20):
                self._flowing.wait()
                if not downstream:
                    self.history[pair].last_sent_ms = _now_ms()
                sink.sendall(chunk)
                if downstream and self._crossed_cut(len(chunk)):
                    # Counted before the cut: the client may reconnect before this thread runs again.
                    self._count_closed(pair)
                    for sock in pair:
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            pass
        finally:
            done.set()

    def _crossed_cut(self, count: int) -> bool:
        with self._lock:
            self.relayed += count
            if self.cuts and self.relayed >= self.cuts[0]:
                self.cuts.pop(0)
                return True
            return False

    def _count_closed(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair in self._live:
                self.open -= 1
                self._live.discard(pair)
                self.history[pair].closed_ms = _now_ms()

    def _closed_when(self, done: threading.Event, pair: tuple[socket.socket, socket.socket]) -> None:
        done.wait()
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._count_closed(pair)

    def drop(self) -> int:
        """Cut every live connection; returns how many were cut."""
        with self._lock:
            live = list(self._live)
        for pair in live:
            self._count_closed(pair)  # before the cut, as in _pump
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return len(live)

    def close(self) -> None:
        self._listener.close()
        self.drop()


class FaultyS3Proxy:
    """An HTTP proxy in front of the local S3 that fails the requests ``fail`` picks.

    ``fail(method, path_and_query)`` returns an S3 error code to answer with
    (``AccessDenied`` -> 403, anything else -> 500), or None to forward.
    """

    def __init__(self, target: str, fail: Callable[[str, str], str | None]) -> None:
        target_port = int(target.rsplit(":", 1)[1])
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = fail(self.command, self.path)
                if code is not None:
                    proxy.failed.append(f"{self.command} {self.path}")
                    self._answer(
                        403 if code == "AccessDenied" else 500,
                        f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode(),
                        {},
                    )
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                upstream.request(self.command, self.path, body, dict(self.headers.items()))
                response = upstream.getresponse()
                data = response.read()
                headers = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                self._answer(response.status, data, headers)
                upstream.close()

            def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815

        self.failed: list[str] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
