"""The load generator, in a process of its own: a small C client (bench/loadgen.c, compiled at run
time where `cc` exists) or, without a compiler, this file run as a script (the same client in
Python threads). Either way the load does not share a process, or a GIL, with what it measures.

`run_load(port, first, alerts, clients)` sends the alerts and returns a `common.LoadResult`.
Each alert is a new TCP connection, the next one sent only after the previous reply, as
LibreNMS's alert runner does; `clients=1` is LibreNMS's sequential alert run.

Usage as a script: python bench/loadgen.py HOST PORT FIRST ALERTS CLIENTS TOKEN
"""

from __future__ import annotations

import functools
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HOST, WEBHOOK_TOKEN, LoadResult, _read_reply, alert_request

_SOURCE = Path(__file__).resolve().with_name("loadgen.c")
_PYTHON = [sys.executable, str(Path(__file__).resolve())]
_forced_python = False


def force_python_client() -> None:
    """Use the Python client even where `cc` exists (--python-client: keeps it from rotting)."""
    global _forced_python
    _forced_python = True


def client_command() -> list[str]:
    """The C client (compiled once per run), or the Python one."""
    return _PYTHON if _forced_python else _c_client()


@functools.cache
def _c_client() -> list[str]:
    """The C client, compiled into a temporary directory; the Python one without `cc` (or if
    compiling fails)."""
    cc = shutil.which("cc")
    if cc is not None:
        binary = Path(tempfile.mkdtemp(prefix="bench-loadgen-")) / "loadgen"
        built = subprocess.run(
            [cc, "-O2", "-Wall", "-pthread", "-o", str(binary), str(_SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode == 0:
            return [str(binary)]
        print(f"loadgen: cc failed, using the Python client:\n{built.stderr}", file=sys.stderr)
    return _PYTHON


def client_kind() -> str:
    """Which client runs the load."""
    return "C client" if client_command()[0].endswith("/loadgen") else "Python client"


def run_load(
    port: int, first: int, alerts: int, clients: int, token: str = WEBHOOK_TOKEN
) -> LoadResult:
    """Send `alerts` alerts for devices first... from `clients` connections in another process."""
    argv = [*client_command(), HOST, str(port), str(first), str(alerts), str(clients), token]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    result = LoadResult(sent=alerts, elapsed=0.0)
    for line in done.stdout.splitlines():
        fields = line.split()
        if fields[0] == "elapsed":
            result.elapsed = float(fields[1])
            continue
        device, status, micros = (int(f) for f in fields)
        if status == 0:
            result.errors["connection"] += 1
            continue
        result.statuses[status] += 1
        if 200 <= status < 300:
            result.latencies.append(micros / 1e6)
            result.acked.add(device)
    return result


def _python_client(host: str, port: int, first: int, alerts: int, clients: int, token: str) -> int:
    """The C client's behaviour and output, in Python threads."""
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for device in range(first, first + alerts):
        work.put(device)
    lines: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        mine: list[str] = []
        while True:
            try:
                device = work.get_nowait()
            except queue.Empty:
                break
            payload = alert_request(device, port, token)
            began = time.perf_counter()
            try:
                with socket.create_connection((host, port), timeout=35) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.sendall(payload)
                    status = _read_reply(sock)
            except OSError:
                status = 0
            mine.append(f"{device} {status} {int((time.perf_counter() - began) * 1e6)}")
        with lock:
            lines.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    print("\n".join([*lines, f"elapsed {elapsed:.6f}"]))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print("usage: loadgen.py HOST PORT FIRST ALERTS CLIENTS TOKEN", file=sys.stderr)
        return 2
    host, port, first, alerts, clients, token = argv
    return _python_client(host, int(port), int(first), int(alerts), int(clients), token)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
