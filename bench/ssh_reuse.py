"""Time polls over a fresh SSH connection each against polls over one reused connection.

Starts a throwaway OpenSSH sshd on loopback (tests/sshd.py) and runs `true <device_id>` through
SSHPoller N times each way. Usage: .venv/bin/python bench/ssh_reuse.py [-n 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from alert_handler.config.table import Config  # noqa: E402
from alert_handler.poll import SSHPoller  # noqa: E402
from tests.sshd import SSHD, missing_prerequisite, running_sshd  # noqa: E402


def config(server: SSHD, user: str | None) -> Config:
    return Config(
        librenms_url="http://librenms.test/api/v0",
        librenms_api_token="abcdefgh1234",
        poll_command="true {device_id}",
        ssh_host=server.host,
        ssh_port=server.port,
        ssh_user=user or server.user,
        ssh_key_file=str(server.client_key),
        ssh_known_hosts=str(server.dir / "known_hosts"),
    )


def timed(runs: int, poll: Callable[[int], object]) -> list[float]:
    """Milliseconds each of `runs` calls of `poll(device_id)` took."""
    times = []
    for device_id in range(1, runs + 1):
        started = time.perf_counter()
        poll(device_id)
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(label: str, times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1]
    return f"{label:<28} median {statistics.median(times):7.1f} ms   p90 {p90:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=50, help="polls each way (default 50)")
    parser.add_argument(
        "--user",
        help="log in as this existing user (default: you); the commands run in its login shell,"
        " so a ~/.bashrc that does a lot shows up in every poll",
    )
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    reason = missing_prerequisite()
    if reason is not None:
        print(f"cannot run the benchmark: {reason}", file=sys.stderr)
        return 1

    with running_sshd() as server:
        cfg = config(server, args.user)

        def fresh(device_id: int) -> None:
            poller = SSHPoller(cfg)
            try:
                poller.poll(device_id)
            finally:
                poller.close()

        reused = SSHPoller(cfg)
        try:
            reused.poll(1)  # connect (and record the host key) before timing
            fresh_ms = timed(args.runs, fresh)
            reused_ms = timed(args.runs, reused.poll)
        finally:
            reused.close()
        accepted = server.count("Accepted publickey")

    print(f"sshd on loopback as {cfg.ssh_user}, {args.runs} polls of `{cfg.poll_command}` each way")
    print(summary("fresh connection per poll:", fresh_ms))
    print(summary("one reused connection:", reused_ms))
    ratio = statistics.median(fresh_ms) / statistics.median(reused_ms)
    print(f"reuse is {ratio:.1f}x faster (median); sshd accepted {accepted} logins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
