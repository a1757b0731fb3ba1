"""Which new devices may be forced down now: the confirmation gate, then MAX_FORCED_DOWN.

Two guards against an upstream outage turning into thousands of forced-down CPEs, applied in
this order to the NEW devices a scheduling pass finds due:

1. The confirmation gate (CONFIRM_ABOVE within CONFIRM_WINDOW_SEC): past the threshold, new
   devices are *held* (tracked, nothing changed in LibreNMS) until a person runs
   `alert-handler confirm` (they go ahead) or `discard` (they are forgotten).
2. The storm guard (MAX_FORCED_DOWN): a hard cap on devices forced down at once. Devices past it
   wait, unheld, and start by themselves as others recover.
"""

from __future__ import annotations

import heapq
import logging
import time

from alert_handler.core import controls, machine
from alert_handler.core.alerts import counted
from alert_handler.core.controls import ConfirmGate
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventType
from alert_handler.metrics import Metrics
from alert_handler.store.state import StateStore

log = logging.getLogger("alert_handler.scheduler")


class Admission:
    """The guards' state; called by the scheduler under its lock."""

    def __init__(
        self,
        store: StateStore,
        metrics: Metrics,
        max_forced_down: int = 0,
        gate: ConfirmGate | None = None,
        events: Emitter | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_forced_down = max_forced_down
        self.gate = gate
        self._events = events
        self.storm_engaged = False
        self._gated: set[int] = set()  # new devices the gate let through (not counted again)
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
        new = self._confirm_gate(records, new, now, held)
        allowed = self._storm_allowed(records, inflight)
        if allowed is not None and len(new) > allowed:
            self._storm_hold(len(new) - allowed)
            return heapq.nsmallest(allowed, new)
        if self.max_forced_down:
            self.metrics.storm_held.set(0)
            self._storm_event(False, 0)
        return new

    def forget_gated(self) -> None:
        """After `confirm` or `discard`: count new devices afresh."""
        self._gated.clear()

    def _confirm_gate(
        self,
        records: dict[int, DeviceRecord],
        new: list[tuple[float, int]],
        now: float,
        held: int,
    ) -> list[tuple[float, int]]:
        gate = self.gate
        if gate is None or gate.above <= 0:
            return new
        self._gated &= records.keys()
        passed = [(t, d) for t, d in new if d in self._gated or records[d].confirmed]
        fresh = sorted((t, d) for t, d in new if d not in self._gated and not records[d].confirmed)
        allowed = gate.allow(len(fresh), now)
        self._gated.update(d for _, d in fresh[:allowed])
        for _, device_id in fresh[allowed:]:
            self.store.update(
                device_id, lambda cur: None if cur is None else controls.hold(cur).record
            )
            log.info(
                "device=%d step=confirm held: more than CONFIRM_ABOVE=%d new devices within "
                "%.0fs; nothing changed in LibreNMS until `alert-handler confirm`",
                device_id,
                gate.above,
                gate.window,
            )
        held += len(fresh) - allowed
        self.metrics.held.set(held)
        if len(fresh) > allowed and time.monotonic() - self._held_warned >= 60.0:
            self._held_warned = time.monotonic()
            log.warning(
                "step=confirm more than CONFIRM_ABOVE=%d new devices within %.0fs: %d held, "
                "nothing changed in LibreNMS; `alert-handler confirm` forces them down, "
                "`alert-handler discard` forgets them (this line repeats at most once a minute)",
                gate.above,
                gate.window,
                held,
            )
        return passed + fresh[:allowed]

    def _storm_allowed(self, records: dict[int, DeviceRecord], inflight: set[int]) -> int | None:
        """How many NEW devices may start now under MAX_FORCED_DOWN (None: no limit). Those
        being inspected count as forced down already, so parallel workers cannot overshoot."""
        if not self.max_forced_down:
            return None
        inspecting = sum(1 for d in inflight if d in records and records[d].phase is Phase.NEW)
        return max(0, self.max_forced_down - machine.forced_count(records) - inspecting)

    def _storm_event(self, engaged: bool, held: int) -> None:
        """Journal the storm guard engaging or clearing (a transition only)."""
        if engaged == self.storm_engaged:
            return
        self.storm_engaged = engaged
        if self._events is None:
            return
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
