"""A real redis-server on a free loopback port, for the HA lease's tests.

`RedisServer(workdir).start()` runs `redis-server --port N --save '' --appendonly no --dir
workdir` (no persistence: a restart comes back empty, like a Redis that lost its data) and waits
until it answers PING; `stop()` kills it; `restart()` stops and starts it on the same port. A
Debian system redis service started by the package is not used. A missing redis-server FAILS
the test (`.ci/run` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, spawn, stop_process, wait_for


def _launch(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A server process writing to `log_path`, killed when the test ends even if it fails (the
    wait for it to answer may fail before any `finally` of the test's is reached)."""
    with log_path.open("ab") as log:
        return spawn(args, stdout=log, stderr=subprocess.STDOUT)


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL and reap (nothing to save)."""
    if proc is not None:
        stop_process(proc)


class RedisServer:
    """One redis-server process on 127.0.0.1."""

    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        """`extra`: more redis-server arguments (e.g. --replicaof HOST PORT)."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = extra

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING."""
        self.proc = _launch(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--protected-mode", "yes",
                *self.extra,
            ],
            self.workdir / "redis.log",
        )  # fmt: skip
        wait_for(self._answers, 20, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"redis-server exited {self.proc.returncode}: {self.output()}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        """A fresh client (decoded strings)."""
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)

    def output(self) -> str:
        """redis-server's log."""
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Kill it (SIGKILL: nothing is saved anyway) and reap it."""
        _kill(self.proc)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port: it comes back empty with a new run_id."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:  # the port may linger a moment
            try:
                self.start()
                return
            except pytest.fail.Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A started redis-server, killed when the block ends (even when the test fails)."""
    server = RedisServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()


class SentinelServer:
    """One Redis Sentinel (redis-server --sentinel) watching `master` as `service`."""

    def __init__(
        self, workdir: Path, master: RedisServer, service: str = "mymaster", down_ms: int = 30000
    ) -> None:
        """`down_ms`: how long the master must not answer before a failover."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.master = master
        self.service = service
        self.down_ms = down_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{service}/0"

    def start(self) -> SentinelServer:
        """Start it and wait until it names the master."""
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites its configuration file
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_ms}\n"
            f"sentinel failover-timeout {self.service} 5000\n"
        )
        self.proc = _launch([self.master.binary, str(conf), "--sentinel"], conf.with_suffix(".log"))
        wait_for(self._names_master, 20, f"redis sentinel on port {self.port}")
        return self

    def _names_master(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"redis sentinel exited {self.proc.returncode}")
        try:
            with redis.Redis(port=self.port, socket_timeout=2, decode_responses=True) as client:
                found = client.sentinel_get_master_addr_by_name(self.service)
        except redis.RedisError:
            return False
        return bool(found) and int(found[1]) == self.master.port

    def stop(self) -> None:
        """Kill it and reap it."""
        _kill(self.proc)
        self.proc = None
