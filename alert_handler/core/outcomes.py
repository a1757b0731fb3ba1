"""The one table of what each `Reason` means (`MEANINGS`), and what a decision counts as.

For every Reason: its outcome for a recovery attempt, the event it produces (one that opens,
continues or closes an episode: `tracked` opens, the EPISODE_ENDS close), its log level,
whether the acknowledgements are taken back when the device is let go for it, and its reply to
the webhook. Logs (`jobs`), metrics, the cycle summary, the event journal (`events.decisions`),
the endpoints and `seen.to_unmute` read it here, so they cannot disagree; a test checks that
every Reason is in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from alert_handler.core.decision import Action, Reason
from alert_handler.core.event_types import EventType


class Outcome(str, Enum):
    """How a recovery attempt (or, for IDLE and FORCED_DOWN, a job) ended."""

    IDLE = "idle"  # nothing that counts happened (an inspection, a wait, a release)
    FORCED_DOWN = "forced_down"  # a new device was forced down
    RECOVERED = "recovered"
    STILL_DOWN = "still_down"  # the port, or the whole device (poll exit 6), is still down
    POLL_FAILED = "poll_failed"  # the poll ran but failed (exit 1, ...): forced down again
    FAILED = "failed"  # a step failed (LibreNMS or SSH trouble, a bug)
    GAVE_UP = "gave_up"


# What counts as an attempt's outcome, in `alert_handler_recovery_attempts_total`.
ATTEMPT_OUTCOMES = (
    Outcome.RECOVERED,
    Outcome.STILL_DOWN,
    Outcome.POLL_FAILED,
    Outcome.FAILED,
    Outcome.GAVE_UP,
)
# The counts of the `step=cycle` summary line, in its order.
CYCLE_OUTCOMES = (
    Outcome.RECOVERED,
    Outcome.STILL_DOWN,
    Outcome.POLL_FAILED,
    Outcome.FORCED_DOWN,
    Outcome.FAILED,
    Outcome.GAVE_UP,
)


@dataclass(frozen=True)
class Reply:
    """The webhook's answer for a decision: HTTP status, the body's `status`, and the label of
    `alert_handler_alerts_total`."""

    code: int
    status: str
    counted: str


ACCEPTED = Reply(202, "accepted", "accepted")
IGNORED = Reply(200, "ignored", "ignored")


@dataclass(frozen=True)
class Meaning:
    """What one Reason means.

    - `outcome`: the attempt outcome it counts as (None: no attempt's end).
    - `kept`: the event when the device stays tracked (`tracked` opens; ADOPTED, FORCED_DOWN,
      ATTEMPT, STILL_DOWN continue); `ended`: the closing event when it is forgotten (one of
      EPISODE_ENDS). A device let go through a release (LET_GO, DISCARDED, LibreNMS's
      suppression of a forced-down device) closes with the release's `released`.
    - `level`: the log level of the decision's line (`forget_level` when it forgets the device,
      if different).
    - `unmute`: let go for this reason, the alerts the daemon acknowledged are unmuted (LibreNMS
      alerts people again); not after a recovery (the alert clears itself) or a deletion.
    - `reply`: the webhook's answer (alerts, `track`); `refuses`: an operator's `track` is
      refused (409) with the decision's detail and nothing changes.
    """

    outcome: Outcome | None = None
    kept: EventType | None = None
    ended: EventType | None = None
    level: int = logging.INFO
    forget_level: int | None = None
    unmute: bool = True
    reply: Reply | None = None
    refuses: bool = False

    def log_level(self, forget: bool) -> int:
        """The level of the decision's log line."""
        return self.forget_level if forget and self.forget_level is not None else self.level


_R = Reason
_SUPPRESSED = Meaning(ended=EventType.DISMISSED, level=logging.WARNING, forget_level=logging.INFO)

