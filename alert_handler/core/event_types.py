"""The event types (docs/events.md): what the journal, the webhook and NOTIFY_EVENTS say, and
which of them close what a `tracked` event opened; pure. In the core because the one table of
what each Reason means (`outcomes.MEANINGS`) names the event each decision produces."""

from __future__ import annotations

from enum import Enum


class EventType(str, Enum):
    """What happened; each value is what the journal, the webhook and NOTIFY_EVENTS say."""

    TRACKED = "tracked"  # an alert, `track` or reconciliation started handling a device
    FORCED_DOWN = "forced_down"  # the first force-down of an episode
    ATTEMPT = "attempt"  # a recovery attempt begins (restore, discover, poll, check)
    STILL_DOWN = "still_down"  # an attempt found the port down (or failed): forced down again
    RECOVERED = "recovered"
    GAVE_UP = "gave_up"  # MAX_ATTEMPTS reached: original restored, device forgotten
    RELEASED = "released"  # original restored on request (or for a device with no port)
    ADOPTED = "adopted"  # found on UNSUPERVISED_IP without a record of ours
    FOREIGN_CHANGE = "foreign_change"  # someone else changed overwrite_ip: left alone
    DEVICE_GONE = "device_gone"  # deleted from LibreNMS
    # Let go without any change: port already up, no such port, LibreNMS leaves it alone, EXCLUDE
    # or a silence at inspect, a held device whose port came back.
    DISMISSED = "dismissed"
    STORM_ENGAGED = "storm_engaged"  # MAX_FORCED_DOWN reached: new devices are held
    STORM_CLEARED = "storm_cleared"
    PAUSED = "paused"
    RESUMED = "resumed"
    HEALTH = "health"  # the daemon's health level changed
    OPERATOR = "operator"  # an operator's request (release, track), with the client address


# The events that end an episode: close what `tracked` opened (exactly one per tracked device,
# once it is let go) and end a forced-down period when there was one.
EPISODE_ENDS = frozenset(
    {
        EventType.RECOVERED,
        EventType.GAVE_UP,
        EventType.RELEASED,
        EventType.FOREIGN_CHANGE,
        EventType.DEVICE_GONE,
        EventType.DISMISSED,
    }
)
