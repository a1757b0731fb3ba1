"""Command line: argparse, `serve` (the default) and the entry point; the operator commands
are in `commands`.

The daemon's settings are read by `env`, its logging set up by `logs`; this module installs the
signal handlers. Exit status: 0 success, 1 failure, 2 usage or configuration error; a command
whose reader stops reading (`| head`) ends as Unix filters do, by SIGPIPE, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
from collections.abc import Sequence

from alert_handler import __version__
from alert_handler.cli import commands
from alert_handler.cli.env import load_config, setting_warnings, start_warnings
from alert_handler.cli.output import reader_left
from alert_handler.cli.usage import Parser
from alert_handler.config.table import Config, ConfigError
from alert_handler.ops.logs import reopen_logs, setup_logging
from alert_handler.store.files import StateLocked

log = logging.getLogger("alert_handler")


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
    # Imported here, not above: the daemon brings requests, paramiko and prometheus_client
    # (a quarter of a second), which `status`, `release` and the others do not need.
    from alert_handler import daemon as daemon_mod

    for text in start_warnings(cfg, env_file):  # `check` prints the same ones
        log.warning("step=start %s", text)
    for text in setting_warnings(env_file):
        log.warning("step=config %s", text)
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    install_signals(signals)
    try:
        daemon = daemon_mod.build(cfg)
    except StateLocked as exc:
        log.error("step=start %s", exc)
        return 1
    except ConfigError as exc:  # a setting only the daemon's parts can judge (NOTIFY_URLS)
        log.error("step=start configuration error: %s", exc)
        return 2
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
    parser = Parser(
        prog="alert-handler",
        description="Force CPEs whose dialer port is down into 'down' in LibreNMS; recover them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The common options work before or after the command name: the top-level parser holds the
    # defaults, the subcommands' copies only set what is given (SUPPRESS keeps theirs unset).
    env_help = "read settings from this file instead of ./.env"
    parser.add_argument("--env-file", help=env_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = Parser(add_help=False)
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
    guessed = not any(w in names or w in ("-h", "--help", "--version") for w in words)
    if guessed:
        words.insert(0, "serve")  # `alert-handler [--env-file F]` is `alert-handler serve ...`
    args, extras = parser.parse_known_args(words)
    if extras and guessed and not extras[0].startswith("-"):
        parser.unrecognized(extras, names)  # `alert-handler stauts`: not a command
    if extras:  # said by the command's own parser, which knows its options
        command: Parser = sub.choices[args.command]
        command.unrecognized(extras)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that left (EPIPE) can still be handled
    except KeyboardInterrupt:
        return 1
    except BrokenPipeError:
        reader_left()
    return status
