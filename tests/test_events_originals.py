"""Better originals from history: a device found on UNSUPERVISED_IP that the state does not
track gets back the last original the event journal knows for it, not null."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import requests

from alert_handler.core.facts import DeviceInfo, PortInfo
from alert_handler.core.machine import Reason, Rules, after_inspect, plan_release
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.journal import EventMaker, EventType
from alert_handler.events.originals import LastOriginals
from alert_handler.events.reader import read_events
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import AUTH, UNSUP, StartDaemon, alert_body, overwrite, wait_for

RULES = Rules(unsupervised_ip=UNSUP)
PORTS = [PortInfo(port_id=5, if_name="port2", oper_status="down")]


def info(overwrite_ip: str | None) -> DeviceInfo:
    return DeviceInfo(9, "cpe-9", overwrite_ip, ip="192.0.2.9", status=True)


def test_adoption_and_release_use_the_known_original() -> None:
    """The core: a NEW record with a known original found on UNSUPERVISED_IP is adopted with
    that original (not null, not `adopted`), and releasing it restores that original; without
    one, null as before; a device not on UNSUPERVISED_IP keeps what LibreNMS says."""
    hinted = DeviceRecord(9).with_known_original(("198.51.100.9",))
    decision = after_inspect(hinted, info(UNSUP), PORTS, 0.0, RULES)
    assert decision.reason is Reason.ADOPTED_KNOWN
    assert decision.record is not None
    assert decision.record.original_overwrite_ip == "198.51.100.9"
    assert decision.record.original_recorded and not decision.record.adopted
    assert decision.record.phase is Phase.DOWN
    plain = after_inspect(DeviceRecord(9), info(UNSUP), PORTS, 0.0, RULES)
    assert plain.reason is Reason.ADOPTED and plain.record is not None
    assert plain.record.original_overwrite_ip is None and plain.record.adopted
    fresh = after_inspect(hinted, info("203.0.113.9"), PORTS, 0.0, RULES)
    assert fresh.record is not None and fresh.record.original_overwrite_ip == "203.0.113.9"
    assert plan_release(hinted, info(UNSUP), RULES).value == "198.51.100.9"
    assert plan_release(hinted, info(UNSUP), RULES).unknown_original is False
    assert plan_release(DeviceRecord(9), info(UNSUP), RULES).unknown_original is True
    known_null = DeviceRecord(9).with_known_original((None,))
    assert plan_release(known_null, info(UNSUP), RULES).value is None
    assert not plan_release(known_null, info(UNSUP), RULES).unknown_original
    moved = replace(hinted, phase=Phase.DOWN)
    assert plan_release(moved, info(UNSUP), RULES).value is None  # its own original rules


def test_the_index_keeps_the_last_known_original_only() -> None:
    """Events with an unknown original (an adoption without history) never replace a known one."""
    maker = EventMaker(lambda: 0.0)
    index = LastOriginals()
    index.add(
        [
            maker.make(
                EventType.FORCED_DOWN,
                device_id=9,
                original_overwrite_ip="198.51.100.9",
                original_known=True,
            ),
            maker.make(EventType.ADOPTED, device_id=9, original_known=False),
            maker.make(EventType.FORCED_DOWN, device_id=10, original_known=True),
        ]
    )
    assert index.get(9) == ("198.51.100.9",)
    assert index.get(10) == (None,)
    assert index.get(11) is None


def late_patch(sim: Simulator, device_id: int) -> None:
    """The PATCH to UNSUPERVISED_IP that a killed daemon had sent, landing now."""
    reply = requests.patch(
        f"{sim.url}/devices/{device_id}",
        json={"field": "overwrite_ip", "data": UNSUP},
        headers={"X-Auth-Token": DEFAULT_TOKEN},
        timeout=5,
    )
    assert reply.status_code == 200


def test_a_late_patch_after_recovery_is_undone_with_the_true_original(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """The gap the journal closes:
    1. Device 9 (original 198.51.100.9) is forced down and recovers; the daemon stops.
    2. The PATCH to UNSUPERVISED_IP of a daemon killed earlier lands now: the device is on
       UNSUPERVISED_IP and nobody tracks it.
    3. The next daemon starts; its reconciliation adopts the device: the original comes from
       the journal (read at start), and recovery restores 198.51.100.9, never null."""
    sim.add_device(9, "cpe-9", overwrite_ip="198.51.100.9", ports={"port2": "down"})
    first = start_daemon(RECOVERY_INTERVAL_SEC="0.5")
    assert first.post(alert_body(9)).status_code == 202
    wait_for(lambda: overwrite(sim, 9) == UNSUP, what="forced down")
    sim.set_link(9, "port2", "up")
    journal = Path(first.cfg.events_path())
    wait_for(lambda: [e.type for e in read_events(journal)][-1:] == ["recovered"], what="up")
    assert first.stop() == 0
    assert overwrite(sim, 9) == "198.51.100.9"
    late_patch(sim, 9)
    second = start_daemon(RECOVERY_INTERVAL_SEC="0.5", RECONCILE_INTERVAL_SEC="1")
    wait_for(
        lambda: [e.type for e in read_events(journal)].count("recovered") == 2,
        60,
        "the adopted device recovered",
    )
    assert overwrite(sim, 9) == "198.51.100.9"
    assert (9, None) not in sim.patches(9)
    adopted = [e for e in read_events(journal) if e.type == "adopted"]
    assert len(adopted) == 1 and adopted[0].original_overwrite_ip == "198.51.100.9"
    assert "198.51.100.9" in adopted[0].detail
    second.stop()


def test_release_of_a_device_found_forced_down_restores_the_known_original(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. The journal knows device 9's original from an earlier episode.
    2. The device sits on UNSUPERVISED_IP, untracked; the daemon is paused, so `track` only
       records it; `release` then restores the journal's original (before: null)."""
    sim.add_device(9, "cpe-9", overwrite_ip="198.51.100.9", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.5")
    assert d.post(alert_body(9)).status_code == 202
    wait_for(lambda: overwrite(sim, 9) == UNSUP, what="forced down")
    sim.set_link(9, "port2", "up")
    wait_for(lambda: d.daemon.store.get(9) is None, what="recovered")
    late_patch(sim, 9)
    for path in ("/pause", "/devices/9/track"):
        assert requests.post(d.url + path, headers=AUTH, timeout=5).status_code < 300
    rec = d.daemon.store.get(9)
    assert rec is not None and rec.phase is Phase.NEW and rec.known_original == "198.51.100.9"
    assert requests.post(d.url + "/devices/9/release", headers=AUTH, timeout=5).status_code == 200
    wait_for(lambda: d.daemon.store.get(9) is None, what="released")
    assert overwrite(sim, 9) == "198.51.100.9"
    assert sim.patches(9)[-1] == (9, "198.51.100.9")
