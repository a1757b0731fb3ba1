"""HA takeover: how long after the lease holder dies a standby holds the lease and may write.

Two daemons (their own processes, HA_REDIS_URL on one redis-server started here, the LibreNMS
simulator in its own process). Each round kills the holder with SIGKILL (or, with --clean, stops
it with SIGTERM, which releases the lease) and times, from the signal, when the standby's
/health says it holds the lease (`role`) and may write (`may_write`: it has known this Redis for
a whole lease, so it writes at once). The killed daemon is started again as the new standby and
the next round kills the new holder. Bound: HA_LEASE_SEC + HA_RENEW_SEC after a kill, about
HA_RENEW_SEC after a clean stop.

Usage: .venv/bin/python bench/ha_takeover.py [--rounds 5] [--lease 10] [--renew 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Child, Daemon, median, start_daemon, start_sim, stopping


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ha(daemon: Daemon) -> dict[str, Any]:
    _, body = daemon.get("/health")
    value: dict[str, Any] = json.loads(body)["ha"]
    return value


def wait(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease", type=float, default=10.0, help="HA_LEASE_SEC")
    parser.add_argument("--renew", type=float, default=3.0, help="HA_RENEW_SEC")
    parser.add_argument("--quick", action="store_true", help="1 round of each, a 2 s lease")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.lease, args.renew = 1, 2.0, 0.5
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="ha_takeover-"))
    port = free_port()
    redis = Child(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir)],
        workdir / "redis.log",
    )  # fmt: skip
    redis.wait_for_line(r"Ready to accept connections")
    sim, sim_url = start_sim(workdir, devices=10)
    settings = {
        "HA_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "HA_LEASE_SEC": str(args.lease),
        "HA_RENEW_SEC": str(args.renew),
    }
    daemons: list[Daemon] = []
    serial = 0

    def start(standby: bool) -> Daemon:
        nonlocal serial
        serial += 1
        folder = workdir / f"d{serial}"
        folder.mkdir()
        daemon = start_daemon(
            folder, sim_url, wait_reconcile=False, HA_INSTANCE=f"d{serial}", **settings
        )
        daemons.append(daemon)
        if standby:
            wait(lambda: (ha(daemon)["redis_known_sec"] or 0) >= args.lease, "a standby")
        else:
            wait(lambda: ha(daemon)["may_write"], "the first holder")
        return daemon

    figures: dict[str, list[float]] = {"kill": [], "clean": []}
    with stopping(redis, sim):
        try:
            holder = start(standby=False)
            standby = start(standby=True)
            for how in ["kill"] * args.rounds + ["clean"] * args.rounds:
                signalled = time.monotonic()
                if how == "kill":
                    holder.child.proc.kill()
                    holder.child.proc.wait(10)
                else:
                    holder.child.proc.terminate()
                wait(lambda: ha(standby)["may_write"], "the standby to take over")  # noqa: B023
                took = time.monotonic() - signalled
                figures[how].append(took)
                print(f"round {how}: the standby may write {took:.2f} s after the signal")
                holder.child.stop()
                holder, standby = standby, start(standby=True)
        finally:
            for daemon in daemons:
                daemon.child.stop()
    bound_kill = args.lease + args.renew
    for how, bound in (("kill", bound_kill), ("clean", args.renew)):
        values = figures[how]
        label = "kill -9" if how == "kill" else "a clean stop (lease released)"
        print(
            f"RESULT takeover after {label}: median {median(values):.2f} s, "
            f"min {min(values):.2f} s, max {max(values):.2f} s over {len(values)} rounds "
            f"(bound {bound:g} s; HA_LEASE_SEC={args.lease:g}, HA_RENEW_SEC={args.renew:g})"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
