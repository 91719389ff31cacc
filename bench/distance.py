"""The distance cases: each provider behind the delay proxy, at each round-trip time.

For each RTT (``--distance-rtts``, ms) and each protocol (HTTP, FTP, SFTP), the servers
of the stage are reached through a ``delay_proxy.py`` process of their own:

  small files  ``--distance-files`` files of ``--distance-kib`` KiB, 2 connections: the
               gateway (one task; a task per file) and rclone --transfers 2 --checkers 2
  large file   one ``--distance-mib`` MiB file, 1 connection: the gateway, rclone, and the
               reference client (curl; OpenSSH sftp) to /dev/null

Figures: files/s and MB/s; round trips per file, ``connections / (RTT x files/s)``, the
fewest a file could cost being 1; and the peak connections the proxy saw to the server
(FTP: control sessions, and data connections apart). A case whose peak is above the
connections it was given (2 for small files, 1 for the large file) fails.
:func:`markdown` makes the two tables of ``docs/performance.md`` from the results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from typing import Any, Protocol

from delay_proxy import ProxyProcess
from stage import BUCKET, MiB, Stage

KINDS = ("http", "ftp", "sftp")
CONNECTIONS = 2


class Bench(Protocol):
    def attempt(
        self, group: str, case: str, measure: Callable[[], dict[str, float] | None], limit: int | None = None
    ) -> None: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--distance-rtts", default="0,50", help="round-trip times of the distance cases, ms")
    parser.add_argument("--distance-files", type=int, default=200)
    parser.add_argument("--distance-kib", type=int, default=64)
    parser.add_argument("--distance-mib", type=int, default=64, help="the large file, MiB (issue 16 measured 256)")
    parser.add_argument("--distance-rate-mbps", type=float, default=0.0, help="the link's rate cap (0: none)")


class Distance:
    """Starts the proxies and the files once; :meth:`run` measures every case once."""

    def __init__(self, stage: Stage, args: argparse.Namespace) -> None:
        self.stage = stage
        self.rtts = [float(r) for r in args.distance_rtts.split(",")]
        self.kinds = [k for k in KINDS if k in stage.kinds]
        self.rclone = shutil.which("rclone")
        self.size = args.distance_mib * MiB
        self.file_size = args.distance_kib * 1024
        self.proxies: dict[str, ProxyProcess] = {}
        self.remotes: dict[str, Callable[[str], str]] = {}
        for rtt in self.rtts:
            for kind in self.kinds:
                self._register(kind, rtt, args.distance_rate_mbps)
        (stage.data / "far").mkdir()
        body = os.urandom(self.file_size)
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
        far, label = self.far(kind, rtt), case_label(kind, rtt)
        for mode, per_file in (("one task", False), ("task per file", True)):
            bench.attempt(
                "distance",
                f"{label}: gateway, {mode}",
                lambda p=per_file: self._small_gateway(far, rtt, p),
                limit=CONNECTIONS,
            )
        rclones: list[tuple[str, list[str]]] = [("rclone --transfers 2", [])]
        if kind == "http":  # rclone asks HEAD before each GET unless told not to
            rclones.append(("rclone --transfers 2 --http-no-head", ["--http-no-head"]))
        for name, flags in rclones:
            bench.attempt(
                "distance", f"{label}: {name}", lambda f=flags: self._small_rclone(far, rtt, f), limit=CONNECTIONS
            )
        reader = "OpenSSH sftp" if kind == "sftp" else "curl"
        for who, name in (("gateway", "gateway"), ("rclone", "rclone"), ("reference", reader)):
            bench.attempt("distance", f"{label}: {name}, large", lambda w=who: self._large(far, w), limit=1)

    # --- the cases -------------------------------------------------------------------------

    def _per_file(self, figures: dict[str, float], rtt: float) -> dict[str, float]:
        figures["MB/s"] = figures["files/s"] * self.file_size / 1e6
        if rtt:
            figures["RTTs/file"] = CONNECTIONS / (rtt / 1000 * figures["files/s"])
        return figures

    def _small_gateway(self, far: str, rtt: float, per_file: bool) -> dict[str, float]:
        figures = self.stage.gateway_small(far, per_file, self.names)
        return self._per_file({**figures, **self.proxies[far].peaks()}, rtt)

    def _small_rclone(self, far: str, rtt: float, flags: list[str]) -> dict[str, float] | None:
        if self.rclone is None:
            return None
        self.proxies[far].reset()
        prefix = f"rclone-{far}-{time.time_ns()}"
        # "far/": without HEAD, rclone takes a path with no trailing slash for a file (the listing page)
        command = [self.rclone, "copy", "--transfers", "2", "--checkers", "2", *flags]
        command += [self.remotes[far]("far/"), f"s3:{BUCKET}/{prefix}"]
        started = time.perf_counter()
        self.stage.timed(command, 1)
        seconds = time.perf_counter() - started
        pages = self.stage.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
        copied = sum(page.get("KeyCount", 0) for page in pages)
        if copied != len(self.names):
            raise RuntimeError(f"rclone copied {copied} files of {len(self.names)}")
        figures = {"files/s": len(self.names) / seconds, **self.proxies[far].peaks()}
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
        return {**figures, **proxy.peaks()}

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


# --- the tables of docs/performance.md -----------------------------------------------------

NAMES = {"http": "HTTP", "ftp": "FTP", "sftp": "SFTP"}
SMALL_COLUMNS = ("gateway, one task", "gateway, task per file", "rclone --transfers 2")
LARGE_COLUMNS = ("gateway, large", "rclone, large")


def case_label(kind: str, rtt: float) -> str:
    return f"{kind} {rtt:g} ms"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The distance group's results as two Markdown tables (medians), small files then the large file.

    A failed case is marked **FAILED** (its reason is in the notes); a figure not measured shows "-".
    """
    cases = {row["case"]: row for row in rows if row["group"] == "distance"}
    labels = list(dict.fromkeys(case.split(":", 1)[0] for case in cases))

    def row_of(label: str, column: str) -> dict[str, Any]:
        return cases.get(f"{label}: {column}", {})

    def median(row: dict[str, Any], figure: str, digits: int = 1) -> str:
        return f"{row[figure]['median']:.{digits}f}" if figure in row else "-"

    def peak(row: dict[str, Any]) -> str:
        shown = median(row, "provider conns", 0)
        if "provider data conns" in row:
            shown += f" ({median(row, 'provider data conns', 0)})"
        return shown + (" **FAILED**" if "failed" in row else "")

    def protocol(label: str) -> tuple[str, str]:
        kind, rtt = label.split(" ", 1)
        return NAMES.get(kind, kind), rtt

    small = [
        "Small files, files/s (round trips per file) and MB/s; peak provider connections (FTP: control (data)):",
        "",
        "| protocol | RTT | gateway, one task | gateway, task per file | rclone --transfers 2"
        " | rclone --http-no-head | peak conns: one task / task per file / rclone |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for label in labels:
        cells = []
        for column in (*SMALL_COLUMNS, "rclone --transfers 2 --http-no-head"):
            row = row_of(label, column)
            if "failed" in row and "files/s" not in row:
                cells.append("**FAILED**")
                continue
            cell = median(row, "files/s")
            if "RTTs/file" in row:
                cell += f" ({median(row, 'RTTs/file')})"
            if "MB/s" in row:
                cell += f", {median(row, 'MB/s')} MB/s"
            cells.append(cell)
        peaks = " / ".join(peak(row_of(label, column)) for column in SMALL_COLUMNS)
        small.append(f"| {' | '.join(protocol(label))} | {' | '.join(cells)} | {peaks} |")
    large = [
        "One large file, 1 connection, MB/s; peak provider connections:",
        "",
        "| protocol | RTT | gateway (into S3) | rclone (into S3) | reference client to /dev/null"
        " | peak conns: gateway / rclone / reference |",
        "|---|---|---:|---:|---:|---|",
    ]
    for label in labels:
        reference = next(
            (
                c
                for c in cases
                if c.startswith(f"{label}: ")
                and c.endswith(", large")
                and not c.split(": ", 1)[1].startswith(("gateway", "rclone"))
            ),
            "",
        )
        columns = [*(f"{label}: {c}" for c in LARGE_COLUMNS), reference]
        cells = [median(cases.get(c, {}), "MB/s") for c in columns]
        cells[2] += f" ({reference.split(': ', 1)[1].removesuffix(', large')})" if reference else ""
        peaks = " / ".join(peak(cases.get(c, {})) for c in columns)
        large.append(f"| {' | '.join(protocol(label))} | {' | '.join(cells)} | {peaks} |")
    return "\n".join([*small, "", *large]) + "\n"
