"""`alert-handler history` and `alert-handler events [--follow]` read the journal's files: the
episodes with their start, end, duration, attempts and outcome, and the events as they come."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from alert_handler.cli.events import duration_text, parse_since
from alert_handler.cli.main import main
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.journal import EventJournal, EventMaker, EventType
from tests.conftest import installed_cli, spawn

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.env"
    path.write_text(
        "LIBRENMS_URL=http://127.0.0.1:9/api/v0\nLIBRENMS_API_TOKEN=abcdefgh1234\n"
        f"POLL_METHOD=local\nSTATE_FILE={tmp_path / 'device_state.json'}\n"
    )
    path.chmod(0o600)
    return path


def write_history(tmp_path: Path) -> list[str]:
    """Two episodes of device 7 (recovered after 3 attempts; still going) and one of device 8
    (gave up), with the times of each event."""
    now = [T0]
    maker = EventMaker(lambda: now[0])
    journal = EventJournal(tmp_path / "events.jsonl")
    journal.open()
    lines: list[str] = []

    def at(t: float, kind: EventType, rec: DeviceRecord, detail: str = "") -> None:
        now[0] = T0 + t
        lines.append(maker.make(kind, rec, detail=detail).to_line())

    seven = DeviceRecord(
        7, hostname="cpe-7", original_recorded=True, original_overwrite_ip="198.51.100.7"
    )
    at(0, EventType.TRACKED, seven)
    down = DeviceRecord(**{**seven.__dict__, "phase": Phase.DOWN, "episode": "ep_A"})
    down = DeviceRecord(**{**down.__dict__, "forced_down_at": T0 + 1})
    at(1, EventType.FORCED_DOWN, down)
    for n in (1, 2, 3):
        rec = DeviceRecord(**{**down.__dict__, "attempts": n})
        at(60 * n, EventType.ATTEMPT, rec)
        if n < 3:
            at(60 * n + 5, EventType.STILL_DOWN, rec)
    at(185, EventType.RECOVERED, DeviceRecord(**{**down.__dict__, "attempts": 3}), "port2 is up")
    eight = DeviceRecord(8, hostname="cpe-8", original_recorded=True, phase=Phase.DOWN)
    eight = DeviceRecord(**{**eight.__dict__, "episode": "ep_B", "attempts": 2})
    at(200, EventType.FORCED_DOWN, eight)
    at(4000, EventType.GAVE_UP, eight, "port2 is down after 2 attempts")
    again = DeviceRecord(**{**down.__dict__, "episode": "ep_C", "attempts": 1})
    at(5000, EventType.FORCED_DOWN, again)
    journal.append_batch(lines)
    journal.close()
    return lines


def test_history_lists_episodes_with_duration_attempts_and_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1. `history --json`: three episodes in the order they began, with start, end, duration,
       attempts, outcome and original; the ongoing one has no end.
    2. `--device 8` keeps device 8's; the table shows durations as people read them."""
    write_history(tmp_path)
    env = str(env_file(tmp_path))
    assert main(["history", "--env-file", env, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(e["episode"], e["device_id"], e["outcome"], e["attempts"]) for e in found] == [
        ("ep_A", 7, "recovered", 3),
        ("ep_B", 8, "gave_up", 2),
        ("ep_C", 7, "ongoing", 1),
    ]
    first = found[0]
    assert first["start"] == "2025-11-24T16:00:01.000Z"
    assert first["end"] == "2025-11-24T16:03:05.000Z"
    assert first["duration_seconds"] == 184.0
    assert first["original_overwrite_ip"] == "198.51.100.7"
    assert found[2]["end"] is None and found[2]["duration_seconds"] is None
    assert main(["history", "--env-file", env, "--device", "8"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "start",
        "end",
        "duration",
        "device",
        "hostname",
        "attempts",
        "outcome",
        "original",
    ]
    assert len(table) == 2 and "1h03m" in table[1] and "gave_up" in table[1]


def test_since_and_durations() -> None:
    """--since takes 7d, 12h, 30m, 90s, 2w or an ISO time; durations read as people say them."""
    assert parse_since("7d", 1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_since("30m", 10_000.0) == 8_200.0
    assert parse_since("2025-11-24T16:00:00Z", 0) == T0
    with pytest.raises(Exception, match="give 7d"):
        parse_since("yesterday", 0)
    assert [duration_text(s) for s in (12, 187, 3780, 183600)] == ["12s", "3m07s", "1h03m", "2d03h"]


def test_events_prints_the_last_lines_and_follows_new_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1. `events -n 2` prints the last two events, one a line.
    2. `events --follow --json`, a real process, prints the journal lines appended after it
       started, across a rotation, until it is interrupted."""
    lines = write_history(tmp_path)
    env = str(env_file(tmp_path))
    assert main(["events", "--env-file", env, "-n", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("2025-11-24T17:06:40.000Z gave_up device=8 host=cpe-8 attempt=2")
    assert out[1].split()[1:3] == ["forced_down", "device=7"]
    follow = spawn(
        [*installed_cli(), "events", "--env-file", env, "--follow", "--json", "-n", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()  # -n 0: every event first
        assert first.strip() == lines[0]
        for _ in lines[1:]:
            follow.stdout.readline()
        journal = EventJournal(tmp_path / "events.jsonl", max_bytes=len(lines[0]) * 12)
        journal.open()
        maker = EventMaker(time.time)
        new = [maker.make(EventType.HEALTH, level="ok", detail=f"n{i}").to_line() for i in range(6)]
        for line in new:
            journal.append_batch([line])
        journal.close()
        got = [follow.stdout.readline().strip() for _ in new]
        assert got == new
        assert (tmp_path / "events.jsonl.1").exists()  # it followed across a rotation
    finally:
        follow.send_signal(2)
        # Read what is left while it stops: output nobody reads could fill the pipe and hold
        # the process in its last flush (it is killed at teardown if it does not stop).
        rest, _ = follow.communicate(timeout=60)
    assert follow.returncode == 0
    assert rest == ""  # no event printed twice


def test_follow_ends_on_ctrl_c_even_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """`events --follow` started where SIGINT is ignored (a background job of a script, some
    process managers: Python then installs no KeyboardInterrupt handler) still ends on SIGINT,
    and on SIGTERM, with status 0."""
    write_history(tmp_path)
    env = str(env_file(tmp_path))
    for signum in (signal.SIGINT, signal.SIGTERM):
        follow = spawn(
            [*installed_cli(), "events", "--env-file", env, "--follow", "--json"],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        assert follow.stdout is not None
        follow.stdout.readline()  # it runs: the history is printed first
        follow.send_signal(signum)
        follow.communicate(timeout=60)
        assert follow.returncode == 0
