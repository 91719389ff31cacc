"""The per-provider queue between pollers and connection threads.

It holds file jobs, not tasks, so the files of one task spread over every
free lane (a connection thread: one per connection, or several per
connection that carries several files at once). It also answers the
pollers' question "may I claim a task now?": only when a lane is idle, no
queued job is waiting for it, and no other poll has already reserved it. So
as many polls run at once as lanes are free, and no more.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

WAKE_S = 1.0


class WorkQueue(Generic[T]):
    """Jobs for ``lanes`` connection threads, with claim reservations for pollers."""

    def __init__(self, lanes: int) -> None:
        self._lanes = lanes
        self._jobs: deque[T] = deque()
        self._busy = 0
        self._reserved = 0
        self._cond = threading.Condition()

    def _free(self) -> int:
        return self._lanes - self._busy - len(self._jobs) - self._reserved

    def reserve(self, stop: threading.Event) -> bool:
        """Wait until a lane is free and reserve it; False if ``stop`` was set."""
        with self._cond:
            while not stop.is_set():
                if self._free() > 0:
                    self._reserved += 1
                    return True
                self._cond.wait(WAKE_S)
            return False

    def fulfil(self, jobs: Iterable[T]) -> None:
        """Give up a reservation, queueing the jobs of the task it claimed (maybe none)."""
        with self._cond:
            self._reserved -= 1
            self._jobs.extend(jobs)
            self._cond.notify_all()

    def get(self, timeout: float = WAKE_S) -> T | None:
        """The next job (the caller is then busy until :meth:`done`), or None after ``timeout``."""
        with self._cond:
            if not self._jobs:
                self._cond.wait(timeout)
            if not self._jobs:
                return None
            self._busy += 1
            return self._jobs.popleft()

    def done(self) -> None:
        """The caller finished its job and is idle again."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def drain(self) -> list[T]:
        """Remove and return every queued job (at shutdown)."""
        with self._cond:
            jobs = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return jobs

    def depth(self) -> int:
        """How many jobs wait for a connection thread."""
        with self._cond:
            return len(self._jobs)

    def reserved(self) -> int:
        """How many claims are reserved now (polls under way)."""
        with self._cond:
            return self._reserved

    def waiting(self) -> int:
        """Jobs queued plus claims reserved: what idle lanes must take next."""
        with self._cond:
            return len(self._jobs) + self._reserved
