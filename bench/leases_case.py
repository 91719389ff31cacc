"""The cost of connection leases: small files with and without a shared lease table.

DynamoDB calls are counted by a forwarding proxy in front of the local
DynamoDB (``AWS_ENDPOINT_URL_DYNAMODB``), by operation (X-Amz-Target).
"""

from __future__ import annotations

import collections
import http.client
import http.server
import threading
import time
from typing import Any

import boto3

from provider_gateway.leases import create_table


class CountingForwarder:
    """An HTTP proxy to ``target`` that counts requests by their X-Amz-Target operation."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        counts: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    counts[str(self.headers.get("X-Amz-Target", "?")).rsplit(".", 1)[-1]] += 1
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                upstream.request("POST", self.path, body, dict(self.headers.items()))
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

        self.counts = counts
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def gateway_small_leased(stage: Any, kind: str, per_file: bool) -> dict[str, float]:
    """``stage.gateway_small`` with ``connection_leases`` on a fresh table: files/s and DynamoDB calls per file."""
    table = f"bench-leases-{time.time_ns()}"
    create_table(boto3.client("dynamodb"), table)
    forwarder = CountingForwarder(stage.env["AWS_ENDPOINT_URL"])
    try:
        figures = stage.gateway_small(
            kind,
            per_file,
            extra_env={"AWS_ENDPOINT_URL_DYNAMODB": forwarder.endpoint},
            extra_config={"connection_leases": {"table": table}},
        )
    finally:
        forwarder.close()
    files = len(stage.small_names)
    calls = sum(forwarder.counts.values())
    return {
        **figures,
        "DynamoDB calls per 1000 files": calls * 1000 / files,
        "of which PutItem (takes)": forwarder.counts["PutItem"] * 1000 / files,
        "of which Query": forwarder.counts["Query"] * 1000 / files,
    }
