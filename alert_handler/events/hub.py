"""The daemon's events, wired: the journal, the emitter the other parts use, the in-memory
views built from the journal (last originals, recent episodes), and the consumers fed once a
batch is durable (metrics, the webhook outbox, notifications)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from alert_handler.config.table import Config
from alert_handler.core.alerts import counted
from alert_handler.events.chart import DownTimeline
from alert_handler.events.daily import DailyReport
from alert_handler.events.emit import Emitter
from alert_handler.events.history import EpisodeBook
from alert_handler.events.journal import Event, EventJournal
from alert_handler.events.notify import Notifier
from alert_handler.events.originals import LastOriginals
from alert_handler.events.reader import read_events
from alert_handler.events.webhook import WebhookOutbox
from alert_handler.ops.metrics import Metrics

log = logging.getLogger(__name__)

_LOAD_BATCH = 1000


class EventHub:
    """Every part of the events side of one daemon."""

    def __init__(self, cfg: Config, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.path = Path(cfg.events_path())
        self.metrics = metrics
        self.journal = EventJournal(self.path)
        self.originals = LastOriginals()
        self.episodes = EpisodeBook()
        self.timeline = DownTimeline()
        self.emitter = Emitter(clock, self.originals, self.episodes, self.timeline)
        self._consumers: list[Callable[[list[Event]], None]] = []
        self.outbox: WebhookOutbox | None = None
        if cfg.event_webhook_url and cfg.event_webhook_secret:
            self.outbox = WebhookOutbox(
                self.path,
                cfg.event_webhook_url,
                cfg.event_webhook_secret,
                metrics=metrics,
                clock=clock,
            )
            metrics.outbox_age.set_function(self.outbox.oldest_age)
            self.consume(self.outbox.notify)
        self.notifier: Notifier | None = None
        if cfg.notify_urls:  # ConfigError (NOTIFY_URLS) for a URL Apprise does not take
            self.notifier = Notifier(
                cfg.notify_urls,
                cfg.notify_events,
                metrics=metrics,
            )
            self.consume(self.notifier.consume)
        self.daily: DailyReport | None = None
        if cfg.report_at and self.notifier is not None:
            self.daily = DailyReport(self.path, cfg.report_at, self.notifier.broadcast, clock=clock)

    def open(self) -> None:
        """Open the journal (cutting off a line torn by a crash) and build the in-memory views
        from its files; raises OSError when the journal cannot be opened."""
        started = time.monotonic()
        last_id = self.journal.open()
        self.emitter.maker.ids.seen(last_id)
        if self.outbox is not None:
            self.outbox.prepare(last_id)
        batch: list[Event] = []
        count = 0
        for event in read_events(self.path):
            batch.append(event)
            if len(batch) >= _LOAD_BATCH:
                count += len(batch)
                self._learn(batch)
                batch = []
        count += len(batch)
        self._learn(batch)
        self.journal.listen(self._on_events)
        log.info(
            "step=events journal %s: %s read in %.2fs; it knows the original overwrite_ip of %s",
            self.path,
            counted(count, "event"),
            time.monotonic() - started,
            counted(len(self.originals), "device"),
        )

    def consume(self, consumer: Callable[[list[Event]], None]) -> None:
        """Feed `consumer` every durable batch, on whichever thread leads that group commit (the
        state writer, or a request or recovery thread waiting for its line): be quick."""
        self._consumers.append(consumer)

    def _learn(self, events: list[Event]) -> None:
        self.originals.add(events)
        self.episodes.add(events)
        self.timeline.add(events)

    def _on_events(self, events: list[Event]) -> None:
        self._learn(events)
        for event in events:
            self.metrics.events.labels(event.type).inc()
        for consumer in self._consumers:
            consumer(events)

    def start(self) -> None:
        """Start the delivery threads."""
        if self.outbox is not None:
            self.outbox.start()
        if self.notifier is not None:
            self.notifier.start()
        if self.daily is not None:
            self.daily.start()

    def stop(self) -> None:
        """Stop the delivery threads (what is undelivered waits in the journal)."""
        if self.daily is not None:
            self.daily.stop()
        if self.outbox is not None:
            self.outbox.stop()
        if self.notifier is not None:
            self.notifier.stop()

    def close(self) -> None:
        """Close the journal (after the state writer stopped)."""
        self.journal.close()
