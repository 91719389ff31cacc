"""HTTP/2 at a distance: do several files sharing one connection beat one request per connection?

    python -m venv /tmp/h2 && /tmp/h2/bin/pip install 'httpx[http2]' requests
    /tmp/h2/bin/python bench/http2.py [--rtt-ms 50] [--files 400] [--kib 64] [--streams 1,2,4,8] [--runs 3]

httpx and h2 are not dependencies of the project: this script runs in a venv of its own.

nginx serves the same files on loopback three ways, each through its own
``delay_proxy.py`` at ``--rtt-ms``: plain HTTP/1.1, TLS (HTTP/2 by ALPN, HTTP/1.1 to a
client that asks for it) with a self-signed certificate made here, and h2c (HTTP/2
without TLS, prior knowledge). Every case uses 2 connections and reads ``--files`` files
of ``--kib`` KiB whole into memory (no S3: only the provider's side is measured):

  requests              the gateway's client: a Session of one connection per thread, 2 threads
  httpx, HTTP/1.1       the same over TLS with httpx (a client of one connection per thread)
  httpx, HTTP/2         2 clients of one connection each, k threads sharing each (k streams)

Each connection first fetches one file untimed, so the handshakes are not counted, as
for a gateway whose connections are already open. Figures: files/s (median of
``--runs``); round trips per file per connection, ``2 / (RTT x files/s)`` (1.0 is one
request at a time per connection, each costing its round trip); client CPU ms per
file; and the proxy's peak connections, which must be 2.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import queue
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from delay_proxy import ProxyProcess

CONNECTIONS = 2

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {dir}/error.log info;  # a client's protocol errors are logged at info
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    server {{ listen 127.0.0.1:{plain}; root {root}; }}
    server {{ listen 127.0.0.1:{tls} ssl{h2_listen}; {h2_on} root {root}; }}
    server {{ listen 127.0.0.1:{h2c}{h2_listen}; {h2_on} root {root}; }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port}")
        time.sleep(0.05)


def nginx_version(nginx: str) -> tuple[int, ...]:
    text = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in found.groups()) if found else (0,)


def start_nginx(stack: contextlib.ExitStack, work: Path, root: Path) -> dict[str, int]:
    """nginx with a plain, a TLS (h2 and http/1.1) and an h2c server; their ports by name."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    run = work / "nginx"
    run.mkdir()
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(run / "key.pem"), "-out", str(run / "cert.pem"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    # `http2 on;` came with nginx 1.25.1; before it, http2 was a parameter of `listen`.
    modern = nginx_version(nginx) >= (1, 25, 1)
    ports = {"plain": free_port(), "tls": free_port(), "h2c": free_port()}
    conf = NGINX_CONF.format(
        dir=run, root=root, h2_listen="" if modern else " http2", h2_on="http2 on;" if modern else "", **ports
    )
    (run / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [nginx, "-c", str(run / "nginx.conf"), "-p", str(run)], stderr=subprocess.PIPE, start_new_session=True
    )
    stack.callback(os.killpg, proc.pid, signal.SIGKILL)  # the master and its worker
    for port in ports.values():
        wait_for_port(port, 10)
    return ports


class Case:
    """One way of fetching the files: ``clients`` connections, ``streams`` threads sharing each."""

    def __init__(self, name: str, make_client: Callable[[], Any], base: str, streams: int) -> None:
        self.name, self.make_client, self.base, self.streams = name, make_client, base, streams

    def run(self, names: list[str], size: int) -> tuple[float, float]:
        """Seconds and client CPU seconds to fetch ``names`` (each checked to be ``size`` bytes)."""
        clients = [self.make_client() for _ in range(CONNECTIONS)]
        try:
            for client in clients:  # opens each connection (and its TLS), untimed
                self._fetch(client, names[0], size)
            work: queue.SimpleQueue[str] = queue.SimpleQueue()
            for name in names:
                work.put(name)
            errors: list[BaseException] = []

            def worker(client: Any) -> None:
                try:
                    while True:
                        try:
                            name = work.get_nowait()
                        except queue.Empty:
                            return
                        self._fetch(client, name, size)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [
                threading.Thread(target=worker, args=(client,)) for client in clients for _ in range(self.streams)
            ]
            cpu, started = time.process_time(), time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            if errors:
                raise errors[0]
            return seconds, cpu
        finally:
            for client in clients:
                client.close()

    def _fetch(self, client: Any, name: str, size: int) -> None:
        self._check(client.get(f"{self.base}/{name}"), name, size)

    def _check(self, response: Any, name: str, size: int) -> None:
        body = response.content
        if response.status_code != 200 or len(body) != size:
            raise RuntimeError(f"{self.name}: {name}: status {response.status_code}, {len(body)} bytes of {size}")
        version = getattr(response, "http_version", "HTTP/1.1")
        if ("HTTP/2" in self.name) != (version == "HTTP/2"):
            raise RuntimeError(f"{self.name}: the response came over {version}")


class AsyncCase(Case):
    """The same with httpx's AsyncClient: k tasks per connection in one event loop, no threads."""

    def run(self, names: list[str], size: int) -> tuple[float, float]:
        import asyncio

        async def fetch(client: Any, name: str) -> None:
            response = await client.get(f"{self.base}/{name}")
            self._check(response, name, size)

        async def main() -> tuple[float, float]:
            clients = [self.make_client() for _ in range(CONNECTIONS)]
            try:
                for client in clients:
                    await fetch(client, names[0])
                todo = iter(names)

                async def worker(client: Any) -> None:
                    for name in todo:
                        await fetch(client, name)

                cpu, started = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker(client) for client in clients for _ in range(self.streams)))
                return time.perf_counter() - started, time.process_time() - cpu
            finally:
                for client in clients:
                    await client.aclose()

        return asyncio.run(main())


