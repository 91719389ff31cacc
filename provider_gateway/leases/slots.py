"""A provider's connection slots shared by every gateway replica: taking, renewing, fencing.

The limit holds across replicas under one assumption: the wall clocks of any
two gateways differ by at most ``clock_skew_s`` (and no clock steps by more).
A lease taken or renewed with a request sent at local monotonic time ``t``
says "expires at wall time w(t) + lease_s"; another replica may take the slot
only once its own clock passes that, which by the assumption is no earlier
than ``t + lease_s - clock_skew_s`` on our clock. The holder stops using the
slot at ``t + lease_s - clock_skew_s - FENCE_MARGIN_S``: a fence thread that
never waits on the network aborts the connection then, and every read checks
the deadline again, so a process paused past its lease (SIGSTOP, a frozen
host) never uses a byte read after its lease lapsed.

Renewals run in a thread of their own, several times per lease period, with a
client of short timeouts: when DynamoDB is slow, throttled or unreachable, the
fence still cuts the connection before the lease can expire.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provider_gateway.config.model import LeaseConfig
from provider_gateway.errors import GatewayShutdown, SourceUnavailable
from provider_gateway.leases.table import LeaseTable
from provider_gateway.ops.metrics import Metrics

log = logging.getLogger(__name__)

FENCE_TICK_S = 0.1
RENEW_TICK_S = 0.2
# A renewal that failed (not refused) is tried again after this long.
RENEW_RETRY_S = 1.0
# A slot is given back this long after its connection closed: the provider has seen the close by then.
RELEASE_LINGER_S = 0.5
# How often a lease is renewed: several times per period, so one or two failed renewals lose nothing.
RENEWALS_PER_LEASE = 6
_DB_ERRORS = (ClientError, BotoCoreError)


def wall_ms() -> int:
    """The wall clock in epoch milliseconds: what the table's expiries are written in."""
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class Lease:
    """One slot held by one connection; ``valid()`` is the holder's right to use it."""

    slot: int
    lease_id: str
    valid_until: float
    renewed_at: float
    on_lost: Callable[[], None] | None = None
    lost: bool = False
    lost_reason: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def valid(self) -> bool:
        """Whether the slot may still be used (checked against the monotonic clock)."""
        return not self.lost and time.monotonic() < self.valid_until


