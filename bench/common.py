"""Shared parts of the benchmarks: child processes, a seeded state file, requests, results, stats.

Every server a benchmark measures runs in its own process, apart from the load generator:
the daemon is the installed `alert-handler serve` with a .env file; the LibreNMS simulator and
the bare baseline server are this file run as a script (`python bench/common.py sim|bare ...`).
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alert_handler.core.records import DeviceRecord, Phase  # noqa: E402
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator  # noqa: E402
from alert_handler.store.codec import record_to_json, snapshot_to_json  # noqa: E402
from alert_handler.store.files import read_state, write_atomic  # noqa: E402

WEBHOOK_TOKEN = "bench-webhook-token-0123456789"
HOST = "127.0.0.1"
_READY_TIMEOUT = 60.0
_ID = re.compile(r"/\d+(?=/|$)")


# -- the machine ------------------------------------------------------------------------------
def machine() -> str:
    """One line describing where the figures were taken."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, load average {load:.2f}"
    )


# -- statistics -------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    """The median, NaN for no values."""
    items = list(values)
    return statistics.median(items) if items else float("nan")


def verdict(ok: bool) -> str:
    """'met' or 'NOT MET'."""
    return "met" if ok else "NOT MET"


# -- child processes --------------------------------------------------------------------------
class Child:
    """A process this benchmark started; its stdout and stderr go to a file."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
        env["PYTHONPATH"] = str(ROOT)
        env.update(settings or {})
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def output(self) -> str:
        """Everything it wrote so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.proc.poll() is None

    def wait_for_line(self, pattern: str, timeout: float = _READY_TIMEOUT) -> re.Match[str]:
        """The first match of `pattern` in its output; RuntimeError if it exits or times out."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.output())
            if found:
                return found
            if not self.alive():
                raise RuntimeError(
                    f"{self.proc.args!r} exited {self.proc.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {pattern!r} after {timeout}s:\n{self.output()[-2000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL if it hangs; the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


def _script(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def start_sim(
    workdir: Path,
    *,
    devices: int,
    first_id: int = 1,
    port2: str = "down",
    api_latency: float = 0.0,
    poll_latency: float = 0.0,
) -> tuple[Child, str]:
    """The LibreNMS simulator in its own process, with `devices` CPEs; (child, API URL)."""
    child = Child(
        _script(
            "sim",
            f"--devices={devices}",
            f"--first-id={first_id}",
            f"--port2={port2}",
            f"--api-latency={api_latency}",
            f"--poll-latency={poll_latency}",
        ),
        workdir / "sim.log",
    )
    return child, child.wait_for_line(r"(http://\S+/api/v0)").group(1)


def start_bare(
    workdir: Path, *, naive: bool = False, write_each: bool = False
) -> tuple[Child, int]:
    """The baseline server in its own process; (child, port)."""
    args = ["bare"]
    if naive:
        args.append("--naive")
    if write_each:
        args.append(f"--write-each={workdir / 'bare_state.json'}")
    child = Child(_script(*args), workdir / "bare.log")
    port = child.wait_for_line(r"listening on \S+:(\d+)").group(1)
    return child, int(port)


def daemon_command() -> list[str]:
    """The installed console script, or `python -m alert_handler` from the source tree."""
    script = Path(sys.executable).with_name("alert-handler")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "alert_handler", "serve"]


@dataclass
class Daemon:
    """`alert-handler serve` in its own process."""

    child: Child
    port: int
    state_path: Path

    @property
    def url(self) -> str:
        """The listener's base URL."""
        return f"http://{HOST}:{self.port}"

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET a path of the daemon (no proxies); (status, body)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(  # noqa: S310 (always http://127.0.0.1)
            self.url + path, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        )
        try:
            with opener.open(request, timeout=timeout) as reply:
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels` (0 if absent)."""
        _, body = self.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, label_text = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        return self.child.stop()


def start_daemon(
    workdir: Path, sim_url: str, *, wait_reconcile: bool = True, **settings: str
) -> Daemon:
    """Start the daemon in `workdir`; wait until it answers and (unless told not to) its first
    reconcile pass is done."""
    state_path = workdir / "device_state.json"
    env = {
        "LIBRENMS_URL": sim_url,
        "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
        "POLL_METHOD": "local",
        "POLL_COMMAND": "true {device_id}",
        "RECOVERY_INTERVAL_SEC": "3600",
        "STATE_FILE": str(state_path),
        "LOG_FILE": str(workdir / "alert_handler.log"),
        "LISTEN_HOST": HOST,
        "LISTEN_PORT": "0",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "RECONCILE_INTERVAL_SEC": "86400",
        "CONFIRM_ABOVE": "0",  # a storm is the point here: no person to confirm it
        "STOP_TIMEOUT_SEC": "10",
        "CHECK_REPOLL_SEC": "0",  # the table simulator has no agent cache: one read per check
    }
    env.update(settings)
    # Passed in the environment (which `alert-handler` reads like a .env file) so that no value
    # needs .env quoting.
    child = Child(daemon_command(), workdir / "daemon.stdio.log", cwd=workdir, settings=env)
    try:
        port = int(child.wait_for_line(r"listening on \S+:(\d+)").group(1))
        daemon = Daemon(child, port, state_path)
        deadline = time.monotonic() + _READY_TIMEOUT
        # The first reconcile pass (GET /devices, GET /alerts) runs at start: let it finish
        # so that it is not measured as part of the load.
        while (
            wait_reconcile
            and daemon.metric("alert_handler_librenms_requests_total", endpoint="GET /alerts") < 1
        ):
            if time.monotonic() > deadline or not child.alive():
                raise RuntimeError(f"daemon not ready:\n{child.output()[-2000:]}")
            time.sleep(0.05)
    except BaseException:
        child.stop()
        raise
    return daemon


# -- process figures --------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- profiles ---------------------------------------------------------------------------------
def py_spy() -> str | None:
    """The py-spy executable (pip install py-spy, the `bench` extra), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pid: int, out: Path | None) -> Iterator[None]:
    """Sample `pid` with py-spy (only threads holding the GIL) into `out` while the block runs,
    then print the functions that held the GIL most; does nothing when `out` is None."""
    if out is None:
        yield
        return
    exe = py_spy()
    if exe is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    argv = [exe, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "200", "--gil"]
    quiet = subprocess.DEVNULL
    spy = subprocess.Popen([*argv, "--nonblocking"], stdout=quiet, stderr=quiet)
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    print(profile_summary(out))


def profile_summary(path: Path, top: int = 15) -> str:
    """The `top` frames by samples that include them, from a py-spy raw (collapsed) file."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, text = line.rpartition(" ")
        if not text.isdigit():
            continue
        samples = int(text)
        total += samples
        frames = {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")[1:]}
        for frame in frames:
            if "alert_handler/" in frame:
                inclusive[frame] += samples
    lines = [f"profile {path}: {total} samples with the GIL held; alert_handler frames:"]
    for frame, samples in inclusive.most_common(top):
        lines.append(f"  {100 * samples / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


# -- state files ------------------------------------------------------------------------------
def seed_state(
    path: Path, device_ids: Iterable[int], *, phase: Phase, next_attempt_at: float, now: float
) -> int:
    """Write a state file of tracked devices forced down earlier; returns its size in bytes."""
    fragments = []
    for device_id in device_ids:
        rec = DeviceRecord(
            device_id=device_id,
            phase=phase,
            hostname=f"cpe-{device_id:05d}.example.net",
            original_recorded=True,
            original_overwrite_ip=None,
            port_id=2 * device_id,
            first_seen=now - 600,
            next_attempt_at=next_attempt_at,
            forced_down_at=now - 600 if phase is not Phase.NEW else None,
            last_alert=now - 600,
            last_rule="Port2 down",
            last_ip="192.0.2.1",
        )
        fragments.append((device_id, record_to_json(rec)))
    text = snapshot_to_json(sorted(fragments), paused=False)
    write_atomic(path, text)
    return len(text.encode())


def devices_in_file(path: Path) -> set[int]:
    """The device ids on disk now, as a restart (or `alert-handler status` without a daemon)
    reads them: the state file with its journal replayed."""
    return set(read_state(path, time.time()).devices)


# -- the load generator -----------------------------------------------------------------------
def alert_request(device_id: int, port: int, token: str | None = WEBHOOK_TOKEN) -> bytes:
    """One POST /alert as LibreNMS's API transport sends it (text/plain body, one connection)."""
    body = (
        f'{{"device_id": {device_id}, "host": "cpe-{device_id:05d}.example.net", '
        f'"ip": "192.0.2.1", "state": 1, "rule": "Port2 down", "uid": {device_id}}}'
    ).encode()
    head = [
        "POST /alert HTTP/1.1",
        f"Host: {HOST}:{port}",
        "User-Agent: GuzzleHttp/7",
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _read_reply(sock: socket.socket) -> int:
    """Read one HTTP reply (up to Content-Length or EOF); its status code (the Python load
    client's, bench/loadgen.py)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the reply's headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            if length is None:
                break
            raise ConnectionError("connection closed mid-body")
        body += chunk
    return status


@dataclass
class LoadResult:
    """What one load run saw."""

    sent: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)  # seconds, 2xx replies only
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    slow_connects: int = 0  # connect() took over 0.5 s: a SYN was dropped and retried
    acked: set[int] = field(default_factory=set)

    @property
    def ok(self) -> int:
        """2xx replies."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        """Acknowledged alerts per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else float("nan")

    @property
    def failed(self) -> int:
        """Alerts not acknowledged: connection errors plus non-2xx replies."""
        return self.sent - self.ok

    def line(self) -> str:
        """One line of figures."""
        ms = [x * 1000 for x in self.latencies]
        bad = {s: n for s, n in self.statuses.items() if not 200 <= s < 300}
        return (
            f"{self.rate:7.0f} alerts/s  p50 {percentile(ms, 50):6.1f} ms  "
            f"p99 {percentile(ms, 99):6.1f} ms  max {max(ms, default=float('nan')):7.1f} ms  "
            f"conn errors {sum(self.errors.values())}  non-2xx {sum(bad.values())}  "
            f"slow connects {self.slow_connects}"
        )


# -- the children's side ----------------------------------------------------------------------
class _BareHandler(BaseHTTPRequestHandler):
    """Answers every POST with 202 in one send and does nothing else."""

    protocol_version = "HTTP/1.0"
    server: _BareServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.server.write_each is not None:
            self.server.remember(body)
        payload = b'{"status": "accepted"}'
        if self.server.naive:
            # What http.server does by default: headers in one send, the body in another.
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.wfile.write(
            b"HTTP/1.0 202 Accepted\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(payload), payload)
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _BareServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, naive: bool, write_each: Path | None) -> None:
        self.naive = naive
        self.write_each = write_each
        self._seen: dict[str, Any] = {}
        self._lock = threading.Lock()
        if not naive:
            self.request_queue_size = 1024
        super().__init__((HOST, 0), _BareHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if not self.naive:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def remember(self, body: bytes) -> None:
        """The original script's way: rewrite the whole file, one fsync per alert."""
        assert self.write_each is not None
        alert = json.loads(body)
        with self._lock:
            self._seen[str(alert["device_id"])] = alert
            write_atomic(self.write_each, json.dumps(self._seen, indent=2))


def _serve_until_signal(start: Any, stop: Any) -> int:
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def record(signum: int, frame: FrameType | None) -> None:
        signals.put(signum)

    for which in (signal.SIGTERM, signal.SIGINT):
        signal.signal(which, record)
    start()
    signals.get()
    stop()
    return 0


def _bare_main(args: argparse.Namespace) -> int:
    server = _BareServer(naive=args.naive, write_each=args.write_each)
    thread = threading.Thread(target=server.serve_forever, daemon=True)

    def start() -> None:
        thread.start()
        print(f"listening on {HOST}:{server.server_address[1]}", flush=True)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return _serve_until_signal(start, stop)


def _sim_main(args: argparse.Namespace) -> int:
    sim = Simulator(api_latency=args.api_latency, poll_latency=args.poll_latency)
    for device_id in range(args.first_id, args.first_id + args.devices):
        sim.add_device(
            device_id,
            f"cpe-{device_id:05d}.example.net",
            ports={"ether1": "up", "port2": args.port2},
        )

    def start() -> None:
        sim.start(HOST, 0)
        print(sim.url, flush=True)

    def stop() -> None:
        sim.stop()
        print("requests: " + json.dumps(request_counts(sim)), flush=True)

    return _serve_until_signal(start, stop)


def request_counts(sim: Simulator) -> dict[str, int]:
    """How many requests the simulator answered, by method and path with ids as {id}."""
    counts: Counter[str] = Counter()
    for request in sim.requests:
        counts[f"{request.method} {_ID.sub('/{id}', request.path)}"] += 1
    return dict(counts.most_common())


def sim_request_counts(child: Child) -> dict[str, int]:
    """What a stopped `start_sim` child reported (empty if it did not)."""
    for line in child.output().splitlines():
        if line.startswith("requests: "):
            counts: dict[str, int] = json.loads(line[len("requests: ") :])
            return counts
    return {}


def url_port(url: str) -> int:
    """The port of an http://host:port/... URL."""
    port = urllib.parse.urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url}")
    return port


def open_connections(pid: int, port: int) -> int:
    """Established TCP connections process `pid` holds to 127.0.0.1:`port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """`sim` or `bare`: a server for the benchmarks, until SIGTERM."""
    parser = argparse.ArgumentParser(prog="bench/common.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="the LibreNMS simulator with N CPEs")
    sim.add_argument("--devices", type=int, default=0)
    sim.add_argument("--first-id", type=int, default=1)
    sim.add_argument("--port2", default="down")
    sim.add_argument("--api-latency", type=float, default=0.0)
    sim.add_argument("--poll-latency", type=float, default=0.0)
    bare = sub.add_parser("bare", help="a stdlib server that answers 202 and does nothing else")
    bare.add_argument("--naive", action="store_true", help="listen backlog 5, reply in two sends")
    bare.add_argument("--write-each", type=Path, help="rewrite this JSON file per alert")
    args = parser.parse_args(argv)
    return _sim_main(args) if args.command == "sim" else _bare_main(args)


class Stoppable(Protocol):
    """Anything with a stop()."""

    def stop(self) -> object: ...


@contextlib.contextmanager
def stopping(*children: Stoppable) -> Iterator[None]:
    """Stop every child on the way out, whatever happened."""
    try:
        yield
    finally:
        for child in children:
            with contextlib.suppress(Exception):
                child.stop()


if __name__ == "__main__":
    sys.exit(main())
