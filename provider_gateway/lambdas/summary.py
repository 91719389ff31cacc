"""The end of the callback workflow: what was copied, and what failed and why."""

from __future__ import annotations

from typing import Any


def summarize(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Count the per-file results of the Map state (``event["results"]``) and list the failures.

    A result is ``{"url", "key", "success", ...}``; a failed one also has
    ``error`` and ``cause``. The state machine fails the execution with the
    ``failed`` list as its cause when it is not empty: nothing is skipped silently.
    """
    results = event.get("results") or []
    failed = [
        {"url": r.get("url"), "key": r.get("key"), "error": r.get("error"), "cause": r.get("cause")}
        for r in results
        if not r.get("success")
    ]
    return {
        "files": len(results),
        "succeeded": len(results) - len(failed),
        "failed_count": len(failed),
        "failed": failed,
        "bytes": sum(_bytes(r) for r in results if r.get("success")),
    }


def _bytes(result: dict[str, Any]) -> int:
    # A Lambda copy says a number, a gateway task a list (one per file of the task), AWS Batch nothing.
    outcome = result.get("outcome")
    found = outcome.get("bytes") if isinstance(outcome, dict) else result.get("bytes")
    if isinstance(found, list):
        return sum(int(n) for n in found if isinstance(n, int))
    return int(found) if isinstance(found, int) else 0
