"""Logging for the daemon and the commands: LOG_FILE and stderr, secrets redacted.

Lines carry ISO 8601 UTC times (`2026-12-01T10:00:00.123Z`, as `status` shows them); with
LOG_FORMAT=json each line is one JSON object with the same fields. `setup_logging(background=True)`
(the daemon) writes from one thread fed by a queue; `reopen_logs` is what SIGHUP does after
logrotate.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from alert_handler.config.table import Config, redact
from alert_handler.core.times import iso

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# `device=42 step=check ...`, `step=cycle ...`, `alert=7 step=ack ...`: the line's subject.
_SUBJECT = re.compile(r"(?:device=(?P<device>[0-9]+) |[a-z]+=\S+ )?step=(?P<step>[\w-]+)")


class Redactor(logging.Filter):
    """Replaces every configured secret in a log record's text (defence in depth).

    The record leaves with its message formatted and redacted (`args` None), so the handlers
    after the first one neither format nor search it again.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets or getattr(record, "_redacted_by", None) is self:
            return True
        cleaned = redact(record.getMessage(), self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, self.secrets)
            record.exc_info = None
        record.msg, record.args = cleaned, None
        record._redacted_by = self
        return True


class _SharedFormatter(logging.Formatter):
    """A Formatter whose line for a record is built once, however many handlers write it;
    times are ISO 8601 UTC with milliseconds, the form `status` and the state file use."""

    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_line")
        if cached is not None and cached[0] is self:
            return cast(str, cached[1])
        line = self.render(record)
        record._line = (self, line)
        return line

    def render(self, record: logging.LogRecord) -> str:
        """The line for `record` (uncached)."""
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """`2026-12-01T10:00:00.123Z`."""
        return iso(record.created) or ""


class JsonFormatter(_SharedFormatter):
    """LOG_FORMAT=json: one object a line with time, level, logger, message, the device and
    step the message names (when it does) and the traceback (when there is one)."""

    def render(self, record: logging.LogRecord) -> str:
        """The JSON line for `record` (uncached)."""
        message = record.getMessage()
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        subject = _SUBJECT.match(message)
        if subject is not None:
            if subject["device"] is not None:
                line["device"] = int(subject["device"])
            line["step"] = subject["step"]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for LOG_FORMAT (`text` or `json`)."""
    return JsonFormatter() if log_format == "json" else _SharedFormatter(LOG_FORMAT)


class _ToWriter(logging.handlers.QueueHandler):
    """The root's one handler when logging in the background: redacts (its filter) in the
    caller's thread and queues the record for the writer thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.args:  # the Redactor froze it already unless there is no secret to hide
            record.msg, record.args = record.getMessage(), None
        return record


class _BatchWriter:
    """The writer thread: takes every queued record at once and writes them with one write, one
    flush (and, for the log file, one look at whether logrotate moved it) per handler, instead
    of one of each per line. It looks at the queue at most every `_BATCH_GAP` seconds, so a storm
    of alerts wakes it a few dozen times a second, not once per line; a line reaches the file
    that much later at most (a SIGKILL can lose those lines, never state)."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None], *handlers: Any):
        self.queue = records
        self.handlers: tuple[logging.Handler, ...] = handlers
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._gap = threading.Event()  # never set: only waited on, for _BATCH_GAP

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued so far, then end the thread."""
        self.queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            # Not time.sleep: under libfaketime (the clock tests) clock_nanosleep can fail
            # with EINVAL, which would end this thread and every later line with it.
            self._gap.wait(_BATCH_GAP)
            batch = [first]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if r is not None]
            if records:
                self._write(records)
            if len(records) < len(batch):
                return

    def _write(self, records: list[logging.LogRecord]) -> None:
        for handler in self.handlers:
            lines = [
                handler.format(r) + "\n"
                for r in records
                if r.levelno >= handler.level and handler.filter(r)
            ]
            if not lines:
                continue
            handler.acquire()
            try:
                if isinstance(handler, logging.handlers.WatchedFileHandler):
                    handler.reopenIfNeeded()
                stream = cast(logging.StreamHandler[Any], handler).stream
                stream.write("".join(lines))
                stream.flush()
            except Exception:
                handler.handleError(records[0])
            finally:
                handler.release()


_BATCH_GAP = 0.02
_writer: _BatchWriter | None = None


def setup_logging(
    cfg: Config, *, to_file: bool = True, level: int = logging.INFO, background: bool = False
) -> None:
    """Log to LOG_FILE (reopened after logrotate moves it) and stderr, secrets redacted.

    `background` (the daemon): the handlers write from one thread, fed by a queue, and the
    calling thread only redacts and enqueues. Request threads then never wait on a handler's
    lock while another thread's write is under way: with a storm of alerts that contention cost
    more CPU than the lines themselves. What is queued is written at exit (`stop_logging`).
    """
    stop_logging()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    redactor = Redactor(cfg.secrets())
    formatter = make_formatter(cfg.log_format)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    created: Path | None = None  # the LOG_FILE directory, when this call made it
    if to_file:
        path = Path(cfg.log_file)
        if not path.exists():
            if not path.parent.exists():
                created = path.parent
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o640)
        handlers.append(logging.handlers.WatchedFileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
    if background:
        global _writer
        records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        front = _ToWriter(records)
        front.addFilter(redactor)
        root.addHandler(front)
        _writer = _BatchWriter(records, *handlers)
        _writer.start()
        atexit.unregister(stop_logging)
        atexit.register(stop_logging)
    else:
        for handler in handlers:
            root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # urllib3's InsecureRequestWarning goes to the log, not stderr
    for noisy in ("urllib3", "paramiko", "requests"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if created is not None:  # a typo in LOG_FILE shows here, not as a log nobody finds
        log.info("step=start created the directory %s for LOG_FILE", created.resolve())


def stop_logging() -> None:
    """Write what the background writer still holds, then stop it (no-op without one)."""
    global _writer
    writer, _writer = _writer, None
    if writer is None:
        return
    writer.stop()
    for handler in writer.handlers:
        handler.close()


def _writing_handlers() -> list[logging.Handler]:
    writer = _writer
    return list(writer.handlers) if writer is not None else list(logging.getLogger().handlers)


def reopen_logs() -> None:
    """SIGHUP: reopen every file handler (WatchedFileHandler also notices moves itself)."""
    for handler in _writing_handlers():
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.acquire()
            try:
                if handler.stream:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
