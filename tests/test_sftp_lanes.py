"""Several files in flight in one SFTP session (lanes of one SftpConnection), against OpenSSH's sshd.

Every wait has a deadline: a thread that is still alive when it should have
ended fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provider_gateway.config import parse_config
from provider_gateway.config.model import SftpConnConfig
from provider_gateway.errors import ConfigError, SourceNotFound, SourceUnavailable
from provider_gateway.protocols import sftp_stream
from provider_gateway.protocols.base import Connection, ConnectionSettings, SharedConnection, SourceStream
from provider_gateway.protocols.sftp import PIECE, SftpConnection
from provider_gateway.protocols.sftp_session import FILE_AHEAD, READ_BUDGET
from tests.servers import SSHD, CountingProxy, Sshd

pytestmark = pytest.mark.skipif(SSHD is None and not os.environ.get("CI"), reason="needs OpenSSH sshd")

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def proxy(sshd: Sshd) -> Iterator[CountingProxy]:
    counting = CountingProxy(sshd.port)
    yield counting
    counting.unstall()
    counting.close()


def connect(sshd: Sshd, proxy: CountingProxy, read_timeout_s: float = 30.0) -> SftpConnection:
    conn = SftpConnConfig(
        type="sftp",
        host="127.0.0.1",
        port=proxy.port,
        username=sshd.user,
        private_key_file=str(sshd.client_key),
        host_key=sshd.host_key_line,
    )
    return SftpConnection(conn, ConnectionSettings(read_timeout_s=read_timeout_s))


def url(proxy: CountingProxy, path: Path) -> str:
    return f"sftp://127.0.0.1:{proxy.port}{path}"


def read_all(lane: Connection, address: str, offset: int = 0) -> bytes:
    stream = lane.open(address, offset)
    try:
        pieces = []
        while piece := stream.read(1 << 20):
            pieces.append(piece)
        assert stream.size is not None and offset + sum(map(len, pieces)) == max(stream.size, offset)
        return b"".join(pieces)
    finally:
        stream.close()


def read_rest(stream: SourceStream) -> int:
    count = 0
    while piece := stream.read(1 << 20):
        count += len(piece)
    return count


class Runner:
    """Threads whose outcome (bytes, or the exception) is kept, each joined with a deadline."""

    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}
        self.outcome: dict[str, Any] = {}

    def start(self, name: str, work: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.outcome[name] = work()
            except BaseException as exc:  # kept for the assertions
                self.outcome[name] = exc

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads[name] = thread
        thread.start()

    def join(self, *names: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        for name in names or tuple(self.threads):
            self.threads[name].join(max(0.0, deadline - time.monotonic()))
            assert not self.threads[name].is_alive(), f"{name} still runs after {DEADLINE_S:g} s"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S:g} s: {what}"
        time.sleep(0.01)


def test_lanes_read_different_files_at_once_over_one_ssh_connection(
    sshd: Sshd, proxy: CountingProxy, tmp_path: Path
) -> None:
    rng = random.Random(16)
    sizes = [0, 1, PIECE, 3 * PIECE + 5, 2 << 20]
    files = {tmp_path / f"f{i}.bin": rng.randbytes(rng.choice(sizes)) for i in range(16)}
    files[tmp_path / "large.bin"] = rng.randbytes(FILE_AHEAD + 3 * PIECE + 1)  # more than one file may ask ahead
    for path, data in files.items():
        path.write_bytes(data)
    connection = connect(sshd, proxy)
    assert isinstance(connection, SharedConnection)
    lanes = 4
    opened_together = threading.Barrier(lanes, timeout=DEADLINE_S)
    work: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for path in sorted(files, key=lambda p: -len(files[p])):
        work.put(path)
    got: dict[Path, bytes] = {}

    def lane_work() -> None:
        lane = connection.lane()
        first = True
        try:
            while True:
                try:
                    path = work.get_nowait()
                except queue.Empty:
                    return
                stream = lane.open(url(proxy, path))
                if first:  # every lane has a file open before any reads: `lanes` files in flight at once
                    opened_together.wait()
                    first = False
                pieces = []
                while piece := stream.read(100_000):
                    pieces.append(piece)
                stream.close()
                got[path] = b"".join(pieces)
        finally:
            lane.close()

    runner = Runner()
    try:
        for i in range(lanes):
            runner.start(f"lane{i}", lane_work)
        runner.join()
        assert all(outcome is None for outcome in runner.outcome.values()), runner.outcome
        assert got == files
        assert connection.check()
        wait_until(lambda: connection.session.budget_in_use == 0, "every piece's budget back")
    finally:
        connection.close()
    assert (proxy.total, proxy.max_open) == (1, 1)


def test_faults_among_files_in_flight_fail_only_their_own_file(
    sshd: Sshd, proxy: CountingProxy, tmp_path: Path
) -> None:
    """A missing file, a file cut short on disk mid-read and an aborted lane, while a large file reads on."""
    big = os.urandom(READ_BUDGET + 5 * PIECE + 7)  # more than the session's whole read-ahead
    (tmp_path / "big.bin").write_bytes(big)
    cut = os.urandom(2 * FILE_AHEAD)
    (tmp_path / "cut.bin").write_bytes(cut)
    (tmp_path / "aborted.bin").write_bytes(os.urandom(2 * READ_BUDGET))
    connection = connect(sshd, proxy)
    big_lane, cut_lane, aborted_lane, missing_lane = (connection.lane() for _ in range(4))
    runner = Runner()
    try:
        cut_stream = cut_lane.open(url(proxy, tmp_path / "cut.bin"))
        first = cut_stream.read(PIECE)
        aborted_stream = aborted_lane.open(url(proxy, tmp_path / "aborted.bin"))
        assert aborted_stream.read(10) == (tmp_path / "aborted.bin").read_bytes()[:10]
        proxy.stall()  # nothing moves: the aborted lane's reads block once its buffered pieces are taken

        def read_aborted() -> int:
            count = 10
            while piece := aborted_stream.read(1 << 20):
                count += len(piece)
            return count

        runner.start("big", lambda: read_all(big_lane, url(proxy, tmp_path / "big.bin")))
        runner.start("aborted", read_aborted)
        aborted_lane.abort()
        runner.join("aborted")  # it ends while the link is still stalled: the abort, not the file's end
        assert isinstance(runner.outcome["aborted"], SourceUnavailable), runner.outcome
        assert "aborted" in runner.outcome["aborted"].message
        assert runner.threads["big"].is_alive() and connection.check()

        (tmp_path / "cut.bin").write_bytes(cut[: FILE_AHEAD // 2 + 12345])  # truncated under the open handle
        proxy.unstall()

        def read_cut() -> bytes:
            pieces = [first]
            with contextlib.suppress(SourceUnavailable):
                while piece := cut_stream.read(1 << 20):
                    pieces.append(piece)
                return b"complete?"
            return b"".join(pieces)

        runner.start("cut", read_cut)
        runner.start("missing", lambda: read_all(missing_lane, url(proxy, tmp_path / "missing.bin")))
        runner.join()
        assert isinstance(runner.outcome["missing"], SourceNotFound), runner.outcome
        assert runner.outcome["big"] == big
        kept = runner.outcome["cut"]
        assert kept != b"complete?" and len(kept) < len(cut) and kept == cut[: len(kept)]
        with pytest.raises(SourceUnavailable, match="ended at byte"):
            while cut_stream.read(1 << 20):  # raises again: never b"" short of the stat size
                pass

        assert connection.check()
        again = connection.lane()  # the session serves new files after all that
        assert read_all(again, url(proxy, tmp_path / "big.bin"), offset=len(big) - 3) == big[-3:]
        for lane in (big_lane, cut_lane, aborted_lane, missing_lane, again):
            lane.close()
        wait_until(lambda: connection.session.budget_in_use == 0, "the budget of every dropped piece back")
    finally:
        proxy.unstall()
        connection.close()
    assert proxy.total == 1


@pytest.mark.parametrize("how", ["dropped", "aborted"])
def test_a_broken_session_fails_every_lane_at_once(how: str, sshd: Sshd, proxy: CountingProxy, tmp_path: Path) -> None:
    data = os.urandom(2 * READ_BUDGET)
    (tmp_path / "f.bin").write_bytes(data)
    connection = connect(sshd, proxy)
    streams = [connection.lane().open(url(proxy, tmp_path / "f.bin")) for _ in range(3)]
    for stream in streams:
        assert stream.read(PIECE) == data[:PIECE]
    proxy.stall()
    runner = Runner()
    for i, stream in enumerate(streams):
        runner.start(f"lane{i}", functools.partial(read_rest, stream))
    if how == "dropped":
        proxy.drop()
    else:
        connection.abort()
    runner.join()
    assert all(isinstance(outcome, SourceUnavailable) for outcome in runner.outcome.values()), runner.outcome
    assert not connection.check()
    with pytest.raises(SourceUnavailable):
        connection.lane().open(url(proxy, tmp_path / "f.bin"))
    closing = Runner()
    closing.start("close", connection.close)  # nothing is said on a broken session: it does not wait on the link
    closing.join()
    assert closing.outcome["close"] is None


def test_a_stalled_session_fails_its_lanes_after_the_read_timeout(
    sshd: Sshd, proxy: CountingProxy, tmp_path: Path
) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(2 * READ_BUDGET))
    connection = connect(sshd, proxy, read_timeout_s=1.0)
    try:
        stream = connection.lane().open(url(proxy, tmp_path / "f.bin"))
        proxy.stall()
        with pytest.raises(SourceUnavailable, match="no reply from the server in 1 s"):
            while stream.read(1 << 20):
                pass
        assert not connection.check()
    finally:
        connection.close()


def test_an_open_aborted_before_its_handle_arrives_leaves_the_session_working(
    sshd: Sshd, proxy: CountingProxy, tmp_path: Path
) -> None:
    (tmp_path / "f.bin").write_bytes(b"payload")
    connection = connect(sshd, proxy)
    lane = connection.lane()
    runner = Runner()
    try:
        proxy.stall()
        runner.start("open", lambda: lane.open(url(proxy, tmp_path / "f.bin")))
        wait_until(lambda: lane._stream is not None, "the open under way")
        lane.abort()
        runner.join()
        assert isinstance(runner.outcome["open"], SourceUnavailable), runner.outcome
        proxy.unstall()
        # The handle the server opened for nobody is closed with the session's next request.
        wait_until(lambda: len(connection.session._orphans) == 1, "the abandoned open's handle back")
        assert read_all(lane, url(proxy, tmp_path / "f.bin")) == b"payload"  # the same lane, the next file
        assert connection.session._orphans == [] and connection.check()
    finally:
        proxy.unstall()
        connection.close()


def test_short_reads_are_completed_by_asking_for_the_rest(
    sshd: Sshd, proxy: CountingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sshd answers at most 255 KiB per read: asked for 400 KiB, every reply is short and the rest is asked for."""
    monkeypatch.setattr(sftp_stream, "PIECE", 400 * 1024)
    rng = random.Random(255)
    files = {size: rng.randbytes(size) for size in (1, 255 * 1024 + 1, 400 * 1024, 400 * 1024 + 1, 3 * 1024 * 1024 + 7)}
    for size, data in files.items():
        (tmp_path / f"s{size}.bin").write_bytes(data)
    connection = connect(sshd, proxy)
    runner = Runner()
    try:
        for size in files:
            address = url(proxy, tmp_path / f"s{size}.bin")
            runner.start(f"s{size}", functools.partial(read_all, connection.lane(), address))
        runner.join()
        assert runner.outcome == {f"s{size}": data for size, data in files.items()}
        wait_until(lambda: connection.session.budget_in_use == 0, "every piece's budget back")
    finally:
        connection.close()


