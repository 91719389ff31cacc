"""Files in flight per SFTP connection: what each count of lanes gives at a distance.

    PYTHONPATH=. .venv/bin/python bench/sftp_lanes.py [--rtt-ms 50] [--files 200] [--kib 64]
                                                   [--lanes 1,2,4,8] [--connections 2] [--large-mib 256]

OpenSSH's sshd behind ``delay_proxy.py`` (its own process). For each lane count
``k``: ``--connections`` SftpConnections, each read by ``k`` threads that each take
a lane of it, copy ``--files`` files of ``--kib`` KiB between them (read to
memory, nothing else). Printed: files/s, round trips per file
(``connections / (RTT x files/s)``), and the most connections the proxy saw.
With ``--large-mib``, one file of that size read by one lane, beside OpenSSH
``sftp`` reading it to /dev/null through the same proxy: MB/s.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from distance import ProxyProcess

from provider_gateway.config.model import SftpConnConfig
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.sftp import SftpConnection
from tests.servers import Sshd

MB = 1_000_000


def read_all(lane: object, url: str) -> int:
    stream = lane.open(url)  # type: ignore[attr-defined]
    got = 0
    while piece := stream.read(1 << 20):
        got += len(piece)
    stream.close()
    return got


def small(conn: SftpConnConfig, urls: list[str], connections: int, lanes: int) -> float:
    """Seconds to read every file over ``connections`` connections of ``lanes`` lanes each."""
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for url in urls:
        work.put(url)
    opened = [SftpConnection(conn, ConnectionSettings()) for _ in range(connections)]
    errors: list[BaseException] = []

    def worker(connection: SftpConnection) -> None:
        shared = hasattr(connection, "lane")  # an older tree's connection reads one file at a time itself
        lane = connection.lane() if shared else connection
        try:
            while True:
                try:
                    url = work.get_nowait()
                except queue.Empty:
                    return
                read_all(lane, url)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            if shared:
                lane.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in opened for _ in range(lanes)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for connection in opened:
        connection.close()
    if errors:
        raise errors[0]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--lanes", default="1,2,4,8")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--large-mib", type=int, default=0)
    args = parser.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sftp-lanes-")))
        sshd = Sshd(work / "sshd")
        stack.callback(sshd.stop)
        proxy = ProxyProcess(stack, sshd.port, args.rtt_ms, 0.0, ftp=False)
        conn = SftpConnConfig(
            type="sftp",
            host="127.0.0.1",
            port=proxy.port,
            username=sshd.user,
            private_key_file=str(sshd.client_key),
            host_key=sshd.host_key_line,
        )
        body = os.urandom(args.kib * 1024)
        (work / "files").mkdir()
        urls = []
        for i in range(args.files):
            path = work / "files" / f"f{i:05d}.bin"
            path.write_bytes(body)
            urls.append(f"sftp://127.0.0.1:{proxy.port}{path}")
        rtt = args.rtt_ms / 1000
        print(f"{args.files} x {args.kib} KiB, {args.connections} connections, RTT {args.rtt_ms:g} ms")
        print("| lanes per connection | files/s | round trips per file | peak provider conns |")
        print("|---:|---:|---:|---:|")
        for lanes in (int(k) for k in args.lanes.split(",")):
            proxy.reset()
            rate = args.files / small(conn, urls, args.connections, lanes)
            trips = f"{args.connections / (rtt * rate):.2f}" if rtt else "-"
            print(f"| {lanes} | {rate:.1f} | {trips} | {proxy.peak()} |", flush=True)
        if args.large_mib:
            large(args, conn, proxy, sshd, work)


def large(args: argparse.Namespace, conn: SftpConnConfig, proxy: ProxyProcess, sshd: Sshd, work: Path) -> None:
    path = work / "large.bin"
    with path.open("wb") as file:
        for _ in range(args.large_mib):
            file.write(os.urandom(1 << 20))
    size = path.stat().st_size
    connection = SftpConnection(conn, ConnectionSettings())
    started = time.perf_counter()
    lane = connection.lane() if hasattr(connection, "lane") else connection
    assert read_all(lane, f"sftp://127.0.0.1:{proxy.port}{path}") == size
    ours = size / (time.perf_counter() - started) / MB
    connection.close()
    command = ["sftp", "-q", "-P", str(proxy.port), "-i", str(sshd.client_key), "-o", "StrictHostKeyChecking=no"]
    command += ["-o", f"UserKnownHostsFile={work / 'known_hosts'}", f"{sshd.user}@127.0.0.1:{path}", "/dev/null"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    theirs = size / (time.perf_counter() - started) / MB
    print(f"{args.large_mib} MiB, one lane: {ours:.1f} MB/s; OpenSSH sftp: {theirs:.1f} MB/s")


if __name__ == "__main__":
    main()
