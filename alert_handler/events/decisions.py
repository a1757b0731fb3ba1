"""Which events a persisted decision produces; pure (no clock, no ids, no files).

The Recorder (the recovery steps) and the App (the webhook and operator endpoints) call these
with what they persist, and stamp the drafts with an id and the time (`emit.Emitter`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from alert_handler.core.event_types import EventType
from alert_handler.core.machine import Action, Decision, Reason
from alert_handler.core.outcomes import meaning
from alert_handler.core.records import DeviceRecord, Phase


@dataclass(frozen=True)
class Draft:
    """An event before it has an id and a time: its type, the record whose fields it carries
    (device, hostname, episode, attempt, original, time forced down) and its detail."""

    kind: EventType
    record: DeviceRecord
    detail: str = ""


def with_episode(decided: DeviceRecord | None, new_id: Callable[[], str]) -> DeviceRecord | None:
    """A record leaving NEW (forced down, adopted, being released) opens an episode: it gets an
    id that it keeps until it is forgotten."""
    if decided is None or decided.phase is Phase.NEW or decided.episode is not None:
        return decided
    return replace(decided, episode=new_id())


def step_events(before: DeviceRecord, action: Action, decision: Decision) -> list[Draft]:
    """The events of one persisted step: `before` is the record the step ran on, `decision`
    what was stored (its record None when the device was forgotten). The event comes from the
    Reason's meaning (`outcomes.MEANINGS`): `ended` when the device is forgotten, `kept`
    otherwise; two depend on the step: only an episode's first force-down is `forced_down`,
    and only a failed check (restored, then forced down again) is `still_down`."""
    rec = decision.record or decision.final or before
    reason = decision.reason
    detail = decision.detail or reason.value
    meant = meaning(reason)
    kind = meant.ended if decision.forget else meant.kept
    if reason is Reason.FORCED_DOWN and before.forced_down_at is not None:
        return []  # forced down again after an attempt: part of `still_down`
    if reason is Reason.STEP_FAILED:
        if action is not Action.CHECK:
            return []
        detail = f"check failed: {decision.detail}"
    return [] if kind is None else [Draft(kind, rec, detail)]


def intake_events(before: DeviceRecord | None, decision: Decision) -> list[Draft]:
    """The events of a webhook or operator decision on a device: `tracked` for a new one, the
    closing event of a tracked one it forgets (a held device whose port came back)."""
    meant = meaning(decision.reason)
    if decision.new and decision.record is not None and meant.kept is not None:
        return [Draft(meant.kept, decision.record, decision.detail)]
    if before is not None and decision.forget and meant.ended is not None:
        return [Draft(meant.ended, before, decision.detail or decision.reason.value)]
    return []
