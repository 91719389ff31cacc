"""The bench case for a huge file of unknown size: an HTTP source that sends it chunked
(no Content-Length, no size in the request), through the gateway into the discarding S3 sink.

The sink enforces S3's part rules, so the case fails if the upload would need more than
10,000 parts or sends a part under 5 MiB before the last; it reports the gateway's peak RSS.
"""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from s3sink import S3Sink
from stage import BUCKET, GiB, MiB, Stage, proc_peak_rss_mib


class ChunkedSource(ThreadingHTTPServer):
    """Serves ``GET /<bytes>`` as that many bytes, chunked: the client learns the size only at the end."""

    daemon_threads = True
    block = os.urandom(MiB)

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ChunkedHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ChunkedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ChunkedSource

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        left = int(self.path.strip("/").split(".")[0])
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = self.server.block
        while left:
            piece = block if left >= len(block) else block[:left]
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            left -= len(piece)
        self.wfile.write(b"0\r\n\r\n")


def gateway_unknown_size(stage: Stage, size: int) -> dict[str, float]:
    """One file of ``size`` bytes and unknown size, one connection: seconds, MB/s, peak RSS, parts."""
    source = ChunkedSource()
    sink = S3Sink()
    stage.conns["http-chunked"] = {"type": "http", "host": source.host}
    proc, machine = stage.gateway("http-chunked", 1, {"AWS_ENDPOINT_URL_S3": sink.endpoint})
    file = {"source": {"url": f"http://{source.host}/{size}.bin"}, "target": {"bucket": BUCKET, "key": "unknown.bin"}}
    try:
        started = time.perf_counter()
        stage.execute(machine, [[file]], stall_s=max(180, size / 1e6))
        seconds = time.perf_counter() - started
        rss = proc_peak_rss_mib(proc.pid)
    finally:
        stage.stop(proc)
        sink.shutdown()
        source.shutdown()
    if sink.refused:
        raise RuntimeError(f"the S3 sink refused: {sink.refused[:3]}")
    done = [c for c in sink.completed if c.key == "unknown.bin"]
    if not done or done[0].size != size:
        raise RuntimeError(f"the S3 sink completed {done} for {size} bytes")
    return {
        "seconds": seconds,
        "MB/s": size / seconds / 1e6,
        "peak RSS MiB": rss,
        "parts": float(done[0].parts),
        "largest part MiB": done[0].largest_part / MiB,
        "GiB": size / GiB,
    }
