"""REPORT_AT: when the daily report is due (in the daemon's zone), and that it is sent once a
day, also across restarts (the day kept in <EVENTS_FILE>.report-sent); pure, with a fake clock."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alert_handler.config.table import ConfigError, parse
from alert_handler.core.times import iso
from alert_handler.events.daily import DailyReport, due_day, seconds_until
from alert_handler.events.digest import Message
from alert_handler.events.journal import Event

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_due_once_the_local_time_of_day_is_reached() -> None:
    """07:30 in Berlin is 06:30 UTC in winter: due from then on, until sent that day."""
    assert due_day(utc("2026-12-06T06:29:59"), (7, 30), None, BERLIN) is None
    assert due_day(utc("2026-12-06T06:30:00"), (7, 30), None, BERLIN) == "2026-12-06"
    assert due_day(utc("2026-12-06T22:59:00"), (7, 30), "2026-12-05", BERLIN) == "2026-12-06"
    assert due_day(utc("2026-12-06T22:59:00"), (7, 30), "2026-12-06", BERLIN) is None
    # 23:30 UTC is already the 7th in Berlin, before 07:30 there: not due yet.
    assert due_day(utc("2026-12-06T23:30:00"), (7, 30), "2026-12-06", BERLIN) is None
    assert seconds_until(utc("2026-12-06T06:00:00"), (7, 30), BERLIN) == 1800
    assert seconds_until(utc("2026-12-06T06:30:00"), (7, 30), BERLIN) == 86400


def test_sent_once_a_day_across_restarts(tmp_path: Path) -> None:
    """1. Due: the report of the last 24 hours goes out, the day is written down.
    2. A new instance (a restart) the same day sends nothing; the next day it sends again."""
    journal = tmp_path / "events.jsonl"
    now = [utc("2026-12-06T08:00:00")]
    event = Event(
        id="evt_1", time=str(iso(now[0] - 600)), type="forced_down", device_id=9, episode="ep_1"
    )
    journal.write_text(event.to_line() + "\n")
    sent: list[Message] = []

    def daily() -> DailyReport:
        return DailyReport(journal, "07:30", sent.append, clock=lambda: now[0], zone=BERLIN)

    first = daily()
    assert first.run_once() == "2026-12-06"
    assert len(sent) == 1 and sent[0].title.endswith("1 forced down, 0 recovered, 1 still down")
    assert "device 9 for 10m00s" in sent[0].body
    assert (tmp_path / "events.jsonl.report-sent").read_text() == "2026-12-06\n"
    assert first.run_once() is None
    now[0] += 3600
    assert daily().run_once() is None and len(sent) == 1
    now[0] = utc("2026-12-07T06:30:00")
    assert daily().run_once() == "2026-12-07" and len(sent) == 2


def test_report_at_is_a_time_of_day_and_needs_targets() -> None:
    base = {
        "LIBRENMS_URL": "http://127.0.0.1:9",
        "LIBRENMS_API_TOKEN": "abcdefgh1234",
        "POLL_METHOD": "local",
        "NOTIFY_URLS": "json://127.0.0.1:9/x",
    }
    assert parse({**base, "REPORT_AT": "7:05"}).report_at == "07:05"
    for bad in ("24:00", "07:60", "7", "noon", "07:30:00"):
        with pytest.raises(ConfigError, match="REPORT_AT: must be a time of day HH:MM"):
            parse({**base, "REPORT_AT": bad})
    alone = {k: v for k, v in base.items() if k != "NOTIFY_URLS"}
    with pytest.raises(ConfigError, match="REPORT_AT: needs NOTIFY_URLS"):
        parse({**alone, "REPORT_AT": "07:30"})
