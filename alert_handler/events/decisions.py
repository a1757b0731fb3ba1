"""Which events a persisted decision produces; pure (no clock, no ids, no files).

The Recorder (the recovery steps) and the App (the webhook and operator endpoints) call these
with what they persist, and stamp the drafts with an id and the time (`emit.Emitter`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from alert_handler.core.machine import Action, Decision, Reason
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.journal import EventType


@dataclass(frozen=True)
class Draft:
    """An event before it has an id and a time: its type, the record whose fields it carries
    (device, hostname, episode, attempt, original, time forced down) and its detail."""

    kind: EventType
    record: DeviceRecord
    detail: str = ""


_ENDINGS = {
    Reason.RECOVERED: EventType.RECOVERED,
    Reason.STILL_DOWN: EventType.STILL_DOWN,
    Reason.POLL_DEVICE_DOWN: EventType.STILL_DOWN,
    Reason.POLL_FAILED: EventType.STILL_DOWN,
    Reason.GAVE_UP: EventType.GAVE_UP,
    Reason.RELEASED: EventType.RELEASED,
    Reason.FOREIGN_CHANGE: EventType.FOREIGN_CHANGE,
    Reason.DEVICE_GONE: EventType.DEVICE_GONE,
    Reason.STALE_PORT_UP: EventType.DISMISSED,
    Reason.ADOPTED: EventType.ADOPTED,
    Reason.ADOPTED_KNOWN: EventType.ADOPTED,
    Reason.ATTEMPT: EventType.ATTEMPT,
}


def with_episode(decided: DeviceRecord | None, new_id: Callable[[], str]) -> DeviceRecord | None:
    """A record leaving NEW (forced down, adopted, being released) opens an episode: it gets an
    id that it keeps until it is forgotten."""
    if decided is None or decided.phase is Phase.NEW or decided.episode is not None:
        return decided
    return replace(decided, episode=new_id())


def step_events(before: DeviceRecord, action: Action, decision: Decision) -> list[Draft]:
    """The events of one persisted step: `before` is the record the step ran on, `decision`
    what was stored (its record None when the device was forgotten)."""
    rec = decision.record if decision.record is not None else before
    reason = decision.reason
    detail = decision.detail or reason.value
    if reason is Reason.FORCED_DOWN:
        # Forced down again after an attempt is part of `still_down`; only the first counts.
        return [Draft(EventType.FORCED_DOWN, rec, detail)] if before.forced_down_at is None else []
    if reason is Reason.STEP_FAILED:
        if action is Action.CHECK:  # restored, then the check failed: forced down again
            return [Draft(EventType.STILL_DOWN, rec, f"check failed: {decision.detail}")]
        return []
    if reason is Reason.NO_TARGET_PORT and decision.forget:
        return [Draft(EventType.DISMISSED, rec, detail)]
    kind = _ENDINGS.get(reason)
    return [] if kind is None else [Draft(kind, rec, detail)]
