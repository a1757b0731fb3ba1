"""A storm, then LibreNMS's alert runner one alert after another, while recovery starts on the
devices the storm brought: the case that matters most to LibreNMS (issue 19).

1. A storm of --storm alerts for distinct devices from --clients clients (default 2,400 from 16)
   is acknowledged; the simulator knows every device (port2 down, --api-latency per API call),
   so recovery starts inspecting and forcing down what the storm brought.
2. Right after the storm's last reply, --sequential alerts (default 200) for new devices come
   one after another from one client (a new connection each), as LibreNMS's single alert runner
   sends them. Their latency is the figure: p50 and p99, against a bare stdlib server given
   the same storm and the same sequential alerts.

The daemon runs with its default settings (MAX_PARALLEL, CONFIRM_ABOVE, RECOVERY_INTERVAL_SEC,
RECONCILE_INTERVAL_SEC as shipped); only what a benchmark must set is set (LibreNMS URL and
token, a POLL_COMMAND of `true`, files in a temporary folder, port 0). --set KEY=VALUE changes
one more (e.g. --set CONFIRM_ABOVE=0: every storm device is forced down, no confirmation).
Runs alternate daemon/bare (--pairs). --profile FILE samples the daemon with py-spy (GIL held)
during the sequential alerts only, and prints where the time went.

Usage: .venv/bin/python bench/storm_then_sequential.py [--storm 2400] [--clients 16]
       [--sequential 200] [--pairs 3] [--set KEY=VALUE ...] [--profile FILE] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
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
    profile_summary,
    py_spy,
    start_bare,
    start_daemon,
    start_sim,
    stopping,
    verdict,
)
from loadgen import client_kind, run_load

GOAL_P50_RATIO = 1.5
SETTLE = 2.0  # seconds between the listener (and the first reconcile pass) and the storm
# start_daemon's benchmark settings that differ from the daemon's defaults: put back.
DEFAULTS = {
    "RECOVERY_INTERVAL_SEC": "60",
    "RECONCILE_INTERVAL_SEC": "300",
    "CONFIRM_ABOVE": "50",
    "STOP_TIMEOUT_SEC": "30",
}


@dataclass
class Run:
    """One run: the storm, then the sequential alerts."""

    storm: LoadResult
    sequential: LoadResult
    cpu: float  # server CPU seconds during the sequential alerts
    missing: int = 0  # acknowledged but not on disk (daemon only)
    busy: str = ""  # what the daemon was doing when the sequential alerts began
    switched: int = 0  # the server's context switches during the sequential alerts

    def p(self, q: float) -> float:
        """A percentile of the sequential alerts' latency, ms."""
        return percentile([x * 1000 for x in self.sequential.latencies], q)

    def line(self) -> str:
        """The run's figures."""
        cpu = 1000 * self.cpu / self.sequential.sent
        return (
            f"storm {self.storm.rate:.0f} alerts/s, p99 "
            f"{percentile([x * 1000 for x in self.storm.latencies], 99):.1f} ms; then sequential:"
            f" {self.sequential.line()}  CPU {cpu:.2f} ms/alert, "
            f"{self.switched / self.sequential.sent:.1f} context switches/alert"
            + (f"  {self.busy}" if self.busy else "")
            + (f"  !! {self.missing} acknowledged but not on disk" if self.missing else "")
        )


class Spy:
    """py-spy recording a process (GIL samples) from start() to stop(); attached beforehand, so
    that starting to record costs the measured part nothing but the sampling itself."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = py_spy()
        if exe is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install -e '.[bench]'")
        self.out = out
        self._argv = [exe, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "500"]
        self._argv += ["--gil", "--nonblocking"]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start sampling (py-spy needs about a second to attach: call before the storm ends)."""
        quiet = subprocess.DEVNULL
        self._proc = subprocess.Popen(self._argv, stdout=quiet, stderr=quiet)

    def stop(self) -> None:
        """Stop and write the file."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(60)


def tasks(pid: int) -> dict[int, tuple[int, float]]:
    """Each thread of `pid`: (context switches so far, voluntary or not; CPU seconds so far).
    Switches count how often a thread gave up or lost a CPU: the hand-offs and waits."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            stat = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended
        switched = sum(int(x.split()[1]) for x in status.splitlines() if "ctxt_switches:" in x)
        found[int(task.name)] = (switched, (int(stat[11]) + int(stat[12])) / ticks)
    return found