class LeaseSlots:
    """The ``num_connections`` slots of one provider in a lease table."""

    def __init__(
        self,
        table: LeaseTable,
        provider: str,
        slots: int,
        config: LeaseConfig,
        metrics: Metrics,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self._table = table
        self._provider = provider
        self._slots = slots
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._held: set[Lease] = set()
        self._releasing: list[tuple[float, Lease]] = []
        self._lock = threading.Lock()
        self.closing = threading.Event()
        """Set at shutdown: waits for a slot end at once."""
        self.failing_since: float | None = None
        """When calls to the lease table began failing without a success since (monotonic), or None."""
        self.last_error = ""
        self._threads = [
            threading.Thread(target=self._fence_loop, name=f"{provider}-lease-fence", daemon=True),
            threading.Thread(target=self._renew_loop, name=f"{provider}-lease-renew", daemon=True),
        ]

    @property
    def usable_s(self) -> float:
        """How long after sending a take or renewal the holder may use the slot."""
        return self._config.usable_s

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def held(self) -> int:
        """How many slots this gateway holds now."""
        with self._lock:
            return len(self._held)

    def acquire(self, holder: str, wait_s: float) -> Lease:
        """A lease on a free slot, waiting up to ``wait_s`` for one; SourceUnavailable if none came."""
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            if self.closing.is_set():
                raise GatewayShutdown("the gateway is stopping: no new connection is opened")
            lease = self._try_take(holder)
            if lease is not None:
                return lease
            if not waited:
                self._metrics.lease_waits.labels(self._provider).inc()
                waited = True
            if time.monotonic() >= deadline:
                raise SourceUnavailable(self._no_slot_reason())
            self.closing.wait(random.uniform(0.2, 1.0))

    def _no_slot_reason(self) -> str:
        if self.failing_since is not None:
            return f"no connection to {self._provider}: the lease table {self._table.name} fails ({self.last_error})"
        return (
            f"no connection to {self._provider}: all {self._slots} slots are held by the gateways "
            f"sharing {self._table.name}"
        )

    def free(self) -> int:
        """How many slots no gateway holds now (one read of the table); 0 if the table cannot be read."""
        states = self._call(lambda: self._table.slots(self._provider))
        if states is None:
            return 0
        now = self._clock()
        return self._slots - sum(1 for s in states if s.slot < self._slots and s.expires_ms >= now)

    def _try_take(self, holder: str) -> Lease | None:
        states = self._call(lambda: self._table.slots(self._provider))
        if states is None:
            return None
        now = self._clock()
        taken = {s.slot for s in states if s.expires_ms >= now}
        free = [slot for slot in range(self._slots) if slot not in taken]
        random.shuffle(free)  # replicas starting together should not all race for slot 0
        for slot in free:
            lease_id = uuid.uuid4().hex
            sent = time.monotonic()
            now = self._clock()
            expires = now + int(self._config.lease_s * 1000)
            won = self._call(functools.partial(self._table.take, self._provider, slot, holder, lease_id, now, expires))
            if won:
                lease = Lease(slot, lease_id, valid_until=sent + self.usable_s, renewed_at=sent)
                log.debug("took slot %d of %s (lease %s)", slot, self._provider, lease_id[:8])
                with self._lock:
                    self._held.add(lease)
                self._metrics.leases_taken.labels(self._provider).inc()
                return lease
            if won is None:
                return None
        return None

    def release(self, lease: Lease) -> None:
        """Give the slot back, :data:`RELEASE_LINGER_S` after its connection closed.

        The linger lets the provider see the close (and end its session)
        before another gateway may open a connection in the slot. A failed
        release leaves the slot to expire.
        """
        with lease._lock:
            if not lease.lost:
                lease.lost, lease.lost_reason = True, "released"
        with self._lock:
            self._held.discard(lease)
            self._releasing.append((time.monotonic() + RELEASE_LINGER_S, lease))

    def flush(self) -> None:
        """Give back every slot whose connection has closed, now (at shutdown)."""
        self._release_due(float("inf"))

    def _release_due(self, now: float) -> None:
        with self._lock:
            due = [lease for when, lease in self._releasing if when <= now]
            self._releasing = [(when, lease) for when, lease in self._releasing if when > now]
        for lease in due:
            log.debug("giving back slot %d of %s (lease %s)", lease.slot, self._provider, lease.lease_id[:8])
            self._call(functools.partial(self._table.release, self._provider, lease.slot, lease.lease_id))

    def _call(self, call: Callable[[], Any]) -> Any:
        """``call()``, or None when the table fails (which health and metrics report)."""
        try:
            result = call()
        except _DB_ERRORS as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self._metrics.lease_errors.labels(self._provider).inc()
            log.warning("lease table %s: %s", self._table.name, self.last_error)
            return None
        self.failing_since = None
        return result

    def _lose(self, lease: Lease, reason: str) -> None:
        with lease._lock:
            if lease.lost:
                return
            lease.lost, lease.lost_reason = True, reason
        self._metrics.lease_losses.labels(self._provider).inc()
        log.warning("lease on %s slot %d lost (%s): closing its connection", self._provider, lease.slot, reason)
        if lease.on_lost is not None:
            lease.on_lost()

    def _snapshot(self) -> list[Lease]:
        with self._lock:
            return list(self._held)

    def _fence_loop(self) -> None:
        while True:
            now = time.monotonic()
            for lease in self._snapshot():
                if not lease.lost and now >= lease.valid_until:
                    self._lose(lease, "not renewed in time")
            time.sleep(FENCE_TICK_S)

    def _renew_loop(self) -> None:
        every = self._config.lease_s / RENEWALS_PER_LEASE
        while True:
            for lease in self._snapshot():
                if not lease.lost and time.monotonic() - lease.renewed_at >= every:
                    self._renew(lease, every)
            self._release_due(time.monotonic())
            time.sleep(RENEW_TICK_S)

    def _renew(self, lease: Lease, every: float) -> None:
        sent = time.monotonic()
        expires = self._clock() + int(self._config.lease_s * 1000)
        ok = self._call(lambda: self._table.renew(self._provider, lease.slot, lease.lease_id, expires))
        self._metrics.lease_renew_seconds.labels(self._provider).observe(time.monotonic() - sent)
        if ok is None:
            lease.renewed_at = sent - every + RENEW_RETRY_S
        elif not ok:
            self._lose(lease, "taken over by another gateway")
        elif not lease.lost:
            lease.valid_until = sent + self.usable_s
            lease.renewed_at = sent
