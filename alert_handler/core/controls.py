"""What people steer the daemon with: exclusions, silences and the confirmation gate; pure.

- An exclusion (EXCLUDE) keeps automation away from a device for good: a device id, a hostname
  glob (`cpe-lab-*`) or a LibreNMS device group (`group:VIP customers`).
- A silence does the same for a while: `alert-handler silence 42 --for 2h --reason ...`.
- The confirmation gate holds new force-downs when more than CONFIRM_ABOVE new devices would be
  forced down within CONFIRM_WINDOW_SEC (an upstream outage), until a person confirms.

`verdict()` is the one "may this device be forced down?" decision point, used by the webhook (an
alert for an excluded or silenced device is ignored) and by the scheduler (a tracked device that
becomes excluded or silenced is restored to its original and forgotten).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace

from alert_handler.core.machine import Decision, Reason
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import iso

MAX_SILENCE_SEC = 90 * 86400  # a silence longer than a quarter is an exclusion
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ControlError(ValueError):
    """Bad steering input; the message says what is wrong and nothing was changed."""


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d`, `1w` as seconds; ControlError for anything else (`-5m`, `0h`)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ControlError(f"duration {text!s:.40} is not like 30m, 2h or 1d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ControlError("a duration must be positive")
    if seconds > MAX_SILENCE_SEC:
        raise ControlError("a silence lasts at most 90d; use EXCLUDE for good")
    return float(seconds)


@dataclass(frozen=True)
class Target:
    """Which devices an exclusion or silence covers: one id, a hostname glob, or a group."""

    device_id: int | None = None
    glob: str | None = None
    group: str | None = None

    def __str__(self) -> str:
        if self.device_id is not None:
            return str(self.device_id)
        if self.group is not None:
            return f"group:{self.group}"
        return self.glob or ""

    def matches(self, device_id: int, hostname: str | None, groups: frozenset[str]) -> bool:
        """Whether this target covers the device (globs compare hostnames case-insensitively)."""
        if self.device_id is not None:
            return device_id == self.device_id
        if self.group is not None:
            return self.group in groups
        if self.glob is None or not hostname:
            return False
        return fnmatch.fnmatchcase(hostname.lower(), self.glob.lower())

    @property
    def matches_everything(self) -> bool:
        """A glob every hostname matches (`*`, `**`, `*?*`...): refused without --all."""
        return self.glob is not None and self.glob.strip("*") in ("", "?") and "*" in self.glob


def parse_target(text: str, *, allow_group: bool = True) -> Target:
    """One EXCLUDE entry or silence target; ControlError when it is none of the three forms."""
    text = text.strip()
    if not text:
        raise ControlError("empty target")
    if text.isascii() and text.isdigit():
        value = int(text)
        if not 0 < value < 2**31:
            raise ControlError(f"device id {text:.20} is out of range")
        return Target(device_id=value)
    if text.lower().startswith("group:"):
        name = text[len("group:") :].strip()
        if not allow_group:
            raise ControlError("a silence takes a device id or a hostname glob, not a group")
        if not name or len(name) > 255:
            raise ControlError("group: needs a device group name")
        return Target(group=name)
    if len(text) > 255 or any(c.isspace() or not c.isprintable() for c in text):
        raise ControlError("a hostname glob has no spaces or control characters")
    return Target(glob=text)


def parse_exclusions(text: str) -> tuple[Target, ...]:
    """EXCLUDE: a comma list of targets (group names may hold spaces)."""
    return tuple(parse_target(part) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Silence:
    """A silence: who set it (client address), why, until when (epoch seconds)."""

    target: Target
    until: float
    reason: str
    by: str
    created: float

    def active(self, now: float) -> bool:
        """Whether the silence still holds at `now`."""
        return now < self.until


@dataclass(frozen=True)
class Verdict:
    """Why a device must not be forced down (`kind` excluded or silenced), for logs and replies."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def verdict(
    device_id: int,
    hostname: str | None,
    groups: frozenset[str],
    exclusions: tuple[Target, ...],
    silences: tuple[Silence, ...],
    now: float,
) -> Verdict | None:
    """None if the device may be forced down; else why not (an exclusion wins over a silence)."""
    for target in exclusions:
        if target.matches(device_id, hostname, groups):
            return Verdict("excluded", f"EXCLUDE {target}")
    for silence in silences:
        if silence.active(now) and silence.target.matches(device_id, hostname, groups):
            reason = f", {silence.reason}" if silence.reason else ""
            return Verdict(
                "silenced", f"{silence.target} by {silence.by} until {iso(silence.until)}{reason}"
            )
    return None


@dataclass
class ConfirmGate:
    """Counts first force-downs in a sliding window; past `above` new ones are held for a person.

    `allow(n, now)` says how many of `n` new devices may go ahead now; the rest are held. Once
    anything is held, every new device is held until `confirm()` or `discard()`: an outage does
    not trickle through the window's edge.
    """

    above: int
    window: float
    started: list[float] = field(default_factory=list)  # times new devices were let through
    holding: bool = False

    def allow(self, wanted: int, now: float) -> int:
        """How many of `wanted` new devices may be forced down now (0 < above disables it)."""
        if self.above <= 0 or wanted <= 0:
            return wanted
        self.started = [t for t in self.started if now - t < self.window]
        if self.holding:
            return 0
        room = max(0, self.above - len(self.started))
        allowed = min(wanted, room)
        self.started.extend([now] * allowed)
        if allowed < wanted:
            self.holding = True
        return allowed

    def confirm(self) -> None:
        """A person agreed: the held devices go ahead and the window starts afresh."""
        self.holding = False
        self.started = []

    def discard(self) -> None:
        """The held devices were forgotten: new ones are counted afresh."""
        self.holding = False
        self.started = []


# -- what the controls do to a tracked device's record ---------------------------------------
def let_go(rec: DeviceRecord, now: float, why: str) -> Decision:
    """A tracked device became excluded or silenced: restore its original now and forget it
    (a held or new one was never changed: the release only looks)."""
    if rec.release_requested:
        return Decision(rec, Reason.LET_GO, why)
    return Decision(
        replace(rec, release_requested=True, held=False, next_attempt_at=now), Reason.LET_GO, why
    )


def hold(rec: DeviceRecord) -> Decision:
    """The confirmation gate holds a new device: tracked, nothing changed in LibreNMS."""
    return Decision(replace(rec, held=True), Reason.HELD)


def confirm(rec: DeviceRecord, now: float) -> Decision:
    """A person confirmed the held device: it goes ahead past the gate."""
    return Decision(replace(rec, held=False, confirmed=True, next_attempt_at=now), Reason.CONFIRMED)


def discard(rec: DeviceRecord) -> Decision:
    """A person discarded the held device: forgotten (nothing was changed in LibreNMS)."""
    return Decision(None, Reason.DISCARDED)
