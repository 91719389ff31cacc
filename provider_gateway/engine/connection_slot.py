"""A connection slot: at most one network connection to a provider, lent to threads as lanes.

The slot opens its connection lazily with a connection factory and keeps it
while it works. A thread serves files through a :class:`Lane`: for a
:class:`~provider_gateway.protocols.base.SharedConnection` every lane is
``connection.lane()``, so several files share the one network connection;
for a plain connection the lane is the connection itself (a slot has one
lane then). A broken connection (``check()`` False) is closed before its
replacement opens, so a slot never holds two network connections, also
across reconnects and when the factory waits for a lease. Lanes on a
replaced connection fail and take a lane of the new one on their next
:meth:`Lane.connect`.

It depends only on the protocol interface: the gateway's connection threads
and the one-file download both use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from provider_gateway.protocols.base import Connection, ConnectionSettings, SharedConnection

log = logging.getLogger(__name__)

# Builds one network connection: a protocol's connection class, or a LeasedFactory around one.
Factory = Callable[[Any, ConnectionSettings], Connection]


class ConnectionSlot:
    """Owns at most one connection made by ``factory`` and hands lanes over it to threads.

    ``idle_release_s``: a connection no lane has used for that long is closed
    by :meth:`release_if_idle` (a leased slot goes back to every gateway), and
    never while a lane is busy. The connection is also closed when the last
    lane is closed.
    """

    def __init__(
        self,
        factory: Factory,
        conn_config: Any,
        settings: ConnectionSettings,
        idle_release_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._conn_config = conn_config
        self._settings = settings
        self._idle_release_s = idle_release_s
        self._clock = clock
        # Held while the connection is opened, replaced or closed (network I/O): one at a time.
        self._opening = threading.Lock()
        # Guards the counters only; never held during I/O.
        self._state = threading.Lock()
        self._connection: Connection | None = None
        self._generation = 0
        self._lanes = 0
        self._busy = 0
        self._idle_since = clock()

    @property
    def connected(self) -> bool:
        """Whether the slot holds an open network connection."""
        return self._connection is not None

    @property
    def lanes(self) -> int:
        """How many lanes are open (threads serving files through this slot)."""
        return self._lanes

    def busy(self) -> int:
        """How many lanes are serving a file now."""
        return self._busy

    def lane(self) -> Lane:
        """A new lane for one thread; close it when the thread ends."""
        with self._state:
            self._lanes += 1
        return Lane(self)

    def release_if_idle(self) -> bool:
        """Close the connection if no lane has been busy for ``idle_release_s``; whether it closed it."""
        if self._idle_release_s is None or self._connection is None:
            return False
        # A lane opening the connection (maybe waiting for a lease) is not idle: do not wait for it.
        if not self._opening.acquire(blocking=False):
            return False
        try:
            with self._state:
                idle = self._busy == 0 and self._clock() - self._idle_since >= self._idle_release_s
            if not idle or self._connection is None:
                return False
            log.info("connection idle for %.0f s: closing it to free its slot", self._idle_release_s)
            self._close_connection()
            return True
        finally:
            self._opening.release()

    def _live(self) -> tuple[Connection, int]:
        """The working connection and its generation, replacing a broken one (``_opening`` held)."""
        if self._connection is not None and not self._connection.check():
            log.debug("the connection is broken: closing it before another opens")
            self._close_connection()
        if self._connection is None:
            # The old connection is closed before a new one opens: never more than one.
            self._connection = self._factory(self._conn_config, self._settings)
            self._generation += 1
            log.debug("connection %d opened", self._generation)
        return self._connection, self._generation

    def _require(self) -> Connection:
        assert self._connection is not None
        return self._connection

    def _close_connection(self) -> None:
        """Close the connection (``_opening`` held); every lane over it is broken from now on."""
        connection, self._connection = self._connection, None
        if connection is not None:
            _close(connection)
            log.debug("connection %d closed", self._generation)

    def _begin(self) -> None:
        with self._state:
            self._busy += 1

    def _end(self) -> None:
        with self._state:
            self._busy -= 1
            if self._busy == 0:
                self._idle_since = self._clock()

    def _lane_closed(self) -> None:
        with self._opening:
            with self._state:
                self._lanes -= 1
                last = self._lanes == 0
            if last:
                self._close_connection()


class Lane:
    """One thread's way to the slot's connection: a lane of a shared connection, or the connection itself."""

    def __init__(self, slot: ConnectionSlot) -> None:
        self._slot = slot
        self._connection: Connection | None = None
        self._generation = 0
        self._closed = False
        # Whether _connection is a lane of a shared connection (the lane's to close), not the connection itself.
        self._is_lane = False

    @property
    def slot(self) -> ConnectionSlot:
        """The slot this lane belongs to."""
        return self._slot

    def connect(self) -> Connection:
        """The connection to serve a file through, reconnecting the slot if its connection broke."""
        slot = self._slot
        with slot._opening:
            if self._closed:
                raise RuntimeError("the lane is closed")
            connection, generation = slot._live()
            if self._connection is not None and self._generation == generation:
                return self._connection
            self._release()
            self._is_lane = isinstance(connection, SharedConnection)
            self._connection = connection.lane() if isinstance(connection, SharedConnection) else connection
            self._generation = generation
            return self._connection

    def drop(self) -> None:
        """The lane's file failed in a way that may have broken its connection: do not reuse it.

        A plain connection is closed (its slot has this one lane); a lane of a
        shared connection is closed alone, and the shared connection only when
        its ``check()`` says it is broken.
        """
        slot = self._slot
        with slot._opening:
            if self._connection is None:
                return
            current = self._generation == slot._generation and slot._connection is not None
            is_lane = self._is_lane
            self._release()
            if current and (not is_lane or not slot._require().check()):
                slot._close_connection()

    def serving(self) -> _Busy:
        """``with lane.serving():`` marks the lane busy, so idle release leaves the connection open."""
        return _Busy(self._slot)

    def close(self) -> None:
        """Release the lane; the last lane of a slot closes its connection."""
        with self._slot._opening:
            if self._closed:
                return
            self._closed = True
            self._release()
        self._slot._lane_closed()

    def _release(self) -> None:
        """Let go of the lane's connection (``_opening`` held); the slot's own connection stays."""
        lane, self._connection = self._connection, None
        if lane is not None and self._is_lane:
            _close(lane)

    def __enter__(self) -> Lane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Busy:
    def __init__(self, slot: ConnectionSlot) -> None:
        self._slot = slot

    def __enter__(self) -> None:
        self._slot._begin()

    def __exit__(self, *exc: object) -> None:
        self._slot._end()


def _close(connection: Connection) -> None:
    try:
        connection.close()
    except Exception:  # closing a broken connection may fail: it is gone either way
        log.debug("closing a connection failed", exc_info=True)
