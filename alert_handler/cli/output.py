"""What the commands print: counted nouns, the device table, and a quiet end when whoever
reads the output stops reading (`alert-handler status | head -3`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, NoReturn

from alert_handler.core.alerts import MAX_DEVICE_ID, BadPayload, parse_device_id


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """ "1 device", "2 devices" (`nouns` when the plural is not `noun` + "s")."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Devices as an aligned text table."""
    headers = [
        "device",
        "hostname",
        "phase",
        "attempts",
        "first seen",
        "next attempt",
        "last error",
    ]
    lines = [
        [
            str(r.get("device_id")),
            str(r.get("hostname") or "-"),
            str(r.get("phase")),
            str(r.get("attempts")),
            str(r.get("first_seen") or "-"),
            str(r.get("next_attempt") or "-"),
            str(r.get("last_error") or "-"),
        ]
        for r in rows
    ]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(s.rstrip() for s in out)


def reader_left() -> NoReturn:
    """stdout's reader has gone (EPIPE): end as a Unix filter does, killed by SIGPIPE.

    Python ignores SIGPIPE, so a write raised BrokenPipeError instead; stdout is pointed at
    /dev/null first so that the interpreter's final flush cannot raise it again. The shell
    sees the usual status of a writer whose reader left (141), and prints nothing.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    raise SystemExit(128 + signal.SIGPIPE)  # not reached: the signal ends the process first


def device_id_arg(text: str) -> int:
    """argparse type for a device id, with the limit in the message."""
    try:
        return parse_device_id(text)
    except BadPayload:
        raise argparse.ArgumentTypeError(
            f"a device id is a LibreNMS device_id, a whole number from 1 to {MAX_DEVICE_ID}; "
            f"got {text!r}"
        ) from None
