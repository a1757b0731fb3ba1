"""Sequential acks: one client, one alert after another, the way LibreNMS's alert runner sends
them during an outage, with N devices already tracked.

For each fleet size (--tracked, default 2,600 and 10,000) the daemon starts on a state file of N
tracked devices and gets --alerts alerts for new devices (the recovery worker inspects and forces
them down meanwhile, the simulator adding 20 ms to each API call); the bare stdlib server gets the
same load. Runs alternate daemon/bare (--pairs, default 3); the load comes from another process
(bench/loadgen.py). Reported: p50 and p99 of each, the ratio of the p50s (goal: <= 1.5x the bare
server's, flat in N), and CPU per alert of both servers.

Usage: .venv/bin/python bench/sequential.py [--tracked 2600,10000] [--alerts 1000] [--pairs 3]
       [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    LoadResult,
    cpu_seconds,
    devices_in_file,
    machine,
    median,
    percentile,
    seed_state,
    start_bare,
    start_daemon,
    start_sim,
    stopping,
    verdict,
)
from loadgen import client_kind, run_load

from alert_handler.core.records import Phase

GOAL_P50_RATIO = 1.5
SETTLE = 2.0  # seconds between the listener and the first alert


@dataclass
class Run:
    """One run's latencies and the server's CPU."""

    load: LoadResult
    cpu: float  # server CPU seconds during the load
    missing: int = 0  # acknowledged but not on disk (daemon only)

    def p(self, q: float) -> float:
        """A latency percentile, ms."""
        return percentile([x * 1000 for x in self.load.latencies], q)

    def line(self) -> str:
        """The run's figures."""
        return f"{self.load.line()}  CPU {1000 * self.cpu / self.load.sent:.2f} ms/alert" + (
            f"  !! {self.missing} acknowledged but not on disk" if self.missing else ""
        )


def daemon_run(workdir: Path, tracked: int, alerts: int, api_latency: float) -> Run:
    """The daemon with `tracked` devices, `alerts` sequential alerts for new ones."""
    now = time.time()
    seed_state(
        workdir / "device_state.json",
        range(1, tracked + 1),
        phase=Phase.DOWN,
        next_attempt_at=now + 3600,
        now=now,
    )
    first = tracked + 1
    sim, sim_url = start_sim(workdir, devices=alerts, first_id=first, api_latency=api_latency)
    with stopping(sim):
        daemon = start_daemon(workdir, sim_url, MAX_PARALLEL="4")
        with stopping(daemon):
            time.sleep(SETTLE)
            before = cpu_seconds(daemon.child.pid)
            load = run_load(daemon.port, first, alerts, 1)
            cpu = cpu_seconds(daemon.child.pid) - before
            missing = len(load.acked - devices_in_file(daemon.state_path))
    return Run(load, cpu, missing)


def bare_run(workdir: Path, alerts: int) -> Run:
    """The bare server, the same load."""
    bare, port = start_bare(workdir)
    with stopping(bare):
        time.sleep(SETTLE)
        before = cpu_seconds(bare.pid)
        load = run_load(port, 1, alerts, 1)
        return Run(load, cpu_seconds(bare.pid) - before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tracked", default="2600,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=3, help="daemon/bare pairs per fleet size")
    parser.add_argument("--api-latency", type=float, default=0.02, help="simulator, seconds")
    parser.add_argument("--quick", action="store_true", help="20 tracked, 30 alerts, 1 pair")
    args = parser.parse_args()
    sizes = [int(n) for n in args.tracked.split(",")]
    if args.quick:
        sizes, args.alerts, args.pairs = [20], 30, 1

    print(f"machine: {machine()}")
    print(
        f"sequential: {args.alerts} alerts one after another (1 client, a new connection each, "
        f"{client_kind()} in its own process), {args.pairs} daemon/bare pairs per fleet size"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sequential-") as tmp:
        for tracked in sizes:
            daemons: list[Run] = []
            bares: list[Run] = []
            for n in range(1, args.pairs + 1):
                workdir = Path(tmp) / f"{tracked}-daemon-{n}"
                workdir.mkdir()
                daemons.append(daemon_run(workdir, tracked, args.alerts, args.api_latency))
                print(f"{tracked} tracked, daemon run {n}: {daemons[-1].line()}", flush=True)
                workdir = Path(tmp) / f"{tracked}-bare-{n}"
                workdir.mkdir()
                bares.append(bare_run(workdir, args.alerts))
                print(f"{tracked} tracked, bare   run {n}: {bares[-1].line()}", flush=True)
            report(tracked, daemons, bares)
    return 0


def report(tracked: int, daemons: list[Run], bares: list[Run]) -> None:
    """RESULT lines for one fleet size: medians over the runs."""
    d50, b50 = median(r.p(50) for r in daemons), median(r.p(50) for r in bares)
    d99, b99 = median(r.p(99) for r in daemons), median(r.p(99) for r in bares)
    ratio = d50 / b50
    pair_ratios = ", ".join(f"{d.p(50) / b.p(50):.2f}" for d, b in zip(daemons, bares, strict=True))
    dcpu = median(1000 * r.cpu / r.load.sent for r in daemons)
    bcpu = median(1000 * r.cpu / r.load.sent for r in bares)
    failed = sum(r.load.failed for r in daemons)
    missing = sum(r.missing for r in daemons)
    print(
        f"RESULT sequential, {tracked} tracked: daemon p50 {d50:.2f} ms p99 {d99:.2f} ms, "
        f"bare p50 {b50:.2f} ms p99 {b99:.2f} ms; p50 ratio {ratio:.2f} (pairs {pair_ratios}; "
        f"goal <= {GOAL_P50_RATIO}: {verdict(ratio <= GOAL_P50_RATIO)}); CPU per alert daemon "
        f"{dcpu:.2f} ms, bare {bcpu:.2f} ms; unacknowledged {failed}, acknowledged but not on "
        f"disk {missing}"
    )


if __name__ == "__main__":
    sys.exit(main())
