"""The event commands: `history` (episodes from the journal), `events` (the journal, or
following it) and `webhook-secret` (a fresh EVENT_WEBHOOK_SECRET). They read the journal's
files directly: no daemon needs to run."""

from __future__ import annotations

import argparse
from typing import Any

from alert_handler.events.signing import new_secret


def cmd_webhook_secret(_args: argparse.Namespace) -> int:
    """Print a fresh `whsec_` secret for EVENT_WEBHOOK_SECRET."""
    print(new_secret())
    return 0


def add_event_commands(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the event commands; returns their names."""
    sub.add_parser(
        "webhook-secret",
        help="print a new EVENT_WEBHOOK_SECRET (whsec_..., Standard Webhooks)",
        description="32 random bytes, base64, after whsec_; give the same to the receiver.",
    ).set_defaults(func=cmd_webhook_secret)
    return {"webhook-secret"}
