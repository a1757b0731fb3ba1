"""`alert-handler report [--since 1d] [--json]`: the NOC's report of the last day (or any window)
from the event journal's files; no daemon needs to run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from alert_handler.cli.env import load_config
from alert_handler.cli.events import parse_since
from alert_handler.events.place import journal_path
from alert_handler.events.reader import read_events
from alert_handler.events.report import build_report, report_text


def cmd_report(args: argparse.Namespace) -> int:
    """Print the report of the window from --since (default 1d) until now."""
    path = journal_path(load_config(args))  # an earlier events.jsonl too, before a restart
    now = time.time()
    try:
        since = parse_since(args.since, now)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"alert-handler report: --since: {exc}", file=sys.stderr)
        return 2
    report = build_report(read_events(path), since, now)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report_text(report))
    return 0


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
        help="the window's start: 1d, 12h, 30m or an ISO time (default: 1d)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_report)
    return {"report"}
