"""Ingest under an alert storm: N alerts for distinct devices from C concurrent clients.

Each request is a new TCP connection (as LibreNMS's API transport makes), sent only after the
client's previous reply, like the alert runner. The load comes from another process (a small C
client compiled at run time, bench/loadgen.py), started SETTLE seconds after the server listens.
The daemon (`alert-handler serve`, its own process) acknowledges an alert only once it is durable
(its journal line); right after the last reply the state is read as a restart would (state file
plus journal) and must hold every acknowledged device. The same load is run against a bare
stdlib ThreadingHTTPServer that answers 202 and writes nothing (the ceiling of this machine);
runs alternate between the two (pairs), and medians are compared, p99 next to p99, CPU per alert
next to CPU per alert.

The recovery worker runs as in production: the simulator knows every device (port2 down) and adds
--api-latency to each API call, so the daemon inspects and forces down devices while the storm
is still arriving. --preload N starts the daemon with N devices already tracked (the scale case).

Usage: .venv/bin/python bench/ingest.py [--alerts 2000] [--clients 16] [--runs 3] [--preload 0]
       [--traps] [--profile FILE (needs py-spy)] [--python-client] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Daemon,
    LoadResult,
    cpu_seconds,
    devices_in_file,
    machine,
    median,
    open_connections,
    percentile,
    profiled,
    seed_state,
    sim_request_counts,
    start_bare,
    start_daemon,
    start_sim,
    stopping,
    url_port,
    verdict,
)
from loadgen import client_kind, force_python_client, run_load

from alert_handler.core.records import Phase

GOAL_RATIO = 0.80
GOAL_RATIO_PRELOADED = 0.70
GOAL_P99_MARGIN_MS = 10.0  # the daemon's p99 within this of the bare server's
SETTLE = 2.0  # seconds between the listener and the storm
DOWN_COUNT = 20  # forced-down figure: when this many of the storm's devices are down


@dataclass
class ForcedDown:
    """When the storm's devices were forced down, seconds from the storm's first alert."""

    storm: float  # how long the storm lasted
    at_storm_end: int  # devices forced down when the last alert was answered
    first: float  # the first one seen (at the storm's end when one was down by then)
    nth: float  # the DOWN_COUNT-th one

    def line(self) -> str:
        """The figures."""
        return (
            f"forced down: {self.at_storm_end} by the storm's end ({self.storm:.2f} s), first "
            f"at {self.first:.2f} s, {DOWN_COUNT}th at {self.nth:.2f} s"
        )


def forced_down(daemon: Daemon, began: float, storm: float, before: float) -> ForcedDown:
    """Poll the daemon's devices-by-phase gauge until DOWN_COUNT of the storm's devices are
    down (at most 60 s)."""
    name = "alert_handler_devices_tracked"
    at_end = int(daemon.metric(name, phase="down") - before)
    first = nth = float("nan")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        down = daemon.metric(name, phase="down") - before
        now = time.perf_counter() - began
        if down >= 1 and first != first:  # NaN until then
            first = now  # (the storm's end, when one was down by then)
        if down >= DOWN_COUNT:
            nth = now
            break
        time.sleep(0.02)
    return ForcedDown(storm, at_end, first, nth)


@dataclass
class BareRun:
    """One run against the bare server."""

    load: LoadResult
    cpu: float  # server CPU seconds during the load

    def line(self) -> str:
        """The run's figures."""
        return f"{self.load.line()}  CPU {1000 * self.cpu / self.load.sent:.2f} ms/alert"


@dataclass
class DaemonRun:
    """One run against the daemon."""

    load: LoadResult
    in_file: int
    writes: float
    write_seconds: float
    cpu: float  # daemon CPU seconds during the load
    connections: int  # keep-alive connections the daemon held to the API after the load
    api: dict[str, int]  # API requests the simulator answered, by method and path
    down: ForcedDown  # when the storm's devices were forced down

    def line(self) -> str:
        """The run's figures."""
        per_write = self.load.ok / self.writes if self.writes else float("nan")
        write_ms = 1000 * self.write_seconds / self.writes if self.writes else float("nan")
        cpu_ms = 1000 * self.cpu / self.load.sent
        return (
            f"{self.load.line()}  in state file {self.in_file}/{self.load.sent}  "
            f"{self.writes:.0f} commits, {per_write:.1f} alerts and {write_ms:.1f} ms each  "
            f"CPU {cpu_ms:.2f} ms/alert  {self.down.line()}"
        )


