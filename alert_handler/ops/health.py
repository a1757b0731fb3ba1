"""How healthy the daemon is, as /health, /metrics and the log report it: ok, degraded or
critical, with the state of each dependency.

- critical (503): the recovery loop is dead or stuck, or the state file cannot be written. These
  are read live from their owners (`watch`) whenever the level is asked for.
- degraded (200): LibreNMS calls failed FAILURES_TO_DEGRADE times in a row, polls did (the
  poller host is unreachable, refuses the login, times out), or either failed with a
  configuration error (a token without rights, lnms refusing to run as root): those are fed in
  by `record_success` / `record_failure` as calls are made.
- ok otherwise.

`check()` logs each change of level once; the daemon's supervisor calls it every second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from alert_handler.core.times import iso

log = logging.getLogger(__name__)

FAILURES_TO_DEGRADE = 3  # calls in a row: one failed step (a call and its retries) is enough
LIBRENMS = "librenms"
POLLER = "poller"
STATE_FILE = "state_file"
RECOVERY_LOOP = "recovery_loop"
DEPENDENCIES = (LIBRENMS, POLLER, STATE_FILE, RECOVERY_LOOP)
REDIS = "redis"  # with HA_REDIS_URL only (add_dependency): the HA lease's Redis

Probe = Callable[[], "str | None"]  # None: fine; else what is wrong, for the operator


class Level(str, Enum):
    """The daemon's health; /health answers 503 only when critical."""

    OK = "ok"
    DEGRADED = "degraded"
    CRITICAL = "critical"


@dataclass
class _Dependency:
    """What is known of one dependency; guarded by Health's lock."""

    failures: int = 0  # in a row
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    config_errors: dict[str, str] = field(default_factory=dict)  # what -> why, until it works


@dataclass(frozen=True)
class Report:
    """The level, why, and each dependency as /health shows it."""

    level: Level
    reasons: tuple[str, ...]
    dependencies: dict[str, dict[str, Any]]


class Health:
    """The health model; thread-safe, and cheap to feed (a lock and a few assignments)."""

    def __init__(
        self, clock: Callable[[], float] = time.time, threshold: int = FAILURES_TO_DEGRADE
    ) -> None:
        self._clock = clock
        self._threshold = threshold
        self._lock = threading.Lock()
        self._deps = {name: _Dependency() for name in DEPENDENCIES}
        self._probes: dict[str, Probe] = {}
        self._logged = Level.OK  # the level the log last announced

    # -- feeding -----------------------------------------------------------------------------
    def record_success(self, dep: str, what: str | None = None) -> None:
        """A call to `dep` worked: its failures in a row end, and a configuration error of the
        same `what` (an endpoint, a command) is over."""
        now = self._clock()
        with self._lock:
            state = self._deps[dep]
            state.failures = 0
            state.last_success = now
            if state.config_errors:
                state.config_errors.pop(what or "", None)

    def record_failure(
        self, dep: str, reason: str, *, config_error: bool = False, what: str | None = None
    ) -> None:
        """A call to `dep` failed for `reason` (safe to show: no secret). A `config_error`
        degrades at once and lasts until a call of the same `what` works (retrying cannot fix
        it); other failures degrade after FAILURES_TO_DEGRADE in a row."""
        now = self._clock()
        with self._lock:
            state = self._deps[dep]
            state.failures += 1
            state.last_failure = now
            state.last_error = reason
            if config_error:
                state.config_errors[what or ""] = reason

    def observe_librenms(self, endpoint: str, status: str, seconds: float) -> None:
        """The LibreNMS client's observe hook: (endpoint, HTTP status or `error`, seconds)."""
        if status == "error":
            self.record_failure(LIBRENMS, f"{endpoint}: no answer (timeout or connection failed)")
        elif status in ("401", "403"):
            why = "check LIBRENMS_API_TOKEN" if status == "401" else "the token lacks rights"
            reason = f"{endpoint}: HTTP {status} ({why})"
            self.record_failure(LIBRENMS, reason, config_error=True, what=endpoint)
        elif status.startswith("5") or status == "429":
            self.record_failure(LIBRENMS, f"{endpoint}: HTTP {status}")
        else:
            self.record_success(LIBRENMS, endpoint)

    def add_dependency(self, dep: str) -> None:
        """One more dependency fed by record_success/record_failure (HA: `redis`)."""
        with self._lock:
            self._deps.setdefault(dep, _Dependency())

    def watch(self, dep: str, probe: Probe) -> None:
        """Read `dep`'s state live through `probe` (critical when it returns an error)."""
        with self._lock:
            self._probes[dep] = probe

    # -- reading -----------------------------------------------------------------------------
    def up(self, dep: str) -> bool:
        """Whether `dep` is usable: fewer failures in a row than the threshold and no
        configuration error."""
        with self._lock:
            state = self._deps[dep]
            return state.failures < self._threshold and not state.config_errors

    def report(self) -> Report:
        """The level and every dependency, probes read now (outside the lock: they take
        their owners' locks)."""
        probes = dict(self._probes)
        live = {dep: probe() for dep, probe in probes.items()}
        with self._lock:
            deps = {name: _copy(state) for name, state in self._deps.items()}
        reasons: list[str] = []
        critical = False
        rows: dict[str, dict[str, Any]] = {}
        for name, state in deps.items():
            if name in live:
                problem = live[name]
                critical |= problem is not None
            else:
                problem = self._degrading(state)
            if problem is not None:
                reasons.append(f"{name}: {problem}")
            rows[name] = {
                "status": "ok" if problem is None else "failing",
                "consecutive_failures": state.failures,
                "last_success": iso(state.last_success),
                "last_failure": iso(state.last_failure),
                "last_error": state.last_error,
            }
        level = Level.CRITICAL if critical else Level.DEGRADED if reasons else Level.OK
        return Report(level, tuple(reasons), rows)

    def _degrading(self, state: _Dependency) -> str | None:
        if state.config_errors:
            return f"configuration error: {next(iter(state.config_errors.values()))}"
        if state.failures >= self._threshold:
            return f"{state.failures} failures in a row, the last: {state.last_error}"
        return None

    def check(self) -> Report:
        """The report; a level different from the last one logged is logged (once)."""
        report = self.report()
        with self._lock:
            before, self._logged = self._logged, report.level
        if report.level is not before:
            why = "; ".join(report.reasons)
            if report.level is Level.OK:
                log.warning("step=health ok again (was %s)", before.value)
            elif report.level is Level.DEGRADED:
                log.warning("step=health degraded (was %s): %s", before.value, why)
            else:
                log.error("step=health critical (was %s): %s", before.value, why)
        return report


def _copy(state: _Dependency) -> _Dependency:
    return _Dependency(
        state.failures,
        state.last_success,
        state.last_failure,
        state.last_error,
        dict(state.config_errors),
    )
