"""What the local and the SSH poller share about a finished poll: the tail of its output and the
line it logs. (`PollResult` and `PollError` themselves are facts of the core: core/facts.py.)"""

from __future__ import annotations

import logging
from dataclasses import replace

from alert_handler.core.facts import PollResult

log = logging.getLogger(__name__)

TAIL_LINES = 10


def output_tail(data: bytes, *, truncated: bool = False) -> tuple[str, ...]:
    """The last TAIL_LINES non-empty lines; a line cut by truncation is dropped."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if truncated and lines:
        lines = lines[1:]
    return tuple([s for s in (line.rstrip() for line in lines) if s][-TAIL_LINES:])


_RUN_AS = (
    "run the poll as the librenms user: POLL_COMMAND=sudo -u librenms lnms device:poll "
    "{device_id} (official Docker image: docker exec librenms lnms device:poll {device_id})"
)


def config_problem(exit_status: int, tail: tuple[str, ...]) -> str | None:
    """What the poll's output says is wrong with the daemon's setup, with the fix, or None.
    lnms refuses the wrong user with exit 1, which otherwise means "no such device"."""
    if exit_status != 1:
        return None
    text = " ".join(tail)
    if "must not run as root" in text:
        return f"lnms must not run as root: {_RUN_AS}"
    if "must be run as the user" in text:
        return f"lnms runs as the wrong user: {_RUN_AS}"
    return None


def log_result(result: PollResult) -> PollResult:
    """Log how the poll ended (the output tail at INFO only on failure); returns `result`
    with `config_error` set when the output shows a setup problem (the recovery loop logs it
    at ERROR, `check` prints it)."""
    problem = config_problem(result.exit_status, result.output_tail)
    if problem is not None:
        result = replace(result, config_error=problem)
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
