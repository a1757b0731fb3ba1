"""What people steer the daemon with: exclusions, silences and the confirmation gate; pure.

- An exclusion (EXCLUDE) keeps automation away from a device for good: a device id, a hostname
  glob (`cpe-lab-*`) or a LibreNMS device group (`group:VIP customers`).
- A silence does the same for a while: `alert-handler silence 42 --for 2h --reason ...`.
- The confirmation gate holds new force-downs when more than CONFIRM_ABOVE new devices would be
  forced down within CONFIRM_WINDOW_SEC (an upstream outage), until a person confirms.

`verdict()` is the one "may the daemon touch this device?" decision point. It is an input of the
state machine at every entry into a device: an alert and `track` (an excluded or silenced device
is not taken on), reconciliation's adoption and pick-up, inspect, each attempt and each
force-down (`steps` asks it, as it asks LibreNMS's own suppression). The periodic sweep only lets
go sooner a device that became excluded or silenced while it waited.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace

from alert_handler.core.machine import Decision, Reason
from alert_handler.core.records import DeviceRecord, Phase
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
class Selector:
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


def parse_target(text: str, *, allow_group: bool = True) -> Selector:
    """One EXCLUDE entry or silence target; ControlError when it is none of the three forms."""
    text = text.strip()
    if not text:
        raise ControlError("empty target")
    if text.isascii() and text.isdigit():
        value = int(text)
        if not 0 < value < 2**31:
            raise ControlError(f"device id {text:.20} is out of range")
        return Selector(device_id=value)
    if text.lower().startswith("group:"):
        name = text[len("group:") :].strip()
        if not allow_group:
            raise ControlError("a silence takes a device id or a hostname glob, not a group")
        if not name or len(name) > 255:
            raise ControlError("group: needs a device group name")
        return Selector(group=name)
    if len(text) > 255 or any(c.isspace() or not c.isprintable() for c in text):
        raise ControlError("a hostname glob has no spaces or control characters")
    return Selector(glob=text)


def parse_exclusions(text: str) -> tuple[Selector, ...]:
    """EXCLUDE: a comma list of targets (group names may hold spaces)."""
    return tuple(parse_target(part) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Silence:
    """A silence: who set it (client address), why, until when (epoch seconds)."""

    target: Selector
    until: float
    reason: str
    by: str
    created: float

    def active(self, now: float) -> bool:
        """Whether the silence still holds at `now`."""
        return now < self.until


EXCLUDED = "excluded"
SILENCED = "silenced"
NOT_YET = "not yet"  # the EXCLUDE groups were never read: nothing is forced down the first time
GROUPS_UNREAD = "exclusion groups not read yet"


@dataclass(frozen=True)
class Verdict:
    """Why the daemon must not touch a device (`kind` excluded or silenced), or, for NOT_YET,
    not force it down for the first time yet; for logs and replies."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"

    @property
    def waits(self) -> bool:
        """A "not yet", not a "no": the device is taken on and handled, but not forced down for
        the first time until the verdict changes (the EXCLUDE groups were never read)."""
        return self.kind == NOT_YET


def blocks(found: Verdict | None) -> bool:
    """Whether a verdict keeps the daemon away from the device (excluded or silenced)."""
    return found is not None and not found.waits


def verdict(
    device_id: int,
    hostname: str | None,
    groups: frozenset[str],
    exclusions: tuple[Selector, ...],
    silences: tuple[Silence, ...],
    now: float,
    *,
    groups_known: bool = True,
) -> Verdict | None:
    """None if the daemon may touch the device; else why not (an exclusion wins over a
    silence). Unless `groups_known` (no read of the EXCLUDE groups ever succeeded, none is on
    disk), a device no id, glob or silence covers gets NOT_YET: it fails closed."""
    for target in exclusions:
        if target.group is not None and not groups_known:
            continue
        if target.matches(device_id, hostname, groups):
            return Verdict(EXCLUDED, f"EXCLUDE {target}")
    for silence in silences:
        if silence.active(now) and silence.target.matches(device_id, hostname, groups):
            reason = f", {silence.reason}" if silence.reason else ""
            return Verdict(
                SILENCED, f"{silence.target} by {silence.by} until {iso(silence.until)}{reason}"
            )
    if not groups_known and any(target.group is not None for target in exclusions):
        return Verdict(NOT_YET, GROUPS_UNREAD)
    return None


@dataclass(frozen=True)
class GateState:
    """The confirmation gate's state: when new devices were let through (within the window),
    whether it holds every new device, and which devices it let through (not counted again)."""

    started: tuple[float, ...] = ()
    holding: bool = False
    gated: frozenset[int] = frozenset()


