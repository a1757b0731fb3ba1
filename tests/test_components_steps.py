"""The step runner with the originals kept in LibreNMS: the real client and `Components` against
the simulator over a real socket. The component is written after the original is on disk and
before the PATCH to UNSUPERVISED_IP (no force-down without it), once per episode, and removed
after the restore when the device is let go; adoption and `release` take LibreNMS's first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alert_handler.core.facts import PollResult
from alert_handler.core.machine import Action, Reason, Rules
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.steps import Ports, StepReport, run_step
from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.components import Components
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator

UNSUP = "127.0.0.50"
NOW = 1_780_000_000.0
RULES = Rules(unsupervised_ip=UNSUP, target_ifname="port2", interval=60.0)
NO_CREATE = "abcdef0123456789abcdef0123456789"


class Clock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 0.0


class SimPoller:
    """`lnms device:poll` as the simulator runs it."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        code, output = self.sim.poll(device_id)
        return PollResult(device_id, code, tuple(output.splitlines()[-3:]), 0.1)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    tokens = {NO_CREATE: frozenset({"device.viewAny", "device.update", "alert.viewAny"})}
    with Simulator(tokens=tokens) as simulator:
        simulator.add_device(5, "cpe-5", overwrite_ip="10.0.0.1")
        yield simulator


def ports(sim: Simulator, token: str = DEFAULT_TOKEN) -> tuple[Ports, Components]:
    api = LibreNMS(sim.url, token, retries=0)
    comps = Components(api, daemon="host-a")
    return Ports(api=api, poller=SimPoller(sim), clock=Clock(), components=comps), comps


def forcing(original: str | None = "10.0.0.1") -> DeviceRecord:
    return DeviceRecord(
        device_id=5,
        phase=Phase.FORCING_DOWN,
        original_recorded=True,
        original_overwrite_ip=original,
        port_id=2,
        episode="ep_1",
        next_attempt_at=NOW,
    )


def calls(sim: Simulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in sim.requests]


def test_the_component_is_written_before_the_patch(sim: Simulator) -> None:
    p, comps = ports(sim)
    report = run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    assert report.decision.reason is Reason.FORCED_DOWN
    assert calls(sim)[:4] == [
        "GET /devices/5/components",
        "POST /devices/5/components/alert-handler",
        "PUT /devices/5/components",
        "PATCH /devices/5",
    ]
    assert comps.held(5) == ("10.0.0.1",) and sim.device(5)["overwrite_ip"] == UNSUP
    assert [lap for lap, _ in report.laps][:2] == ["component", "force_down"]


def test_no_force_down_when_the_component_cannot_be_written(sim: Simulator) -> None:
    p, _ = ports(sim, NO_CREATE)  # the token may PATCH but not create components
    report = run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    assert report.decision.reason is Reason.STEP_FAILED and report.failed_step == "component"
    assert report.decision.record is not None
    assert report.decision.record.next_attempt_at == NOW + RULES.interval  # retried later
    assert sim.patches(5) == [] and sim.device(5)["overwrite_ip"] == "10.0.0.1"
    assert not report.forced_down
    sim.inject("POST", r"/components/", status=500)  # refused, not made: read, still none
    again = run_step(forcing(), Action.FORCE_DOWN, ports(sim)[0], RULES)
    assert again.failed_step == "component" and sim.patches(5) == [] and sim.components() == {}
    third = run_step(forcing(), Action.FORCE_DOWN, ports(sim)[0], RULES)
    assert third.decision.reason is Reason.FORCED_DOWN and len(sim.components(5)) == 1


def test_a_later_force_down_of_the_episode_leaves_it(sim: Simulator) -> None:
    p, _ = ports(sim)
    run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    lines = sim.eventlog(5)
    sim.clear_requests()
    run_step(forcing(), Action.FORCE_DOWN, p, RULES)  # after a failed check, say
    assert [c for c in calls(sim) if "components" in c] == ["GET /devices/5/components"]
    assert sim.eventlog(5) == lines and len(sim.components(5)) == 1


def restoring() -> DeviceRecord:
    return DeviceRecord(
        device_id=5,
        phase=Phase.RESTORING,
        original_recorded=True,
        original_overwrite_ip="10.0.0.1",
        port_id=2,
        attempts=1,
        episode="ep_1",
        forced_down_at=NOW - 600,
        attempt_started_at=NOW,
    )


