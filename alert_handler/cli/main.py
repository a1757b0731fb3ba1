"""Command line: serve (default), check, status, release, track, pause, resume, demo.

The only module that reads the environment, installs signal handlers or configures logging.
Exit status: 0 success, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import logging.handlers
import os
import queue
import signal
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from dotenv import dotenv_values

from alert_handler import __version__
from alert_handler.config import Config, ConfigError, parse, redact, unknown_key_warnings

log = logging.getLogger("alert_handler")

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


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
    """A Formatter whose line for a record is built once, however many handlers write it."""

    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_line")
        if cached is not None and cached[0] is self:
            return cast(str, cached[1])
        line = super().format(record)
        record._line = (self, line)
        return line


def read_env(env_file: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`.env` (./.env or --env-file) merged under the real environment, which wins."""
    merged: dict[str, str] = {}
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    if env_file and not path.is_file():
        raise ConfigError("--env-file", f"{path} does not exist")
    if path.is_file():
        for key, value in dotenv_values(path).items():
            if value is not None:
                merged[key] = value
    merged.update(os.environ if environ is None else environ)
    return merged


def env_file_warning(env_file: str | None) -> str | None:
    """A warning when the env file holding secrets can be read by other users."""
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    return None


def setting_warnings(env_file: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Unknown names in the env file, and misspelt-looking ones in the environment."""
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    in_file = list(dotenv_values(path)) if path.is_file() else []
    in_environ = os.environ if environ is None else environ
    return unknown_key_warnings(in_file, in_environ, source=env_file or ".env")


def load_config(args: argparse.Namespace) -> Config:
    """The validated config, or exit 2 with one line naming the key (and any unknown names)."""
    try:
        return parse(read_env(args.env_file))
    except ConfigError as exc:
        print(f"alert-handler: configuration error: {exc}", file=sys.stderr)
        for text in setting_warnings(args.env_file):
            print(f"alert-handler: {text}", file=sys.stderr)
        raise SystemExit(2) from None


class _ToWriter(logging.handlers.QueueHandler):
    """The root's one handler when logging in the background: redacts (its filter) in the
    caller's thread and queues the record for the writer thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.args:  # the Redactor froze it already unless there is no secret to hide
            record.msg, record.args = record.getMessage(), None
        return record


_writer: logging.handlers.QueueListener | None = None


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
    formatter = _SharedFormatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if to_file:
        path = Path(cfg.log_file)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o640)
        handlers.append(logging.handlers.WatchedFileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
    if background:
        global _writer
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        front = _ToWriter(records)
        front.addFilter(redactor)
        root.addHandler(front)
        _writer = logging.handlers.QueueListener(records, *handlers)
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


def install_signals(signals: queue.SimpleQueue[int]) -> None:
    """Signal handlers only record: the main thread acts on the queue."""

    def record(signum: int, _frame: object) -> None:
        signals.put(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, record)


# -- commands ---------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    """Run the daemon."""
    cfg = load_config(args)
    setup_logging(cfg, level=logging.DEBUG if args.verbose else logging.INFO, background=True)
    return serve(cfg, env_file=args.env_file)


def serve(cfg: Config, *, env_file: str | None = None) -> int:
    """Build and run the daemon with signal handling; the exit status."""
    from alert_handler import daemon as daemon_mod
    from alert_handler.store.state import StateLocked

    if cfg.webhook_token is None:
        log.warning(
            "step=start WEBHOOK_TOKEN is not set: anyone who can reach the port can post alerts"
        )
    if not cfg.librenms_verify_tls and cfg.librenms_url.startswith("https://"):
        log.warning("step=start LIBRENMS_VERIFY_TLS=false: the LibreNMS certificate is not checked")
    warning = env_file_warning(env_file)
    if warning:
        log.warning("step=start %s", warning)
    for text in setting_warnings(env_file):
        log.warning("step=config %s", text)
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    install_signals(signals)
    try:
        daemon = daemon_mod.build(cfg)
    except StateLocked as exc:
        log.error("step=start %s", exc)
        return 1
    except OSError as exc:
        if exc.filename is not None:  # the state file, its lock or its directory
            log.error("step=start cannot use %s: %s", exc.filename, exc.strerror or exc)
            return 1
        log.error(
            "step=start cannot listen on %s:%s: %s",
            cfg.listen_host,
            cfg.listen_port,
            exc.strerror or exc,
        )
        return 1
    daemon.on_hup = reopen_logs
    return daemon_mod.run(daemon, signals)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alert-handler` console script."""
    from alert_handler.cli import commands

    parser = argparse.ArgumentParser(
        prog="alert-handler",
        description="Force CPEs whose dialer port is down into 'down' in LibreNMS; recover them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The common options work before or after the command name: the top-level parser holds the
    # defaults, the subcommands' copies only set what is given (SUPPRESS keeps theirs unset).
    env_help = "read settings from this file instead of ./.env"
    parser.add_argument("--env-file", help=env_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env-file", default=argparse.SUPPRESS, help=env_help)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", parents=[common], help="run the daemon (the default)").set_defaults(
        func=cmd_serve
    )
    names = commands.add_commands(sub, common) | {"serve"}
    words = list(sys.argv[1:] if argv is None else argv)
    if not any(w in names or w in ("-h", "--help", "--version") for w in words):
        words.insert(0, "serve")  # `alert-handler [--env-file F]` is `alert-handler serve ...`
    args = parser.parse_args(words)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 1
