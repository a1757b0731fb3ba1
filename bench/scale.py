"""Scale: 10,000 tracked devices.

1. The state file: its size, a cold serialisation of every record, one durable commit of a few
   changed devices (a journal append: in this process, the daemon's own StateStore, median of
   --repeat) and one checkpoint of the whole file (temp file, fsync, rename, fsync the directory).
2. Start-up: the daemon (its own process) with the 10,000-device file, one of them due: time from
   spawn to the listener, and to the first API request of the recovery worker (load + first
   schedule); resident memory once started and after the checkpoint thread warmed its cache.
   Then the same file with a journal of --journal-lines lines beside it (what a kill -9 during a
   long storm would leave, were checkpoints failing): spawn to the listener (goal: under 2 s).
3. Idle: the daemon's CPU over --idle seconds with nothing due (goal: under 1% of a core).
4. Ingest with the devices already tracked: bench/ingest.py's storm against this daemon and the
   bare server (goal: >= 25% of the bare server's throughput).

Usage: .venv/bin/python bench/scale.py [--devices 10000] [--journal-lines 100000] [--idle 20]
       [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HOST,
    cpu_seconds,
    machine,
    median,
    percentile,
    rss_mib,
    seed_state,
    start_daemon,
    stopping,
    verdict,
)
from ingest import GOAL_P99_MARGIN_MS, GOAL_RATIO_PRELOADED, bare_run, daemon_run

from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.times import from_iso
from alert_handler.sim.simulator import Simulator
from alert_handler.store import wal as journal
from alert_handler.store.codec import record_to_json, snapshot_to_json
from alert_handler.store.files import load_state, write_atomic
from alert_handler.store.state import StateStore

GOAL_IDLE_CPU = 0.01
GOAL_STARTUP = 2.0


def state_file_figures(workdir: Path, devices: int, repeat: int) -> None:
    """Size, load time, cold serialisation, commit and checkpoint time of a `devices`-device
    state file."""
    path = workdir / "device_state.json"
    now = time.time()
    size = seed_state(path, range(1, devices + 1), phase=Phase.DOWN, next_attempt_at=now, now=now)
    started = time.perf_counter()
    snapshot = load_state(path, now).snapshot
    load_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    fragments = [(d, record_to_json(r)) for d, r in sorted(snapshot.devices.items())]
    text = snapshot_to_json(fragments, False, 0)
    cold_ms = (time.perf_counter() - started) * 1000
    checkpoints = []
    for _ in range(max(3, repeat // 4)):
        started = time.perf_counter()
        write_atomic(path, text)
        checkpoints.append((time.perf_counter() - started) * 1000)
    writes: list[float] = []
    store = StateStore(path, snapshot, on_write=lambda seconds, size: writes.append(seconds))
    store.start()
    commits: dict[int, list[float]] = {1: [], 16: []}
    try:
        for changed, times in commits.items():
            for n in range(repeat):
                version = 0
                started = time.perf_counter()
                for device_id in range(1 + n * changed, 1 + (n + 1) * changed):
                    version = store.put(DeviceRecord(device_id=device_id, first_seen=now))
                store.wait_durable(version, 60)
                times.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)  # one commit at a time, not a group
    finally:
        store.close()
    print(
        f"RESULT state file: {devices} devices, {size / 1e6:.2f} MB; load {load_ms:.0f} ms; "
        f"serialise every record {cold_ms:.0f} ms; checkpoint (temp file, fsync, rename, fsync "
        f"dir) median {median(checkpoints):.1f} ms"
    )
    for changed, times in commits.items():
        print(
            f"RESULT state commit of {changed} changed device(s), durable (journal append + "
            f"fdatasync): median {median(times):.2f} ms, p90 {percentile(times, 90):.2f} ms "
            f"over {repeat}"
        )


def startup_with_journal(workdir: Path, devices: int, lines: int) -> float:
    """Spawn to listening with `devices` in the state file and `lines` journal lines after its
    checkpoint (each a whole record of one of the devices); returns seconds."""
    now = time.time()
    path = workdir / "device_state.json"
    seed_state(path, range(1, devices + 1), phase=Phase.DOWN, next_attempt_at=now + 3600, now=now)
    with journal.journal_path(path).open("wb") as out:
        for seq in range(1, lines + 1):
            device_id = (seq * 7919) % devices + 1
            rec = DeviceRecord(
                device_id=device_id,
                phase=Phase.DOWN,
                hostname=f"cpe-{device_id:05d}.example.net",
                original_recorded=True,
                port_id=2 * device_id,
                first_seen=now - 600,
                next_attempt_at=now + 3600,
                forced_down_at=now - 600,
                last_alert=now,
                alerts=seq,
                last_rule="Port2 down",
                last_ip="192.0.2.1",
            )
            out.write(journal.put_line(seq, device_id, record_to_json(rec)))
    size = journal.journal_path(path).stat().st_size
    sim = Simulator()
    sim.start(HOST, 0)
    try:
        spawned = time.monotonic()
        daemon = start_daemon(workdir, sim.url, RECOVERY_INTERVAL_SEC="3600")
        with stopping(daemon):
            listening = _first_line_time(daemon.child.log_path, "listening on") - spawned
    finally:
        sim.stop()
    met = verdict(listening < GOAL_STARTUP)
    print(
        f"RESULT start-up with {devices} devices and a journal of {lines} lines "
        f"({size / 1e6:.0f} MB): listening after {listening:.2f} s (goal < {GOAL_STARTUP:.0f} s: "
        f"{met})"
    )
    return listening


def startup_and_idle(
    workdir: Path, devices: int, idle: float, settle: float
) -> tuple[float, float]:
    """Start the daemon on `devices` tracked devices (device 1 due now); returns idle CPU share
    and RSS after warm-up."""
    sim = Simulator()
    sim.add_device(1, "cpe-00001.example.net", overwrite_ip="127.0.0.50")
    sim.start(HOST, 0)
    try:
        now = time.time()
        path = workdir / "device_state.json"
        seed_state(
            path, range(2, devices + 1), phase=Phase.DOWN, next_attempt_at=now + 3600, now=now
        )
        # Device 1 is due now: the worker's first request for it ends "load + first schedule".
        text = path.read_text()
        seed_state(workdir / "one.json", [1], phase=Phase.DOWN, next_attempt_at=now, now=now)
        one = (workdir / "one.json").read_text()
        line = one.split("\n")[1]
        path.write_text(text.replace('"devices": {\n', '"devices": {\n' + line + ",\n", 1))
        spawned = time.monotonic()
        daemon = start_daemon(workdir, sim.url, RECOVERY_INTERVAL_SEC="3600")
        with stopping(daemon):
            listening = _first_line_time(daemon.child.log_path, "listening on") - spawned
            first = _first_request(sim, "/devices/1") - spawned
            rss_start = rss_mib(daemon.child.pid)
            time.sleep(settle)  # the checkpoint thread warms its cache; device 1 is attempted
            rss = rss_mib(daemon.child.pid)
            cpu_before = cpu_seconds(daemon.child.pid)
            time.sleep(idle)
            share = (cpu_seconds(daemon.child.pid) - cpu_before) / idle
    finally:
        sim.stop()
    print(
        f"RESULT start-up with {devices} devices: listening after {listening:.2f} s, first "
        f"recovery request after {first:.2f} s (process start, load, first schedule)"
    )
    print(f"RESULT resident memory: {rss_start:.0f} MiB at start, {rss:.0f} MiB warmed up")
    print(
        f"RESULT idle CPU over {idle:g} s: {share * 100:.2f}% of a core "
        f"(goal < {GOAL_IDLE_CPU * 100:.0f}%: {verdict(share < GOAL_IDLE_CPU)})"
    )
    return share, rss


def _first_request(sim: Simulator, path: str, timeout: float = 60.0) -> float:
    """When the simulator first saw a request for `path` (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in sim.requests:
            if request.path == path:
                return request.time
        time.sleep(0.01)
    raise RuntimeError(f"no request for {path} within {timeout}s")


def _first_line_time(log_path: Path, needle: str) -> float:
    """When `needle` first appeared in the log (monotonic), read from the line's ISO time."""
    for line in log_path.read_text().splitlines():
        if needle in line:
            wall = from_iso(line.split(" ", 1)[0])
            assert wall is not None
            return time.monotonic() - (time.time() - wall)
    raise RuntimeError(f"{needle!r} not in {log_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured")
    parser.add_argument("--runs", type=int, default=3, help="ingest runs of each server")
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=20, help="commits timed")
    parser.add_argument("--journal-lines", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20 devices, 50 alerts, 2 s idle")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.idle, args.runs, args.alerts, args.repeat = 20, 2.0, 1, 50, 3
        args.journal_lines = 100

    print(f"machine: {machine()}")
    print(f"scale: {args.devices} tracked devices")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        for name in ("file", "startup", "journal", "ingest"):
            (root / name).mkdir()
        state_file_figures(root / "file", args.devices, args.repeat)
        startup_and_idle(root / "startup", args.devices, args.idle, 0.5 if args.quick else 3.0)
        startup_with_journal(root / "journal", args.devices, args.journal_lines)
        daemon_rates, bare_rates, p99s, bare_p99s = [], [], [], []
        for n in range(1, args.runs + 1):
            workdir = root / "ingest" / f"daemon-{n}"
            workdir.mkdir()
            run = daemon_run(workdir, args.alerts, 16, args.devices, 0.02)
            daemon_rates.append(run.load.rate)
            p99s.append(percentile([x * 1000 for x in run.load.latencies], 99))
            write_ms = 1000 * run.write_seconds / run.writes if run.writes else float("nan")
            print(
                f"ingest daemon run {n}: {run.load.line()}  in state file "
                f"{run.in_file}/{args.alerts}  {run.writes:.0f} writes of {write_ms:.1f} ms",
                flush=True,
            )
            workdir = root / "ingest" / f"bare-{n}"
            workdir.mkdir()
            bare = bare_run(workdir, args.alerts, 16)
            bare_rates.append(bare.load.rate)
            bare_p99s.append(percentile([x * 1000 for x in bare.load.latencies], 99))
            print(f"ingest bare   run {n}: {bare.line()}", flush=True)
    ratio = median(daemon_rates) / median(bare_rates)
    print(
        f"RESULT ingest with {args.devices} tracked: daemon {median(daemon_rates):.0f} alerts/s, "
        f"bare {median(bare_rates):.0f} alerts/s, ratio {ratio:.2f} "
        f"(goal >= {GOAL_RATIO_PRELOADED:.2f}: {verdict(ratio >= GOAL_RATIO_PRELOADED)}); "
        f"p99 {median(p99s):.1f} ms, bare {median(bare_p99s):.1f} ms (the storm's goal: within "
        f"{GOAL_P99_MARGIN_MS:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
