"""How many devices were forced down over the last 24 hours, from the event journal, and the
status page's bar chart of it as inline SVG (server-rendered: no script, no style attribute,
only SVG presentation attributes, so the page's CSP needs nothing more).

A device counts as forced down from its episode's `forced_down` (or `adopted`) event to the
episode's ending event. Each bar is one hour: the most devices forced down at once in it.
"""

from __future__ import annotations

import html
import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from alert_handler.core.times import from_iso
from alert_handler.events.journal import EPISODE_ENDS, Event, EventType

DAY = 86400.0
HOUR = 3600.0
BUCKETS = 24
_OPENS = frozenset({EventType.FORCED_DOWN.value, EventType.ADOPTED.value})
_ENDS = frozenset(t.value for t in EPISODE_ENDS)

Change = tuple[float, int]  # (epoch seconds, devices forced down from then on)


class DownCounter:
    """Folds events into the changes of the number of devices forced down; not thread-safe."""

    def __init__(self) -> None:
        self.open: set[str] = set()  # episodes forced down now

    def fold(self, event: Event) -> Change | None:
        """The change this event makes, or None."""
        if event.episode is None:
            return None
        before = len(self.open)
        if event.type in _OPENS:
            self.open.add(event.episode)
        elif event.type in _ENDS:
            self.open.discard(event.episode)
        if len(self.open) == before:
            return None
        try:
            when = from_iso(event.time)
        except ValueError:
            return None
        return None if when is None else (when, len(self.open))


def down_changes(events: Iterable[Event]) -> list[Change]:
    """Every change of the number of devices forced down, oldest first."""
    counter = DownCounter()
    return [c for c in (counter.fold(e) for e in events) if c is not None]


def peaks(changes: Sequence[Change], start: float, end: float, buckets: int = BUCKETS) -> list[int]:
    """The most devices forced down at once in each of `buckets` equal slices of [start, end)."""
    width = (end - start) / buckets
    level = 0
    i = 0
    out: list[int] = []
    for n in range(buckets):
        low, high = start + n * width, start + (n + 1) * width
        while i < len(changes) and changes[i][0] <= low:
            level = changes[i][1]
            i += 1
        peak = level
        while i < len(changes) and changes[i][0] < high:
            level = changes[i][1]
            peak = max(peak, level)
            i += 1
        out.append(peak)
    return out


class DownTimeline:
    """The changes of the last day (and the one before it: the level at its start), kept as
    events become durable; thread-safe."""

    def __init__(self, window: float = DAY) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._counter = DownCounter()
        self._changes: deque[Change] = deque()

    def add(self, events: Iterable[Event]) -> None:
        """Fold in events (oldest first)."""
        with self._lock:
            for event in events:
                change = self._counter.fold(event)
                if change is not None:
                    self._changes.append(change)
            if self._changes:
                horizon = self._changes[-1][0] - self.window
                while len(self._changes) > 1 and self._changes[1][0] <= horizon:
                    self._changes.popleft()

    def now_down(self) -> int:
        """Devices forced down after the last event folded in."""
        with self._lock:
            return len(self._counter.open)

    def series(self, now: float, buckets: int = BUCKETS) -> list[int]:
        """The hourly peaks of the window that ends with the hour `now` is in (`chart_end`)."""
        with self._lock:
            changes = list(self._changes)
        end = chart_end(now)
        return peaks(changes, end - self.window, end, buckets)


def chart_end(now: float) -> float:
    """The end of the chart: the next full hour (UTC), so that each bar is a clock hour and
    the last one the hour under way."""
    return math.ceil(now / HOUR) * HOUR


# -- the SVG ----------------------------------------------------------------------------------
_W, _H = 720, 200  # the viewBox
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 10, 12, 30
_BAR = "#c0392b"
_AXIS = "#555"
_GRID = "#ddd"


def _hour(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M")


def _nice_top(peak: int) -> int:
    """The y axis' top: the peak rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    scale = 1
    while True:
        for top in (scale, 2 * scale, 5 * scale):
            if top >= peak:
                return top
        scale *= 10


def svg_chart(series: Sequence[int], end: float, window: float = DAY) -> str:
    """The bar chart of `series` (one bar per equal slice of the window ending at `end`), with
    the y axis (0 and its top) and an hour label every fourth bar (UTC). Each bar has a tooltip
    (<title>)."""
    count = max(1, len(series))
    start = end - window
    peak = max(series, default=0)
    top = _nice_top(peak)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    slot = plot_w / count
    base_y = _TOP + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" role="img" aria-label="devices forced down per hour, '
        f'last 24 hours, most at once {peak}" font-family="sans-serif" font-size="11">',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_W - _RIGHT}" y2="{_TOP}" stroke="{_GRID}"/>',
        f'<line x1="{_LEFT}" y1="{base_y}" x2="{_W - _RIGHT}" y2="{base_y}" stroke="{_AXIS}"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base_y}" stroke="{_AXIS}"/>',
        f'<text class="ylabel" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end" '
        f'fill="{_AXIS}">{top}</text>',
        f'<text class="ylabel" x="{_LEFT - 6}" y="{base_y + 4}" text-anchor="end" '
        f'fill="{_AXIS}">0</text>',
    ]
    for n, value in enumerate(series):
        height = plot_h * value / top
        x = _LEFT + n * slot + 1
        low = start + n * window / count
        tip = f"{_hour(low)}-{_hour(low + window / count)} UTC: at most {value} forced down"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{base_y - height:.1f}" width="{slot - 2:.1f}" '
            f'height="{height:.1f}" fill="{_BAR}"><title>{html.escape(tip)}</title></rect>'
        )
        if n % 4 == 0:
            parts.append(
                f'<text class="xlabel" x="{x:.1f}" y="{base_y + 16}" fill="{_AXIS}">'
                f"{_hour(low)}</text>"
            )
    parts.append(
        f'<text class="xlabel" x="{_W - _RIGHT}" y="{base_y + 16}" text-anchor="end" '
        f'fill="{_AXIS}">{_hour(end)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
