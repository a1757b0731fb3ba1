"""Lab round: what real ICMP and SNMP cost, on a lab of real CPEs (root only; docs/lab.md).

1. Lab set-up and tear-down for 3 and N CPEs (network namespaces, veths, an snmpd each).
2. One real poll (`Simulator.poll_device` in lab mode): a healthy CPE (fping 3 x 500 ms, then
   SNMP: sysObjectID and three IF-MIB walks), a CPE forced down on the lab's blackholed dark
   address (fping gets nothing), and 127.0.0.50 (fping answers, SNMP times out: 1 s x 2 tries
   here; LibreNMS's default is 1 s x 6 tries).
3. One recovery round of N lab CPEs (port2 down, so every attempt is a full one) with real polls,
   next to the same round with the pretend poll of bench/recovery_round.py (no poll latency):
   the difference per attempt is what the real poll costs the daemon. CHECK_REPOLL_SEC is 0 in
   both rounds (one poll per attempt); its cost per still-down attempt is printed apart.

Usage: sudo .venv/bin/python bench/lab_round.py [--cpes 50] [--parallel 4] [--api-latency 0.02]
       [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine
from recovery_round import Round, run_round

from alert_handler.sim.lab import Lab, missing_prerequisite
from alert_handler.sim.realpoll import RealPoller
from alert_handler.sim.simulator import Simulator


def timed_lab(n: int) -> tuple[float, float, float]:
    """(seconds to build, seconds to remove, MiB resident per agent) a lab of `n` CPEs."""
    lab = Lab(n)
    started = time.monotonic()
    rss: list[float] = []
    try:
        lab.up()
        built = time.monotonic() - started
        for cpe in lab.cpes:
            if cpe.agent is not None:
                status = Path(f"/proc/{cpe.agent.pid}/status").read_text()
                kib = next(
                    line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")
                )
                rss.append(int(kib) / 1024)
    finally:
        started = time.monotonic()
        lab.down()
    return built, time.monotonic() - started, statistics.median(rss) if rss else 0.0


def poll_costs(repeat: int) -> None:
    """Per-poll figures on a lab of 2 CPEs."""
    with Lab(2) as lab:
        sim = Simulator()
        sim.use_lab(lab, RealPoller(snmp_retries=1))
        sim.add_lab_device(1, 1)
        sim.add_lab_device(2, 2, forced_down=True)

        def measure(device_id: int) -> tuple[float, float, float, int]:
            totals, icmp, snmp = [], [], []
            code = 0
            for _ in range(repeat):
                started = time.monotonic()
                code, _ = sim.poll_device(device_id)
                totals.append(time.monotonic() - started)
                probe = sim.last_probe[device_id]
                icmp.append(probe.icmp_seconds)
                snmp.append(probe.snmp_seconds)
            return (
                statistics.median(totals),
                statistics.median(icmp),
                statistics.median(snmp),
                code,
            )

        total, icmp, snmp, code = measure(1)
        print(
            f"RESULT real poll, healthy CPE: {total * 1000:.0f} ms (fping {icmp * 1000:.0f} ms, "
            f"SNMP get + 3 IF-MIB walks {snmp * 1000:.0f} ms), exit {code}; median of {repeat}",
            flush=True,
        )
        total, icmp, _, code = measure(2)
        print(
            f"RESULT real poll, forced down on the dark address {lab.dark}: "
            f"{total * 1000:.0f} ms (fping {icmp * 1000:.0f} ms, no SNMP), exit {code}",
            flush=True,
        )
        with sim._lock:  # a bench: point device 2 at the loopback default
            sim._db.devices[2]["overwrite_ip"] = "127.0.0.50"
        total, icmp, snmp, code = measure(2)
        print(
            f"RESULT real poll, forced down on 127.0.0.50: {total * 1000:.0f} ms (fping answers "
            f"in {icmp * 1000:.0f} ms, SNMP times out after {snmp * 1000:.0f} ms with 1 s x 2 "
            f"tries; LibreNMS's 1 s x 6 would take ~6 s), exit {code}, status_reason "
            f"{sim.device(2)['status_reason']}",
            flush=True,
        )


def lab_round(workdir: Path, cpes: int, parallel: int, api_latency: float, poll: float) -> Round:
    """The recovery round against `cpes` real CPEs, port2's cable pulled on each."""
    lab = Lab(cpes, workdir=workdir / "lab")
    lab.up()
    try:
        sim = Simulator(api_latency=api_latency)
        sim.use_lab(lab, RealPoller(snmp_retries=1))
        for cpe in lab.cpes:
            lab.set_port(cpe.index, "cable_pulled")
        for cpe in lab.cpes:
            lab.set_cache_timeout(cpe.index, 0)  # the cable state at once (native: up to 3 s)
            sim.add_lab_device(cpe.index, cpe.index, forced_down=True)
            assert sim.port(cpe.index, "port2").ifOperStatus == "down"
        round_dir = workdir / "lab-round"
        round_dir.mkdir()
        return run_round(
            round_dir,
            parallel,
            cpes,
            poll,
            api_latency,
            sim=sim,
            UNSUPERVISED_IP=lab.dark,
            CHECK_REPOLL_SEC="0",
        )
    finally:
        lab.down()


