"""Which new devices may be forced down now: the confirmation gate, then MAX_FORCED_DOWN.

Two guards against an upstream outage turning into thousands of forced-down CPEs, applied in
this order to the NEW devices a scheduling pass finds due:

1. The confirmation gate (CONFIRM_ABOVE within CONFIRM_WINDOW_SEC): past the threshold, new
   devices are *held* (tracked, nothing changed in LibreNMS) until a person runs
   `alert-handler confirm` (they go ahead) or `discard` (they are restored if on
   UNSUPERVISED_IP all the same, and forgotten). A device found on UNSUPERVISED_IP already
   (adopted) is never held: it is changed already.
2. The storm guard (MAX_FORCED_DOWN): a hard cap on devices forced down at once. Devices past it
   wait, unheld, and start by themselves as others recover.

The arithmetic is the core's (`core.verdict.gate_pass`, `core.machine.storm_room`); this class
owns their state and the one lock (`lock`) around every change of it: the scheduler's pass and
the request threads' `confirm`/`discard` alike.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

from alert_handler.core import machine
from alert_handler.core import verdict as controls
from alert_handler.core.alerts import counted
from alert_handler.core.machine import Decision
from alert_handler.core.records import DeviceRecord
from alert_handler.core.verdict import ConfirmGate, gate_pass, gate_reset
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventType
from alert_handler.ops.metrics import Metrics
from alert_handler.store.state import StateStore

log = logging.getLogger("alert_handler.recovery.scheduler")

# One decision per held device (confirm, discard).
Decide = Callable[[DeviceRecord], Decision]


class Admission:
    """The guards' state; every change of it is made under `lock`."""

    def __init__(
        self,
        store: StateStore,
        metrics: Metrics,
        gate: ConfirmGate,
        events: Emitter,
        max_forced_down: int = 0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_forced_down = max_forced_down
        self.gate = gate
        self._events = events
        self.lock = threading.Lock()
        self.storm_engaged = False
        self._held_warned = -1e18
        self._storm_warned = -1e18

    def admit(
        self,
        records: dict[int, DeviceRecord],
        new: list[tuple[float, int]],
        inflight: set[int],
        now: float,
        held: int,
    ) -> list[tuple[float, int]]:
        """The (next_attempt_at, device_id) of the due NEW devices that may start now; `held`
        is how many the gate held before this pass."""
        with self.lock:
            new = self._confirm_gate(records, new, now, held)
            allowed = machine.storm_room(records, inflight, self.max_forced_down)
            if allowed is not None and len(new) > allowed:
                self._storm_hold(len(new) - allowed)
                return heapq.nsmallest(allowed, new)
            if self.max_forced_down:
                self.metrics.storm_held.set(0)
                self._storm_event(False, 0)
            return new

    def decide_held(self, decide: Decide) -> tuple[list[int], int]:
        """`confirm` or `discard` (from a request thread): under the lock, `decide` every held
        device and reset the gate, so that no pass holds a device in between; returns (their
        ids, the last version written)."""
        with self.lock:
            ids = sorted(d for d, rec in self.store.records().items() if rec.held)
            version = 0
            for device_id in ids:  # one no longer held is left as it is
                _, written = self.store.update(
                    device_id,
                    lambda cur: cur if cur is None or not cur.held else decide(cur).record,
                )
                version = max(version, written)
            self.gate.state = gate_reset(self.gate.state)
            self.metrics.held.set(0)
        return ids, version

    def _confirm_gate(
        self,
        records: dict[int, DeviceRecord],
        new: list[tuple[float, int]],
        now: float,
        held: int,
    ) -> list[tuple[float, int]]:
        gate = self.gate
        if gate.above <= 0:
            return new
        holding_before = gate.holding
        result = gate_pass(gate.state, gate.above, gate.window, new, records, now)
        gate.state = result.state
        for device_id in result.held:
            rec, _ = self.store.update(
                device_id, lambda cur: None if cur is None else controls.hold(cur).record
            )
            if rec is not None and rec.held:
                log.info(
                    "device=%d step=confirm held: %s; nothing changed in LibreNMS until "
                    "`alert-handler confirm`",
                    device_id,
                    (
                        f"more than CONFIRM_ABOVE={gate.above} new devices within "
                        f"{gate.window:.0f}s"
                        if result.over and not holding_before
                        else f"the gate holds every new device (CONFIRM_ABOVE={gate.above})"
                    ),
                )
        held += len(result.held)
        self.metrics.held.set(held)
        if result.held and time.monotonic() - self._held_warned >= 60.0:
            self._held_warned = time.monotonic()
            if result.over and not holding_before:
                why = f"more than CONFIRM_ABOVE={gate.above} new devices within {gate.window:.0f}s"
            else:
                why = (
                    "the gate holds every new device until a person decides "
                    f"(CONFIRM_ABOVE={gate.above})"
                )
            log.warning(
                "step=confirm %s: %s held, nothing changed in LibreNMS; `alert-handler confirm` "
                "forces them down, `alert-handler discard` forgets them (this line repeats at "
                "most once a minute)",
                why,
                counted(held, "device"),
            )
        timed = dict((d, t) for t, d in new)
        return [(timed[d], d) for d in result.passed]

    def _storm_event(self, engaged: bool, held: int) -> None:
        """Journal the storm guard engaging or clearing (a transition only)."""
        if engaged == self.storm_engaged:
            return
        self.storm_engaged = engaged
        kind = EventType.STORM_ENGAGED if engaged else EventType.STORM_CLEARED
        detail = f"MAX_FORCED_DOWN={self.max_forced_down}"
        detail += (
            f" reached: {counted(held, 'new device')} held" if engaged else ": no device is held"
        )
        self.store.add_events([self._events.line(kind, detail=detail)])

    def _storm_hold(self, held: int) -> None:
        self.metrics.storm_held.set(held)
        self._storm_event(True, held)
        now = time.monotonic()
        if now - self._storm_warned >= 60.0:
            self._storm_warned = now
            log.warning(
                "step=storm-guard MAX_FORCED_DOWN=%d reached: %s recorded but not "
                "forced down (this line repeats at most once a minute)",
                self.max_forced_down,
                counted(held, "new device"),
            )
