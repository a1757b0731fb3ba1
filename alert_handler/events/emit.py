"""The events side of the daemon's parts: the App, the Recorder, the Reconciler and the
scheduler turn what they persist into journal lines through one `Emitter`, and look up the
journal's last known original of a device through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alert_handler.core.machine import Action, Decision
from alert_handler.core.records import DeviceRecord
from alert_handler.events.decisions import intake_events, step_events, with_episode
from alert_handler.events.history import EpisodeBook
from alert_handler.events.ids import IdSource
from alert_handler.events.journal import EventMaker, EventType
from alert_handler.events.originals import LastOriginals


class Emitter:
    """Makes journal lines; ids are unique and increasing across the journal's files."""

    def __init__(
        self,
        clock: Callable[[], float],
        originals: LastOriginals | None = None,
        book: EpisodeBook | None = None,
    ) -> None:
        self.maker = EventMaker(clock, IdSource("evt"))
        self.episodes = IdSource("ep")
        # `is None`, not `or`: an empty LastOriginals is falsy (it has a length).
        self.originals = LastOriginals() if originals is None else originals
        self.book = EpisodeBook() if book is None else book  # recent episodes, for the page

    def line(self, kind: EventType, rec: DeviceRecord | None = None, **more: Any) -> str:
        """One event as its journal line."""
        return self.maker.make(kind, rec, **more).to_line()

    def opened(self, decided: DeviceRecord | None) -> DeviceRecord | None:
        """`decided` with an episode id if it opens one (see decisions.with_episode)."""
        return with_episode(decided, self.episodes.new)

    def step_lines(self, before: DeviceRecord, action: Action, decision: Decision) -> list[str]:
        """The journal lines of one persisted step."""
        now = self.maker.clock()
        return [
            self.maker.make(d.kind, d.record, now, detail=d.detail).to_line()
            for d in step_events(before, action, decision)
        ]

    def intake_lines(
        self, before: DeviceRecord | None, decision: Decision, detail: str = ""
    ) -> list[str]:
        """The journal lines of a webhook or operator decision (`decisions.intake_events`);
        `detail` replaces the decision's own for `tracked` (who asked)."""
        now = self.maker.clock()
        lines = []
        for d in intake_events(before, decision):
            text = detail if d.kind is EventType.TRACKED and detail else d.detail
            lines.append(self.maker.make(d.kind, d.record, now, detail=text).to_line())
        return lines

    def known_original(self, rec: DeviceRecord) -> DeviceRecord:
        """A new record with the journal's last original of its device, if one is known."""
        return rec.with_known_original(self.originals.get(rec.device_id))
