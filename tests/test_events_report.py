"""The daily report: pure arithmetic over journal events (episodes in and around the window,
median and 95th percentile outage, flapping, what needed a person), and `alert-handler report`
on a journal file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alert_handler.cli.main import main
from alert_handler.core.times import iso
from alert_handler.events.journal import Event, EventType
from alert_handler.events.report import (
    build_report,
    median,
    percentile,
    report_text,
    report_title,
)

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
DAY = 86400.0


class Book:
    """Builds a journal's events in time order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(
        self,
        t: float,
        kind: EventType,
        device: int | None = None,
        ep: str | None = None,
        **more: object,
    ) -> None:
        self.events.append(
            Event(
                id=f"evt_{len(self.events):06d}",
                time=str(iso(T0 + t)),
                type=kind.value,
                device_id=device,
                hostname=None if device is None else f"cpe-{device}",
                episode=ep,
                **more,  # type: ignore[arg-type]
            )
        )

    def episode(
        self,
        device: int,
        ep: str,
        start: float,
        end: float | None,
        ending: EventType = EventType.RECOVERED,
    ) -> None:
        self.add(start - 1, EventType.TRACKED, device)
        self.add(start, EventType.FORCED_DOWN, device, ep)
        if end is not None:
            self.add(end, ending, device, ep, down_seconds=end - start)


def test_percentiles_are_nearest_rank_and_median_interpolates() -> None:
    assert median([]) is None and percentile([], 95) is None
    assert median([5.0]) == 5.0
    assert median([1.0, 3.0, 2.0, 10.0]) == 2.5
    values = [float(n) for n in range(1, 21)]  # 1..20
    assert percentile(values, 95) == 19.0  # rank ceil(0.95*20) = 19
    assert percentile(values, 50) == 10.0
    assert percentile([7.0, 1.0], 95) == 7.0


def test_report_counts_the_window_only() -> None:
    """1. Episodes that ended before the window are left out; one that began before it and is
    still open is `still down` but not `forced down` in the window; a device released while
    new was never forced down; an adopted one was.
    2. Recovered outages 60, 120, 180, 600, 100 s: median 120, p95 600.
    3. A device forced down three times in the window flapped; one gave up."""
    book = Book()
    book.episode(1, "ep_old", 0, 300)  # before the window
    book.episode(2, "ep_open", 100, None)  # before the window, never ended
    start = DAY + 1000  # the window is [DAY, 2*DAY]
    for n, (device, length) in enumerate([(3, 60), (3, 120), (3, 180), (4, 600)]):
        book.episode(device, f"ep_{n}", start + n * 2000, start + n * 2000 + length)
    book.episode(5, "ep_gave", start + 9000, start + 9000 + 3600, EventType.GAVE_UP)
    book.episode(6, "ep_rel", start + 9500, start + 9600, EventType.RELEASED)
    book.episode(7, "ep_new", start + 20000, None)
    book.add(start + 20500, EventType.RELEASED, 9, "ep_never_down")  # released while new
    book.add(start + 20600, EventType.ADOPTED, 10, "ep_adopted")
    book.add(start + 20700, EventType.RECOVERED, 10, "ep_adopted")
    book.add(start + 30000, EventType.STORM_ENGAGED, detail="4 devices forced down, MAX 3")
    book.add(start + 30100, EventType.OPERATOR, detail="confirm 2 held devices", client="10.0.0.9")
    book.add(
        start + 30150, EventType.PAUSED, detail="by the operator at 10.0.0.9", client="10.0.0.9"
    )
    book.add(start + 30200, EventType.HEALTH, detail="LibreNMS unreachable", level="degraded")
    book.episode(8, "ep_after", 3 * DAY, 3 * DAY + 5)  # after the window: ignored

    report = build_report(book.events, T0 + DAY, T0 + 2 * DAY)

    assert [d.device_id for d in report.forced_down] == [3, 3, 3, 4, 5, 6, 7, 10]
    assert [d.seconds for d in report.recovered] == [60.0, 120.0, 180.0, 600.0, 100.0]
    assert report.median_outage == 120.0
    assert report.p95_outage == 600.0
    assert [(d.device_id, d.seconds) for d in report.gave_up] == [(5, 3600.0)]
    assert report.released == 1
    assert [d.device_id for d in report.still_down] == [2, 7]  # longest first
    assert report.still_down[0].seconds == pytest.approx(2 * DAY - 100)
    assert [(d.device_id, d.count) for d in report.flapping] == [(3, 3)]
    assert [a.type for a in report.attention] == ["storm_engaged", "operator", "paused", "health"]
    assert report.attention[1].text == "confirm 2 held devices (by 10.0.0.9)"
    assert report.attention[2].text == "by the operator at 10.0.0.9"  # not the client twice
    assert report.attention[3].text == "health degraded: LibreNMS unreachable"

    text = report_text(report)
    assert "Forced down:  8 times, 6 devices (3, 4, 5, 6, 7, 10)" in text
    assert "Recovered:    5 times (outage median 2m00s, 95th percentile 10m00s)" in text
    assert "device 5 cpe-5 after 1h00m" in text
    assert "device 3 cpe-3: forced down 3 times" in text
    assert "Needed a person: 4 events" in text
    assert report_title(report).endswith("8 forced down, 5 recovered, 2 still down")
    body = report.as_dict()
    assert body["forced_down"] == 8 and body["p95_outage_seconds"] == 600.0
    json.dumps(body)


