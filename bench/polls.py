"""A task per file through the real WorkQueue and ActivityPoller: one poll at a time against several.

    PYTHONPATH=. .venv/bin/python bench/polls.py [--activity-ms 30] [--file-ms 60] [--tasks 100]

GetActivityTask takes ``--activity-ms`` and each file ``--file-ms`` (both simulated, so
nothing else on the machine moves the figures much); prints tasks/s for 2 and 8 lanes.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provider_gateway.engine.poller import ActivityPoller
from provider_gateway.engine.work_queue import WorkQueue


class _Sfn:
    def __init__(self, latency_s: float, tasks: int) -> None:
        self._latency_s = latency_s
        self._tasks = tasks
        self._counter = itertools.count()

    def get_activity_task(self, **_: Any) -> dict[str, Any]:
        time.sleep(self._latency_s)  # the service's answer time
        i = next(self._counter)
        return {"taskToken": f"t{i}", "input": "{}"} if i < self._tasks else {}


def tasks_per_s(lanes: int, polls: int, activity_s: float, file_s: float, tasks: int) -> float:
    queue: WorkQueue[str] = WorkQueue(lanes)
    finished = threading.Semaphore(0)

    def lane() -> None:
        while True:
            if queue.get(0.5) is None:
                continue
            time.sleep(file_s)  # the file's transfer
            queue.done()
            finished.release()

    for _ in range(lanes):
        threading.Thread(target=lane, daemon=True).start()
    poller = ActivityPoller(
        _Sfn(activity_s, tasks), "arn", queue, lambda t, _: [t], lambda *_: None, "bench", "poll", concurrency=polls
    )
    started = time.perf_counter()
    poller.start()
    for _ in range(tasks):
        finished.acquire()
    poller.stop()
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--activity-ms", type=float, default=30)
    parser.add_argument("--file-ms", type=float, default=60)
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    activity_s, file_s = args.activity_ms / 1000, args.file_ms / 1000
    for lanes in (2, 8):
        one = tasks_per_s(lanes, 1, activity_s, file_s, args.tasks)
        many = tasks_per_s(lanes, min(lanes, 8), activity_s, file_s, args.tasks)
        print(
            f"{lanes} lanes: one poll at a time {one:.1f} tasks/s, {min(lanes, 8)} at once {many:.1f}; "
            f"one task {lanes / file_s:.1f} files/s"
        )


if __name__ == "__main__":
    main()
