"""Honest health: the model (alert_handler.ops.health) on its own, then /health, /metrics and
the log of a running daemon while LibreNMS drops every request and while the poller
host is unreachable."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from alert_handler import __version__
from alert_handler.ops.health import LIBRENMS, POLLER, RECOVERY_LOOP, STATE_FILE, Health, Level
from alert_handler.sim.simulator import Simulator
from tests.conftest import RunningDaemon, StartDaemon, alert_body, free_port, wait_for
from tests.test_operator_daemon import scrape, val

NOW = 1_700_000_000.0


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_fewer_failures_in_a_row_than_the_threshold_stay_ok() -> None:
    """1. Two failed LibreNMS calls: still ok (a blip). 2. The third: degraded, saying why.
    3. One success: ok again, the failures in a row reset, the last error kept for the record."""
    clock = Clock()
    health = Health(clock)
    health.record_success(LIBRENMS)
    for _ in range(2):
        clock.now += 1
        health.record_failure(LIBRENMS, "GET /devices/{id}: HTTP 500")
    assert health.report().level is Level.OK and health.up(LIBRENMS)
    health.record_failure(LIBRENMS, "GET /devices/{id}: HTTP 502")
    report = health.report()
    assert report.level is Level.DEGRADED and not health.up(LIBRENMS)
    assert report.reasons == (
        "librenms: 3 failures in a row, the last: GET /devices/{id}: HTTP 502",
    )
    assert report.dependencies[LIBRENMS] == {
        "status": "failing",
        "consecutive_failures": 3,
        "last_success": "2023-11-14T22:13:20.000Z",
        "last_failure": "2023-11-14T22:13:22.000Z",
        "last_error": "GET /devices/{id}: HTTP 502",
    }
    health.record_success(LIBRENMS)
    report = health.report()
    assert report.level is Level.OK and report.reasons == ()
    assert report.dependencies[LIBRENMS]["consecutive_failures"] == 0
    assert report.dependencies[LIBRENMS]["last_error"] == "GET /devices/{id}: HTTP 502"


def test_a_configuration_error_degrades_at_once_until_that_call_works() -> None:
    """The hook another part (lnms refusing to run as root, a token without rights) calls:
    one failure is enough, a success elsewhere does not end it, a success of the same call does."""
    health = Health(Clock())
    health.record_failure(POLLER, "lnms must not run as root", config_error=True)
    assert health.report().level is Level.DEGRADED
    assert health.report().reasons == ("poller: configuration error: lnms must not run as root",)
    health.record_success(POLLER)
    assert health.report().level is Level.OK

    health.observe_librenms("PATCH /devices/{id}", "403", 0.01)
    health.observe_librenms("GET /devices/{id}", "200", 0.01)  # reads work, writes do not
    assert health.report().level is Level.DEGRADED and not health.up(LIBRENMS)
    assert "PATCH /devices/{id}: HTTP 403 (the token lacks rights)" in health.report().reasons[0]
    health.observe_librenms("PATCH /devices/{id}", "200", 0.01)
    assert health.report().level is Level.OK and health.up(LIBRENMS)


@pytest.mark.parametrize(
    ("status", "failed"),
    [
        ("200", False),
        ("404", False),
        ("500", True),
        ("503", True),
        ("429", True),
        ("error", True),
        ("401", True),
    ],
)
def test_what_counts_as_a_failed_librenms_call(status: str, failed: bool) -> None:
    health = Health(Clock())
    health.observe_librenms("GET /ports/{id}", status, 0.01)
    assert health.report().dependencies[LIBRENMS]["consecutive_failures"] == int(failed)


def test_critical_dependencies_are_read_live_and_win() -> None:
    """The recovery loop and the state file are asked at each report: either failing is
    critical, whatever else is degraded."""
    health = Health(Clock())
    loop: list[str | None] = [None]
    health.watch(RECOVERY_LOOP, lambda: loop[0])
    health.watch(STATE_FILE, lambda: None)
    for _ in range(3):
        health.record_failure(POLLER, "cannot connect to librenms.example:22")
    assert health.report().level is Level.DEGRADED
    loop[0] = "stuck"
    report = health.report()
    assert report.level is Level.CRITICAL
    assert report.reasons == (
        "poller: 3 failures in a row, the last: cannot connect to librenms.example:22",
        "recovery_loop: stuck",
    )
    assert report.dependencies[RECOVERY_LOOP]["status"] == "failing"
    assert report.dependencies[STATE_FILE]["status"] == "ok"


def test_each_change_of_level_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alert_handler.ops.health")
    health = Health(Clock())
    for _ in range(5):
        health.record_failure(LIBRENMS, "GET /alerts: HTTP 500")
        health.check()
    health.record_success(LIBRENMS)
    health.check()
    health.check()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "step=health degraded (was ok): librenms: 3 failures in a row, the last: "
            "GET /alerts: HTTP 500",
        ),
        ("WARNING", "step=health ok again (was degraded)"),
    ]


# -- the running daemon -----------------------------------------------------------------------
def health_of(d: RunningDaemon) -> tuple[int, dict[str, Any]]:
    reply = requests.get(d.url + "/health", timeout=5)
    return reply.status_code, reply.json()


def attempts(d: RunningDaemon, device_id: int) -> int:
    record = d.daemon.store.get(device_id)
    return -1 if record is None else record.attempts


def level_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "alert_handler.ops.health"]


def test_health_degrades_while_librenms_drops_every_request(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. A device is forced down (port2 stays down): /health ok, every dependency ok,
    alert_handler_librenms_up 1.
    2. LibreNMS closes every connection without an answer: the device's steps fail; /health
       answers 200 `degraded` naming LibreNMS, with its failures in a row, its last success and
       last error; alert_handler_librenms_up 0; one log line says so.
    3. LibreNMS answers again: ok, librenms_up 1, one line says so, and the device is handled
       again (it recovers once its port is up)."""
    caplog.set_level(logging.INFO, logger="alert_handler")
    sim.add_device(81, "cpe-81", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    assert d.post(alert_body(81)).status_code == 202
    wait_for(lambda: attempts(d, 81) >= 2, what="a whole check")
    status, body = health_of(d)
    assert (status, body["status"], body["reasons"]) == (200, "ok", [])
    assert set(body["dependencies"]) == {"librenms", "poller", "state_file", "recovery_loop"}
    assert all(dep["status"] == "ok" for dep in body["dependencies"].values())
    assert body["dependencies"]["librenms"]["last_success"] is not None
    assert body["dependencies"]["poller"]["last_success"] is not None
    assert val(scrape(d), "alert_handler_librenms_up") == 1

    sim.inject("*", "", drop=True, times=1_000_000)
    wait_for(lambda: health_of(d)[1]["status"] == "degraded", what="degraded")
    status, body = health_of(d)
    assert status == 200 and body["recovery_thread"] == "alive" and body["tracked"] == 1
    [reason] = body["reasons"]
    assert reason.startswith("librenms: ") and "no answer (timeout or connection failed)" in reason
    librenms = body["dependencies"]["librenms"]
    assert librenms["status"] == "failing" and librenms["consecutive_failures"] >= 3
    assert librenms["last_success"] < librenms["last_failure"]
    assert re.fullmatch(
        r"\S+ /\S+: no answer \(timeout or connection failed\)", librenms["last_error"]
    )
    assert val(scrape(d), "alert_handler_librenms_up") == 0
    wait_for(lambda: level_lines(caplog), what="the level change logged")
    assert level_lines(caplog)[0].startswith("step=health degraded (was ok): librenms: ")

    sim.clear_faults()
    wait_for(lambda: health_of(d)[1]["status"] == "ok", what="ok again")
    assert val(scrape(d), "alert_handler_librenms_up") == 1
    wait_for(lambda: len(level_lines(caplog)) == 2, what="the recovery logged")
    assert level_lines(caplog)[1] == "step=health ok again (was degraded)"
    sim.set_link(81, "port2", "up")
    wait_for(lambda: d.daemon.store.get(81) is None, what="recovered")
    assert len(level_lines(caplog)) == 2


def test_health_degrades_while_the_poller_host_is_unreachable(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. POLL_METHOD=ssh to a port where nothing listens; a device is forced down.
    2. Each check restores it, cannot poll, and forces it down again: after three such polls
       /health is 200 `degraded` naming the poller, with the connection error; LibreNMS stays ok.
    3. The device is never left restored: it is on UNSUPERVISED_IP."""
    sim.add_device(82, "cpe-82", ports={"port2": "down"})
    d = start_daemon(
        RECOVERY_INTERVAL_SEC="0.3",
        POLL_METHOD="ssh",
        SSH_HOST="127.0.0.1",
        SSH_PORT=str(free_port()),
        SSH_USER="librenms",
        SSH_PASSWORD="not-used-nothing-listens",
        SSH_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
        SSH_CONNECT_TIMEOUT_SEC="2",
    )
    assert d.post(alert_body(82)).status_code == 202
    wait_for(lambda: health_of(d)[1]["status"] == "degraded", what="degraded")
    status, body = health_of(d)
    assert status == 200
    [reason] = body["reasons"]
    assert reason.startswith("poller: ") and "cannot connect to 127.0.0.1:" in reason
    poller = body["dependencies"]["poller"]
    assert poller["consecutive_failures"] >= 3 and poller["last_success"] is None
    assert body["dependencies"]["librenms"]["status"] == "ok"
    wait_for(lambda: sim.device(82)["overwrite_ip"] == "127.0.0.50", what="forced down again")


def test_metrics_carry_process_build_and_dry_run_facts(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. /metrics has the standard process and platform series and the build's version.
    2. With DRY_RUN a device "forced down" twice leaves alert_handler_forced_down_total at 0
    (no PATCH was sent), while the attempts are counted as usual."""
    sim.add_device(83, "cpe-83", ports={"port2": "down"})
    d = start_daemon(DRY_RUN="true", RECOVERY_INTERVAL_SEC="0.3")
    assert d.post(alert_body(83)).status_code == 202
    wait_for(lambda: attempts(d, 83) >= 2, what="two attempts")
    m = scrape(d)
    assert val(m, "alert_handler_build_info", version=__version__) == 1
    assert val(m, "process_resident_memory_bytes") > 0
    assert val(m, "process_open_fds") > 0
    assert val(m, "process_start_time_seconds") > 0
    assert any(name == "python_info" for name, _ in m)
    assert val(m, "alert_handler_forced_down_total") == 0
    assert val(m, "alert_handler_recovery_attempts_total", outcome="still_down") >= 1
    assert val(m, "alert_handler_dry_run") == 1
