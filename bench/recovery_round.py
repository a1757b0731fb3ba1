"""Recovery round: how long until every tracked device has had one attempt, against the ideal.

N devices are tracked and forced down (a seeded state file, phase `down`, all due now); their
port2 stays down, so every attempt is a full one: verify (GET device), restore (PATCH), discover,
poll, read the port, force down again (PATCH, discover). The simulator adds --api-latency to every
request and --poll-latency to every poll. The poll command is a bash one-liner that asks the
simulator to poll over /dev/tcp (a few ms of process start, counted as part of the poll; a Python
stand-in would add ~100 ms of CPU per poll and distort the ideal on a small machine).

ideal = N x (poll latency + requests per attempt x API latency) / MAX_PARALLEL, where requests per
attempt is counted from the simulator's request log (the poll request pays the API latency too).
RECOVERY_INTERVAL_SEC is set to 1.15 x the ideal round, so the round ends before any device is due
again; the run goes on until the round's second wave of MAX_PARALLEL devices has had its second
attempt, which shows whether the interval is kept from attempt start to attempt start (drift:
second start - first start - interval; the daemon counts the interval from when the verify call
returns, so about one API latency is expected) and that no device is attempted twice within one
interval (every device with two attempts is checked). The daemon runs as its own process.

Usage: .venv/bin/python bench/recovery_round.py [--configs 16x1000,4x100,1x10] [--poll 2]
       [--api-latency 0.02] [--quick]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    cpu_seconds,
    machine,
    median,
    seed_state,
    start_daemon,
    stopping,
    url_port,
    verdict,
)

from alert_handler.core.records import Phase
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator

UNSUP = "127.0.0.50"
GOAL = 1.10  # within 10% of the ideal
_VERIFY = re.compile(r"^/devices/(\d+)$")
_DEVICE = re.compile(r"^/(?:devices|_sim/poll)/(\d+)(?:/|$)")
_PORT = re.compile(r"^/ports/(\d+)$")


def poll_command(sim_url: str) -> str:
    """POLL_COMMAND: POST /_sim/poll/{device_id} over bash's /dev/tcp; exit 0 iff it polled."""
    port = url_port(sim_url)
    request = (
        "POST /_sim/poll/{device_id} HTTP/1.0\\r\\n"
        f"X-Auth-Token: {DEFAULT_TOKEN}\\r\\nContent-Length: 0\\r\\n\\r\\n"
    )
    script = (
        f'exec 3<>/dev/tcp/{HOST}/{port} && printf "{request}" >&3 && grep -q "\\"exit\\": 0" <&3'
    )
    return f"bash -c '{script}'"


@dataclass
class Attempt:
    """One device's requests from one verify (GET /devices/{id}) to the next."""

    start: float
    end: float
    requests: int
    discovers: int


def attempts_by_device(sim: Simulator) -> dict[int, list[Attempt]]:
    """The simulator's request log cut into attempts per device."""
    found: dict[int, list[Attempt]] = defaultdict(list)
    for req in sim.requests:
        match = _DEVICE.match(req.path) or _PORT.match(req.path)
        if match is None:
            continue  # GET /devices, GET /alerts: the reconcile pass at start
        number = int(match.group(1))
        device_id = number // 2 if req.path.startswith("/ports/") else number
        if req.method == "GET" and _VERIFY.match(req.path):
            found[device_id].append(Attempt(req.time, req.time, 0, 0))
        attempts = found.get(device_id)
        if not attempts:
            continue
        current = attempts[-1]
        current.end = req.time
        current.requests += 1
        if req.path.endswith("/discover"):
            current.discovers += 1
    return found


@dataclass
class Round:
    """The figures of one configuration."""

    parallel: int
    devices: int
    interval: float
    seconds: float
    per_attempt: float  # requests per attempt
    ideal: float
    min_gap: float
    drift: float
    early: int  # devices attempted again sooner than the interval
    second: int  # devices that had a second attempt
    cpu: float  # daemon CPU seconds during the round
    searches: int  # all-devices port searches (must be 0)

    @property
    def ratio(self) -> float:
        """Measured over ideal."""
        return self.seconds / self.ideal


