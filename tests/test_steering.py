"""Steering: exclusions, silences that expire, and a confirmation before a mass force-down."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from alert_handler.core.records import Phase
from alert_handler.core.verdict import (
    ConfirmGate,
    ControlError,
    Selector,
    Silence,
    parse_duration,
    parse_exclusions,
    parse_target,
    verdict,
)
from alert_handler.sim.simulator import Simulator
from tests.conftest import (
    AUTH,
    UNSUP,
    DaemonProcess,
    RunningDaemon,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    overwrite,
    wait_for,
)


# -- the pure decisions -----------------------------------------------------------------------
def test_targets_and_durations() -> None:
    assert parse_exclusions("12, cpe-lab-*,group:VIP customers") == (
        Selector(device_id=12),
        Selector(glob="cpe-lab-*"),
        Selector(group="VIP customers"),
    )
    assert parse_duration("2h") == 7200.0 and parse_duration("30m") == 1800.0
    for bad in ("-5m", "0h", "5", "2 hours", "91d", ""):
        with pytest.raises(ControlError):
            parse_duration(bad)
    for bad in ("", "0", "99999999999", "cpe lab", "group:"):
        with pytest.raises(ControlError):
            parse_target(bad)
    with pytest.raises(ControlError, match="not a group"):
        parse_target("group:x", allow_group=False)
    assert Selector(glob="*").matches_everything and Selector(glob="**").matches_everything
    assert not Selector(glob="cpe-*").matches_everything
    assert Selector(glob="CPE-LAB-*").matches(5, "cpe-lab-7", frozenset())


def test_verdict_exclusion_wins_and_silences_expire() -> None:
    silence = Silence(Selector(device_id=5), until=200.0, reason="lab", by="10.0.0.1", created=0.0)
    excluded = (Selector(group="VIP"),)
    found = verdict(5, "cpe-5", frozenset({"VIP"}), excluded, (silence,), now=100.0)
    assert found is not None and found.kind == "excluded" and "group:VIP" in str(found)
    found = verdict(5, "cpe-5", frozenset(), excluded, (silence,), now=100.0)
    assert found is not None and found.kind == "silenced" and "by 10.0.0.1" in str(found)
    assert verdict(5, "cpe-5", frozenset(), excluded, (silence,), now=200.0) is None


def test_the_confirmation_gate_holds_past_the_threshold_until_a_person_decides() -> None:
    gate = ConfirmGate(above=3, window=300.0)
    assert gate.allow(2, now=0.0) == 2
    assert gate.allow(3, now=10.0) == 1 and gate.holding
    assert gate.allow(1, now=400.0) == 0  # still holding after the window: a person decides
    gate.confirm()
    assert gate.allow(3, now=401.0) == 3
    assert ConfirmGate(above=0, window=300.0).allow(1000, now=0.0) == 1000


# -- the daemon ---------------------------------------------------------------------------------
def call(d: RunningDaemon, method: str, path: str, body: Any = None) -> requests.Response:
    """An operator request with the webhook token."""
    return requests.request(method, d.url + path, json=body, headers=AUTH, timeout=10)


def forced_down(sim: Simulator, d: RunningDaemon, device_id: int, original: str | None) -> None:
    sim.add_device(device_id, f"cpe-{device_id}", overwrite_ip=original, ports={"port2": "down"})
    assert d.post(alert_body(device_id)).status_code == 202
    wait_for(lambda: overwrite(sim, device_id) == UNSUP, what=f"{device_id} forced down")


def test_excluded_devices_are_ignored_and_a_tracked_one_is_let_go(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. EXCLUDE names a device id, a hostname glob and a LibreNMS device group.
    2. Alerts for each are answered 200 `ignored` with the reason; nothing is stored or changed.
    3. A forced-down device joins the group: at the next refresh it is restored to its
       original and forgotten."""
    sim.set_group("VIP customers", {203})
    for device_id, name in ((201, "cpe-201"), (202, "cpe-lab-1"), (203, "cpe-203")):
        sim.add_device(device_id, name, ports={"port2": "down"})
    d = start_daemon(EXCLUDE="201,cpe-lab-*,group:VIP customers", EXCLUDE_REFRESH_SEC="0.2")
    wait_for(lambda: d.daemon.refresher.passes >= 1, what="the first group refresh")
    for device_id, host, reason in (
        (201, "cpe-201", "EXCLUDE 201"),
        (202, "cpe-lab-1", "EXCLUDE cpe-lab-*"),
        (203, "cpe-203", "EXCLUDE group:VIP customers"),
    ):
        body = alert_body(device_id).replace(f'"cpe-{device_id}"', f'"{host}"')
        reply = d.post(body)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "status": "ignored",
            "device_id": device_id,
            "reason": f"excluded: {reason}",
        }
    assert d.daemon.store.records() == {} and sim.patches() == []
    forced_down(sim, d, 204, "198.51.100.4")
    sim.set_group("VIP customers", {203, 204})
    wait_for(lambda: d.daemon.store.get(204) is None, what="204 let go")
    assert [data for _, data in sim.patches(204)] == [UNSUP, "198.51.100.4"]


