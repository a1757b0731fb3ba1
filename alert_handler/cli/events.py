"""The event commands: `history` (episodes from the journal), `events` (the journal, or
following it) and `webhook-secret` (a fresh EVENT_WEBHOOK_SECRET). They read the journal's
files directly: no daemon needs to run."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alert_handler.cli.env import load_config
from alert_handler.cli.output import device_id_arg
from alert_handler.cli.usage import non_negative_int
from alert_handler.core.alerts import log_safe
from alert_handler.core.times import from_iso, iso, span
from alert_handler.events.history import Episode, episodes
from alert_handler.events.journal import Event, EventType
from alert_handler.events.place import journal_path
from alert_handler.events.reader import Follower, read_events
from alert_handler.events.signing import new_secret

_SINCE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FOLLOW_EVERY = 0.5


def parse_since(text: str, now: float) -> float:
    """`7d`, `12h`, `30m`, `90s`, `2w` before `now`, or an ISO 8601 time; epoch seconds."""
    match = _SINCE_RE.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = from_iso(text.strip())
    except ValueError:
        when = None
    if when is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give 7d, 12h, 30m or an ISO 8601 time")
    return when


def since_arg(text: str) -> float:
    """argparse type for `--since`: a bad value is a usage mistake (exit 2)."""
    return parse_since(text, time.time())


def duration_text(seconds: float | None) -> str:
    """A duration as `core.times.span` shows it; `-` for None."""
    return "-" if seconds is None else span(seconds)


def _journal(args: argparse.Namespace) -> Path:
    return journal_path(load_config(args))


def _in_window(episode: Episode, since: float | None) -> bool:
    if since is None:
        return True
    end = from_iso(episode.end) if episode.end else None
    return end is None or end >= since


def history_table(found: list[Episode]) -> str:
    """Episodes as an aligned text table."""
    headers = ["start", "end", "duration", "device", "hostname", "attempts", "outcome", "original"]
    rows = [
        [
            e.start,
            e.end or "-",
            duration_text(e.duration),
            str(e.device_id),
            log_safe(e.hostname or "-", 60),
            str(e.attempts),
            e.outcome,
            "null" if e.original_overwrite_ip is None else e.original_overwrite_ip,
        ]
        for e in found
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def cmd_history(args: argparse.Namespace) -> int:
    """Print the episodes in the journal: start, end, duration, attempts, outcome."""
    path = _journal(args)
    since: float | None = args.since
    events = (e for e in read_events(path) if args.device is None or e.device_id == args.device)
    found = [e for e in episodes(events) if _in_window(e, since)]
    if args.json:
        print(json.dumps([e.as_dict() for e in found], indent=2))
        return 0
    if not found:
        print(f"no episodes in {path}" + (f" since {iso(since)}" if since else ""))
        return 0
    print(history_table(found))
    return 0


def event_text(event: Event) -> str:
    """One event on one line, as `alert-handler events` prints it."""
    parts = [event.time, event.type]
    if event.device_id is not None:
        parts.append(f"device={event.device_id}")
    if event.hostname:
        parts.append(f"host={log_safe(event.hostname, 60)}")
    if event.attempt:
        parts.append(f"attempt={event.attempt}")
    if event.down_seconds is not None:
        parts.append(f"down={duration_text(event.down_seconds)}")
    if event.client and not (event.detail and event.detail.endswith(f" at {event.client}")):
        parts.append(f"client={event.client}")  # unless the detail names it already
    if event.level:
        parts.append(f"level={event.level}")
    if event.detail:
        parts.append(log_safe(event.detail, 200))
    return " ".join(parts)


def _show(event: Event, line: bytes | None, as_json: bool) -> None:
    if as_json:
        print(line.decode() if line is not None else event.to_line(), flush=True)
    else:
        print(event_text(event), flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    """Print the journal's last events; with --follow, go on printing new ones until Ctrl-C
    (or a TERM), exit 0."""
    path = _journal(args)
    wanted = (lambda e: e.device_id == args.device) if args.device is not None else None
    if not args.follow:
        _print_recent(path, wanted, args)
        return 0
    # Ctrl-C (or a TERM) ends it even when started with SIGINT ignored (a background job of a
    # script, some process managers): Python then installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    follower = Follower(path)
    try:
        _print_recent(path, wanted, args)
        follower.start_at_end()
        while True:
            batch = follower.read(500)
            for event, line in batch:
                if wanted is None or wanted(event):
                    _show(event, line, args.json)
            if not batch:
                time.sleep(_FOLLOW_EVERY)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    finally:
        follower.close()
        sys.stdout.flush()


def _print_recent(
    path: Path, wanted: Callable[[Event], bool] | None, args: argparse.Namespace
) -> None:
    """The journal's last `-n` events (all with -n 0) of the wanted device."""
    recent = [e for e in read_events(path) if wanted is None or wanted(e)]
    for event in recent[-args.lines :] if args.lines else recent:
        _show(event, None, args.json)


def _notify_test(args: argparse.Namespace) -> int:
    from alert_handler.cli.notify import cmd_notify_test  # loads Apprise: only when run

    return cmd_notify_test(args)


def cmd_webhook_secret(_args: argparse.Namespace) -> int:
    """Print a fresh `whsec_` secret for EVENT_WEBHOOK_SECRET."""
    print(new_secret())
    return 0


def add_event_commands(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the event commands; returns their names."""
    p = sub.add_parser(
        "history",
        parents=[common],
        help="forced-down episodes from the event journal",
        description="Start, end, duration, attempts and outcome of each episode.",
    )
    p.add_argument("--device", type=device_id_arg, help="only this device")
    p.add_argument(
        "--since",
        type=since_arg,
        help="only episodes ending after this: 7d, 12h, 30m, ISO time (default: all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser(
        "events",
        parents=[common],
        help="the event journal's last events (--follow: and new ones)",
        description="One event a line; --json prints the journal's own lines.",
    )
    p.add_argument(
        "-n", "--lines", type=non_negative_int, default=20, help="how many (0: all; default: 20)"
    )
    p.add_argument("--device", type=device_id_arg, help="only this device")
    p.add_argument("--follow", "-f", action="store_true", help="go on printing new events")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(func=cmd_events)
    p = sub.add_parser(
        "notify-test",
        parents=[common],
        help="send a sample notification to every NOTIFY_URLS target",
        description="One line per target: sent, or why not.",
    )
    p.add_argument(
        "--event",
        default=EventType.FORCED_DOWN.value,
        choices=[t.value for t in EventType],
        help="the kind of sample (default: forced_down)",
    )
    p.set_defaults(func=_notify_test)
    sub.add_parser(
        "webhook-secret",
        help="print a new EVENT_WEBHOOK_SECRET (whsec_..., Standard Webhooks)",
        description="32 random bytes, base64, after whsec_; give the same to the receiver.",
    ).set_defaults(func=cmd_webhook_secret)
    return {"history", "events", "webhook-secret", "notify-test"}
