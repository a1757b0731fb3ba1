"""What the local and the SSH poller share about a finished poll: the tail of its output and the
line it logs. (`PollResult` and `PollError` themselves are facts of the core: core/facts.py.)"""

from __future__ import annotations

import logging

from alert_handler.core.facts import PollResult

log = logging.getLogger(__name__)

TAIL_LINES = 10


def output_tail(data: bytes, *, truncated: bool = False) -> tuple[str, ...]:
    """The last TAIL_LINES non-empty lines; a line cut by truncation is dropped."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if truncated and lines:
        lines = lines[1:]
    return tuple([s for s in (line.rstrip() for line in lines) if s][-TAIL_LINES:])


def log_result(result: PollResult) -> PollResult:
    """Log how the poll ended (the output tail at INFO only on failure); returns `result`."""
    log.info(
        "device=%d step=poll exit=%d meaning=%s duration=%.2fs",
        result.device_id,
        result.exit_status,
        result.meaning,
        result.duration,
    )
    # The tail explains a failure, so it is worth INFO then; on success it is noise.
    level = logging.DEBUG if result.exit_status == 0 else logging.INFO
    log.log(
        level, "device=%d step=poll output=%s", result.device_id, " | ".join(result.output_tail)
    )
    return result
