"""One lease in Redis decides which daemon changes LibreNMS; the others are standbys.

- **Taken** atomically with `SET key instance NX PX lease`: one daemon gets it.
- **Renewed** every `renew` seconds with a compare-and-extend script (PEXPIRE only while the key
  still holds this instance's name), so a lease that expired and was taken by another daemon is
  never extended. LibreNMS's own dispatcher lock re-acquires with a GET then a SET, a race; this
  does not.
- **Released** (compare-and-delete) on a clean stop, so a standby takes over at its next try.
- **Fenced:** the holder may write to LibreNMS only before its *deadline*: the monotonic time
  the last successful SET or extend was *sent*, plus the lease, minus a margin (a fifth of the
  lease). Redis starts the lease's clock when it receives the command, after it was sent, so the
  deadline always falls before Redis lets the key go; `refusal()` is checked right before every
  write. A process paused past its lease (SIGSTOP, a frozen VM whose monotonic clock runs on)
  finds its deadline passed when it wakes and writes nothing.
- **A Redis that restarted empty** has forgotten the lease while the old holder may trust it
  until its deadline, at most one lease after the restart. So a holder writes only once it has
  known the Redis (its `run_id`, from INFO) for a whole lease: a standby that has watched the
  same Redis for longer takes over at once; a daemon that just started, or that sees a new
  `run_id`, waits out the rest of one lease first. Where INFO is refused, every acquisition
  waits a whole lease.

`redis` (redis-py) is imported only by `connect`, i.e. only when HA_REDIS_URL is set.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from alert_handler.config.ha_kinds import SENTINEL, margin, sentinel_url
from alert_handler.config.table import Config
from alert_handler.core.facts import PollError, PollResult

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# KEYS[1] the lease; ARGV[1] this instance; ARGV[2] the lease in ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Role(str, Enum):
    """What this daemon is in the group sharing the lease."""

    HOLDER = "holder"  # changes LibreNMS
    STANDBY = "standby"  # answers alerts, changes nothing


class Transition(str, Enum):
    """A change of role, as the events, metrics and log name it."""

    ACQUIRED = "acquired"
    LOST = "lost"
    RELEASED = "released"


OnChange = Callable[[Transition, str], None]  # (transition, why), from the renewal thread


def default_instance() -> str:
    """hostname:pid, which tells two daemons apart even on one host."""
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(url: str, renew: float) -> redis.Redis:
    """A redis-py client for HA_REDIS_URL (through Sentinel for redis+sentinel://: the master
    it names now, found again after a failover); each call times out well within a renewal."""
    import redis as redis_py  # only with HA_REDIS_URL: without it nothing needs Redis

    timeout = max(0.2, min(2.0, renew / 2))
    if url.startswith(SENTINEL + "://"):
        from redis.sentinel import Sentinel

        where = sentinel_url("HA_REDIS_URL", url)
        sentinel = Sentinel(
            list(where.sentinels), socket_timeout=timeout, socket_connect_timeout=timeout
        )
        master: redis.Redis = sentinel.master_for(
            where.service,
            db=where.db,
            username=where.username,
            password=where.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        return master
    client: redis.Redis = redis_py.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        decode_responses=True,
    )
    return client


class Lease:
    """The lease and its renewal thread; `refusal()` is the fence every write checks."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key: str,
        instance: str,
        lease: float,
        renew: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: OnChange | None = None,
        on_fenced: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.instance = instance
        self.lease = lease
        self.renew = renew
        self.margin = margin(lease)
        self._clock = clock
        self.on_change = on_change
        self._on_fenced = on_fenced
        # Each round's outcome: (None: Redis answered; else why not), for /health.
        self.on_redis: Callable[[str | None], None] | None = None
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._lock = threading.Lock()
        self._held = False
        self._deadline = 0.0  # monotonic; writes stop here
        self._quiet_until = 0.0  # monotonic; no write before (a Redis new to us)
        self._run_id: str | None = None
        self._run_id_since = 0.0  # monotonic: since when this run_id has been seen
        self._holder: str | None = None  # who holds it, as last read
        self._error: str | None = None  # the last Redis error, None once a call works
        self.fenced = 0  # writes refused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the fence ---------------------------------------------------------------------------
    def _why_not(self, now: float) -> str | None:
        if not self._held:
            return "this daemon does not hold the HA lease (standby)"
        if now >= self._deadline:
            return "the HA lease could not be renewed before its deadline"
        if now < self._quiet_until:
            left = self._quiet_until - now
            return f"waiting out one lease on a Redis new to this daemon ({left:.1f} s left)"
        return None

    def may_write(self) -> bool:
        """Whether this daemon may change LibreNMS now (not counted: for schedulers)."""
        now = self._clock()
        with self._lock:
            return self._why_not(now) is None

    def refusal(self, what: str = "write") -> str | None:
        """None if `what` may be sent now; else why not, and the refusal is counted. Call it
        right before sending."""
        now = self._clock()
        with self._lock:
            why = self._why_not(now)
            if why is None:
                return None
            self.fenced += 1
        if self._on_fenced is not None:
            self._on_fenced(what)
        return why

    # -- reading -----------------------------------------------------------------------------
    @property
    def role(self) -> Role:
        """HOLDER while the lease is held and its deadline not passed."""
        now = self._clock()
        with self._lock:
            return Role.HOLDER if self._held and now < self._deadline else Role.STANDBY

    def status(self) -> dict[str, Any]:
        """What /health, `status` and the page show."""
        now = self._clock()
        with self._lock:
            held = self._held and now < self._deadline
            return {
                "role": (Role.HOLDER if held else Role.STANDBY).value,
                "instance": self.instance,
                "holder": self.instance if held else self._holder,
                "may_write": self._why_not(now) is None,
                "deadline_in_sec": round(self._deadline - now, 1) if held else None,
                "quiet_for_sec": round(self._quiet_until - now, 1)
                if held and now < self._quiet_until
                else None,
                "lease_sec": self.lease,
                "renew_sec": self.renew,
                "redis": "ok" if self._error is None else self._error,
                # How long this daemon has known this Redis (its run_id): a whole lease, and it
                # writes at once on taking the lease.
                "redis_known_sec": None
                if self._run_id is None
                else round(now - self._run_id_since, 1),
                "fenced_writes": self.fenced,
            }

    # -- one round ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Renew (holder) or try to take (standby) the lease once; never raises for Redis."""
        import redis as redis_py

        try:
            if self._held:
                self._renew_once()
            else:
                self._take_once()
            self._observe_run_id()
            with self._lock:
                self._error = None
            if self.on_redis is not None:
                self.on_redis(None)
        except redis_py.RedisError as exc:
            why = f"Redis: {type(exc).__name__}: {exc}"[:200]
            with self._lock:
                changed = self._error != why
                self._error = why
                expired = self._held and self._clock() >= self._deadline
            if changed:
                log.warning("step=ha %s", why)
            if self.on_redis is not None:
                self.on_redis(why)
            if expired:
                self._lose(f"Redis could not be reached before the deadline ({why})")

    def _renew_once(self) -> None:
        sent = self._clock()
        done = self._extend(keys=[self.key], args=[self.instance, int(self.lease * 1000)])
        if done == 1:
            with self._lock:
                self._deadline = sent + self.lease - self.margin
            return
        self._lose("the lease expired in Redis (or Redis restarted empty) before it was renewed")

    def _take_once(self) -> None:
        sent = self._clock()
        lease_ms = int(self.lease * 1000)
        taken = bool(self.client.set(self.key, self.instance, nx=True, px=lease_ms))
        if not taken:
            holder = self.client.get(self.key)
            if holder != self.instance:
                with self._lock:
                    self._holder = None if holder is None else str(holder)
                return
            # Our own SET whose answer was lost: extend it, timed from this send.
            sent = self._clock()
            if self._extend(keys=[self.key], args=[self.instance, lease_ms]) != 1:
                return
        self._observe_run_id()
        with self._lock:
            self._held = True
            self._holder = self.instance
            self._deadline = sent + self.lease - self.margin
            known = self._run_id is not None
            self._quiet_until = self._run_id_since + self.lease if known else sent + self.lease
            wait = max(0.0, self._quiet_until - self._clock())
        why = (
            f"first write in {wait:.1f} s (waiting out one lease on a Redis new to this daemon)"
            if wait > 0
            else "writing at once"
        )
        log.warning("step=ha lease acquired by %s: %s", self.instance, why)
        if self.on_change is not None:
            self.on_change(Transition.ACQUIRED, why)

    def _observe_run_id(self) -> None:
        import redis as redis_py

        try:
            info = self.client.info("server")
            run_id = str(info.get("run_id") or "") or None
        except redis_py.ResponseError:
            run_id = None  # INFO refused (a managed Redis): every acquisition waits a lease
        now = self._clock()
        with self._lock:
            if run_id != self._run_id or run_id is None:
                if run_id is not None and self._run_id is not None:
                    log.warning(
                        "step=ha Redis is a new one (its run_id changed: a restart or a failover)"
                    )
                self._run_id = run_id
                self._run_id_since = now

    def _lose(self, why: str) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
            self._holder = None
        log.error("step=ha lease lost by %s: %s; standing by", self.instance, why)
        if self.on_change is not None:
            self.on_change(Transition.LOST, why)

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the renewal thread (its first round runs at once)."""
        self._thread = threading.Thread(target=self._run, name="ha-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("step=ha unexpected error")
            if self._stop.wait(self.renew):
                return

    def stop(self) -> None:
        """Stop renewing and release the lease if held (compare-and-delete)."""
        import redis as redis_py

        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.renew + 5.0)
        with self._lock:
            held, self._held = self._held, False
            self._deadline = 0.0
        if not held:
            return
        try:
            self._release(keys=[self.key], args=[self.instance])
        except redis_py.RedisError as exc:
            log.warning("step=ha could not release the lease (it expires by itself): %s", exc)
            return
        log.info("step=ha lease released by %s", self.instance)
        if self.on_change is not None:
            self.on_change(Transition.RELEASED, "clean stop")

    def close(self) -> None:
        """Close the Redis connections."""
        self.client.close()


class FencedPoller:
    """A poller whose polls run only while the lease allows writes: a poll makes LibreNMS
    change the device's row, so it is a write like a PATCH."""

    def __init__(self, inner: Any, lease: Lease) -> None:
        self._inner = inner
        self._lease = lease

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        """The inner poll, unless the fence refuses it (PollError: the step fails)."""
        why = self._lease.refusal("poll")
        if why is not None:
            raise PollError(f"poll refused by fencing: {why}")
        result: PollResult = self._inner.poll(device_id, poller_group)
        return result

    def check(self) -> str:
        """The inner poller's check."""
        return str(self._inner.check())

    def close(self) -> None:
        """Close the inner poller."""
        self._inner.close()

    def labels(self) -> list[str]:
        """The inner poller's metric labels."""
        return list(self._inner.labels())


