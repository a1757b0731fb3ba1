"""Each device's story in the log, and the words a new operator reads (issue 22, items 7 and 13):
a held device and a confirmed one get their own `device=N` lines; with LibreNMS unreachable the
failing devices stay named; `confirm` with nothing held is no event; plurals; an operator's
address said once. The daemon runs in this process against the simulator over real sockets."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import requests

from alert_handler.cli.events import event_text
from alert_handler.events.journal import Event
from alert_handler.events.reader import read_events
from alert_handler.sim.simulator import Simulator
from tests.conftest import AUTH, UNSUP, StartDaemon, alert_body, overwrite, wait_for


def lines(caplog: pytest.LogCaptureFixture, pattern: str, level: int = logging.INFO) -> list[str]:
    """The log messages at `level` or above matching `pattern` (re.search)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and re.search(pattern, r.getMessage())
    ]


def test_held_and_confirmed_devices_each_get_a_line(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. CONFIRM_ABOVE=1 and three alerts: each held device has a `device=N step=confirm
       held` line.
    2. `confirm`: one WARNING with the count ("2 held devices"), and a `device=N` line for
       each confirmed device.
    3. `confirm` again with nothing held: one INFO line, no WARNING, no event in the journal."""
    caplog.set_level(logging.INFO)
    for device_id in (401, 402, 403):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    d = start_daemon(CONFIRM_ABOVE="1", CONFIRM_WINDOW_SEC="300", RECOVERY_INTERVAL_SEC="60")
    for device_id in (401, 402, 403):
        assert d.post(alert_body(device_id)).status_code == 202

    def held() -> list[int]:
        return sorted(i for i, rec in d.daemon.store.records().items() if rec.held)

    wait_for(lambda: len(held()) == 2, what="two held")
    waiting = held()

    def held_lines() -> set[int]:
        found = lines(caplog, r"^device=\d+ step=confirm held: more than CONFIRM_ABOVE=1 ")
        return {int(x.split()[0].removeprefix("device=")) for x in found}

    wait_for(lambda: held_lines() == set(waiting), what="a held line for each held device")
    reply = requests.post(d.url + "/confirm", headers=AUTH, timeout=10)
    assert reply.status_code == 200 and reply.json()["devices"] == waiting
    assert lines(caplog, r"^step=confirm 2 held devices confirmed by ", logging.WARNING)
    for device_id in waiting:
        assert lines(caplog, rf"^device={device_id} step=confirm confirmed: forcing down by ")
    wait_for(lambda: all(overwrite(sim, i) == UNSUP for i in waiting), what="confirmed down")
    journal = Path(d.cfg.events_path())

    def operator_events() -> list[str]:
        return [e.id for e in read_events(journal) if e.type == "operator"]

    events_before = operator_events()
    assert len(events_before) == 1  # the confirm
    warnings_before = len(lines(caplog, r"step=confirm", logging.WARNING))
    again = requests.post(d.url + "/confirm", headers=AUTH, timeout=10)
    assert again.status_code == 200 and again.json()["devices"] == []
    assert lines(caplog, r"^step=confirm confirm by \S+: no device is held, nothing to do$")
    assert len(lines(caplog, r"step=confirm", logging.WARNING)) == warnings_before
    assert operator_events() == events_before


def test_with_librenms_unreachable_the_failing_devices_stay_named(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """LibreNMS drops every request about devices 101 and 102: the per-device failure lines
    are throttled (one a minute), and each cycle line names the devices that failed."""
    caplog.set_level(logging.INFO)
    for device_id in (101, 102):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    sim.inject("*", r"^/devices/10[12]\b", drop=True, times=100_000)
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.5")
    for device_id in (101, 102):
        assert d.post(alert_body(device_id)).status_code == 202

    def failed_cycles() -> list[str]:
        return lines(caplog, r"^step=cycle .* failed=[12] ")

    wait_for(lambda: len(failed_cycles()) >= 3, 60, "three cycles with failures")
    for line in failed_cycles():
        failed = int(re.search(r" failed=(\d) ", line).group(1))  # type: ignore[union-attr]
        named = re.search(r" failed_devices=([0-9,]+)$", line)
        assert named is not None, line
        assert len(named.group(1).split(",")) == failed, line
        assert set(named.group(1).split(",")) <= {"101", "102"}, line
    for device_id in (101, 102):
        assert len(lines(caplog, rf"^device={device_id} step=\w+ failed: ")) >= 1


def test_the_start_and_stop_lines_count_in_words(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file with one device (held, so it stays): "1 device tracked" at start and at
    stop, not "1 devices"."""
    caplog.set_level(logging.INFO)
    sim.add_device(42, "cpe-42", ports={"port2": "down"})
    record = {"phase": "new", "held": True, "first_seen": "2026-12-06T03:00:00.000Z"}
    (tmp_path / "device_state.json").write_text(
        json.dumps({"version": 1, "paused": False, "devices": {"42": record}})
    )
    d = start_daemon(RECOVERY_INTERVAL_SEC="60")
    assert d.daemon.store.count() == 1
    wait_for(lambda: lines(caplog, r"^step=start listening on \S+; "), what="the start line")
    assert lines(caplog, r"^step=start listening on \S+; 1 device tracked; ")
    assert d.stop() == 0
    assert lines(caplog, r"^step=stop state saved to \S+; 1 device tracked$")


def test_an_operator_event_names_the_address_once() -> None:
    """`alert-handler events` shows a resume as "by the operator at 127.0.0.1", without a
    second client=127.0.0.1 before it; other events keep client=."""
    resumed = Event(
        id="e1",
        time="2026-12-06T03:00:00.000Z",
        type="resumed",
        detail="by the operator at 127.0.0.1",
        client="127.0.0.1",
    )
    assert event_text(resumed) == "2026-12-06T03:00:00.000Z resumed by the operator at 127.0.0.1"
    other = Event(
        id="e2",
        time="2026-12-06T03:00:00.000Z",
        type="operator",
        detail="confirm 2 held devices",
        client="127.0.0.1",
    )
    assert event_text(other).endswith(" client=127.0.0.1 confirm 2 held devices")
    assert json.loads(resumed.to_line())["client"] == "127.0.0.1"  # the journal keeps it
