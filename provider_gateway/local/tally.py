"""How many connections a loopback server has seen: the figure the connection limit is checked against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ConnectionTally:
    """Connections in all, open now, and the most open at once; the owning server serialises the calls."""

    total: int = 0
    open: int = 0
    max: int = 0

    def opened(self) -> None:
        """A connection was accepted."""
        self.total += 1
        self.open += 1
        self.max = max(self.max, self.open)

    def closed(self) -> None:
        """A connection ended."""
        self.open -= 1

    def restart_peak(self) -> None:
        """Count the peak from now on (a benchmark's next case)."""
        self.max = self.open
