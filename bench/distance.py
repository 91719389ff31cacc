"""The distance cases: each provider behind the delay proxy, at each round-trip time.

For each RTT (``--distance-rtts``, ms) and each protocol (HTTP, FTP, SFTP), the servers
of the stage are reached through a ``delay_proxy.py`` process of their own:

  small files  ``--distance-files`` files of ``--distance-kib`` KiB, 2 connections: the
               gateway (one task; a task per file) and rclone --transfers 2 --checkers 2
  large file   one ``--distance-mib`` MiB file, 1 connection: the gateway, rclone, and the
               reference client (curl; OpenSSH sftp) to /dev/null

Figures: files/s or MB/s; round trips per file, ``connections / (RTT x files/s)``, the
fewest a file could cost being 1; and the peak connections the proxy saw to the server
(FTP control sessions; its data connections are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

from stage import BUCKET, MiB, Stage

PROXY = Path(__file__).resolve().parent / "delay_proxy.py"
KINDS = ("http", "ftp", "sftp")
CONNECTIONS = 2


class Bench(Protocol):
    def attempt(self, group: str, case: str, measure: Callable[[], dict[str, float] | None]) -> None: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--distance-rtts", default="0,50", help="round-trip times of the distance cases, ms")
    parser.add_argument("--distance-files", type=int, default=200)
    parser.add_argument("--distance-kib", type=int, default=64)
    parser.add_argument("--distance-mib", type=int, default=256)
    parser.add_argument("--distance-rate-mbps", type=float, default=0.0, help="the link's rate cap (0: none)")


class ProxyProcess:
    """``delay_proxy.py`` in a process of its own (so it shares no interpreter lock with the bench)."""

    def __init__(self, stack: ExitStack, target: int, rtt_ms: float, rate_mbps: float, ftp: bool) -> None:
        command = [sys.executable, str(PROXY), "--target", str(target), "--delay-ms", str(rtt_ms / 2)]
        command += ["--rate-mbps", str(rate_mbps)] + (["--ftp"] if ftp else [])
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(self.stop)
        self.port = int(self._answer()["port"])

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the delay proxy exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def peak(self) -> int:
        return int(self.ask("stats")["max_open"])

    def reset(self) -> None:
        self.ask("reset")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Distance:
    """Starts the proxies and the files once; :meth:`run` measures every case once."""

    def __init__(self, stage: Stage, args: argparse.Namespace) -> None:
        self.stage = stage
        self.rtts = [float(r) for r in args.distance_rtts.split(",")]
        self.kinds = [k for k in KINDS if k in stage.kinds]
        self.rclone = shutil.which("rclone")
        self.size = args.distance_mib * MiB
        self.proxies: dict[str, ProxyProcess] = {}
        self.remotes: dict[str, Callable[[str], str]] = {}
        for rtt in self.rtts:
            for kind in self.kinds:
                self._register(kind, rtt, args.distance_rate_mbps)
        (stage.data / "far").mkdir()
        body = os.urandom(args.distance_kib * 1024)
        self.names = [f"far/f{i:05d}.bin" for i in range(args.distance_files)]
        for name in self.names:
            (stage.data / name).write_bytes(body)
        stage.make_file("far-large.bin", self.size)

    @staticmethod
    def far(kind: str, rtt: float) -> str:
        return f"{kind}-far{rtt:g}"

    def _register(self, kind: str, rtt: float, rate_mbps: float) -> None:
        """Makes ``<kind>-far<rtt>`` a kind of the stage, whose server is behind a delay proxy."""
        stage, far = self.stage, self.far(kind, rtt)
        conn = dict(stage.conns[kind])
        target = int(conn["host"].rsplit(":", 1)[1]) if kind == "http" else int(conn["port"])
        proxy = ProxyProcess(stage.stack, target, rtt, rate_mbps, ftp=kind == "ftp")
        address = f"127.0.0.1:{proxy.port}"
        if kind == "http":
            conn["host"] = address
            stage.urls[far] = lambda name: f"http://{address}/{name}"
            self.remotes[far] = lambda path: f'http,url="http://{address}/":{path}'
        elif kind == "ftp":
            conn["port"] = proxy.port
            stage.urls[far] = lambda name: f"ftp://{address}/{name}"
            self.remotes[far] = lambda path: f"ftp,port={proxy.port}:{path}"
        else:
            conn["port"] = proxy.port
            stage.urls[far] = lambda name: f"sftp://{address}{stage.data / name}"
            self.remotes[far] = lambda path: f"sftp,port={proxy.port}:{stage.data / path}"
        stage.conns[far] = conn
        stage.max_open[far] = proxy.peak
        stage.reset_open[far] = proxy.reset
        self.proxies[far] = proxy

    def run(self, bench: Bench) -> None:
        for rtt in self.rtts:
            for kind in self.kinds:
                self._cases(bench, kind, rtt)

    def _cases(self, bench: Bench, kind: str, rtt: float) -> None:
        far, label = self.far(kind, rtt), f"{kind} {rtt:g} ms"
        for mode, per_file in (("one task", False), ("task per file", True)):
            bench.attempt("distance", f"{label}: gateway, {mode}", lambda p=per_file: self._small_gateway(far, rtt, p))
        bench.attempt("distance", f"{label}: rclone --transfers 2", lambda: self._small_rclone(far, rtt))
        reader = "OpenSSH sftp" if kind == "sftp" else "curl"
        for who, name in (("gateway", "gateway"), ("rclone", "rclone"), ("reference", reader)):
            bench.attempt("distance", f"{label}: {name}, large", lambda w=who: self._large(far, w))

    # --- the cases -------------------------------------------------------------------------

    def _per_file(self, figures: dict[str, float], rtt: float) -> dict[str, float]:
        if rtt:
            figures["RTTs/file"] = CONNECTIONS / (rtt / 1000 * figures["files/s"])
        return figures

    def _small_gateway(self, far: str, rtt: float, per_file: bool) -> dict[str, float]:
        return self._per_file(self.stage.gateway_small(far, per_file, self.names), rtt)

    def _small_rclone(self, far: str, rtt: float) -> dict[str, float] | None:
        if self.rclone is None:
            return None
        self.proxies[far].reset()
        command = [self.rclone, "copy", "--transfers", "2", "--checkers", "2"]
        command += [self.remotes[far]("far"), f"s3:{BUCKET}/rclone-{far}-{time.time_ns()}"]
        started = time.perf_counter()
        self.stage.timed(command, 1)
        seconds = time.perf_counter() - started
        figures = {"files/s": len(self.names) / seconds, "provider conns": self.proxies[far].peak()}
        return self._per_file(figures, rtt)

    def _large(self, far: str, who: str) -> dict[str, float] | None:
        stage, proxy, key = self.stage, self.proxies[far], f"far-{who}-{far}.bin"
        proxy.reset()
        if who == "gateway":
            figures = stage.gateway_large(far, "far-large.bin", self.size)
        elif who == "rclone":
            if self.rclone is None:
                return None
            source = self.remotes[far]("far-large.bin")
            figures = stage.timed([self.rclone, "copyto", source, f"s3:{BUCKET}/{key}"], self.size)
            stage.s3.delete_object(Bucket=BUCKET, Key=key)
        else:
            figures = stage.timed(self._reference(far), self.size)
        return {**figures, "provider conns": proxy.peak()}

    def _reference(self, far: str) -> list[str]:
        """The reference client reading the large file to /dev/null."""
        stage, url = self.stage, self.stage.urls[far]("far-large.bin")
        if not far.startswith("sftp"):
            return ["curl", "-sS", "--fail", "-o", "/dev/null", url.replace("ftp://", "ftp://provider:secret@", 1)]
        sshd = stage.sshd
        return [
            "sftp", "-q", "-P", str(self.proxies[far].port), "-i", str(sshd.client_key),
            "-o", f"UserKnownHostsFile={sshd.dir / 'known_hosts'}", "-o", "StrictHostKeyChecking=no",
            f"{sshd.user}@127.0.0.1:{stage.data / 'far-large.bin'}", "/dev/null",
        ]  # fmt: skip