MEANINGS: dict[Reason, Meaning] = {
    # The webhook and the operator's requests (intake).
    _R.NEW_DEVICE: Meaning(kept=EventType.TRACKED, reply=ACCEPTED),
    _R.REPEAT: Meaning(reply=Reply(200, "repeat", "repeat")),
    _R.RECHECK: Meaning(reply=Reply(200, "recheck", "repeat")),
    _R.IGNORED_ACK: Meaning(reply=IGNORED),
    _R.IGNORED_UNTRACKED_RECOVERY: Meaning(reply=IGNORED),
    _R.IGNORED_RULE: Meaning(reply=IGNORED),
    _R.TRACK_BY_HAND: Meaning(kept=EventType.TRACKED, reply=ACCEPTED),
    _R.RELEASE: Meaning(),
    # EXCLUDE or a silence: not taken on (webhook: ignored; track: refused), or, tracked and
    # not yet changed, forgotten at inspect (dismissed).
    _R.EXCLUDED: Meaning(ended=EventType.DISMISSED, reply=IGNORED, refuses=True),
    _R.LET_GO: Meaning(level=logging.WARNING, reply=IGNORED),
    _R.NOT_YET: Meaning(),
    # The confirmation gate.
    _R.HELD: Meaning(),
    _R.HELD_RECOVERED: Meaning(ended=EventType.DISMISSED, reply=IGNORED),
    _R.CONFIRMED: Meaning(),
    _R.DISCARDED: Meaning(level=logging.WARNING),
    # Inspect.
    _R.STALE_PORT_UP: Meaning(ended=EventType.DISMISSED),
    _R.NO_TARGET_PORT: Meaning(ended=EventType.DISMISSED, level=logging.ERROR),
    _R.ADOPTED: Meaning(kept=EventType.ADOPTED, level=logging.WARNING),
    _R.ADOPTED_KNOWN: Meaning(kept=EventType.ADOPTED, level=logging.WARNING),
    _R.ALREADY_DOWN: Meaning(),
    _R.FORCE_DOWN: Meaning(),
    # LibreNMS's own suppression: forgotten untouched at inspect, or restored (a release).
    _R.SUPPRESSED_MAINTENANCE: _SUPPRESSED,
    _R.SUPPRESSED_DISABLED: _SUPPRESSED,
    _R.SUPPRESSED_IGNORED: _SUPPRESSED,
    # Forcing down and the attempts.
    _R.FORCED_DOWN: Meaning(kept=EventType.FORCED_DOWN),  # the episode's first only
    _R.ATTEMPT: Meaning(kept=EventType.ATTEMPT),
    _R.RECOVERED: Meaning(Outcome.RECOVERED, ended=EventType.RECOVERED, unmute=False),
    _R.STILL_DOWN: Meaning(Outcome.STILL_DOWN, kept=EventType.STILL_DOWN),
    _R.POLL_DEVICE_DOWN: Meaning(Outcome.STILL_DOWN, kept=EventType.STILL_DOWN),
    _R.POLL_FAILED: Meaning(Outcome.POLL_FAILED, kept=EventType.STILL_DOWN),
    # A failed step: retried (quietly: the trouble log says it once a minute); a failed check
    # is forced down again at once (still_down).
    _R.STEP_FAILED: Meaning(Outcome.FAILED, kept=EventType.STILL_DOWN, level=logging.DEBUG),
    _R.GAVE_UP: Meaning(Outcome.GAVE_UP, ended=EventType.GAVE_UP, level=logging.ERROR),
    _R.FOREIGN_CHANGE: Meaning(ended=EventType.FOREIGN_CHANGE, level=logging.WARNING),
    _R.DEVICE_GONE: Meaning(ended=EventType.DEVICE_GONE, level=logging.ERROR, unmute=False),
    _R.RELEASED: Meaning(ended=EventType.RELEASED),
}


def meaning(reason: Reason) -> Meaning:
    """What `reason` means (every Reason is in MEANINGS)."""
    return MEANINGS[reason]


# A failed step of these actions is a failed attempt: the device was due for a check.
_ATTEMPT_ACTIONS = frozenset({Action.VERIFY, Action.CHECK})


def attempt_outcome(reason: Reason, action: Action) -> Outcome | None:
    """The attempt outcome a persisted decision counts as, None if it is no attempt's end."""
    outcome = MEANINGS[reason].outcome
    if outcome is Outcome.FAILED and action not in _ATTEMPT_ACTIONS:
        return None
    return outcome


def job_outcome(reason: Reason, previous: Outcome) -> Outcome:
    """A job's outcome after one more decision: the last attempt outcome wins; forcing a new
    device down counts only when nothing else happened in the job."""
    outcome = MEANINGS[reason].outcome
    if outcome is not None:
        return outcome
    if reason is Reason.FORCED_DOWN and previous is Outcome.IDLE:
        return Outcome.FORCED_DOWN
    return previous
