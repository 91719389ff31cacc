"""An S3 endpoint that accepts uploads and keeps none of the bytes: for measuring the gateway's
own memory on files far larger than the local S3 (moto keeps every object in memory) could hold.

It answers PutObject and the multipart calls (create, upload part, complete, abort) and
counts the bytes it was sent.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class S3Sink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = 0
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, n: int) -> None:
        with self._lock:
            self.received += n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: S3Sink

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _drain(self) -> int:
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return total
                total += len(self.rfile.read(size))
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece:
                break
            left -= len(piece)
            total += len(piece)
        return total

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.server.count(self._drain())
        etag = '"' + hashlib.md5(uuid.uuid4().bytes).hexdigest() + '"'
        self._reply(200, headers={"ETag": etag})

    def do_POST(self) -> None:
        self._drain()
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        bucket, _, key = urlsplit(self.path).path.lstrip("/").partition("/")
        if "uploads" in query:
            body = (
                f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f"<UploadId>{uuid.uuid4().hex}</UploadId></InitiateMultipartUploadResult>"
            )
        else:
            body = (
                f"<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f'<ETag>"{uuid.uuid4().hex}-1"</ETag></CompleteMultipartUploadResult>'
            )
        self._reply(200, body.encode(), {"Content-Type": "application/xml"})

    def do_DELETE(self) -> None:
        self._reply(204)

    def do_HEAD(self) -> None:
        self._reply(404)
