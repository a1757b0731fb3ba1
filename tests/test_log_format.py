"""The log's form: ISO 8601 UTC times (the form `status` uses) and LOG_FORMAT=json, one object a
line with the same fields, through the daemon's own logging setup (redaction included)."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from alert_handler.config.table import ConfigError, parse
from alert_handler.core.times import iso
from alert_handler.ops.logs import JsonFormatter, make_formatter, setup_logging, stop_logging

NOW = 1_700_000_000.0
ISO_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    record = logging.LogRecord(
        "alert_handler.recovery.scheduler", logging.WARNING, __file__, 1, message, args, None
    )
    record.created = NOW + 0.123
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    return record


def test_text_lines_start_with_an_iso_utc_time() -> None:
    """The same form as `status` and the state file: milliseconds and Z."""
    line = make_formatter("text").format(_record("device=%s step=check hello", 42))
    assert line == f"{iso(NOW + 0.123)} WARNING device=42 step=check hello"
    assert re.fullmatch(ISO_Z + " WARNING device=42 step=check hello", line)
    assert line.startswith("2023-11-14T22:13:20.123Z")


@pytest.mark.parametrize(
    ("message", "device", "step"),
    [
        ("device=42 step=check port2 is down", 42, "check"),
        ("step=cycle due=3", None, "cycle"),
        ("alert=7 step=ack DRY_RUN would acknowledge", None, "ack"),
        ("device=9 step=state-write failed", 9, "state-write"),
        ("no subject here", None, None),
    ],
)
def test_json_lines_carry_the_same_fields(
    message: str, device: int | None, step: str | None
) -> None:
    """One object a line: time, level, logger, message, and the device and step it names."""
    line = JsonFormatter().format(_record(message))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["time"] == iso(NOW + 0.123)
    assert (obj["level"], obj["logger"], obj["message"]) == (
        "WARNING",
        "alert_handler.recovery.scheduler",
        message,
    )
    assert obj.get("device") == device and obj.get("step") == step


def test_json_line_keeps_the_traceback_in_one_field() -> None:
    obj = json.loads(JsonFormatter().format(_record("step=worker unexpected error", exc=True)))
    assert obj["exception"].startswith("Traceback") and "RuntimeError: boom" in obj["exception"]


def test_log_format_setting() -> None:
    base = {
        "LIBRENMS_URL": "http://x/api/v0",
        "LIBRENMS_API_TOKEN": "t" * 32,
        "POLL_METHOD": "local",
    }
    assert parse(base).log_format == "text"
    assert parse({**base, "LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        parse({**base, "LOG_FORMAT": "xml"})


def test_json_log_file_is_one_redacted_object_per_line(tmp_path: Path) -> None:
    """LOG_FORMAT=json through the daemon's own logging setup (background writer, redaction):
    every line of LOG_FILE is a JSON object and no secret is in it."""
    secret = "s3cretApiToken0123456789"
    (tmp_path / "log").mkdir()  # (creating it is logged too: not this test's subject)
    cfg = parse(
        {
            "LIBRENMS_URL": "http://x/api/v0",
            "LIBRENMS_API_TOKEN": secret,
            "POLL_METHOD": "local",
            "LOG_FILE": str(tmp_path / "log" / "alert_handler.log"),
            "LOG_FORMAT": "json",
        }
    )
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(cfg, background=True)
        log = logging.getLogger("alert_handler.recovery.scheduler")
        log.info("device=%s step=check token %s in a line", 42, secret)
        log.warning("step=cycle due=1")
        stop_logging()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    lines = (tmp_path / "log" / "alert_handler.log").read_text().splitlines()
    objects = [json.loads(line) for line in lines]
    assert [(o.get("device"), o["step"], o["level"]) for o in objects] == [
        (42, "check", "INFO"),
        (None, "cycle", "WARNING"),
    ]
    assert objects[0]["message"] == "device=42 step=check token *** in a line"
    assert secret not in "".join(lines)
    assert all(re.fullmatch(ISO_Z, o["time"]) for o in objects)
