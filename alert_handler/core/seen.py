"""What the daemon makes of LibreNMS's side of a device; pure.

The state machine (`machine`) takes these judgements as inputs (whether LibreNMS itself leaves a
device alone), and `steps` asks here what to undo in LibreNMS when a device is let go (the
acknowledgements to take back).
"""

from __future__ import annotations

from alert_handler.core.facts import DeviceInfo
from alert_handler.core.machine import Decision, LeaveAlone, Reason
from alert_handler.core.outcomes import meaning
from alert_handler.core.records import DeviceRecord
from alert_handler.core.verdict import NOT_YET, Verdict

SUPPRESSED = frozenset(
    {Reason.SUPPRESSED_MAINTENANCE, Reason.SUPPRESSED_DISABLED, Reason.SUPPRESSED_IGNORED}
)


def suppression(info: DeviceInfo, maintenance: bool) -> Reason | None:
    """Why LibreNMS itself leaves the device alone (it notifies nobody about it: RunAlerts), or
    None: a maintenance window of any behaviour, `disabled` or `ignore`."""
    if maintenance:
        return Reason.SUPPRESSED_MAINTENANCE
    if info.disabled:
        return Reason.SUPPRESSED_DISABLED
    if info.ignore:
        return Reason.SUPPRESSED_IGNORED
    return None


def steered(found: Verdict | None) -> LeaveAlone | None:
    """The controls' verdict (EXCLUDE, a silence, groups not read yet) as the state machine
    takes it."""
    if found is None:
        return None
    if found.kind == NOT_YET:
        return LeaveAlone(Reason.NOT_YET, found.detail)
    return LeaveAlone(Reason.EXCLUDED, str(found))


def leave_alone(
    info: DeviceInfo | None, maintenance: bool, found: Verdict | None
) -> LeaveAlone | None:
    """The one verdict on a device the step runner is about to touch: the operator's (EXCLUDE,
    a silence) wins over LibreNMS's own suppression, which wins over a "not yet"."""
    steer = steered(found)
    if steer is not None and not steer.waits:
        return steer
    own = None if info is None else suppression(info, maintenance)
    if own is not None:
        return LeaveAlone(own)
    return steer


# A poll that began this long after the force-down certainly targeted UNSUPERVISED_IP: a PATCH
# takes effect at the next poll (one that began earlier kept the old target), and NTP keeps the
# daemon's and LibreNMS's clocks within a fraction of this.
ANSWER_MARGIN_SEC = 1.0


def answers_while_down(rec: DeviceRecord, info: DeviceInfo, unsupervised_ip: str) -> bool:
    """Whether UNSUPERVISED_IP seems to answer: the device still points there, and a LibreNMS
    poll that began after the latest force-down found it up (it set last_polled, which a poll
    sets only for a device that is up). Forcing a device down then does not bring it down."""
    if info.overwrite_ip != unsupervised_ip or rec.last_forced_at is None:
        return False
    started = info.last_up_poll_started
    return (
        bool(info.status)
        and started is not None
        and (started > rec.last_forced_at + ANSWER_MARGIN_SEC)
    )


def to_unmute(rec: DeviceRecord, decision: Decision) -> tuple[int, ...]:
    """The alerts the daemon acknowledged (ACK_ALERTS) to unmute now: when it stops handling
    the device for any reason but recovery (gave up, released, a foreign change, LibreNMS's
    own suppression), so that LibreNMS notifies people about it again."""
    if not decision.forget or not meaning(decision.reason).unmute:
        return ()
    return rec.acked_ids
