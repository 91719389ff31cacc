"""An S3 endpoint that accepts uploads and keeps none of the bytes: for measuring the gateway's
own memory on files far larger than the local S3 (moto keeps every object in memory) could hold.

It answers PutObject and the multipart calls (create, upload part, complete, abort), counts
the bytes it was sent, and enforces S3's limits as S3 answers them: part numbers 1 to 10,000
(InvalidArgument), parts and PutObjects at most 5 GiB (EntityTooLarge), every part but the
last at least 5 MiB (EntityTooSmall, at completion), an object at most 5 TiB, the parts listed
in ascending order (InvalidPartOrder) and uploaded (InvalidPart), a known upload id (NoSuchUpload).
``completed`` records each object's part count, size and largest part.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_OBJECT_SIZE = 5 * 1024 * GiB


class S3Error(Exception):
    """An error answered as S3 does: status, code and message in an XML body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Completed:
    """One object the sink completed."""

    key: str
    parts: int
    size: int
    largest_part: int


class S3Sink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = 0
        self.completed: list[Completed] = []
        self.refused: list[str] = []
        self._uploads: dict[str, dict[int, tuple[int, str]]] = {}  # upload id -> part -> (size, etag)
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, n: int) -> None:
        with self._lock:
            self.received += n

    def create(self) -> str:
        upload_id = uuid.uuid4().hex
        with self._lock:
            self._uploads[upload_id] = {}
        return upload_id

    def put_part(self, upload_id: str, number: str, size: int) -> str:
        if not number.isdigit() or not 1 <= int(number) <= MAX_PARTS:
            raise S3Error(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
        if size > MAX_PART_SIZE:
            raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        etag = '"' + hashlib.md5(uuid.uuid4().bytes).hexdigest() + '"'
        with self._lock:
            self._parts(upload_id)[int(number)] = (size, etag)
        return etag

    def complete(self, upload_id: str, key: str, listed: list[tuple[int, str]]) -> None:
        with self._lock:
            parts = self._parts(upload_id)
            numbers = [number for number, _ in listed]
            if not listed or numbers != sorted(set(numbers)):
                raise S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
            if any(parts.get(number, (0, None))[1] != etag for number, etag in listed):
                raise S3Error(400, "InvalidPart", "One or more of the specified parts could not be found.")
            sizes = [parts[number][0] for number in numbers]
            if any(size < MIN_PART_SIZE for size in sizes[:-1]):
                raise S3Error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
            if sum(sizes) > MAX_OBJECT_SIZE:
                raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
            del self._uploads[upload_id]
            self.completed.append(Completed(key, len(sizes), sum(sizes), max(sizes)))

    def abort(self, upload_id: str) -> None:
        with self._lock:
            self._parts(upload_id)
            del self._uploads[upload_id]

    @property
    def open_uploads(self) -> int:
        with self._lock:
            return len(self._uploads)

    def _parts(self, upload_id: str) -> dict[int, tuple[int, str]]:
        if upload_id not in self._uploads:
            raise S3Error(404, "NoSuchUpload", "The specified upload does not exist.")
        return self._uploads[upload_id]


def _listed_parts(body: bytes) -> list[tuple[int, str]]:
    """(part number, ETag) of each part in a CompleteMultipartUpload body, namespaced or not."""
    parts = []
    for element in ET.fromstring(body).iter():
        if element.tag.rsplit("}", 1)[-1] == "Part":
            fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in element}
            parts.append((int(fields.get("PartNumber", "0")), fields.get("ETag", "")))
    return parts


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: S3Sink

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _drain(self, keep: bool = False) -> tuple[int, bytes]:
        """Read the request body: its length, and the body itself if ``keep``."""
        total, kept = 0, []
        for piece in self._pieces():
            total += len(piece)
            if keep:
                kept.append(piece)
        decoded = self.headers.get("x-amz-decoded-content-length")
        return (int(decoded) if decoded else total), b"".join(kept)

    def _pieces(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece:
                return
            left -= len(piece)
            yield piece

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: S3Error) -> None:
        self.server.refused.append(f"{self.command} {self.path}: {error}")
        body = f"<Error><Code>{error.code}</Code><Message>{error.message}</Message></Error>"
        self._reply(error.status, body.encode(), {"Content-Type": "application/xml"})

    def _target(self) -> tuple[dict[str, list[str]], str, str]:
        parts = urlsplit(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        return parse_qs(parts.query, keep_blank_values=True), bucket, key

    def do_PUT(self) -> None:
        query, _, _ = self._target()
        size, _ = self._drain()
        self.server.count(size)
        try:
            if "uploadId" in query:
                etag = self.server.put_part(query["uploadId"][0], query.get("partNumber", [""])[0], size)
            elif size > MAX_PART_SIZE:
                raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
            else:
                etag = '"' + hashlib.md5(uuid.uuid4().bytes).hexdigest() + '"'
        except S3Error as error:
            self._error(error)
            return
        self._reply(200, headers={"ETag": etag})

    def do_POST(self) -> None:
        query, bucket, key = self._target()
        _, body = self._drain(keep="uploadId" in query)
        try:
            if "uploads" in query:
                reply = (
                    f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                    f"<UploadId>{self.server.create()}</UploadId></InitiateMultipartUploadResult>"
                )
            else:
                self.server.complete(query["uploadId"][0], key, _listed_parts(body))
                reply = (
                    f"<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                    f'<ETag>"{uuid.uuid4().hex}-1"</ETag></CompleteMultipartUploadResult>'
                )
        except S3Error as error:
            self._error(error)
            return
        self._reply(200, reply.encode(), {"Content-Type": "application/xml"})

    def do_DELETE(self) -> None:
        query, _, _ = self._target()
        self._drain()
        try:
            if "uploadId" in query:
                self.server.abort(query["uploadId"][0])
        except S3Error as error:
            self._error(error)
            return
        self._reply(204)

    def do_HEAD(self) -> None:
        self._reply(404)
