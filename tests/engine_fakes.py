"""In-memory stand-ins for the engine's collaborators (Step Functions, S3, a provider connection).

They let the engine's parts be tested in milliseconds; the end-to-end
tests run the same parts against real servers.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from provider_gateway.errors import SourceUnavailable
from provider_gateway.messages import DownloadTask, FileRequest


def client_error(code: str, status: int = 400, operation: str = "SendTaskSuccess") -> ClientError:
    """The ClientError botocore raises for an error answer ``code`` with HTTP ``status``."""
    return ClientError(
        {"Error": {"Code": code, "Message": f"{code} (fake)"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


class FakeSfn:
    """Records every call; ``fail[method]`` lists exceptions raised by that method's next calls, in order."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.fail: dict[str, list[BaseException]] = defaultdict(list)
        self.always_fail: dict[str, BaseException] = {}
        self.tasks: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.poll_gate: threading.Semaphore | None = None
        """When set, each GetActivityTask waits for a release of it (a long poll under way)."""
        self.polls_in_flight = 0
        self.polls_peak = 0

    def _call(self, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls[method].append(kwargs)
            self.changed.notify_all()
            if method in self.always_fail:
                raise self.always_fail[method]
            if self.fail[method]:
                raise self.fail[method].pop(0)
            if method == "get_activity_task":
                return self.tasks.pop(0) if self.tasks else {}
            return {}

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds (checked at every call), up to ``timeout_s``."""
        with self._lock:
            return self.changed.wait_for(predicate, timeout_s)

    def answers(self) -> list[tuple[str, dict[str, Any]]]:
        """The SendTaskSuccess/Failure calls made, in order."""
        return [(m, c) for m in ("send_task_success", "send_task_failure") for c in self.calls[m]]

    def send_task_success(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("send_task_success", kwargs)

    def send_task_failure(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("send_task_failure", kwargs)

    def send_task_heartbeat(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("send_task_heartbeat", kwargs)

    def get_activity_task(self, **kwargs: Any) -> dict[str, Any]:
        if self.poll_gate is None:
            return self._call("get_activity_task", kwargs)
        with self._lock:
            self.polls_in_flight += 1
            self.polls_peak = max(self.polls_peak, self.polls_in_flight)
            self.changed.notify_all()
        try:
            if not self.poll_gate.acquire(timeout=10):
                raise AssertionError("a held poll was never released")
            return self._call("get_activity_task", kwargs)
        finally:
            with self._lock:
                self.polls_in_flight -= 1
                self.changed.notify_all()


class FakeS3:
    """put_object into a dict, or raising ``fail`` when set."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.fail = fail

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        if self.fail is not None:
            raise self.fail
        self.objects[(Bucket, Key)] = Body
        return {}


class BlockingStream:
    """A source that sends ``head`` and then blocks (a silent provider) until its connection is aborted."""

    def __init__(self, connection: FakeConnection | FakeLane, head: bytes) -> None:
        self._connection = connection
        self._head = head
        self.size: int | None = None

    def read(self, amount: int) -> bytes:
        if self._head:
            piece, self._head = self._head[:amount], self._head[amount:]
            return piece
        self._connection.reading.set()
        if not self._connection.aborted.wait(10):
            raise AssertionError("the blocked read was never aborted")
        raise SourceUnavailable("connection aborted")

    def close(self) -> None:
        pass


class FakeConnection:
    """A provider connection whose reads block after ``head`` until :meth:`abort`."""

    def __init__(self, head: bytes = b"x" * 1000) -> None:
        self.head = head
        self.aborted = threading.Event()
        self.reading = threading.Event()
        self.aborts = 0
        self.closed = False

    def open(self, url: str, offset: int = 0) -> BlockingStream:
        if self.aborted.is_set():
            raise SourceUnavailable("the connection was aborted")
        return BlockingStream(self, self.head)

    def check(self) -> bool:
        return not self.aborted.is_set()

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborts += 1
        self.aborted.set()


def download_task(count: int, entry: dict[str, Any] | None = None, name: str = "f") -> DownloadTask:
    """A parsed download task of ``count`` files ``{name}{i}`` (each file's entry is ``entry``, or a plain one)."""
    files = tuple(
        FileRequest(index=i, url=f"http://provider.test/{name}{i}", bucket="bkt", key=f"{name}{i}", size=10_000)
        for i in range(count)
    )
    entries = tuple(dict(entry) if entry is not None else {"url": f.url} for f in files)
    message = {"payload": {"files": [dict(e) for e in entries]}, "config": {}}
    return DownloadTask(message=message, payload=message["payload"], files=files, entries=entries)


class FakeStream:
    """A source that sends ``data`` at once."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size: int | None = len(data)

    def read(self, amount: int) -> bytes:
        piece, self._data = self._data[:amount], self._data[amount:]
        return piece

    def close(self) -> None:
        pass


class FakeLane:
    """A lane of a :class:`FakeSharedConnection`: fails once the lane or its connection is aborted or closed."""

    def __init__(self, shared: FakeSharedConnection) -> None:
        self.shared = shared
        self.aborted = threading.Event()
        self.reading = threading.Event()
        self.closed = False

    def open(self, url: str, offset: int = 0) -> FakeStream | BlockingStream:
        if self.aborted.is_set() or self.closed or not self.shared.check():
            raise SourceUnavailable("the lane or its connection is gone")
        if url in self.shared.blocking:
            return BlockingStream(self, b"x" * 1000)
        return FakeStream(self.shared.data.get(url, bytes(10_000))[offset:])

    def check(self) -> bool:
        return self.shared.check()

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted.set()


class FakeSharedConnection:
    """A connection that carries several files at once through :class:`FakeLane` lanes."""

    def __init__(self, data: dict[str, bytes] | None = None, blocking: set[str] | None = None) -> None:
        self.data = data or {}
        self.blocking = blocking or set()
        """URLs whose reads block after a first piece until their lane is aborted."""
        self.lanes: list[FakeLane] = []
        self.broken = False
        self.closed = False

    def lane(self) -> FakeLane:
        lane = FakeLane(self)
        self.lanes.append(lane)
        return lane

    def open(self, url: str, offset: int = 0) -> FakeStream:
        raise AssertionError("a shared connection is used through its lanes")

    def check(self) -> bool:
        return not self.broken and not self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.broken = True


class CountingFactory:
    """A connection factory that records every connection it made and the most ever open at once."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.made: list[Any] = []
        self.peak = 0

    def open_now(self) -> int:
        """How many connections it made are not closed."""
        return sum(not c.closed for c in self.made)

    def __call__(self, conn_config: Any, settings: Any) -> Any:
        with self._lock:
            connection = self._make()
            self.made.append(connection)
            self.peak = max(self.peak, self.open_now())
            return connection