def show(name: str, r: Round) -> None:
    print(
        f"RESULT {name} round P={r.parallel} N={r.devices}: {r.seconds:.1f} s "
        f"({r.seconds * r.parallel / r.devices * 1000:.0f} ms per attempt and worker, "
        f"{r.per_attempt:g} requests/attempt), daemon CPU "
        f"{r.cpu / r.devices * 1000:.1f} ms/attempt",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpes", type=int, default=50, help="CPEs in the round (default 50)")
    parser.add_argument("--parallel", type=int, default=4, help="MAX_PARALLEL (default 4)")
    parser.add_argument("--api-latency", type=float, default=0.02, help="seconds (default 0.02)")
    parser.add_argument("--quick", action="store_true", help="3 CPEs, 3 polls each (smoke test)")
    args = parser.parse_args()
    why = missing_prerequisite()
    if why is not None:
        print(f"lab_round: {why}", file=sys.stderr)
        return 2
    if args.quick:
        args.cpes, args.api_latency = 3, 0.005
    print(f"machine: {machine()}")
    print(
        f"lab round: {args.cpes} CPEs, MAX_PARALLEL {args.parallel}, API latency "
        f"{args.api_latency * 1000:g} ms (pid {os.getpid()})",
        flush=True,
    )
    for n in sorted({3, args.cpes}):
        built, removed, rss = timed_lab(n)
        print(
            f"RESULT lab of {n} CPEs: up {built:.2f} s, down {removed:.2f} s, "
            f"{rss:.1f} MiB resident per agent",
            flush=True,
        )
    poll_costs(3 if args.quick else 10)
    with tempfile.TemporaryDirectory(prefix="bench-lab-round-") as tmp:
        pretend_dir = Path(tmp) / "pretend"
        pretend_dir.mkdir()
        pretend = run_round(
            pretend_dir, args.parallel, args.cpes, 0.0, args.api_latency, CHECK_REPOLL_SEC="0"
        )
        show("pretend-poll", pretend)
        real = lab_round(Path(tmp), args.cpes, args.parallel, args.api_latency, 1.05)
        show("real-poll", real)
    extra = (real.seconds - pretend.seconds) * args.parallel / args.cpes
    print(
        f"RESULT real ICMP and SNMP cost per attempt: {extra * 1000:.0f} ms more than the pretend "
        f"poll (round {real.seconds:.1f} s vs {pretend.seconds:.1f} s); CHECK_REPOLL_SEC (default "
        "4) adds its wait and one more poll to every attempt that still reads the port down",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