@dataclass(frozen=True)
class GatePass:
    """One pass of the gate: its next state, the devices that go ahead and those newly held;
    `over`: the count passed the limit in this pass (not merely holding since before)."""

    state: GateState
    passed: tuple[int, ...]
    held: tuple[int, ...]
    over: bool = False


def gate_allow(state: GateState, above: int, window: float, wanted: int, now: float) -> GatePass:
    """How many of `wanted` new devices may be forced down now, as arithmetic: the window's
    count plus these must stay within `above` (0 or less: no gate). Once anything is held,
    every new device is held until a person confirms or discards. `passed`/`held` here are
    positions 0..wanted-1 (see `gate_pass` for devices)."""
    if above <= 0 or wanted <= 0:
        return GatePass(state, tuple(range(wanted)), ())
    started = tuple(t for t in state.started if now - t < window)
    if state.holding:
        return GatePass(GateState(started, True, state.gated), (), tuple(range(wanted)))
    allowed = min(wanted, max(0, above - len(started)))
    over = allowed < wanted
    state = GateState(started + (now,) * allowed, over, state.gated)
    return GatePass(state, tuple(range(allowed)), tuple(range(allowed, wanted)), over)


def gate_pass(
    state: GateState,
    above: int,
    window: float,
    new: list[tuple[float, int]],
    records: dict[int, DeviceRecord],
    now: float,
) -> GatePass:
    """The gate over the due NEW devices (`(next_attempt_at, device_id)`, oldest first): those
    it let through before, confirmed ones and ones found on UNSUPERVISED_IP already (holding
    means "not yet changed in LibreNMS": they never are) pass; the others are counted."""
    if above <= 0:
        return GatePass(state, tuple(d for _, d in new), ())
    gated = state.gated & records.keys()
    exempt = [
        d for _, d in new if d in gated or records[d].confirmed or records[d].found_unsupervised
    ]
    skip = set(exempt)
    fresh = [d for _, d in sorted(new) if d not in skip]
    counted = gate_allow(replace(state, gated=gated), above, window, len(fresh), now)
    passed = [fresh[i] for i in counted.passed]
    held = tuple(fresh[i] for i in counted.held)
    after = replace(counted.state, gated=counted.state.gated | frozenset(passed))
    return GatePass(after, tuple(exempt + passed), held, counted.over)


def gate_reset(_state: GateState) -> GateState:
    """After `confirm` or `discard`: nothing held, the window and the count start afresh."""
    return GateState()


@dataclass
class ConfirmGate:
    """The confirmation gate's settings and its current `GateState` (changed only under the
    runtime's one lock: `admission.Admission.lock`). `allow(n, now)` says how many of `n` new
    devices may go ahead now; the rest are held. Once anything is held, every new device is
    held until `confirm()` or `discard()`: an outage does not trickle through the window's edge.
    """

    above: int
    window: float
    state: GateState = field(default_factory=GateState)

    @property
    def holding(self) -> bool:
        """Whether every new device is held until a person decides."""
        return self.state.holding

    @holding.setter
    def holding(self, value: bool) -> None:
        self.state = replace(self.state, holding=value)

    @property
    def started(self) -> tuple[float, ...]:
        """When new devices were let through, within the window."""
        return self.state.started

    def allow(self, wanted: int, now: float) -> int:
        """How many of `wanted` new devices may be forced down now (0 < above disables it)."""
        result = gate_allow(self.state, self.above, self.window, wanted, now)
        self.state = result.state
        return len(result.passed)

    def confirm(self) -> None:
        """A person agreed: the held devices go ahead and the window starts afresh."""
        self.state = gate_reset(self.state)

    def discard(self) -> None:
        """The held devices were forgotten: new ones are counted afresh."""
        self.state = gate_reset(self.state)


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
    """The confirmation gate holds a new device: tracked, nothing changed in LibreNMS. A device
    confirmed meanwhile, found on UNSUPERVISED_IP or no longer NEW is never held."""
    if rec.confirmed or rec.found_unsupervised or rec.phase is not Phase.NEW or rec.held:
        return Decision(rec, Reason.HELD)
    return Decision(replace(rec, held=True), Reason.HELD)


def confirm(rec: DeviceRecord, now: float) -> Decision:
    """A person confirmed the held device: it goes ahead past the gate."""
    return Decision(replace(rec, held=False, confirmed=True, next_attempt_at=now), Reason.CONFIRMED)


def discard(rec: DeviceRecord, now: float) -> Decision:
    """A person discarded the held device: released, so the step runner looks at LibreNMS and
    restores the device if it is on UNSUPERVISED_IP all the same (a NEW record's release
    changes nothing otherwise), then forgets it. Never left on UNSUPERVISED_IP."""
    new = replace(rec, held=False, release_requested=True, next_attempt_at=now)
    return Decision(new, Reason.DISCARDED)
