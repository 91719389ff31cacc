"""Where a small file's time goes at a distance: the link's round trip, or the client between files.

    .venv/bin/python bench/round_trips.py [--rtt-ms 50] [--files 200] [--kib 64] [--runs 2]

The gateway (one task, ``num_connections: 2``) and, as the floor of a Python client,
``requests`` alone (2 threads, a Session each) read the same files from nginx through a
tracing ``delay_proxy.py``. The proxy notes when each client sent each request and
received each byte, at the client's end of the link (its clock is the bench's:
CLOCK_MONOTONIC), which splits the run's time into:

  start      from StartExecution to the first request (claiming the task, starting it)
  wait       from a request to its first byte: the round trip, and the server
  body       from its first byte to its last
  gap        from a file's last byte to the next request on that connection: the client
  end        from the last byte of the last file to SUCCEEDED seen (the last PutObjects,
             the answer, the bench's polling)

Round trips per file is ``2 / (RTT x files/s)`` over the whole run, as in the distance
group; "per file" figures are per file on its connection (the two run side by side).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


from delay_proxy import ProxyProcess  # noqa: E402
from stage import BUCKET, Stage  # noqa: E402

CONNECTIONS = 2
Trace = dict[str, list[list[Any]]]


def exchanges(events: list[list[Any]]) -> list[tuple[float, float, float]]:
    """Each request on one connection: (sent, first byte received, last byte received)."""
    out: list[tuple[float, float, float]] = []
    sent = first = last = None
    for when, what, _ in events:
        if what == "sent":
            if last is not None:  # the previous exchange is complete: a new request
                assert sent is not None and first is not None
                out.append((sent, first, last))
                sent = first = last = None
            if sent is None:  # a request written in several pieces is one request
                sent = when
        elif sent is not None:
            first = when if first is None else first
            last = when
    if sent is not None and first is not None and last is not None:
        out.append((sent, first, last))
    return out


def split(trace: Trace, started: float, ended: float, files: int, rtt_s: float) -> dict[str, float]:
    """The run's time, split as in the module's docstring (per file: milliseconds, means)."""
    per_connection = [exchanges(events) for events in trace.values() if events]
    everything = [x for conn in per_connection for x in conn]
    seconds = ended - started
    waits = [first - sent for sent, first, _ in everything]
    bodies = [last - first for _, first, last in everything]
    gaps = [b[0] - a[2] for conn in per_connection for a, b in itertools.pairwise(conn)]
    return {
        "files/s": files / seconds,
        "RTTs/file": CONNECTIONS / (rtt_s * files / seconds),
        "requests": len(everything),
        "seconds": seconds,
        "start s": min(x[0] for x in everything) - started,
        "end s": ended - max(x[2] for x in everything),
        "wait ms": 1000 * statistics.mean(waits),
        "body ms": 1000 * statistics.mean(bodies),
        "gap ms": 1000 * statistics.mean(gaps),
        "gap median ms": 1000 * statistics.median(gaps),
        "gap p90 ms": 1000 * statistics.quantiles(gaps, n=10)[-1],
    }


def gateway(stage: Stage, kind: str, names: list[str], proxy: ProxyProcess) -> tuple[Trace, float, float]:
    proc, machine = stage.gateway(kind, CONNECTIONS)
    prefix = f"rt-{time.time_ns()}"
    files = [
        {
            "source": {"url": stage.urls[kind](n), "size": (stage.data / n).stat().st_size},
            "target": {"bucket": BUCKET, "key": f"{prefix}/{n}"},
        }
        for n in names
    ]
    try:
        proxy.ask("trace")  # nothing before the run
        started = time.monotonic()
        stage.execute(machine, [files])
        ended = time.monotonic()
    finally:
        stage.stop(proc)
    return proxy.ask("trace"), started, ended


def requests_alone(
    url: Callable[[str], str], names: list[str], size: int, proxy: ProxyProcess
) -> tuple[Trace, float, float]:
    import requests

    todo = iter(names)
    lock = threading.Lock()

    def work(session: requests.Session) -> None:
        while True:
            with lock:
                name = next(todo, None)
            if name is None:
                return
            response = session.get(url(name))
            response.raise_for_status()
            if len(response.content) != size:
                raise RuntimeError(f"{name}: {len(response.content)} bytes of {size}")

    sessions = [requests.Session() for _ in range(CONNECTIONS)]
    proxy.ask("trace")
    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.monotonic()
    for session in sessions:
        session.close()
    return proxy.ask("trace"), started, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=50)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pg-rt-") as tmp:
        stage = Stage(stack, Path(tmp), ["http"])
        target = int(stage.conns["http"]["host"].rsplit(":", 1)[1])
        proxy = ProxyProcess(stack, target, args.rtt_ms, trace=True)
        address = f"127.0.0.1:{proxy.port}"
        stage.conns["http-far"] = {"type": "http", "host": address}
        stage.urls["http-far"] = lambda name: f"http://{address}/{name}"
        (stage.data / "far").mkdir()
        body = os.urandom(args.kib * 1024)
        names = [f"far/f{i:05d}.bin" for i in range(args.files)]
        for name in names:
            (stage.data / name).write_bytes(body)
        rows = []
        for _ in range(args.runs):
            for who in ("requests alone", "gateway, one task"):
                if who == "gateway, one task":
                    trace, started, ended = gateway(stage, "http-far", names, proxy)
                else:
                    trace, started, ended = requests_alone(stage.urls["http-far"], names, len(body), proxy)
                figures = split(trace, started, ended, len(names), args.rtt_ms / 1000)
                rows.append((who, figures))
                print(who, " ".join(f"{k}={v:.3g}" for k, v in figures.items()), flush=True)
        print(f"\n{args.files} x {args.kib} KiB, {CONNECTIONS} connections, {args.rtt_ms:g} ms RTT\n")
        names_ = list(rows[0][1])
        print("| client | " + " | ".join(names_) + " |")
        print("|---|" + "---:|" * len(names_))
        for who, figures in rows:
            print(f"| {who} | " + " | ".join(f"{figures[k]:.3g}" for k in names_) + " |")


if __name__ == "__main__":
    main()