def ha_checks(cfg: Config) -> list[tuple[bool, str]]:
    """`check`'s lines for HA_REDIS_URL: Redis answers, and who holds the lease (no password
    or URL is printed: only the host and port)."""
    if cfg.ha_redis_url is None:
        return []
    import redis as redis_py

    instance = cfg.ha_instance or "hostname:pid"
    client = connect(cfg.ha_redis_url, cfg.ha_renew_sec)
    try:
        info = client.info("server")
        holder = client.get(cfg.ha_lease_key)
        left = client.pttl(cfg.ha_lease_key)
    except redis_py.RedisError as exc:
        return [(False, f"HA: Redis cannot be used: {type(exc).__name__}: {exc}"[:300])]
    finally:
        client.close()
    version = info.get("redis_version", "?")
    lease = (
        f"lease {cfg.ha_lease_key} is free: the first daemon to start takes it"
        if holder is None
        else f"lease {cfg.ha_lease_key} held by {holder!s} ({max(0, int(left)) / 1000:.1f} s left)"
    )
    return [(True, f"HA: Redis {version} answers; {lease}; this daemon would be {instance}")]


def lease_holder(cfg: Config) -> tuple[str | None, str | None]:
    """(who holds the HA lease now, why Redis could not be asked): (None, None) without
    HA_REDIS_URL or when the lease is free. For commands that must not act behind a holder."""
    if cfg.ha_redis_url is None:
        return None, None
    import redis as redis_py

    client = connect(cfg.ha_redis_url, cfg.ha_renew_sec)
    try:
        holder = client.get(cfg.ha_lease_key)
    except redis_py.RedisError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        client.close()
    return (None if holder is None else f"{holder!s}"), None
