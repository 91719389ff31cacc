"""The small interface every protocol implements.

A :class:`Connection` is owned by exactly one connection thread and holds at
most one network connection to the provider (a requests.Session with a
one-connection pool, one ftplib.FTP, one SSH transport). Errors leave this
layer only as :class:`~provider_gateway.errors.GatewayError` subclasses.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

# Built from the provider's config (GatewayConfig.connection_settings), so its defaults are the config's.
from provider_gateway.config.model import ConnectionSettings as ConnectionSettings


class SourceStream(Protocol):
    """An open file at the provider, read from ``offset`` on."""

    @property
    def size(self) -> int | None:
        """Total size of the file in bytes, when the provider says it."""
        ...

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes; ``b""`` only at the proven end of the file.

        ``b""`` means the protocol itself has signalled a complete transfer
        (FTP 226/250, HTTP Content-Length reached or the chunked terminator,
        SFTP the stat size, GridFTP a zero exit status). A transfer that
        ends any other way raises (SourceUnavailable, so it is resumed),
        with the server's own words in the message.
        """
        ...

    def close(self) -> None:
        """Release the stream; the connection stays usable where the protocol allows."""
        ...


class Connection(Protocol):
    """One persistent connection to a provider."""

    def open(self, url: str, offset: int = 0) -> SourceStream:
        """Open the file named by ``url`` for reading from byte ``offset``."""
        ...

    def check(self) -> bool:
        """Whether the connection is still usable (cheap; reconnects are the caller's)."""
        ...

    def close(self) -> None:
        """Close the network connection; the object must not be used afterwards."""
        ...

    def abort(self) -> None:
        """Cut the connection from another thread, so a read blocked in it ends at once.

        Called when the file's task is cancelled (grace period over, second
        signal, TaskTimedOut). It must not block, must be safe to call at any
        moment (also while nothing is open, or twice), and leaves the
        connection broken: :meth:`check` is False afterwards and the owner
        replaces it.
        """
        ...


@runtime_checkable
class SharedConnection(Connection, Protocol):
    """A connection that carries several files at once (SFTP: requests interleaved in one session).

    Its owner (a connection slot) serves every file through a lane and
    closes the shared connection itself. A lane is a :class:`Connection`
    used by one thread at a time: its ``open`` and reads go over this same
    network connection; its ``abort()`` fails only the lane's own file and
    leaves the shared connection and the other lanes working; its
    ``check()`` is the shared connection's; its ``close()`` releases the
    lane only. Closing or aborting the shared connection breaks every lane.
    """

    def lane(self) -> Connection:
        """A new lane over this connection."""
        ...
