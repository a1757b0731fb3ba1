"""The signed event webhook: every journaled event POSTed to EVENT_WEBHOOK_URL, in journal
order, at least once, from a durable outbox.

The outbox is the journal itself plus `<EVENTS_FILE>.webhook-position`, the id of the last event
delivered (saved at most once a second, and at stop: after a kill -9 the last second's events
are sent again, and receivers drop them by `webhook-id`). Its own thread follows the journal; a
receiver that is down, answers 5xx or 429, or does not answer within EVENT_WEBHOOK_TIMEOUT_SEC
gets the same event again after 1, 2, 4 ... 300 s; any other 4xx is logged and skipped. Nothing
else waits for it: acknowledgements and recovery steps only append to the journal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import requests

from alert_handler.core.alerts import counted
from alert_handler.core.times import from_iso
from alert_handler.events.journal import Event
from alert_handler.events.reader import Follower
from alert_handler.events.signing import headers
from alert_handler.ops.metrics import Metrics
from alert_handler.store.files import write_atomic

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT = 10.0  # seconds the receiver has to answer one delivery
SAVE_EVERY = 1.0  # seconds between saves of the delivered position while busy
IDLE_WAIT = 1.0  # the thread looks at the journal at least this often
_BATCH = 100


def shown_url(url: str) -> str:
    """The URL as logs show it: scheme, host and port (a path or query may hold a token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class WebhookOutbox:
    """Delivers the journal's events to one URL, signed, in order; its own thread."""

    def __init__(
        self,
        journal_path: Path,
        url: str,
        secret: str,
        *,
        timeout: float | None = None,
        metrics: Metrics | None = None,
        first_backoff: float = 1.0,
        max_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.position_path = journal_path.with_name(journal_path.name + ".webhook-position")
        self._secret = secret
        self._timeout = DELIVERY_TIMEOUT if timeout is None else timeout
        self._metrics = metrics
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._follower = Follower(journal_path)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._depth = 0
        self._head: Event | None = None  # the event being delivered
        self._delivered: str | None = None
        self._saved: str | None = None
        self._saved_at = 0.0
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy from the environment: the URL is used as is
        self._failures = 0
        self._last_failure_log = -1e18

    def __repr__(self) -> str:
        return f"WebhookOutbox(url={shown_url(self.url)!r})"

    # -- start and stop ----------------------------------------------------------------------
    def prepare(self, last_event_id: str | None) -> None:
        """Find the delivered position (a first start delivers only events from now on:
        `last_event_id` is the journal's newest) and count what is left to deliver."""
        try:
            saved = json.loads(self.position_path.read_text(encoding="utf-8"))
            position = saved.get("delivered") if isinstance(saved, dict) else None
            first = False
        except FileNotFoundError:
            position, first = last_event_id, True
        except (OSError, ValueError) as exc:
            log.error(
                "step=webhook-out cannot read %s (%s): starting over", self.position_path, exc
            )
            position, first = None, False
        found, left = self._follower.start_after(position)
        if position is not None and not found:
            log.error(
                "step=webhook-out event %s (the last delivered) is no longer in the journal: "
                "delivering from the oldest event kept; events rotated away undelivered are lost",
                position,
            )
        self._delivered = self._saved = position
        if first:
            self._saved = "(never saved)"  # so that _save writes it now
            self._save()
        with self._cond:
            self._depth = left
        self._publish()
        log.info("step=webhook-out delivering events to %s: %d waiting", shown_url(self.url), left)

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread = threading.Thread(target=self._run, name="webhook-out", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop after the delivery under way (a hung receiver is not waited for past `timeout`)
        and save the position."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._save()
        self._follower.close()
        self._session.close()

    def notify(self, events: list[Event]) -> None:
        """New events are durable in the journal (called by the journal's writer: quick)."""
        with self._cond:
            self._depth += len(events)
            self._cond.notify()
        self._publish()

    # -- what metrics read -------------------------------------------------------------------
    def depth(self) -> int:
        """Events in the journal not delivered yet."""
        with self._cond:
            return self._depth

    def oldest_age(self) -> float:
        """Seconds since the oldest undelivered event was written (0: none)."""
        with self._cond:
            head, depth = self._head, self._depth
        when = from_iso(head.time) if head is not None and depth else None
        return max(0.0, self._clock() - when) if when is not None else 0.0

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.outbox_depth.set(self.depth())

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._follower.read(_BATCH)
                if not batch:
                    self._save()
                    with self._cond:
                        if not self._stop.is_set():
                            self._cond.wait(IDLE_WAIT)
                    continue
                for event, line in batch:
                    with self._cond:
                        self._head = event
                    if not self._deliver(event, line):
                        return  # stopping
                    with self._cond:
                        self._depth = max(0, self._depth - 1)
                        self._head = None
                    self._delivered = event.id
                    self._publish()
                    if time.monotonic() - self._saved_at >= SAVE_EVERY:
                        self._save()
        except Exception:
            log.exception("step=webhook-out delivery thread died; events wait in the journal")

    def _save(self) -> None:
        if self._delivered == self._saved:
            return
        try:
            write_atomic(self.position_path, json.dumps({"delivered": self._delivered}) + "\n")
        except OSError as exc:
            log.error("step=webhook-out cannot save %s: %s", self.position_path, exc)
            return
        self._saved, self._saved_at = self._delivered, time.monotonic()

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels("webhook", result).inc()

    def _deliver(self, event: Event, line: bytes) -> bool:
        """POST one event until it is accepted or refused for good; False when stopping."""
        delay = self._first_backoff
        while not self._stop.is_set():
            stamp = int(self._clock())
            status, why, retry_after = self._post(event.id, stamp, line)
            if status is not None and 200 <= status < 300:
                self._count("delivered")
                if self._failures:
                    log.warning(
                        "step=webhook-out %s accepts events again (after %d failed tries)",
                        shown_url(self.url),
                        self._failures,
                    )
                    self._failures = 0
                return True
            if status is not None and 400 <= status < 500 and status != 429:
                self._count("rejected")
                log.warning(
                    "device=%s step=webhook-out event=%s type=%s refused with %d: skipped",
                    event.device_id if event.device_id is not None else "-",
                    event.id,
                    event.type,
                    status,
                )
                return True
            self._count("failed")
            self._failures += 1
            wait = min(self._max_backoff, retry_after if retry_after is not None else delay)
            self._log_failure(event, why, wait)
            self._stop.wait(wait)
            delay = min(self._max_backoff, delay * 2)
        return False

    def _post(self, msg_id: str, stamp: int, body: bytes) -> tuple[int | None, str, float | None]:
        """(status or None, why it failed, Retry-After seconds of a 429)."""
        try:
            reply = self._session.post(
                self.url,
                data=body,
                headers=headers(self._secret, msg_id, stamp, body),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            # The exception's text quotes the whole URL (a token may be in it): its type only.
            return None, type(exc).__name__, None
        with reply:
            status = reply.status_code
            retry_after = None
            raw = reply.headers.get("Retry-After", "")
            if status == 429 and raw.isdigit():
                retry_after = float(raw)
        return status, f"HTTP {status}", retry_after

    def _log_failure(self, event: Event, why: str, wait: float) -> None:
        """The first failure, then at most one line a minute while the receiver stays down."""
        now = time.monotonic()
        if self._failures > 1 and now - self._last_failure_log < 60.0:
            return
        self._last_failure_log = now
        log.warning(
            "step=webhook-out %s: %s for event %s (%s); retrying in %.0fs, %s waiting",
            shown_url(self.url),
            why,
            event.id,
            counted(self._failures, "failed try", "failed tries"),
            wait,
            counted(self.depth(), "event"),
        )
