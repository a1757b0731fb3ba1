"""The state machine's vocabulary: why a decision was taken (Reason), what to do next (Action),
the settings it needs (Rules), a decision (Decision) and why to leave a device alone
(LeaveAlone); pure data. `machine` takes the decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from alert_handler.core.records import DeviceRecord


class Reason(str, Enum):
    """Why a decision was taken; logged and asserted in tests."""

    NEW_DEVICE = "new device"
    REPEAT = "repeat alert"
    RECHECK = "recovery notice: check now"
    IGNORED_ACK = "acknowledged notification ignored"
    IGNORED_UNTRACKED_RECOVERY = "recovery of an untracked device ignored"
    IGNORED_RULE = "rule not in TRIGGER_RULES"
    TRACK_BY_HAND = "tracked by hand"
    STALE_PORT_UP = "port already up: stale alert, not forced down"
    NO_TARGET_PORT = "device has no port with the target ifName"
    DEVICE_GONE = "device no longer exists in LibreNMS"
    ADOPTED = "found on UNSUPERVISED_IP with no known original: adopted, will restore null"
    ADOPTED_KNOWN = "found on UNSUPERVISED_IP: adopted, will restore its known original"
    ALREADY_DOWN = "already forced down"
    FORCE_DOWN = "forcing down"
    FORCED_DOWN = "forced down"
    ATTEMPT = "restoring for a check"
    RECOVERED = "port up: recovered"
    STILL_DOWN = "port not up: forcing down again"
    POLL_DEVICE_DOWN = "poll says device down: forcing down again"
    POLL_FAILED = "poll failed: forcing down again"
    STEP_FAILED = "step failed"
    FOREIGN_CHANGE = "overwrite_ip changed by someone else: left alone"
    # LibreNMS's own suppression: people are working on the device, so it is left alone.
    SUPPRESSED_MAINTENANCE = "under maintenance in LibreNMS: left alone"
    SUPPRESSED_DISABLED = "disabled in LibreNMS: left alone"
    SUPPRESSED_IGNORED = "ignored in LibreNMS: left alone"
    GAVE_UP = "MAX_ATTEMPTS reached: left restored and forgotten"
    RELEASE = "release requested"
    RELEASED = "released: original restored"
    EXCLUDED = "excluded or silenced: not forced down"
    LET_GO = "excluded or silenced: restoring the original and forgetting it"
    HELD = "held: more new devices than CONFIRM_ABOVE, waiting for `alert-handler confirm`"
    HELD_RECOVERED = "held device's port came back: dropped"
    CONFIRMED = "confirmed: will be forced down"
    DISCARDED = "held device discarded: restored if on UNSUPERVISED_IP, forgotten"
    NOT_YET = "exclusion groups not read yet: not forced down yet"


class Action(str, Enum):
    """What the worker should do next for a device."""

    WAIT = "wait"
    INSPECT = "inspect"
    FORCE_DOWN = "force_down"
    VERIFY = "verify"  # read the device before restoring it
    CHECK = "check"  # restore, discover, poll, read the port
    RELEASE = "release"


@dataclass(frozen=True)
class Rules:
    """The settings the state machine needs."""

    unsupervised_ip: str = "127.0.0.50"
    target_ifname: str = "port2"
    interval: float = 60.0
    max_attempts: int = 0
    trigger_rules: tuple[str, ...] = ()
    ack_alerts: bool = False
    dry_run: bool = False  # no PATCH is sent: details say "would set", not "set"
    check_repoll: float = 0.0  # seconds to wait before polling again when the port reads not up

    def triggers(self, rule: str | None) -> bool:
        """The trigger-rule filter, the one place it is written: whether an alert of `rule`
        starts (or, recovering, rechecks) the handling of a device (TRIGGER_RULES empty: any)."""
        return not self.trigger_rules or rule in self.trigger_rules


@dataclass(frozen=True)
class Decision:
    """The record to store (None: forget the device) and why. `final`: a forgotten device's
    record as last seen (with the original read from LibreNMS), for its ending event."""

    record: DeviceRecord | None
    reason: Reason
    detail: str = ""
    new: bool = False
    final: DeviceRecord | None = None

    @property
    def forget(self) -> bool:
        """Whether the device is dropped from the state."""
        return self.record is None


@dataclass(frozen=True)
class LeaveAlone:
    """Why the daemon must leave a device alone now, as the state machine takes it: LibreNMS's
    own suppression (SUPPRESSED_*), EXCLUDE or a silence (EXCLUDED), or a "not yet" (NOT_YET:
    `waits`, nothing is forced down for the first time). `detail` says which rule."""

    reason: Reason
    detail: str = ""

    @property
    def waits(self) -> bool:
        """Not a "no" but a "not yet": only a first force-down waits."""
        return self.reason is Reason.NOT_YET


def leave_alone_of(leave_alone: Reason | LeaveAlone | None) -> LeaveAlone | None:
    if leave_alone is None or isinstance(leave_alone, LeaveAlone):
        return leave_alone
    return LeaveAlone(leave_alone)
