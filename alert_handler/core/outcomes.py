"""The one map from a decision's Reason to what it means for a recovery attempt or a job.

Logs (the cycle summary), metrics (`alert_handler_recovery_attempts_total{outcome}`) and the
scheduler's job results all read it here, so they cannot disagree.
"""

from __future__ import annotations

from enum import Enum

from alert_handler.core.machine import Action, Reason


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

_BY_REASON = {
    Reason.RECOVERED: Outcome.RECOVERED,
    Reason.STILL_DOWN: Outcome.STILL_DOWN,
    Reason.POLL_DEVICE_DOWN: Outcome.STILL_DOWN,  # exit 6: the device still does not answer
    Reason.POLL_FAILED: Outcome.POLL_FAILED,
    Reason.STEP_FAILED: Outcome.FAILED,
    Reason.GAVE_UP: Outcome.GAVE_UP,
}
# A failed step of these actions is a failed attempt: the device was due for a check.
_ATTEMPT_ACTIONS = frozenset({Action.VERIFY, Action.CHECK})


def attempt_outcome(reason: Reason, action: Action) -> Outcome | None:
    """The attempt outcome a persisted decision counts as, None if it is no attempt's end."""
    outcome = _BY_REASON.get(reason)
    if outcome is Outcome.FAILED and action not in _ATTEMPT_ACTIONS:
        return None
    return outcome


def job_outcome(reason: Reason, previous: Outcome) -> Outcome:
    """A job's outcome after one more decision: the last attempt outcome wins; forcing a new
    device down counts only when nothing else happened in the job."""
    outcome = _BY_REASON.get(reason)
    if outcome is not None:
        return outcome
    if reason is Reason.FORCED_DOWN and previous is Outcome.IDLE:
        return Outcome.FORCED_DOWN
    return previous
