"""`alert-handler notify-test`: a sample message to every NOTIFY_URLS target, one result line
each; and the events lines of `alert-handler check` (URLs validated, nothing sent)."""

from __future__ import annotations

import argparse
import os
import time

from alert_handler.cli.env import load_config
from alert_handler.config.event_kinds import target_name
from alert_handler.config.table import Config, redact
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.digest import Message, message
from alert_handler.events.journal import EventMaker, EventType
from alert_handler.events.place import journal_path

OK, FAIL = "\u2714", "\u2718"


def sample(kind: EventType) -> str:
    """A sample event of `kind` for a made-up device, as its journal line."""
    now = time.time()
    rec = DeviceRecord(
        42,
        phase=Phase.DOWN,
        hostname="cpe-42.example",
        original_recorded=True,
        original_overwrite_ip="198.51.100.42",
        attempts=3,
        forced_down_at=now - 185,
        episode="ep_SAMPLE",
    )
    detail = "sample sent by alert-handler notify-test"
    return EventMaker(lambda: now).make(kind, rec, detail=detail, level="ok").to_line()


def test_message(msg: Message) -> Message:
    """A sample as its reader sees it: "[TEST]" before the title, and a first line of the body
    saying that nothing happened to any device."""
    note = "[TEST] a sample sent by `alert-handler notify-test`: no device was changed."
    return Message(f"[TEST] {msg.title}", f"{note}\n\n{msg.body}")


def cmd_notify_test(args: argparse.Namespace) -> int:
    """Send a sample message to every target and print each result."""
    # Imported when run: Apprise takes a second to load, which other commands do without.
    from alert_handler.events.journal import parse_line
    from alert_handler.events.notify import apprise_for, send

    cfg = load_config(args)
    if not cfg.notify_urls:
        print(f"{FAIL} NOTIFY_URLS is not set: there is no target to send to")
        return 1
    event = parse_line(sample(EventType(args.event)))
    assert event is not None
    msg = test_message(message(event))
    failed = False
    for n, url in enumerate(cfg.notify_urls, 1):
        name = target_name(n, url)
        client = apprise_for(url)
        if client is None:
            print(f"{FAIL} {name}: not a URL Apprise supports", flush=True)
            failed = True
            continue
        ok, why = send(client, msg)
        failed |= not ok
        result = f"sent {msg.title!r}" if ok else f"not sent: {redact(why, cfg.secrets())}"
        print(f"{OK if ok else FAIL} {name}: {result}", flush=True)
    return 1 if failed else 0


def events_checks(cfg: Config) -> list[tuple[bool, str]]:
    """`check`'s lines for the event journal, the webhook and the notification targets."""
    from alert_handler.events.notify import valid_url
    from alert_handler.events.webhook import shown_url

    path = journal_path(cfg)
    folder = path.parent
    ok = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    lines = [(ok, f"event journal {path}: " + ("writable" if ok else f"cannot write in {folder}"))]
    if cfg.event_webhook_url:
        lines.append((True, f"event webhook {shown_url(cfg.event_webhook_url)}: signed"))
    for n, url in enumerate(cfg.notify_urls, 1):
        valid = valid_url(url)
        text = "valid (nothing sent)" if valid else "not a URL Apprise supports"
        lines.append((valid, f"notification target {target_name(n, url)}: {text}"))
    return lines
