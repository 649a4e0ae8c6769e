"""The shared log formats: JSON lines with the ids a record carries, and the switch of the root handlers."""

from __future__ import annotations

import io
import json
import logging
import sys

from facefleet.core.logs import JsonFormatter, set_log_format


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("facefleet.test", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_the_fields_and_the_ids_a_record_has() -> None:
    formatter = JsonFormatter({"device_id": "door-box"})
    line = json.loads(formatter.format(record("event %s refused", event_id="3f0c")))
    assert set(line) == {"time", "level", "logger", "message", "device_id", "event_id"}
    assert (line["level"], line["logger"], line["event_id"]) == ("WARNING", "facefleet.test", "3f0c")
    assert line["device_id"] == "door-box" and line["time"].endswith("+00:00")
    own = json.loads(formatter.format(record("x", device_id="lobby")))
    assert own["device_id"] == "lobby" and "event_id" not in own
    assert "device_id" not in json.loads(JsonFormatter().format(record("plain")))


def test_an_exception_is_one_line_with_its_traceback() -> None:
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        failed = logging.getLogger("facefleet.test").makeRecord(
            "facefleet.test", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    text = JsonFormatter().format(failed)
    assert "\n" not in text
    assert "RuntimeError: disk on fire" in json.loads(text)["exception"]


def test_set_log_format_switches_the_root_handlers() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        set_log_format("json", {"device_id": "door-box"})
        logging.getLogger("facefleet.agent.service").info(
            "door %s: granted", "front", extra={"event_id": "e1"}
        )
        set_log_format("text")
        logging.getLogger("facefleet.agent.service").info("plain again")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["message"] == "door front: granted"
    assert json.loads(first)["event_id"] == "e1"
    assert second == "INFO facefleet.agent.service: plain again"
