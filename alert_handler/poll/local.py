"""`LocalPoller`: run the poll command on this host as a process (no shell, own process group)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time

from alert_handler.config.table import Config, render_poll_command
from alert_handler.core.facts import PollError, PollResult
from alert_handler.poll.result import log_result, output_tail

log = logging.getLogger(__name__)

_KILL_GRACE_SEC = 2.0


class LocalPoller:
    """Runs the command on this host: split with shlex, no shell, own process group."""

    def __init__(self, cfg: Config) -> None:
        self._template = cfg.poll_command
        self._timeout = cfg.poll_timeout_sec

    def poll(self, device_id: int) -> PollResult:
        """Run the command for `device_id`; PollError if it cannot start or times out."""
        argv = shlex.split(render_poll_command(self._template, device_id))
        return log_result(self._execute(argv, device_id))

    def run_command(self, command: str) -> PollResult:
        """Run another command of `check` (split with shlex, no shell) as polls run; its
        result under device_id 0. PollError if it cannot start or times out."""
        return self._execute(shlex.split(command), 0)

    def _execute(self, argv: list[str], device_id: int) -> PollResult:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout can kill sudo/php and their children
            )
        except OSError as exc:
            raise PollError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        with proc:
            try:
                out, _ = proc.communicate(timeout=self._timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                log.warning(
                    "device=%d step=poll timed out after %gs, killed process group %d",
                    device_id,
                    self._timeout,
                    proc.pid,
                )
                raise PollError(f"timed out after {self._timeout:g}s") from None
        return PollResult(device_id, proc.returncode, output_tail(out), time.monotonic() - started)

    def check(self) -> str:
        """Confirm the command's program exists; returns a description."""
        argv = shlex.split(render_poll_command(self._template, 1))
        found = shutil.which(argv[0]) if argv else None
        if found is None:
            raise PollError(f"POLL_COMMAND: {argv[0] if argv else '(empty)'} not found")
        return f"local command {found}"

    def close(self) -> None:
        """Nothing to release."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the process group (sudo relays it), KILL it after a grace period, reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=_KILL_GRACE_SEC)
            return
        except subprocess.TimeoutExpired:
            continue
    # A child that left the group still holds the pipe open; stop reading from it.
    if proc.stdout is not None:
        proc.stdout.close()
    proc.wait()