def test_a_silence_restores_ignores_survives_a_restart_and_ends(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. A forced-down device is silenced for 2h over HTTP: it is restored and forgotten at
       once; the silence shows who set it, why and until when.
    2. Its alerts are ignored; the daemon restarts: the silence is still there.
    3. Unsilenced, its next alert is handled again."""
    d = start_daemon()
    forced_down(sim, d, 301, None)
    reply = call(d, "POST", "/silences", {"target": "301", "for": "2h", "reason": "on-site work"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["released"] == [301]
    wait_for(lambda: d.daemon.store.get(301) is None, what="301 let go")
    assert overwrite(sim, 301) is None
    silences = call(d, "GET", "/silences").json()["silences"]
    assert [(s["target"], s["reason"], s["by"]) for s in silences] == [
        ("301", "on-site work", "127.0.0.1")
    ]
    assert call(d, "GET", "/devices").json()["silences"] == silences
    assert d.post(alert_body(301)).json()["status"] == "ignored"
    assert d.stop() == 0
    d = start_daemon()
    reply = d.post(alert_body(301))
    assert (
        reply.json()["status"] == "ignored"
        and "silenced: 301 by 127.0.0.1" in reply.json()["reason"]
    )
    assert call(d, "POST", "/unsilence", {"target": "301"}).status_code == 200
    assert d.post(alert_body(301)).status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"target": "42", "for": "-5m"}, 400, "is not like 30m"),
        ({"target": "42", "for": "0h"}, 400, "must be positive"),
        ({"target": "*", "for": "1h"}, 400, "matches every device"),
        ({"target": "group:VIP", "for": "1h"}, 400, "not a group"),
        ({"target": "0", "for": "1h"}, 400, "out of range"),
        ([1, 2], 400, "not a JSON object"),
    ],
)
def test_bad_silences_are_refused_and_change_nothing(
    start_daemon: StartDaemon, tmp_path: Path, body: Any, status: int, error: str
) -> None:
    d = start_daemon()
    reply = call(d, "POST", "/silences", body)
    assert reply.status_code == status and error in reply.json()["error"]
    assert call(d, "GET", "/silences").json()["silences"] == []
    assert not (tmp_path / "device_state.json.silences.json").exists()
    missing = call(d, "POST", "/unsilence", {"target": "42"})
    assert missing.status_code == 404 and "no active silence" in missing.json()["error"]
    everything = call(d, "POST", "/silences", {"target": "*", "for": "1h", "all": True})
    assert everything.status_code == 200


def test_a_burst_past_confirm_above_is_held_until_confirmed_or_discarded(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. CONFIRM_ABOVE=2: five new devices arrive at once; two are forced down, three are held
       (tracked, nothing changed in LibreNMS).
    2. A held device's port comes back (recovery notice): it is dropped by itself.
    3. The daemon restarts: the two others are still held. `confirm`: they are forced down.
    4. Another burst of three: the window started afresh at the confirmation, so two go ahead
       and one is held; `discard` releases it: LibreNMS is read, it is not on UNSUPERVISED_IP,
       so nothing is changed for it, and it is forgotten."""
    for device_id in range(401, 409):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    d = start_daemon(CONFIRM_ABOVE="2", CONFIRM_WINDOW_SEC="300")
    for device_id in range(401, 406):
        assert d.post(alert_body(device_id)).status_code == 202

    def held() -> list[int]:
        return sorted(i for i, rec in d.daemon.store.records().items() if rec.held)

    wait_for(lambda: len(held()) == 3, what="three held")
    wait_for(lambda: len([i for i in range(401, 406) if overwrite(sim, i) == UNSUP]) == 2)
    down = [i for i in range(401, 406) if overwrite(sim, i) == UNSUP]
    assert all(sim.patches(i) == [] for i in held())
    devices = call(d, "GET", "/devices").json()
    assert devices["held"] == 3
    first_held = held()[0]
    assert d.post(alert_body(first_held, state=0)).status_code == 200
    assert d.daemon.store.get(first_held) is None
    assert d.stop() == 0
    d = start_daemon(CONFIRM_ABOVE="2", CONFIRM_WINDOW_SEC="300")
    still = held()
    assert len(still) == 2
    reply = call(d, "POST", "/confirm")
    assert reply.status_code == 200 and reply.json()["devices"] == still
    wait_for(lambda: all(overwrite(sim, i) == UNSUP for i in still), what="confirmed forced down")

    def phase_of(device_id: int) -> Phase | None:
        rec = d.daemon.store.get(device_id)
        return None if rec is None else rec.phase

    # The PATCH lands before the step's discover and its persisted decision: wait for both.
    wait_for(lambda: all(phase_of(i) is Phase.DOWN for i in [*down, *still]), what="all down")
    for device_id in range(406, 409):
        assert d.post(alert_body(device_id)).status_code == 202
    wait_for(lambda: len(held()) == 1, what="the next burst's third held")
    last = held()[0]
    reply = call(d, "POST", "/discard")
    assert reply.json() == {"status": "discarded", "devices": [last]}
    wait_for(lambda: d.daemon.store.get(last) is None, what="the discarded device forgotten")
    assert sim.patches(last) == []


def test_the_commands_steer_a_running_daemon(sim: Simulator, tmp_path: Path) -> None:
    """The docs' walkthrough with the real commands: silence, silences, status, unsilence,
    confirm, discard; bad input refused with exit 1 and nothing changed."""
    port = free_port()
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), CONFIRM_ABOVE="1")
    daemon = DaemonProcess(tmp_path, env, port)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*installed_cli(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30
        )

    try:
        done = cli("silence", "cpe-lab-*", "--for", "2h", "--reason", "lab rack")
        assert done.returncode == 0 and "silenced cpe-lab-* until" in done.stdout, done
        listed = cli("silences")
        assert "cpe-lab-* until" in listed.stdout and "(lab rack)" in listed.stdout
        assert "silenced: cpe-lab-* until" in cli("status").stdout
        refused = cli("silence", "*", "--for", "1h")  # usage mistakes: exit 2
        assert refused.returncode == 2 and "add --all" in refused.stderr
        refused = cli("silence", "7", "--for=-5m")
        assert refused.returncode == 2 and "is not like 30m" in refused.stderr
        refused = cli("silence", "555", "--for", "1h")
        assert refused.returncode == 1 and "LibreNMS has no device 555" in refused.stderr
        assert cli("silences").stdout.count(" until ") == 1  # the refusals changed nothing
        assert cli("unsilence", "cpe-lab-*").returncode == 0
        assert "no active silences" in cli("silences").stdout
        for device_id in (501, 502, 503):
            sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
            assert sim.send_alert(daemon.url + "/alert", device_id, headers=AUTH) == 202
        wait_for(lambda: "HELD: 2 new devices" in cli("status").stdout, what="two held")
        confirmed = cli("confirm")
        assert confirmed.returncode == 0 and "2 held devices confirmed" in confirmed.stdout
        wait_for(lambda: all(overwrite(sim, i) == UNSUP for i in (501, 502, 503)), 30)
        assert "no device is held" in cli("discard").stdout
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    saved = json.loads((tmp_path / "device_state.json.silences.json").read_text())
    assert saved["silences"] == []


def test_reconciliation_leaves_excluded_devices_alone(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """An open alert that never reached the daemon is picked up by reconciliation, unless its
    device is excluded: the same verdict as the webhook's."""
    caplog.set_level(logging.INFO, logger="alert_handler.recovery.reconcile")
    sim.add_device(701, "cpe-lab-701", ports={"port2": "down"})
    sim.add_device(702, "cpe-702", ports={"port2": "down"})
    sim.add_alert(701)
    sim.add_alert(702)
    d = start_daemon(EXCLUDE="cpe-lab-*", RECONCILE_INTERVAL_SEC="0.2")
    wait_for(lambda: overwrite(sim, 702) == UNSUP, what="702 picked up and forced down")
    wait_for(lambda: "open alert 1 not picked up: excluded: EXCLUDE cpe-lab-*" in caplog.text)
    assert d.daemon.store.get(701) is None and sim.patches(701) == []
