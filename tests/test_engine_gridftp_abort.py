"""GridftpConnection.abort(): a read blocked on a silent transfer ends at once, whatever the moment of the abort.

``globus-url-copy`` is replaced by a script that sends a little and then
hangs with a child holding the pipe open, as a stalled transfer does: only
killing the whole process group ends the read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider_gateway.config.model import GridftpConnConfig
from provider_gateway.errors import SourceUnavailable
from provider_gateway.protocols.base import ConnectionSettings
from provider_gateway.protocols.gridftp import PROGRAM, GridftpConnection

HEAD = 65_536
STALLING_PROGRAM = f"""#!/bin/sh
cat > /dev/null
head -c {HEAD} /dev/zero
echo $$ > "$PIDS/$$"
sleep 300 &
echo $! > "$PIDS/$!"
wait
"""


@pytest.fixture
def pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / PROGRAM
    script.write_text(STALLING_PROGRAM)
    script.chmod(0o755)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PIDS", str(pid_dir))
    yield pid_dir
    for pid_file in pid_dir.iterdir():  # never leave a sleeper behind, even if a test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.name), signal.SIGKILL)


def _connection() -> GridftpConnection:
    return GridftpConnection(GridftpConnConfig(type="gridftp", host="127.0.0.1"), ConnectionSettings(read_timeout_s=30))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_abort_ends_a_blocked_read_at_once_and_kills_the_process_group(pids: Path) -> None:
    connection = _connection()
    stream = connection.open("gsiftp://127.0.0.1/data/file.h5")
    got = 0
    while got < HEAD:
        got += len(stream.read(HEAD))
    aborter = threading.Timer(0.2, connection.abort)
    aborter.start()
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="aborted"):
        stream.read(HEAD)  # blocks: the program sends nothing more
    took = time.monotonic() - started
    stream.close()

    assert took < 5  # not the 30 s read timeout
    pids_seen = [int(p.name) for p in pids.iterdir()]
    assert len(pids_seen) == 2
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids_seen) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(pid) for pid in pids_seen)  # the sleeper holding the pipe died too
    assert not connection.check()
    with pytest.raises(SourceUnavailable, match="aborted"):
        connection.open("gsiftp://127.0.0.1/data/other.h5")


def test_abort_with_nothing_running_and_twice_is_safe(pids: Path) -> None:
    connection = _connection()
    connection.abort()
    connection.abort()
    assert not connection.check()
    with pytest.raises(SourceUnavailable):
        connection.open("gsiftp://127.0.0.1/data/file.h5")
    assert list(pids.iterdir()) == []  # nothing was started


@pytest.mark.parametrize("delay_s", [0.0, 0.001, 0.005, 0.02])
def test_an_abort_racing_the_open_never_leaves_a_read_blocked(pids: Path, delay_s: float) -> None:
    connection = _connection()
    threading.Timer(delay_s, connection.abort).start()
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        stream = connection.open("gsiftp://127.0.0.1/data/file.h5")
        try:
            while stream.read(HEAD):
                pass
        finally:
            stream.close()
    assert time.monotonic() - started < 5