def test_a_recovered_device_loses_its_component_after_the_restore(sim: Simulator) -> None:
    p, _ = ports(sim)
    run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    sim.set_link(5, "port2", "up")
    sim.clear_requests()
    report = run_step(restoring(), Action.CHECK, p, RULES)
    assert report.decision.reason is Reason.RECOVERED
    seen = calls(sim)
    assert seen.index("PATCH /devices/5") < seen.index("DELETE /devices/5/components/1")
    assert sim.components() == {} and sim.device(5)["overwrite_ip"] == "10.0.0.1"


def test_a_foreign_change_and_a_release_remove_it(sim: Simulator) -> None:
    p, _ = ports(sim)
    run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    down = DeviceRecord(**{**restoring().__dict__, "phase": Phase.DOWN})
    session = LibreNMS(sim.url, DEFAULT_TOKEN)
    session.set_overwrite_ip(5, "10.7.7.7")  # someone else
    report = run_step(down, Action.VERIFY, p, RULES, fresh=False)
    assert report.decision.reason is Reason.FOREIGN_CHANGE and sim.components() == {}
    session.set_overwrite_ip(5, "10.0.0.1")
    run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    releasing = DeviceRecord(**{**restoring().__dict__, "phase": Phase.RELEASING})
    report = run_step(releasing, Action.RELEASE, p, RULES)
    assert report.decision.reason is Reason.RELEASED and sim.components() == {}


def test_a_failed_removal_does_not_hold_the_device_back(sim: Simulator) -> None:
    p, comps = ports(sim)
    run_step(forcing(), Action.FORCE_DOWN, p, RULES)
    sim.set_link(5, "port2", "up")
    sim.inject("DELETE", r"/components/", status=500, times=5)
    report = run_step(restoring(), Action.CHECK, p, RULES)
    assert report.decision.reason is Reason.RECOVERED and report.decision.forget
    assert report.component_error is not None and comps.pending() == {5}
    assert report.failed_step is None


# -- originals from LibreNMS first --------------------------------------------------------------
def found(journal: str | None = None, knows: bool = False) -> DeviceRecord:
    """A NEW record of a device on UNSUPERVISED_IP (reconciliation's adoption)."""
    return DeviceRecord(
        device_id=5, next_attempt_at=NOW, knows_original=knows, known_original=journal
    )


def adopt(sim: Simulator, rec: DeviceRecord) -> StepReport:
    LibreNMS(sim.url, DEFAULT_TOKEN).set_overwrite_ip(5, UNSUP)
    return run_step(rec, Action.INSPECT, ports(sim)[0], RULES)


@pytest.mark.parametrize("original", [None, "10.0.0.1"])
def test_adoption_takes_the_component_before_the_journal(
    sim: Simulator, original: str | None
) -> None:
    ports(sim)[1].write(5, original, "ep_old", NOW - 3600)
    report = adopt(sim, found("10.9.9.9", knows=True))
    rec = report.decision.record
    assert report.decision.reason is Reason.ADOPTED_KNOWN and rec is not None
    assert rec.original_overwrite_ip == original and not rec.adopted
    shown = "null" if original is None else original
    assert report.decision.detail == f"original from LibreNMS component: {shown}"
    # The log line ends with the reason: it must not name the journal as the source.
    assert "journal" not in report.decision.reason.value


def test_adoption_without_a_component_takes_the_journal_then_null(sim: Simulator) -> None:
    report = adopt(sim, found("10.9.9.9", knows=True))
    assert report.decision.detail == "original from the event journal: 10.9.9.9"
    report = adopt(sim, found())
    assert report.decision.reason is Reason.ADOPTED
    assert report.decision.detail == "original unknown: null"


def test_adoption_fails_rather_than_guess_when_components_cannot_be_read(
    sim: Simulator,
) -> None:
    sim.inject("GET", r"/components$", status=500)
    report = adopt(sim, found("10.9.9.9", knows=True))
    assert report.decision.reason is Reason.STEP_FAILED and report.failed_step == "component"


def test_release_of_an_untracked_device_restores_the_component_and_removes_it(
    sim: Simulator,
) -> None:
    ports(sim)[1].write(5, None, "ep_old", NOW - 3600)
    LibreNMS(sim.url, DEFAULT_TOKEN).set_overwrite_ip(5, UNSUP)
    rec = DeviceRecord(device_id=5, next_attempt_at=NOW, alerts=0, release_requested=True)
    report = run_step(rec, Action.RELEASE, ports(sim)[0], RULES)
    assert report.decision.reason is Reason.RELEASED
    assert report.decision.detail == (
        "restored overwrite_ip null (original from LibreNMS component: null)"
    )
    assert sim.device(5)["overwrite_ip"] is None and sim.components() == {}
