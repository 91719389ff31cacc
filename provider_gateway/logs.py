"""Logging setup: JSON lines for log pipelines (CloudWatch, ELK), text for people.

Task events carry their fields as ``extra`` (``event``, ``provider``,
``task``, ``file``, ``bytes``, ``size``, ``percent``, ``mb_per_s``,
``error_code``...): the JSON format writes each as a key of the line, the
text format appends them as ``key=value``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"
NOISY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "paramiko")

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """The classic line, with any event fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = event_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, thread, message and the event fields."""
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(threadName)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "threadName": "thread"},
        timestamp=False,
    )


def setup_logging(level: str, log_format: str | None = None) -> None:
    """Log to stderr at ``level``; ``log_format`` json or text (default: json unless stderr is a terminal)."""
    if log_format is None:
        log_format = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
