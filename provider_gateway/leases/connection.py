"""A provider connection opened only under a lease, and closed before the lease can lapse."""

from __future__ import annotations

import threading
from typing import Any

from provider_gateway.errors import SourceUnavailable
from provider_gateway.leases.slots import Lease, LeaseSlots
from provider_gateway.protocols.base import Connection, ConnectionSettings, SharedConnection, SourceStream


def _lapsed(lease: Lease) -> SourceUnavailable:
    return SourceUnavailable(f"the connection's lease on slot {lease.slot} ended ({lease.lost_reason or 'expired'})")


class LeasedStream:
    """A source stream whose every read is checked against its connection's lease."""

    def __init__(self, inner: SourceStream, lease: Lease) -> None:
        self._inner = inner
        self._lease = lease

    @property
    def size(self) -> int | None:
        return self._inner.size

    def read(self, amount: int) -> bytes:
        piece = self._inner.read(amount)
        # Checked after the read too: bytes that arrive after a pause past the lease are not used.
        if not self._lease.valid():
            raise _lapsed(self._lease)
        return piece

    def close(self) -> None:
        self._inner.close()


class LeasedConnection:
    """A connection holding one slot lease: usable while the lease is, and the slot freed on close."""

    def __init__(self, inner: Connection, lease: Lease, slots: LeaseSlots) -> None:
        self._inner = inner
        self._lease = lease
        self._slots = slots
        lease.on_lost = inner.abort

    @property
    def slot(self) -> int:
        """The slot this connection holds."""
        return self._lease.slot

    def open(self, url: str, offset: int = 0) -> SourceStream:
        if not self._lease.valid():
            raise _lapsed(self._lease)
        stream = self._inner.open(url, offset)
        if not self._lease.valid():
            stream.close()
            raise _lapsed(self._lease)
        return LeasedStream(stream, self._lease)

    def check(self) -> bool:
        return self._lease.valid() and self._inner.check()

    def abort(self) -> None:
        self._inner.abort()

    def close(self) -> None:
        if not self._lease.valid():
            self._inner.abort()  # a lapsed slot gets not one byte more: no QUIT, no close_notify
        try:
            self._inner.close()
        finally:
            self._slots.release(self._lease)


class LeasedSharedConnection(LeasedConnection):
    """A leased connection that carries several files at once: each lane checks the one lease."""

    def __init__(self, inner: SharedConnection, lease: Lease, slots: LeaseSlots) -> None:
        super().__init__(inner, lease, slots)
        self._shared = inner

    def lane(self) -> Connection:
        return _LeasedLane(self._shared.lane(), self._lease)


class _LeasedLane(LeasedConnection):
    """A lane of a leased shared connection: closing it releases the lane, not the lease."""

    def __init__(self, inner: Connection, lease: Lease) -> None:
        self._inner = inner
        self._lease = lease

    def close(self) -> None:
        self._inner.close()


class LeasedFactory:
    """A connection factory that takes a slot lease before it connects."""

    def __init__(self, factory: Any, slots: LeaseSlots, holder: str, wait_s: float) -> None:
        self._factory = factory
        self._slots = slots
        self._holder = holder
        self._wait_s = wait_s

    def __call__(self, conn_config: Any, settings: ConnectionSettings) -> LeasedConnection:
        lease = self._slots.acquire(f"{self._holder} {threading.current_thread().name}", self._wait_s)
        try:
            inner = self._factory(conn_config, settings)
            if isinstance(inner, SharedConnection):
                connection: LeasedConnection = LeasedSharedConnection(inner, lease, self._slots)
            else:
                connection = LeasedConnection(inner, lease, self._slots)
        except BaseException:
            self._slots.release(lease)
            raise
        if not lease.valid():  # the lease lapsed while the login took its time
            connection.close()
            raise _lapsed(lease)
        return connection