def switches(pid: int) -> int:
    """Context switches of every thread of `pid` so far."""
    return sum(n for n, _ in tasks(pid).values())


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> Python thread name (from `py-spy dump`; empty without py-spy)."""
    exe = py_spy()
    if exe is None:
        return {}
    dump = subprocess.run(
        [exe, "dump", "--pid", str(pid), "--nonblocking"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.findall(r'^Thread (\d+) \(\w+\): "([^"]*)"', dump.stdout, re.MULTILINE)
    return {int(tid): re.sub(r"-\d+$", "-N", name) for tid, name in found}


def by_thread(
    pid: int, before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]], n: int
) -> str:
    """Context switches and CPU per alert of each thread (named as Python names them; the
    request threads http-N together), busiest first."""
    names = thread_names(pid)
    rows: dict[str, list[float]] = {}
    for tid, (switched, cpu) in after.items():
        was = before.get(tid, (0, 0.0))
        row = rows.setdefault(names.get(tid, f"tid {tid}"), [0.0, 0.0])
        row[0] += (switched - was[0]) / n
        row[1] += 1000 * (cpu - was[1]) / n
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0])
    return "; ".join(f"{name} {sw:.1f} sw {ms:.2f} ms" for name, (sw, ms) in ranked if sw >= 0.1)


def daemon_run(
    workdir: Path, args: argparse.Namespace, settings: dict[str, str], profile: Path | None
) -> Run:
    """Simulator + daemon with default settings: the storm, then the sequential alerts."""
    total = args.storm + args.sequential
    sim, sim_url = start_sim(workdir, devices=total, api_latency=args.api_latency)
    with stopping(sim):
        daemon = start_daemon(workdir, sim_url, wait_reconcile=True, **settings)
        with stopping(daemon):
            time.sleep(SETTLE)
            spy = Spy(daemon.child.pid, profile) if profile else None
            storm = run_load(daemon.port, 1, args.storm, args.clients)
            if spy is not None:
                # Sampling from here on includes the attach second: the sequential alerts
                # begin after it, so the profile is theirs (and recovery's meanwhile).
                spy.start()
                time.sleep(1.0)
            inflight = daemon.metric("alert_handler_devices_tracked", phase="forcing_down")
            down = daemon.metric("alert_handler_devices_tracked", phase="down")
            before, threads = cpu_seconds(daemon.child.pid), tasks(daemon.child.pid)
            sequential = run_load(daemon.port, args.storm + 1, args.sequential, 1)
            cpu = cpu_seconds(daemon.child.pid) - before
            after = tasks(daemon.child.pid)
            switched = sum(n for n, _ in after.values()) - sum(n for n, _ in threads.values())
            if args.threads:
                print(
                    "  per alert, by thread: "
                    + by_thread(daemon.child.pid, threads, after, args.sequential)
                )
            if spy is not None:
                spy.stop()
            acked = storm.acked | sequential.acked
            missing = len(acked - devices_in_file(daemon.state_path))
    busy = f"(when it began: {down:.0f} down, {inflight:.0f} being forced down)"
    return Run(storm, sequential, cpu, missing, busy, switched)


def bare_run(workdir: Path, args: argparse.Namespace) -> Run:
    """The bare server, the same storm and sequential alerts."""
    bare, port = start_bare(workdir)
    with stopping(bare):
        time.sleep(SETTLE)
        storm = run_load(port, 1, args.storm, args.clients)
        before, switched = cpu_seconds(bare.pid), switches(bare.pid)
        sequential = run_load(port, args.storm + 1, args.sequential, 1)
        cpu = cpu_seconds(bare.pid) - before
        return Run(storm, sequential, cpu, switched=switches(bare.pid) - switched)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--storm", type=int, default=2400, help="alerts in the storm")
    parser.add_argument("--clients", type=int, default=16, help="the storm's clients")
    parser.add_argument("--sequential", type=int, default=200, help="alerts one after another")
    parser.add_argument("--pairs", type=int, default=3, help="daemon/bare pairs")
    parser.add_argument("--api-latency", type=float, default=0.02, help="simulator, seconds")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a daemon setting"
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw file (first daemon run)")
    parser.add_argument(
        "--threads",
        action="store_true",
        help="context switches and CPU per alert of each daemon thread (names need py-spy)",
    )
    parser.add_argument("--quick", action="store_true", help="100 + 20 alerts, 1 pair")
    args = parser.parse_args()
    if args.quick:
        args.storm, args.sequential, args.pairs = 100, 20, 1
    settings = dict(DEFAULTS)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: KEY=VALUE")
        settings[key] = value

    print(f"machine: {machine()}")
    changed = {k: v for k, v in settings.items() if DEFAULTS.get(k) != v}
    print(
        f"storm then sequential: {args.storm} alerts from {args.clients} clients, then "
        f"{args.sequential} one after another (1 client, a new connection each, {client_kind()} "
        f"in its own process); daemon settings: defaults"
        + (f" except {changed}" if changed else "")
        + f"; simulator API latency {args.api_latency * 1000:.0f} ms; {args.pairs} daemon/bare "
        "pairs"
    )
    daemons: list[Run] = []
    bares: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-storm-seq-") as tmp:
        for n in range(1, args.pairs + 1):
            workdir = Path(tmp) / f"daemon-{n}"
            workdir.mkdir()
            profile = args.profile if n == 1 else None
            daemons.append(daemon_run(workdir, args, settings, profile))
            print(f"daemon run {n}: {daemons[-1].line()}", flush=True)
            workdir = Path(tmp) / f"bare-{n}"
            workdir.mkdir()
            bares.append(bare_run(workdir, args))
            print(f"bare   run {n}: {bares[-1].line()}", flush=True)
    report(daemons, bares)
    if args.profile:
        print(profile_summary(args.profile, top=40))
    return 0


def report(daemons: list[Run], bares: list[Run]) -> None:
    """The RESULT line: medians over the runs."""
    d50, b50 = median(r.p(50) for r in daemons), median(r.p(50) for r in bares)
    d99, b99 = median(r.p(99) for r in daemons), median(r.p(99) for r in bares)
    ratio = d50 / b50
    pairs = ", ".join(f"{d.p(50) / b.p(50):.2f}" for d, b in zip(daemons, bares, strict=True))
    dcpu = median(1000 * r.cpu / r.sequential.sent for r in daemons)
    bcpu = median(1000 * r.cpu / r.sequential.sent for r in bares)
    dsw = median(r.switched / r.sequential.sent for r in daemons)
    bsw = median(r.switched / r.sequential.sent for r in bares)
    failed = sum(r.storm.failed + r.sequential.failed for r in daemons)
    missing = sum(r.missing for r in daemons)
    print(
        f"RESULT storm then sequential: daemon p50 {d50:.2f} ms p99 {d99:.2f} ms, bare p50 "
        f"{b50:.2f} ms p99 {b99:.2f} ms; p50 ratio {ratio:.2f} (pairs {pairs}; goal <= "
        f"{GOAL_P50_RATIO}: {verdict(ratio <= GOAL_P50_RATIO)}); CPU per sequential alert "
        f"daemon {dcpu:.2f} ms, bare {bcpu:.2f} ms; context switches per sequential alert daemon "
        f"{dsw:.1f}, bare {bsw:.1f}; unacknowledged {failed}, acknowledged but not on disk "
        f"{missing}"
    )


if __name__ == "__main__":
    sys.exit(main())