def test_an_empty_window_says_so() -> None:
    report = build_report([], T0, T0 + DAY)
    text = report_text(report)
    assert "Forced down:  0 times, 0 devices\n" in text
    assert "Recovered:    0 times\n" in text  # no median of nothing
    assert "Needed a person: nothing" in text
    assert report.median_outage is None


def test_report_command_reads_the_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`alert-handler report --since 10000d` prints the report of the journal's file; --json
    the same as JSON."""
    book = Book()
    book.episode(3, "ep_1", 0, 90)
    book.episode(3, "ep_2", 200, None)
    (tmp_path / "events.jsonl").write_text("".join(e.to_line() + "\n" for e in book.events))
    env = tmp_path / "test.env"
    env.write_text(
        "LIBRENMS_URL=http://127.0.0.1:9/api/v0\nLIBRENMS_API_TOKEN=abcdefgh1234\n"
        f"POLL_METHOD=local\nSTATE_FILE={tmp_path / 'device_state.json'}\n"
    )
    assert main(["--env-file", str(env), "report", "--since", "10000d"]) == 0
    out = capsys.readouterr().out
    assert "Forced down:  2 times, 1 device (3)" in out
    assert "Recovered:    1 time (outage median 1m30s" in out
    assert "device 3 cpe-3: forced down 2 times" in out
    assert main(["--env-file", str(env), "report", "--since", "10000d", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["recovered"] == 1 and [d["device_id"] for d in body["still_down"]] == [3]
    assert main(["--env-file", str(env), "report"]) == 0  # the default window: the last day
    assert "Forced down:  0 times, 0 devices" in capsys.readouterr().out


def test_report_refuses_a_bad_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --since that is not a duration or a time: one line, exit 2, no traceback."""
    env = tmp_path / "test.env"
    env.write_text(
        "LIBRENMS_URL=http://127.0.0.1:9/api/v0\nLIBRENMS_API_TOKEN=abcdefgh1234\n"
        f"POLL_METHOD=local\nSTATE_FILE={tmp_path / 'device_state.json'}\n"
    )
    for bad in ("yesterday", "2026-13-45"):
        with pytest.raises(SystemExit) as stopped:
            main(["--env-file", str(env), "report", "--since", bad])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("alert-handler report: argument --since: ") and err.count("\n") == 1
        assert err.rstrip().endswith("see `alert-handler report --help`")