def run_round(
    workdir: Path,
    parallel: int,
    devices: int,
    poll: float,
    api_latency: float,
    sim: Simulator | None = None,
    **settings: str,
) -> Round:
    """One configuration: simulator, seeded state, daemon; wait for the round and a second
    attempt of the first MAX_PARALLEL devices. `sim`: a simulator not yet started whose devices
    1..N are forced down with port2 down (bench/lab_round.py: real CPEs), `poll` then being what
    one of its polls costs; `settings`: more daemon settings."""
    expected = devices * (poll + 7 * api_latency) / parallel
    interval = round(max(1.15 * expected, 1.0), 1)
    if sim is None:
        sim = Simulator(api_latency=api_latency, poll_latency=poll)
        for device_id in range(1, devices + 1):
            sim.add_device(
                device_id,
                f"cpe-{device_id:05d}.example.net",
                overwrite_ip=UNSUP,
                ports={"ether1": "up", "port2": "down"},
            )
        assert sim.port(devices, "port2").port_id == 2 * devices  # what seed_state records
    sim.start(HOST, 0)
    with stopping(_SimStopper(sim)):
        now = time.time()
        seed_state(
            workdir / "device_state.json",
            range(1, devices + 1),
            phase=Phase.DOWN,
            next_attempt_at=now,
            now=now,
        )
        daemon = start_daemon(
            workdir,
            sim.url,
            wait_reconcile=True,
            MAX_PARALLEL=str(parallel),
            RECOVERY_INTERVAL_SEC=str(interval),
            POLL_COMMAND=poll_command(sim.url),
            POLL_TIMEOUT_SEC="60",
            **settings,
        )
        with stopping(daemon):
            cpu_before = cpu_seconds(daemon.child.pid)
            limit = 3 * expected + 60
            deadline = time.monotonic() + limit

            def progress() -> dict[int, list[Attempt]]:
                if time.monotonic() > deadline or not daemon.child.alive():
                    raise RuntimeError(
                        f"P={parallel} N={devices}: no end after {limit:.0f}s\n"
                        f"{daemon.child.output()[-2000:]}"
                    )
                time.sleep(0.25)
                return attempts_by_device(sim)

            found = attempts_by_device(sim)
            while sum(1 for a in found.values() if a and a[0].discovers >= 2) < devices:
                found = progress()
            cpu = cpu_seconds(daemon.child.pid) - cpu_before
            # The second wave of the round (the first one starts together with the daemon's
            # start-up work): wait for these devices' second attempts.
            ranked = sorted(found, key=lambda d: found[d][0].start)
            watched = ranked[parallel : 2 * parallel] or ranked[:parallel]
            while any(len(found[d]) < 2 for d in watched):
                found = progress()
    searches = sum(1 for r in sim.requests if r.path.startswith("/ports/search"))
    firsts = [found[d][0] for d in range(1, devices + 1)]
    seconds = max(a.end for a in firsts) + api_latency - min(a.start for a in firsts)
    per_attempt = median(a.requests for a in firsts)
    ideal = devices * (poll + per_attempt * api_latency) / parallel
    gaps = [a[1].start - a[0].start for a in found.values() if len(a) >= 2]
    watched_gaps = [found[d][1].start - found[d][0].start for d in watched]
    return Round(
        parallel=parallel,
        devices=devices,
        interval=interval,
        seconds=seconds,
        per_attempt=per_attempt,
        ideal=ideal,
        min_gap=min(gaps),
        drift=median(g - interval for g in watched_gaps),
        early=sum(1 for g in gaps if g < interval),
        second=len(gaps),
        cpu=cpu,
        searches=searches,
    )


class _SimStopper:
    """Lets `stopping` stop an in-process simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def stop(self) -> None:
        self.sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--configs",
        default="16x1000,4x100,1x10",
        help="MAX_PARALLELxDEVICES, comma-separated (default 16x1000,4x100,1x10)",
    )
    parser.add_argument("--poll", type=float, default=2.0, help="seconds per poll (default 2)")
    parser.add_argument("--api-latency", type=float, default=0.02, help="seconds (default 0.02)")
    parser.add_argument("--quick", action="store_true", help="4x20, 0.2 s polls (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.configs, args.poll, args.api_latency = "4x20", 0.2, 0.005
    configs = []
    for item in args.configs.split(","):
        p, _, n = item.partition("x")
        configs.append((int(p), int(n)))

    print(f"machine: {machine()}")
    print(
        f"recovery round: poll {args.poll:g} s, API latency {args.api_latency * 1000:g} ms, "
        f"configs {args.configs} (MAX_PARALLELxDEVICES)"
    )
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        for parallel, devices in configs:
            workdir = Path(tmp) / f"p{parallel}-n{devices}"
            workdir.mkdir()
            r = run_round(workdir, parallel, devices, args.poll, args.api_latency)
            rounds.append(r)
            print(
                f"RESULT P={r.parallel} N={r.devices}: round {r.seconds:.1f} s, ideal "
                f"{r.ideal:.1f} s ({r.per_attempt:g} requests/attempt), ratio {r.ratio:.3f}; "
                f"interval {r.interval:g} s: {r.second} devices attempted again after "
                f"{r.min_gap:.2f} s at the soonest, {r.early} sooner than the interval, "
                f"drift {r.drift * 1000:+.0f} ms (2nd wave, median); daemon CPU "
                f"{r.cpu / r.devices * 1000:.1f} ms/attempt; port searches {r.searches}",
                flush=True,
            )
    single = [r for r in rounds if r.parallel == 1]
    if single:
        per_device = single[0].seconds / single[0].devices
        for r in rounds:
            if r.parallel != 1:
                speedup = per_device / (r.seconds / r.devices)
                print(
                    f"RESULT P={r.parallel} vs P=1: {speedup:.2f}x faster per device "
                    f"(ideal {r.parallel}x)"
                )
    for r in rounds:
        if r.parallel in (4, 16):
            print(
                f"RESULT goal P={r.parallel} N={r.devices} within 10% of ideal: "
                f"{verdict(r.ratio <= GOAL)}"
            )
    early = sum(r.early for r in rounds)
    print(f"RESULT no device attempted twice within an interval: {verdict(early == 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