def cases(ports: dict[str, int], cert: Path, streams: list[int]) -> list[tuple[str, Case]]:
    """Each case, with the server (plain, tls, h2c) it reads from."""
    import httpx
    import requests
    from requests.adapters import HTTPAdapter

    def session(verify: str | bool) -> Callable[[], Any]:
        def make() -> requests.Session:
            made = requests.Session()
            made.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, pool_block=True))
            made.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=1, pool_block=True))
            made.verify = verify
            made.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
            return made

        return make

    def httpx_client(http1: bool, http2: bool, verify: ssl.SSLContext | bool) -> Callable[[], Any]:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return lambda: httpx.Client(http1=http1, http2=http2, verify=verify, limits=limits, timeout=60)

    def async_client(verify: ssl.SSLContext | bool) -> Callable[[], Any]:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return lambda: httpx.AsyncClient(http1=False, http2=True, verify=verify, limits=limits, timeout=60)

    tls = ssl.create_default_context(cafile=str(cert))
    out = [
        ("plain", Case("requests, HTTP/1.1", session(False), "http://127.0.0.1:{port}", 1)),
        ("tls", Case("requests, HTTP/1.1 + TLS", session(str(cert)), "https://127.0.0.1:{port}", 1)),
        ("tls", Case("httpx, HTTP/1.1 + TLS", httpx_client(True, False, tls), "https://127.0.0.1:{port}", 1)),
    ]
    h2 = [
        ("tls", "httpx, HTTP/2 + TLS", Case, httpx_client(False, True, tls), "https"),
        ("h2c", "httpx, HTTP/2 h2c", Case, httpx_client(False, True, False), "http"),
        ("tls", "httpx async, HTTP/2 + TLS", AsyncCase, async_client(tls), "https"),
        ("h2c", "httpx async, HTTP/2 h2c", AsyncCase, async_client(False), "http"),
    ]
    for server, name, kind, make, scheme in h2:
        out += [(server, kind(f"{name}, {k} streams", make, f"{scheme}://127.0.0.1:{{port}}", k)) for k in streams]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=50)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--streams", default="1,2,4,8", help="streams per connection of the HTTP/2 cases")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import httpx

    size = args.kib * 1024
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pg-h2-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker does not run as the owner of the files
        root = work / "data"
        root.mkdir()
        body = os.urandom(size)
        names = [f"f{i:05d}.bin" for i in range(args.files)]
        for name in names:
            (root / name).write_bytes(body)
        ports = start_nginx(stack, work, root)
        proxies = {kind: ProxyProcess(stack, port, args.rtt_ms) for kind, port in ports.items()}
        print(f"{machine}; httpx {httpx.__version__}; {args.rtt_ms:g} ms RTT, {args.files} x {args.kib} KiB")
        table = []
        all_cases = cases(ports, work / "nginx" / "cert.pem", [int(k) for k in args.streams.split(",")])
        results: dict[str, dict[str, list[Any]]] = {}
        for run in range(args.runs):  # every case once per run: a machine's busy spell spreads over all
            for kind, case in all_cases:
                case.base = case.base.format(port=proxies[kind].port)
                got = results.setdefault(case.name, {"rates": [], "cpus": [], "peaks": [], "failures": []})
                proxies[kind].reset()
                try:
                    seconds, cpu = case.run(names, size)
                except Exception as exc:  # shown in the table: one failed run fails the case
                    got["failures"].append(f"{type(exc).__name__}: {exc}")
                    print(f"  run {run + 1}: {case.name}: FAILED: {got['failures'][-1]}", flush=True)
                    continue
                got["rates"].append(args.files / seconds)
                got["cpus"].append(cpu / args.files * 1000)
                got["peaks"].append(proxies[kind].peak())
                print(f"  run {run + 1}: {case.name}: {args.files / seconds:.1f} files/s", flush=True)
        print(f"{'case':<40} {'files/s':>8} {'RTTs/file':>10} {'CPU ms/file':>12} {'conns':>6}")
        for name, got in results.items():
            failures = got["failures"]
            verdict = f" FAILED in {len(failures)} of {args.runs} runs: {failures[0]}" if failures else ""
            if not got["rates"]:
                print(f"{name:<40} {verdict}", flush=True)
                table.append(f"| {name} | - | - | - | - |{verdict} |")
                continue
            rate = statistics.median(got["rates"])
            rtts = CONNECTIONS / (args.rtt_ms / 1000 * rate) if args.rtt_ms else float("nan")
            peak = max(got["peaks"])
            if peak > CONNECTIONS:
                verdict = f" FAILED: {peak} connections;{verdict}"
            cpu_ms = statistics.median(got["cpus"])
            print(f"{name:<40} {rate:8.1f} {rtts:10.2f} {cpu_ms:12.2f} {peak:6d}{verdict}", flush=True)
            table.append(f"| {name} | {rate:.1f} | {rtts:.2f} | {cpu_ms:.2f} | {peak} |{verdict} |")
        log = (work / "nginx" / "error.log").read_text().splitlines()
        complaints = collections.Counter(
            re.sub(r"^.*?\[\w+\] \d+#\d+: \*\d+ |, client: .*$", "", line) for line in log if "client sent" in line
        )
        for complaint, count in complaints.most_common():
            print(f"nginx: {count} x {complaint}")
        print("\n| case | files/s | round trips per file | client CPU ms per file | peak conns | failures |")
        print("|---|---:|---:|---:|---:|---|")
        print("\n".join(table))


if __name__ == "__main__":
    main()