def daemon_run(
    workdir: Path,
    alerts: int,
    clients: int,
    preload: int,
    api_latency: float,
    profile: Path | None = None,
    *,
    settle: float = SETTLE,
    librenms_devices: int = 0,
) -> DaemonRun:
    """Start simulator + daemon (optionally with `preload` tracked devices), send the storm;
    with `profile`, sample the daemon with py-spy meanwhile."""
    now = time.time()
    if preload:
        seed_state(
            workdir / "device_state.json",
            range(1, preload + 1),
            phase=Phase.DOWN,
            next_attempt_at=now + 3600,
            now=now,
        )
    first = preload + 1
    sim, sim_url = start_sim(
        workdir, devices=max(alerts, librenms_devices), first_id=first, api_latency=api_latency
    )
    with stopping(sim):
        # settle 0: the storm meets the daemon as it starts (its first reconcile pass too).
        daemon = start_daemon(workdir, sim_url, wait_reconcile=settle > 0, MAX_PARALLEL="4")
        with stopping(daemon):
            time.sleep(settle)
            name = "alert_handler_state_write_duration_seconds"
            writes_before = daemon.metric(name + "_count")
            seconds_before = daemon.metric(name + "_sum")
            down_before = daemon.metric("alert_handler_devices_tracked", phase="down")
            with profiled(daemon.child.pid, profile):
                cpu_before = cpu_seconds(daemon.child.pid)
                began = time.perf_counter()
                load = run_load(daemon.port, first, alerts, clients)
                cpu = cpu_seconds(daemon.child.pid) - cpu_before
                in_file = devices_in_file(daemon.state_path)
            down = forced_down(daemon, began, time.perf_counter() - began, down_before)
            writes = daemon.metric(name + "_count") - writes_before
            seconds = daemon.metric(name + "_sum") - seconds_before
            connections = open_connections(daemon.child.pid, url_port(sim_url))
            missing = load.acked - in_file
            if missing:
                print(f"  !! {len(missing)} acknowledged devices missing on disk")
    api = sim_request_counts(sim)
    return DaemonRun(load, len(load.acked & in_file), writes, seconds, cpu, connections, api, down)


def bare_run(
    workdir: Path, alerts: int, clients: int, settle: float = SETTLE, **kind: bool
) -> BareRun:
    """The same load against the bare server."""
    bare, port = start_bare(workdir, **kind)
    with stopping(bare):
        time.sleep(settle)
        before = cpu_seconds(bare.pid)
        load = run_load(port, 1, alerts, clients)
        return BareRun(load, cpu_seconds(bare.pid) - before)


