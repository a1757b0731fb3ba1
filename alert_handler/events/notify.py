"""Notifications for people through Apprise: one target per NOTIFY_URLS entry, each with its own
thread, queue and rate limit (`digest.RateLimit`), fed the NOTIFY_EVENTS types once they are
durable in the journal. Best effort: a message that cannot be sent is logged and counted, not
retried (the signed webhook is the delivery that is never lost). Target URLs hold tokens: they
are shown as `#<n> <service>` only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alert_handler.config.event_kinds import target_name
from alert_handler.config.kinds import ConfigError
from alert_handler.core.times import from_iso
from alert_handler.events.digest import Message, RateLimit
from alert_handler.events.journal import Event
from alert_handler.ops.metrics import Metrics

log = logging.getLogger(__name__)

MIN_GAP = 1.0  # seconds between two messages to one target
NOTIFY_LIMIT = 5  # messages one target gets per window; the rest are summed up in one digest
NOTIFY_WINDOW = 300.0  # the rate limit's window, in seconds
_QUEUE_MAX = 10_000  # events waiting per target; beyond it they are counted as dropped


def _apprise() -> Any:
    """The apprise module, imported when first used (a second of start-up that most commands
    do without)."""
    import apprise

    logging.getLogger("apprise").setLevel(logging.WARNING)
    return apprise


def apprise_for(url: str) -> Any:
    """An Apprise object for one URL, or None if Apprise does not take the URL."""
    # Loading a plugin (when a URL is added) imports `imghdr` for Apprise's PGP support, which
    # warns of its removal in Python 3.13: Apprise's to fix, not the operator's to see.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        client = _apprise().Apprise()
        if not client.add(url):
            return None
    for plugin in client:
        # Apprise sleeps up to 5.5 s between two messages of one plugin; the rate limit here
        # (NOTIFY_MAX_PER_WINDOW) bounds what a target gets, so a second between them is enough.
        plugin.request_rate_per_sec = min(plugin.request_rate_per_sec, MIN_GAP)
    return client


def valid_url(url: str) -> bool:
    """Whether Apprise understands `url` (nothing is sent)."""
    return apprise_for(url) is not None


def send(client: Any, msg: Message) -> tuple[bool, str]:
    """Send one message; (sent, Apprise's last warning when it was not)."""
    apprise = _apprise()
    # Apprise's message alone: the log line (or notify-test) that shows it has its own time.
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        ok = bool(client.notify(body=msg.body, title=msg.title))
    lines = [line for line in captured.getvalue().splitlines() if line.strip()]
    return ok, "" if ok else (lines[-1] if lines else "not sent")


class NotifyTarget:
    """One Apprise URL, its rate limit and the thread that sends to it."""

    def __init__(
        self,
        number: int,
        url: str,
        limit: RateLimit,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = target_name(number, url)
        self.service = self.name.split()[-1]
        client = apprise_for(url)
        if client is None:  # the URL itself is never quoted: it holds a token
            raise ConfigError("NOTIFY_URLS", f"URL {number} is not one Apprise supports")
        self._client = client
        self._limit = limit
        self._metrics = metrics
        self._clock = clock
        self._queue: queue.Queue[Event | Message | None] = queue.Queue(_QUEUE_MAX)
        self._thread = threading.Thread(target=self._run, name=f"notify-{number}", daemon=True)

    def __repr__(self) -> str:
        return f"NotifyTarget({self.name!r})"

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (a message being sent is not waited for past `timeout`)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def offer(self, event: Event | Message) -> None:
        """Queue an event, or a message that goes as it is past the rate limit (the daily
        report); never blocks: a full queue drops it, counted."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count("dropped")

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels(self.service, result).inc()

    def _run(self) -> None:
        while True:
            due = self._limit.next_due()
            wait = None if due is None else max(0.0, due - self._clock())
            try:
                event = self._queue.get(timeout=wait)
            except queue.Empty:
                event = None
                stopping = False
            else:
                stopping = event is None
            if isinstance(event, Message):
                self._deliver(event)
            elif event is not None:
                # The window counts from when events happened, not from when this thread got to
                # them: sending takes time, and a storm's events all fall in one window.
                msg = self._limit.offer(event, from_iso(event.time) or self._clock())
                if msg is None:
                    self._count("digested")
                else:
                    self._deliver(msg)
            digest = self._limit.due(self._clock())
            if digest is not None:
                self._deliver(digest)
            if stopping:
                return

    def _deliver(self, msg: Message) -> None:
        try:
            ok, why = send(self._client, msg)
        except Exception as exc:  # a plugin's bug must not end the thread
            ok, why = False, type(exc).__name__
        self._count("sent" if ok else "failed")
        if not ok:
            log.warning("step=notify target=%s not sent: %s", self.name, why)


class Notifier:
    """Every notification target; `consume` is the journal's consumer."""

    def __init__(
        self,
        urls: Sequence[str],
        types: Iterable[str],
        *,
        limit: int = NOTIFY_LIMIT,
        window: float = NOTIFY_WINDOW,
        metrics: Metrics | None = None,
    ) -> None:
        self.types = frozenset(types)
        self.targets = [
            NotifyTarget(n, url, RateLimit(limit, window), metrics) for n, url in enumerate(urls, 1)
        ]

    def consume(self, events: list[Event]) -> None:
        """Queue the wanted events for every target (on the thread leading the group commit:
        quick)."""
        for event in events:
            if event.type in self.types:
                for target in self.targets:
                    target.offer(event)

    def broadcast(self, msg: Message) -> None:
        """Queue one message for every target, past the rate limit (the daily report)."""
        for target in self.targets:
            target.offer(msg)

    def start(self) -> None:
        """Start every target's thread."""
        for target in self.targets:
            target.start()

    def stop(self) -> None:
        """Stop every target's thread."""
        for target in self.targets:
            target.stop()
