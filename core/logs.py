"""Log output of the long-running processes (`facefleet-agent run`, `facefleet-server serve`): the usual text
lines, or JSON lines for a log collector (`log_format = "json"` in either config file).

A JSON line carries `time` (UTC, ISO 8601 with milliseconds), `level`, `logger` and `message`, then
`device_id` and `event_id` when the record has them (given with `extra=` at the log call, or for every line
of a process as `fields` of set_log_format), and `exception` with the traceback when one was logged."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
RECORD_FIELDS = ("device_id", "event_id")
"""Attributes of a log record (set with `extra=`) that a JSON line carries when present."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `fields` are added to every line (a record's own values win)."""

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(self.fields)
        for name in RECORD_FIELDS:
            given = getattr(record, name, None)
            if given is not None:
                line[name] = str(given)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(log_format: LogFormat, fields: Mapping[str, str] | None = None) -> logging.Formatter:
    """The formatter of a log format."""
    if log_format == "json":
        return JsonFormatter(fields)
    return logging.Formatter(TEXT_FORMAT)


def set_log_format(log_format: LogFormat, fields: Mapping[str, str] | None = None) -> None:
    """Switch the root logger's handlers (made by the command line's logging set-up) to `log_format`; with
    no handler yet, one writing to stderr is added."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter(log_format, fields))
