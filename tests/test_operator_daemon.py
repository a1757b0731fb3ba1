"""What the operator sees of the daemon: /metrics after a scripted sequence, DRY_RUN, the storm
guard, ACK_ALERTS, the per-cycle log line and log rotation. In-process daemon, real sockets,
the LibreNMS simulator; polls run as real processes."""

from __future__ import annotations

import fnmatch
import logging
import re
import signal
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from alert_handler.sim.simulator import Simulator
from alert_handler.sim.transport import render_template
from tests.conftest import (
    AUTH,
    UNSUP,
    DaemonProcess,
    RunningDaemon,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    wait_for,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
# The body template the README gives for LibreNMS's API transport. `uid` is quoted because the
# transport's Test button sends uid "000", which unquoted is not JSON.
README_BODY_TEMPLATE = (
    '{"device_id": {{ $device_id }}, "host": "{{ $hostname }}", "ip": "{{ $ip }}", '
    '"state": {{ $state }}, "rule": {{ $name|json_encode }}, "uid": "{{ $uid }}"}'
)


def scrape(d: RunningDaemon) -> Samples:
    """Every sample of GET /metrics, parsed by prometheus_client's own parser."""
    reply = requests.get(d.url + "/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def val(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError (a failed test) when the series does not exist."""
    return samples[(name, tuple(sorted(labels.items())))]


def control(d: RunningDaemon, path: str) -> None:
    """POST an operator endpoint with the webhook token; it must answer 200."""
    reply = requests.post(d.url + path, headers=AUTH, timeout=10)
    assert reply.status_code == 200, reply.text


def phase_attempts(d: RunningDaemon, device_id: int) -> tuple[str, int] | None:
    record = d.daemon.store.get(device_id)
    return None if record is None else (record.phase.value, record.attempts)


def messages(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]


def cycles(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The counts of every `step=cycle` summary line so far, without the duration."""
    lines = messages(caplog, r"^step=cycle ")
    return [re.sub(r"^step=cycle (.*) took=\d+\.\ds$", r"\1", line) for line in lines]


def test_metrics_after_a_scripted_sequence(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Paused, alerts arrive for 1 and 3 (port2 down) and 5 (stale): all three recorded as
    new; a repeat, an acknowledged notice, a bad body, a too large one and one without the
    token are counted by result.
    2. Resume: one cycle takes all three (1 and 3 forced down, 5 dismissed): one summary line,
    and one more per recovery notice below.
    3. Recovery notices trigger attempts: 1 still down, then up (recovered); 3 still down twice
    and MAX_ATTEMPTS=2 gives up on it (left on its original).
    4. /metrics, parsed by prometheus_client, holds exactly the counts of that story."""
    caplog.set_level(logging.INFO)
    sim.add_device(1, "cpe-1", ports={"port2": "down"})
    sim.add_device(3, "cpe-3", overwrite_ip="198.51.100.3", ports={"port2": "down"})
    sim.add_device(5, "cpe-5", ports={"port2": "up"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="60", MAX_ATTEMPTS="2")
    first = scrape(d)
    for result in ("accepted", "repeat", "ignored", "rejected", "too_large", "unauthorized"):
        assert val(first, "alert_handler_alerts_received_total", result=result) == 0
    for outcome in ("recovered", "still_down", "poll_failed", "failed", "gave_up"):
        assert val(first, "alert_handler_recovery_attempts_total", outcome=outcome) == 0
    assert val(first, "alert_handler_last_cycle_timestamp_seconds") == 0

    control(d, "/pause")
    for device_id in (1, 3, 5):
        assert d.post(alert_body(device_id)).status_code == 202
    assert d.post(alert_body(1)).json()["status"] == "repeat"
    assert d.post(alert_body(9, state=2)).json()["status"] == "ignored"
    assert d.post("{not json").status_code == 400
    assert d.post(b"x" * (64 * 1024 + 1)).status_code == 413
    assert d.post(alert_body(1), auth=False).status_code == 401
    paused = scrape(d)
    assert val(paused, "alert_handler_devices_tracked", phase="new") == 3
    assert val(paused, "alert_handler_paused") == 1

    control(d, "/resume")
    wait_for(
        lambda: (
            phase_attempts(d, 1) == ("down", 0)
            and phase_attempts(d, 3) == ("down", 0)
            and d.daemon.store.get(5) is None
        ),
        what="1 and 3 forced down, 5 dismissed",
    )
    wait_for(lambda: cycles(caplog), what="the cycle line")
    assert cycles(caplog) == [
        "due=3 recovered=0 still_down=0 poll_failed=0 forced_down=2 failed=0 gave_up=0"
    ]
    middle = scrape(d)
    assert val(middle, "alert_handler_devices_tracked", phase="down") == 2
    assert val(middle, "alert_handler_devices_tracked", phase="new") == 0
    assert val(middle, "alert_handler_forced_down_total") == 2
    assert 0 < val(middle, "alert_handler_last_cycle_timestamp_seconds") <= time.time()

    def recheck(device_id: int, cycle: int) -> None:
        """A recovery notice, then wait for its cycle to end (so the next one is a new cycle)."""
        assert d.post(alert_body(device_id, state=0)).json()["status"] == "recheck"
        wait_for(lambda: len(cycles(caplog)) == cycle, what=f"cycle {cycle}")

    recheck(1, 2)
    assert phase_attempts(d, 1) == ("down", 1)
    sim.set_link(1, "port2", "up")
    recheck(1, 3)
    assert d.daemon.store.get(1) is None
    recheck(3, 4)
    assert phase_attempts(d, 3) == ("down", 1)
    recheck(3, 5)
    assert d.daemon.store.get(3) is None
    assert sim.device(1)["overwrite_ip"] is None
    assert sim.device(3)["overwrite_ip"] == "198.51.100.3"
    assert cycles(caplog) == [
        "due=3 recovered=0 still_down=0 poll_failed=0 forced_down=2 failed=0 gave_up=0",
        "due=1 recovered=0 still_down=1 poll_failed=0 forced_down=0 failed=0 gave_up=0",
        "due=1 recovered=1 still_down=0 poll_failed=0 forced_down=0 failed=0 gave_up=0",
        "due=1 recovered=0 still_down=1 poll_failed=0 forced_down=0 failed=0 gave_up=0",
        "due=1 recovered=0 still_down=0 poll_failed=0 forced_down=0 failed=0 gave_up=1",
    ]

    m = scrape(d)
    results = ("accepted", "repeat", "ignored", "rejected", "too_large", "unauthorized")
    alerts = {r: val(m, "alert_handler_alerts_received_total", result=r) for r in results}
    assert alerts == {
        "accepted": 3,
        "repeat": 5,  # one repeat and four recovery notices
        "ignored": 1,
        "rejected": 1,
        "too_large": 1,
        "unauthorized": 1,
    }
    assert val(m, "alert_handler_alerts_received_total", result="unavailable") == 0
    attempts = {
        o: val(m, "alert_handler_recovery_attempts_total", outcome=o)
        for o in ("recovered", "still_down", "poll_failed", "failed", "gave_up")
    }
    assert attempts == {
        "recovered": 1,
        "still_down": 2,
        "poll_failed": 0,
        "failed": 0,
        "gave_up": 1,
    }
    assert val(m, "alert_handler_recoveries_total") == 1
    assert val(m, "alert_handler_give_ups_total") == 1
    assert val(m, "alert_handler_forced_down_total") == 4
    steps = {
        step: val(m, "alert_handler_step_duration_seconds_count", step=step)
        for step in ("inspect", "force_down", "verify", "restore", "discover", "poll", "check")
    }
    assert steps == {
        "inspect": 3,
        "force_down": 4,
        "verify": 4,
        "restore": 4,
        "discover": 8,
        "poll": 4,
        "check": 4,
    }
    assert val(m, "alert_handler_polls_total", exit_status="0") == 4
    assert val(m, "alert_handler_polls_total", exit_status="error") == 0
    patch = "PATCH /devices/{id}"
    assert val(m, "alert_handler_librenms_requests_total", endpoint=patch, status="200") == 8
    discover = "GET /devices/{id}/discover"
    assert val(m, "alert_handler_librenms_requests_total", endpoint=discover, status="200") == 8
    assert val(m, "alert_handler_state_write_duration_seconds_count") >= 10
    assert all(val(m, "alert_handler_devices_tracked", phase=p) == 0 for p in ("new", "down"))
    assert val(m, "alert_handler_recovery_thread_restarts_total") == 0
    assert val(m, "alert_handler_paused") == 0
    assert val(m, "alert_handler_dry_run") == 0
    # ACK_ALERTS is off by default (the PUTs of components keep the originals, issue 20)
    assert not any(r.method == "PUT" and r.path.startswith("/alerts") for r in sim.requests)


def test_dry_run_sends_no_patch(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. DRY_RUN=true; devices 21 (overwrite_ip 198.51.100.21) and 22 (null) lose port2.
    2. The daemon reads them, "forces them down", attempts, "forces down" again, and recovers
    them when the port is up: GETs, discovers and polls all run.
    3. No PATCH ever reaches LibreNMS; each change is logged as `would set overwrite_ip ...`."""
    caplog.set_level(logging.INFO)
    sim.add_device(21, "cpe-21", overwrite_ip="198.51.100.21", ports={"port2": "down"})
    sim.add_device(22, "cpe-22", ports={"port2": "down"})
    d = start_daemon(DRY_RUN="true", RECOVERY_INTERVAL_SEC="0.3")
    for device_id in (21, 22):
        assert d.post(alert_body(device_id)).status_code == 202
    wait_for(
        lambda: (
            all((phase_attempts(d, i) or ("", 0))[1] >= 1 for i in (21, 22))
            and len(messages(caplog, r"device=2[12] .*would set overwrite_ip 127\.0\.0\.50")) >= 4
        ),
        what="a full attempt of each in dry run",
    )
    sim.set_link(21, "port2", "up")
    sim.set_link(22, "port2", "up")
    wait_for(lambda: d.daemon.store.count() == 0, what="both recovered")

    assert not any(r.method == "PATCH" for r in sim.requests)
    assert sim.patches() == []
    assert sim.device(21)["overwrite_ip"] == "198.51.100.21"
    assert sim.device(22)["overwrite_ip"] is None
    assert messages(
        caplog, r"^device=21 step=patch DRY_RUN would set overwrite_ip 198\.51\.100\.21$"
    )
    assert messages(caplog, r"^device=22 step=patch DRY_RUN would set overwrite_ip null$")
    seen = {(r.method, r.path) for r in sim.requests}
    for device_id in (21, 22):
        assert ("GET", f"/devices/{device_id}") in seen
        assert ("GET", f"/devices/{device_id}/discover") in seen
        assert ("POST", f"/_sim/poll/{device_id}") in seen  # the poll command ran
    assert requests.get(d.url + "/health", timeout=5).json()["dry_run"] is True
    assert val(scrape(d), "alert_handler_dry_run") == 1


def test_storm_guard_holds_new_devices(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. MAX_FORCED_DOWN=1 and four workers. Alerts for three CPEs arrive while paused, so all
    three are due in the same pass when the daemon resumes.
    2. Only one is forced down; the other two are recorded but untouched, shown by the metric,
    with one warning line.
    3. The forced one is released: one held device takes its place. Never two at once."""
    caplog.set_level(logging.INFO)
    for device_id in (31, 32, 33):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    d = start_daemon(MAX_FORCED_DOWN="1", MAX_PARALLEL="4", RECOVERY_INTERVAL_SEC="60")
    control(d, "/pause")
    for device_id in (31, 32, 33):
        assert d.post(alert_body(device_id)).status_code == 202
    control(d, "/resume")

    def phases() -> dict[int, str]:
        return {i: r.phase.value for i, r in d.daemon.store.records().items()}

    wait_for(lambda: sorted(phases().values()) == ["down", "new", "new"], what="one forced down")
    wait_for(lambda: val(scrape(d), "alert_handler_storm_held_devices") == 2, what="metric")
    forced = next(i for i, p in phases().items() if p == "down")
    assert [i for i, data in sim.patches() if data == UNSUP] == [forced]
    held = [i for i in (31, 32, 33) if i != forced]
    assert not any(r.path.startswith(tuple(f"/devices/{i}" for i in held)) for r in sim.requests)
    warnings = messages(caplog, r"step=storm-guard")
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "step=storm-guard MAX_FORCED_DOWN=1 reached: 2 new devices recorded but not forced down"
    )

    control(d, f"/devices/{forced}/release")
    wait_for(
        lambda: forced not in phases() and sorted(phases().values()) == ["down", "new"],
        what="the next device forced down",
    )
    wait_for(lambda: val(scrape(d), "alert_handler_storm_held_devices") == 1, what="metric")
    on_unsup: set[int] = set()
    for device_id, data in sim.patches():
        if data == UNSUP:
            on_unsup.add(device_id)
        else:
            on_unsup.discard(device_id)
        assert len(on_unsup) <= 1, sim.patches()
    assert len(messages(caplog, r"step=storm-guard")) == 1  # one line per minute at most


def test_ack_alerts_acknowledges_the_triggering_alert_once(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. ACK_ALERTS=true; device 41 has an open "Port2 down" alert and a "Disk full" one.
    2. Once it is forced down the "Port2 down" alert is acknowledged with the note; the other
    rule's alert is left alone.
    3. Forced down again after a failed attempt: no second acknowledgement."""
    sim.add_device(41, "cpe-41", ports={"port2": "down"})
    port_alert = sim.add_alert(41, "Port2 down", rule_id=1)
    disk_alert = sim.add_alert(41, "Disk full", rule_id=2)
    d = start_daemon(ACK_ALERTS="true", TRIGGER_RULES="Port2 down", RECOVERY_INTERVAL_SEC="60")
    assert sim.send_alert(d.url + "/alert", 41, headers=AUTH) in (200, 202)
    wait_for(lambda: phase_attempts(d, 41) == ("down", 0), what="forced down")
    alerts = {a["id"]: a for a in sim.alerts()}
    assert alerts[port_alert]["state"] == 2
    assert "handled by alert-handler: forced down, recovering" in alerts[port_alert]["note"]
    assert alerts[disk_alert]["state"] == 1 and alerts[disk_alert]["note"] == ""
    assert d.post(alert_body(41, state=0)).json()["status"] == "recheck"
    wait_for(lambda: phase_attempts(d, 41) == ("down", 1), what="forced down again")
    puts = [r.path for r in sim.requests if r.method == "PUT" and "/components" not in r.path]
    assert puts == [f"/alerts/{port_alert}"]


def test_devices_is_open_when_no_webhook_token_is_set(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """Without WEBHOOK_TOKEN, GET /devices needs no token (and says which devices)."""
    sim.add_device(51, "cpe-51", ports={"port2": "down"})
    d = start_daemon(WEBHOOK_TOKEN="", RECOVERY_INTERVAL_SEC="60")
    assert d.post(alert_body(51), auth=False).status_code == 202
    reply = requests.get(d.url + "/devices", timeout=5)
    assert reply.status_code == 200
    assert [row["device_id"] for row in reply.json()["devices"]] == [51]


def test_logrotate_example_matches_the_unit_and_rotation_keeps_logging(
    sim: Simulator, tmp_path: Path
) -> None:
    """1. systemd/logrotate.conf covers the unit's LOG_FILE, re-creates the file (no
    copytruncate) and reloads the service, whose ExecReload sends SIGHUP.
    2. Done as logrotate does (rename, create, SIGHUP) to the running daemon: the next lines go
    to the new file, none to the rotated one."""
    rotate = (SYSTEMD / "logrotate.conf").read_text()
    unit = (SYSTEMD / "alert-handler.service").read_text()
    pattern = re.search(r"^(/\S+)\s*\{", rotate, re.M)
    log_file = re.search(r"^Environment=LOG_FILE=(\S+)$", unit, re.M)
    assert pattern and log_file
    assert fnmatch.fnmatch(log_file.group(1), pattern.group(1))
    assert re.search(r"^\s*create\b", rotate, re.M)
    assert not re.search(r"^\s*copytruncate", rotate, re.M)
    assert re.search(r"systemctl reload alert-handler(\.service)?\b", rotate)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)

    port = free_port()
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), LOG_FILE=str(tmp_path / "a.log"))
    daemon = DaemonProcess(tmp_path, env, port)
    try:
        log = tmp_path / "a.log"
        wait_for(lambda: "step=start listening" in log.read_text(), what="the start line")
        log.rename(tmp_path / "a.log.1")
        log.touch(mode=0o640)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "step=log reopened on SIGHUP" in log.read_text(), what="reopened")
        assert daemon.post(alert_body(77)).status_code == 202
        wait_for(lambda: "device=77 step=webhook" in log.read_text(), what="the alert line")
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    rotated = (tmp_path / "a.log.1").read_text()
    assert "step=start listening" in rotated
    assert "SIGHUP" not in rotated and "device=77" not in rotated


def test_transport_test_button_is_answered_and_ignored(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. LibreNMS's "Test" button on the API transport posts its first device with rule
    "Test-Rule" and uid "000" (AlertData::testData in LibreNMS 26.1).
    2. With the README's template and TRIGGER_RULES set: 200 "ignored", nothing tracked, the
    device untouched, so the button only proves delivery and the token.
    3. A real alert through the same template is accepted.
    4. With uid unquoted the body has `"uid": 000`, which is not JSON: 400."""
    sim.add_device(1, "cpe-1", ports={"port2": "down"})
    d = start_daemon(TRIGGER_RULES="Port2 down", RECOVERY_INTERVAL_SEC="60")
    test_data = {"device_id": 1, "hostname": "cpe-1", "ip": "192.0.2.1", "state": 1}
    test_data.update(name="Test-Rule", uid="000")
    headers = {"Content-Type": "text/plain", **AUTH}

    def post(template: str, values: dict[str, object]) -> requests.Response:
        body = render_template(template, values).encode()
        return requests.post(d.url + "/alert", data=body, headers=headers, timeout=10)

    reply = post(README_BODY_TEMPLATE, test_data)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "status": "ignored",
        "device_id": 1,
        "reason": "rule not in TRIGGER_RULES",
    }
    assert d.daemon.store.count() == 0
    real = post(README_BODY_TEMPLATE, {**test_data, "name": "Port2 down", "uid": 4711})
    assert real.status_code == 202
    unquoted = README_BODY_TEMPLATE.replace('"{{ $uid }}"', "{{ $uid }}")
    broken = post(unquoted, test_data)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