SIZES = [0, 1, 2, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE, 7 * PIECE + 3, FILE_AHEAD - 1, FILE_AHEAD, FILE_AHEAD + 1]


def test_random_sizes_offsets_and_lane_counts_read_byte_exact(sshd: Sshd, proxy: CountingProxy, tmp_path: Path) -> None:
    rng = random.Random(1616)
    sizes = SIZES + [rng.randrange(3 * PIECE) for _ in range(4)]
    files = {}
    for size in sizes:
        files[size] = rng.randbytes(size)
        (tmp_path / f"s{size}.bin").write_bytes(files[size])
    connection = connect(sshd, proxy)
    try:
        for _ in range(5):
            lanes = rng.randint(1, 6)
            jobs: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
            chosen = [(size, rng.choice([0, 1, size // 2, PIECE, size, size + 1])) for size in rng.sample(sizes, 8)]
            for job in chosen:
                jobs.put(job)
            got: dict[tuple[int, int], bytes] = {}

            def lane_work(jobs: queue.SimpleQueue[tuple[int, int]], got: dict[tuple[int, int], bytes]) -> None:
                lane = connection.lane()
                try:
                    while True:
                        try:
                            size, offset = jobs.get_nowait()
                        except queue.Empty:
                            return
                        got[(size, offset)] = read_all(lane, url(proxy, tmp_path / f"s{size}.bin"), offset)
                finally:
                    lane.close()

            runner = Runner()
            for i in range(lanes):
                runner.start(f"lane{i}", functools.partial(lane_work, jobs, got))
            runner.join()
            assert all(outcome is None for outcome in runner.outcome.values()), (lanes, runner.outcome)
            assert got == {(size, offset): files[size][offset:] for size, offset in chosen}, lanes
        wait_until(lambda: connection.session.budget_in_use == 0, "every piece's budget back")
    finally:
        connection.close()
    assert proxy.total == 1


def sftp_document(**extra: object) -> dict[str, Any]:
    conn = {"type": "sftp", "host": "h", "username": "u", "password": "p", "insecure_skip_host_key_check": True}
    conn.update(extra)
    arn = "arn:aws:states:us-east-1:123456789012:activity:SftpProvDownloadActivity"
    gateway = {"activity_arn": arn, "conn_config": conn, "num_connections": 2}
    return {"providers": [{"id": "SFTP_PROV", "config": {"gateway_config": gateway}}]}


def test_files_in_flight_is_bounded_and_defaults_to_the_measured_value() -> None:
    def files_in_flight(**extra: object) -> int:
        conn = parse_config(sftp_document(**extra), resolver=str).providers[0].gateway.conn
        assert isinstance(conn, SftpConnConfig)
        return conn.files_in_flight

    assert files_in_flight() == 4
    assert files_in_flight(files_in_flight=32) == 32
    for wrong in (0, 33, "4", True):
        with pytest.raises(ConfigError, match="files_in_flight"):
            files_in_flight(files_in_flight=wrong)
