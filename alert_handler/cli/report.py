"""`alert-handler report [--since 1d] [--json]`: the NOC's report of the last day (or any window)
from the event journal's files; no daemon needs to run."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from alert_handler.cli.env import load_config
from alert_handler.cli.events import parse_since, since_arg
from alert_handler.events.place import journal_path
from alert_handler.events.reader import read_events
from alert_handler.events.report import build_report, report_text


def cmd_report(args: argparse.Namespace) -> int:
    """Print the report of the window from --since (default 1d) until now."""
    path = journal_path(load_config(args))  # an earlier events.jsonl too, before a restart
    now = time.time()
    report = build_report(read_events(path), parse_since(args.since, now), now)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report_text(report))
    return 0


def _window(text: str) -> str:
    """argparse type for report's `--since`: checked as a usage mistake (exit 2, with where the
    usage is, as every command's), kept as text so the window ends when the report is built."""
    since_arg(text)
    return text


def add_report_command(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register `report`; returns its name."""
    p = sub.add_parser(
        "report",
        parents=[common],
        help="the NOC's report of the last day from the event journal (REPORT_AT sends it daily)",
        description="Devices forced down, recovered (median and 95th percentile outage), gave "
        "up, still down, flapped most, and what needed a person.",
    )
    p.add_argument(
        "--since",
        default="1d",
        type=_window,
        help="the window's start: 1d, 12h, 30m or an ISO time (default: 1d)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_report)
    return {"report"}
