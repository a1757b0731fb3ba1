"""REPORT_AT: the daily report (events/report.py, the last 24 hours) sent to the notification
targets once a day at a time of day in this host's zone.

The day it was last sent is kept in `<EVENTS_FILE>.report-sent` (one line, YYYY-MM-DD), written
atomically before the message is handed to the targets: a restart never sends a day's report
twice (a crash in between loses that day's report rather than doubling it; notifications are
best effort). A daemon that was not running at REPORT_AT sends the day's report when it starts,
if it has not been sent that day.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path

from alert_handler.events.digest import Message
from alert_handler.events.reader import read_events
from alert_handler.events.report import DAY, build_report, report_text, report_title
from alert_handler.store.files import write_atomic

log = logging.getLogger(__name__)

CHECK_EVERY = 60.0  # seconds at most between two looks at the clock (it may be set meanwhile)


def marker_path(events_path: Path) -> Path:
    """Where the day last sent is kept."""
    return events_path.with_name(events_path.name + ".report-sent")


def parse_at(text: str) -> tuple[int, int]:
    """ "07:30" -> (7, 30) (REPORT_AT is validated by its setting)."""
    hours, minutes = text.split(":")
    return int(hours), int(minutes)


def due_day(
    now: float, at: tuple[int, int], last_sent: str | None, zone: tzinfo | None
) -> str | None:
    """The local day (YYYY-MM-DD) whose report is due at `now`, or None: due once the local
    time of day has reached `at`, unless that day's report was sent."""
    local = datetime.fromtimestamp(now, zone) if zone else datetime.fromtimestamp(now).astimezone()
    day = local.date().isoformat()
    if (local.hour, local.minute) < at or last_sent == day:
        return None
    return day


def seconds_until(now: float, at: tuple[int, int], zone: tzinfo | None) -> float:
    """Seconds from `now` to the next time the local clock shows `at` (today or tomorrow)."""
    local = datetime.fromtimestamp(now, zone) if zone else datetime.fromtimestamp(now).astimezone()
    target = local.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    wait = target.timestamp() - now
    return wait if wait > 0 else wait + DAY


class DailyReport:
    """The thread that sends the report once a day through `send` (Notifier.broadcast)."""

    def __init__(
        self,
        events_path: Path,
        at: str,
        send: Callable[[Message], None],
        *,
        clock: Callable[[], float] = time.time,
        zone: tzinfo | None = None,
    ) -> None:
        """`zone`: None is this host's zone ($TZ, /etc/localtime)."""
        self.events_path = events_path
        self.at = parse_at(at)
        self.send = send
        self.clock = clock
        self.zone = zone
        self.marker = marker_path(events_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def last_sent(self) -> str | None:
        """The day the report was last sent, None if never (or the file is unreadable)."""
        try:
            text = self.marker.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text or None

    def run_once(self) -> str | None:
        """Send the report if one is due now; the day sent, or None."""
        now = self.clock()
        day = due_day(now, self.at, self.last_sent(), self.zone)
        if day is None:
            return None
        report = build_report(read_events(self.events_path), now - DAY, now)
        try:
            write_atomic(self.marker, (day + "\n").encode())
        except OSError as exc:  # not sent rather than sent again at every look
            log.error(
                "step=report cannot write %s: %s; the daily report is not sent", self.marker, exc
            )
            return None
        self.send(Message(report_title(report), report_text(report)))
        log.info(
            "step=report daily report of %s sent to the notification targets: %d forced down, "
            "%d recovered, %d still down",
            day,
            len(report.forced_down),
            len(report.recovered),
            len(report.still_down),
        )
        return day

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="daily-report", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug here must not end the daily reports
                log.exception("step=report the daily report failed")
            wait = min(CHECK_EVERY, seconds_until(self.clock(), self.at, self.zone))
            self._stop.wait(max(wait, 0.5))
