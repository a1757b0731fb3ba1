"""Device records: what the daemon knows about each tracked device; pure data.

A record holds two kinds of fields. The recovery worker owns the phase and everything about
LibreNMS (original, port, attempts, schedule); the webhook owns what alerts tell us (counters,
last seen, a recheck or release request). `merge_alert_fields` lets the worker write its decision
without losing an alert that arrived while it was talking to LibreNMS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Phase(str, Enum):
    """Where a device is in its cycle; each value is persisted."""

    NEW = "new"  # tracked, nothing changed in LibreNMS yet
    FORCING_DOWN = "forcing_down"  # original recorded; setting overwrite_ip to UNSUPERVISED_IP
    DOWN = "down"  # forced down; waits for next_attempt_at
    RESTORING = "restoring"  # putting the original back, then discover, poll, check
    RELEASING = "releasing"  # putting the original back for good (release, give-up)


FORCED_PHASES = frozenset({Phase.FORCING_DOWN, Phase.DOWN, Phase.RESTORING})


@dataclass(frozen=True)
class DeviceRecord:
    """Everything the daemon knows about one tracked device."""

    device_id: int
    phase: Phase = Phase.NEW
    hostname: str | None = None
    original_recorded: bool = False
    original_overwrite_ip: str | None = None
    adopted: bool = False  # the original was unknown; restored to null
    port_id: int | None = None
    poller_group: int = 0  # LibreNMS's poller group, read at inspect and at each attempt
    attempts: int = 0
    first_seen: float = 0.0
    next_attempt_at: float = 0.0
    attempt_started_at: float | None = None
    forced_down_at: float | None = None
    last_forced_at: float | None = None  # the latest force-down (forced_down_at: the first)
    last_error: str | None = None
    acked: bool = False
    held: bool = False  # a new device held by the confirmation gate: nothing changed yet
    confirmed: bool = False  # a person confirmed it: the gate lets it through
    # Taken on already pointing at UNSUPERVISED_IP (reconciliation's adoption, or an alert whose
    # ip is UNSUPERVISED_IP): the confirmation gate never holds it, since holding means "not yet
    # changed in LibreNMS"; it is recovered as usual (or restored, if excluded).
    found_unsupervised: bool = False
    acked_ids: tuple[int, ...] = ()  # alerts we acknowledged: unmuted when we let the device go
    # Fields the webhook owns:
    alerts: int = 1
    last_alert: float = 0.0
    last_rule: str | None = None
    last_ip: str | None = None
    recheck_at: float | None = None
    release_requested: bool = False
    # The forced-down episode (first force-down to recovery, give-up or release), for events.
    episode: str | None = None
    # The last original the event journal knows for this device (`knows_original` says whether
    # there is one; its value may be null): restored instead of null when the device is found
    # on UNSUPERVISED_IP with no original of its own.
    knows_original: bool = False
    known_original: str | None = None

    def with_original(self, value: str | None, *, adopted: bool = False) -> DeviceRecord:
        """Record the original overwrite_ip once; a recorded one is never replaced."""
        if self.original_recorded:
            return self
        return replace(self, original_recorded=True, original_overwrite_ip=value, adopted=adopted)

    def with_known_original(self, known: tuple[str | None] | None) -> DeviceRecord:
        """The record with the journal's last known original (`(value,)`; None: none known)."""
        if known is None:
            return self
        return replace(self, knows_original=True, known_original=known[0])


_ALERT_FIELDS = ("alerts", "last_alert", "last_rule", "last_ip", "recheck_at", "release_requested")


def merge_alert_fields(decided: DeviceRecord, current: DeviceRecord) -> DeviceRecord:
    """The worker's `decided` record with the webhook-owned fields taken from `current`."""
    updates = {name: getattr(current, name) for name in _ALERT_FIELDS}
    if current.hostname and not decided.hostname:
        updates["hostname"] = current.hostname
    return replace(decided, **updates)


def shifted(rec: DeviceRecord, seconds: float) -> DeviceRecord:
    """The record with every stored time moved by `seconds` (after the wall clock stepped)."""

    def move(value: float | None) -> float | None:
        return None if value is None else value + seconds

    return replace(
        rec,
        first_seen=rec.first_seen + seconds,
        next_attempt_at=rec.next_attempt_at + seconds,
        last_alert=rec.last_alert + seconds,
        attempt_started_at=move(rec.attempt_started_at),
        forced_down_at=move(rec.forced_down_at),
        last_forced_at=move(rec.last_forced_at),
        recheck_at=move(rec.recheck_at),
    )
