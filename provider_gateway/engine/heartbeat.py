"""SendTaskHeartbeat for one claimed task, from its claim until its answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provider_gateway.errors import TASK_GONE

log = logging.getLogger(__name__)

__all__ = ["Heartbeat"]


class Heartbeat:
    """A thread sending heartbeats every ``interval_s`` from :meth:`start` to :meth:`stop`.

    ``on_lost`` runs (once, in that thread) if Step Functions says the task is gone.
    """

    def __init__(
        self,
        sfn: Any,
        token: str,
        interval_s: float,
        on_lost: Callable[[str], None],
        name: str,
    ) -> None:
        self._sfn = sfn
        self._token = token
        self._interval = interval_s
        self._on_lost = on_lost
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.sent = 0

    def start(self) -> Heartbeat:
        """Start sending; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending; returns at once (the thread ends within a second or one API call)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._sfn.send_task_heartbeat(taskToken=self._token)
                self.sent += 1
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in TASK_GONE:
                    if not self._stopped.is_set():
                        log.warning("heartbeat refused (%s): cancelling the task", code)
                        self._lose(code)
                    return
                log.warning("heartbeat failed, will retry: %s", exc)
            except BotoCoreError as exc:
                log.warning("heartbeat failed, will retry: %s", exc)

    def _lose(self, code: str) -> None:
        try:
            self._on_lost(code)
        except Exception:  # the cancel must not die silently with this thread
            log.exception("cancelling a task whose heartbeat was refused failed")