def summary(label: str, loads: list[LoadResult], cpus: list[float]) -> str:
    """Medians over runs of each figure."""
    cpu = median(1000 * c / r.sent for c, r in zip(cpus, loads, strict=True))
    rate = median(r.rate for r in loads)
    p50 = median(percentile([x * 1000 for x in r.latencies], 50) for r in loads)
    p99 = median(percentile([x * 1000 for x in r.latencies], 99) for r in loads)
    worst = max((max(r.latencies, default=0.0) * 1000 for r in loads), default=float("nan"))
    failed = sum(r.failed for r in loads)
    return (
        f"RESULT {label}: median {rate:.0f} alerts/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {worst:.1f} ms (worst run), CPU {cpu:.2f} ms per alert, unacknowledged "
        f"{failed} over {len(loads)} runs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="daemon/bare pairs (default 3)")
    parser.add_argument("--preload", type=int, default=0, help="devices tracked before the storm")
    parser.add_argument("--api-latency", type=float, default=0.02, help="simulator, seconds")
    parser.add_argument(
        "--traps",
        action="store_true",
        help="also run the stdlib-defaults and fsync-per-alert servers",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the daemon with py-spy during the first run into this file (raw format)",
    )
    parser.add_argument(
        "--python-client", action="store_true", help="the Python load client even with cc"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE,
        help="seconds between the listener and the storm (0: at once, before the first "
        "reconcile pass is done)",
    )
    parser.add_argument(
        "--librenms-devices", type=int, default=0, help="devices LibreNMS lists (at least --alerts)"
    )
    parser.add_argument("--quick", action="store_true", help="50 alerts, 1 run (smoke test)")
    args = parser.parse_args()
    if args.python_client:
        force_python_client()
    if args.quick:
        args.alerts, args.runs = 50, 1
        args.preload = min(args.preload, 20)
    goal_ratio = GOAL_RATIO_PRELOADED if args.preload else GOAL_RATIO

    print(f"machine: {machine()}")
    print(
        f"ingest: {args.alerts} alerts for distinct devices, {args.clients} clients, "
        f"a new connection per alert ({client_kind()}, its own process), {args.preload} devices "
        f"tracked before, simulator API latency {args.api_latency * 1000:.0f} ms, {args.runs} "
        f"daemon/bare pairs, the storm {args.settle:g} s after the listener"
    )
    daemon_runs: list[DaemonRun] = []
    bare_runs: list[BareRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for n in range(1, args.runs + 1):
            workdir = Path(tmp) / f"daemon-{n}"
            workdir.mkdir()
            profile = args.profile if n == 1 else None
            run = daemon_run(
                workdir,
                args.alerts,
                args.clients,
                args.preload,
                args.api_latency,
                profile,
                settle=args.settle,
                librenms_devices=args.librenms_devices,
            )
            daemon_runs.append(run)
            print(f"daemon run {n}: {run.line()}", flush=True)
            workdir = Path(tmp) / f"bare-{n}"
            workdir.mkdir()
            bare = bare_run(workdir, args.alerts, args.clients, args.settle)
            bare_runs.append(bare)
            print(f"bare   run {n}: {bare.line()}", flush=True)
        traps: list[tuple[str, BareRun]] = []
        if args.traps:
            for label, kind in (
                ("stdlib defaults (backlog 5, reply in two sends)", {"naive": True}),
                ("whole file rewritten + fsync per alert", {"write_each": True}),
            ):
                workdir = Path(tmp) / f"trap-{len(traps)}"
                workdir.mkdir()
                trap = bare_run(workdir, args.alerts, args.clients, **kind)
                traps.append((label, trap))
                print(f"trap: {label}: {trap.line()}", flush=True)

    api = daemon_runs[-1].api
    searches = sum(n for key, n in api.items() if key.startswith("GET /ports/search"))
    print(
        f"RESULT API use (last run, until the daemon stopped): "
        f"{api.get('GET /devices/{id}/ports', 0)} port lookups (GET /devices/{{id}}/ports) for "
        f"{api.get('GET /devices/{id}', 0)} device reads, {searches} all-devices port searches, "
        f"{daemon_runs[-1].connections} keep-alive API connections held (MAX_PARALLEL 4); "
        f"requests: {json.dumps(api)}"
    )
    loads = [r.load for r in daemon_runs]
    bare_loads = [r.load for r in bare_runs]
    print(summary("daemon", loads, [r.cpu for r in daemon_runs]))
    print(summary("bare server", bare_loads, [r.cpu for r in bare_runs]))
    for label, trap in traps:
        print(summary(f"trap {label}", [trap.load], [trap.cpu]))
    ratio = median(r.rate for r in loads) / median(r.rate for r in bare_loads)
    pairs = ", ".join(
        f"{d.rate / b.rate:.2f}" for d, b in zip(loads, bare_loads, strict=True) if b.rate
    )
    p99 = median(percentile([x * 1000 for x in r.latencies], 99) for r in loads)
    bare_p99 = median(percentile([x * 1000 for x in r.latencies], 99) for r in bare_loads)
    failed = sum(r.failed for r in loads)
    in_file = min(r.in_file for r in daemon_runs)
    print(
        f"RESULT ratio daemon/bare throughput: {ratio:.2f} (pairs {pairs}; "
        f"goal >= {goal_ratio:.2f}: {verdict(ratio >= goal_ratio)})"
    )
    met = verdict(p99 <= bare_p99 + GOAL_P99_MARGIN_MS)
    print(
        f"RESULT p99 latency: daemon {p99:.1f} ms, bare {bare_p99:.1f} ms (goal: within "
        f"{GOAL_P99_MARGIN_MS:.0f} ms of the bare server's: {met})"
    )
    print(f"RESULT unacknowledged alerts: {failed} (goal 0: {verdict(failed == 0)})")
    downs = [r.down for r in daemon_runs]
    print(
        f"RESULT storm's devices forced down (median): {median(d.at_storm_end for d in downs):.0f} "
        f"by the storm's end ({median(d.storm for d in downs):.2f} s), the first at "
        f"{median(d.first for d in downs):.2f} s, the {DOWN_COUNT}th at "
        f"{median(d.nth for d in downs):.2f} s after the storm began"
    )
    print(
        f"RESULT devices in the state file: {in_file}/{args.alerts} in the worst run, read as a "
        f"restart would (state file plus journal) (goal all: {verdict(in_file == args.alerts)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
