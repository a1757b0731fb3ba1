"""Wiring: build every part from a Config, run until told to stop, shut down in order.

`cli/main.py` owns the signal handlers and `ops/logs.py` the logging; the handlers put the signal
numbers on a queue, and this module acts on them in the main thread.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alert_handler import __version__
from alert_handler.config.table import Config
from alert_handler.core.machine import Rules
from alert_handler.core.records import shifted
from alert_handler.events.hub import EventHub
from alert_handler.events.journal import EventType
from alert_handler.events.place import adopt_legacy_journal
from alert_handler.ha.lease import FencedPoller, Lease, Transition, connect, default_instance
from alert_handler.http.endpoints import App
from alert_handler.http.server import AlertServer, make_server
from alert_handler.librenms.client import Fence, LibreNMS, Observer
from alert_handler.librenms.components import Components
from alert_handler.librenms.zone import librenms_zone
from alert_handler.ops.clock import SteadyClock
from alert_handler.ops.health import LIBRENMS, RECOVERY_LOOP, REDIS, STATE_FILE, Health
from alert_handler.ops.metrics import Metrics
from alert_handler.ops.systemd import SystemdNotifier
from alert_handler.poll import Poller, make_poller
from alert_handler.recovery.reconcile import Reconciler
from alert_handler.recovery.scheduler import Liveness, Scheduler
from alert_handler.steering.controls import Controls, GroupRefresher, groups_path, silences_path
from alert_handler.store.files import StateLock, load_state
from alert_handler.store.state import StateStore

log = logging.getLogger(__name__)

_SUPERVISE_EVERY = 1.0


def rules_from(cfg: Config) -> Rules:
    """The state machine's settings from the config."""
    return Rules(
        unsupervised_ip=cfg.unsupervised_ip,
        target_ifname=cfg.target_ifname,
        interval=cfg.recovery_interval_sec,
        max_attempts=cfg.max_attempts,
        trigger_rules=cfg.trigger_rules,
        ack_alerts=cfg.ack_alerts,
        dry_run=cfg.dry_run,
        check_repoll=float(cfg.check_repoll_sec),
    )


def step_limit(cfg: Config) -> float:
    """The longest one recovery step can take with the configured timeouts (a read, a PATCH, a
    discover, a poll and a port read, each API call retried), plus a minute of slack; a step
    running longer means the recovery loop is stuck."""
    backoff = 0.75 * ((1 << cfg.api_retries) - 1)  # the client: 0.5 s doubling, jitter <= 1.5
    api_call = (cfg.api_retries + 1) * cfg.api_timeout_sec + backoff
    poll = cfg.poll_timeout_sec + cfg.ssh_connect_timeout_sec
    poll = 2 * poll + cfg.check_repoll_sec if cfg.check_repoll_sec else poll  # and its re-poll
    return poll + 7 * api_call + 60.0


def make_api(
    cfg: Config,
    metrics: Metrics | None = None,
    health: Health | None = None,
    *,
    fence: Fence | None = None,
    user_agent: str | None = None,
) -> LibreNMS:
    """The LibreNMS client for `cfg`; each call is reported to `metrics` and `health`; `fence`
    is asked before each write (HA)."""
    observers: list[Observer] = []
    if metrics is not None:
        observers.append(metrics.observe_api)
    if health is not None:
        observers.append(health.observe_librenms)

    def observe(endpoint: str, status: str, seconds: float) -> None:
        for observer in observers:
            observer(endpoint, status, seconds)

    verify: bool = cfg.librenms_verify_tls  # True: requests reads REQUESTS_CA_BUNDLE itself
    return LibreNMS(
        cfg.librenms_url,
        cfg.librenms_api_token,
        timeout=cfg.api_timeout_sec,
        retries=cfg.api_retries,
        verify=verify,
        pool_size=cfg.max_parallel + 2,
        dry_run=cfg.dry_run,
        observe=observe if observers else None,
        zone=librenms_zone(cfg.librenms_timezone),
        fence=fence,
        user_agent=user_agent,
    )


def listen_url(server: AlertServer) -> str:
    """The listener's scheme, bound address and real port, e.g. "https://[::]:5000"."""
    host, port = (str(part) for part in server.server_address[:2])
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if server.tls is not None else 'http'}://{host}:{port}"


@dataclass
class Daemon:
    """Every running part of the daemon."""

    cfg: Config
    lock: StateLock
    store: StateStore
    api: LibreNMS
    poller: Poller
    scheduler: Scheduler
    app: App
    server: AlertServer
    reconciler: Reconciler
    refresher: GroupRefresher
    metrics: Metrics
    health: Health
    events: EventHub
    notifier: SystemdNotifier = field(default_factory=SystemdNotifier)
    on_hup: Callable[[], None] | None = None
    steady: SteadyClock | None = None  # the clock, when it is the daemon's own
    lease: Lease | None = None  # HA_REDIS_URL: the lease that says whether to change LibreNMS

    @property
    def address(self) -> tuple[str, int]:
        """Where the listener is bound (the real port when LISTEN_PORT=0)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)


def build(cfg: Config, clock: Callable[[], float] | None = None) -> Daemon:
    """Take the state lock, load the state, build every part and bind the listener.

    Raises StateLocked, OSError (bind) or PollError-free: the poller connects lazily.
    """
    steady: SteadyClock | None = None
    if clock is None:
        steady = SteadyClock()
        clock = steady
    path = Path(cfg.state_file)
    lock = StateLock(path)
    lock.acquire()
    try:
        loaded = load_state(path, clock())
        if loaded.quarantined_to is not None:
            log.error(
                "step=load state file %s is corrupt (%s): moved to %s; starting empty",
                path,
                loaded.error,
                loaded.quarantined_to,
            )
        if loaded.snapshot.migrated_from_legacy:
            log.warning(
                "step=load state file %s is in the old single-script format: migrated %s "
                "(each is re-inspected; its original overwrite_ip is read from LibreNMS)",
                path,
                _devices(len(loaded.snapshot.devices)),
            )
        metrics = Metrics()
        metrics.dry_run.set(1 if cfg.dry_run else 0)
        health = Health(clock)
        renamed = adopt_legacy_journal(cfg)  # an earlier version's events.jsonl (under the lock)
        if renamed:
            log.warning("step=events %s", renamed)
        events = EventHub(cfg, metrics, clock)
        events.open()

        def written(seconds: float, size: int) -> None:
            metrics.observe_state_write(seconds)
            health.record_success(STATE_FILE)

        store = StateStore(
            path,
            loaded.snapshot,
            on_write=written,
            on_error=lambda reason: health.record_failure(STATE_FILE, reason),
            on_batch=events.journal.append_batch,
        )
        metrics.watch_records(store.records)
        metrics.watch_librenms(lambda: health.up(LIBRENMS))
        lease = make_lease(cfg, metrics)
        api = make_api(
            cfg,
            metrics,
            health,
            fence=None if lease is None else lease.refusal,
            user_agent=None if lease is None else f"alert-handler/{__version__} {lease.instance}",
        )
        group_poller = make_poller(cfg, metrics.observe_poll)
        metrics.known_pollers(group_poller.labels())
        poller: Poller = group_poller if lease is None else FencedPoller(group_poller, lease)
        rules = rules_from(cfg)
        controls = Controls(
            cfg.exclude,
            silences_path(path),
            clock,
            confirm_above=cfg.confirm_above,
            confirm_window=cfg.confirm_window_sec,
            groups_file=groups_path(path),
        )
        controls.gate.holding = any(rec.held for rec in store.records().values())
        scheduler = Scheduler(
            store,
            api,
            poller,
            rules,
            max_parallel=cfg.max_parallel,
            max_forced_down=cfg.max_forced_down,
            gate=controls.gate,
            metrics=metrics,
            clock=clock,
            step_limit=step_limit(cfg),
            health=health,
            events=events.emitter,
            steer=controls,
            active=None if lease is None else lease.may_write,
        )
        components = Components(api)
        scheduler.components = components
        health.watch(RECOVERY_LOOP, lambda: _loop_problem(scheduler.thread_state()))
        health.watch(STATE_FILE, lambda: None if store.healthy else f"{store.last_error}")
        app = App(
            store=store,
            scheduler=scheduler,
            rules=rules,
            metrics=metrics,
            health_model=health,
            auth_enabled=cfg.webhook_token is not None,
            dry_run=cfg.dry_run,
            clock=clock,
            controls=controls,
            events=events.emitter,
            ha=None if lease is None else lease.status,
        )
        server = make_server(
            cfg.listen_host,
            cfg.listen_port,
            app,
            webhook_token=cfg.webhook_token,
            allowed_clients=cfg.allowed_clients,
            client_timeout=cfg.client_timeout_sec,
            max_connections=cfg.max_connections,
            tls_cert_file=cfg.tls_cert_file,
            tls_key_file=cfg.tls_key_file,
        )
        metrics.connections.set_function(lambda: server.active_connections)
        refresher = GroupRefresher(controls, api, store, cfg.exclude_refresh_sec, scheduler.wake)
        lock.announce(listen_url(server))  # how the commands find it, whatever the env file says
        reconciler = Reconciler(
            api,
            store,
            rules,
            cfg.reconcile_interval_sec,
            clock,
            lambda: _let_go(events.originals.ended(), scheduler.dismissed),
            scheduler.wake,
            events.emitter,
            controls.verdict,
            components=components,
            active=None if lease is None else lease.may_write,
        )
        if lease is not None:
            lease.on_change = _on_lease_change(lease, store, events, metrics, scheduler, reconciler)
            health.add_dependency(REDIS)  # degraded after 3 rounds in a row without Redis
            lease.on_redis = lambda why: (
                health.record_success(REDIS) if why is None else health.record_failure(REDIS, why)
            )
    except BaseException:
        lock.release()
        raise
    return Daemon(
        cfg=cfg,
        lock=lock,
        store=store,
        api=api,
        poller=poller,
        scheduler=scheduler,
        app=app,
        server=server,
        reconciler=reconciler,
        refresher=refresher,
        metrics=metrics,
        health=health,
        steady=steady,
        events=events,
        lease=lease,
    )


def make_lease(cfg: Config, metrics: Metrics) -> Lease | None:
    """The HA lease when HA_REDIS_URL is set (its thread starts with the daemon), else None."""
    if cfg.ha_redis_url is None:
        return None
    instance = cfg.ha_instance or default_instance()
    lease = Lease(
        connect(cfg.ha_redis_url, cfg.ha_renew_sec),
        key=cfg.ha_lease_key,
        instance=instance,
        lease=cfg.ha_lease_sec,
        renew=cfg.ha_renew_sec,
        on_fenced=lambda what: metrics.fenced_writes.inc(),
    )
    metrics.ha_role.labels("holder").set(0)
    metrics.ha_role.labels("standby").set(1)
    for transition in Transition:
        metrics.ha_transitions.labels(transition.value)
    return lease


def _on_lease_change(
    lease: Lease,
    store: StateStore,
    events: EventHub,
    metrics: Metrics,
    scheduler: Scheduler,
    reconciler: Reconciler,
) -> Callable[[Transition, str], None]:
    """What a change of role does: journal it, show it, and on taking the lease reconcile at
    once (adopting what the old holder left on UNSUPERVISED_IP) and start the due jobs."""

    def changed(transition: Transition, why: str) -> None:
        holder = transition is Transition.ACQUIRED
        metrics.ha_role.labels("holder").set(1 if holder else 0)
        metrics.ha_role.labels("standby").set(0 if holder else 1)
        metrics.ha_transitions.labels(transition.value).inc()
        kind = EventType.LEASE_ACQUIRED if holder else EventType.LEASE_LOST
        detail = f"{lease.instance}: {transition.value}: {why}"
        store.add_events([events.emitter.line(kind, detail=detail)])
        if holder:
            reconciler.trigger()
            scheduler.wake()

    return changed


def run(daemon: Daemon, signals: queue.SimpleQueue[int]) -> int:
    """Serve until SIGTERM/SIGINT arrives on `signals`; returns the exit status."""
    store, scheduler, server = daemon.store, daemon.scheduler, daemon.server
    store.start()
    daemon.events.start()
    scheduler.start()
    daemon.reconciler.start()
    daemon.refresher.start()
    if daemon.lease is not None:
        daemon.lease.start()
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    host, port = daemon.address
    log.info(
        "step=start listening on %s:%d; %s tracked; LibreNMS %s; poll via %s%s",
        host,
        port,
        _devices(store.count()),
        daemon.cfg.librenms_url,
        daemon.cfg.poll_method,
        " (DRY_RUN: no PATCH is sent)" if daemon.cfg.dry_run else "",
    )
    notifier = daemon.notifier
    notifier.send("READY=1")
    # Ping every half of systemd's ping interval (itself half of WatchdogSec=), from this loop.
    ping_every = (notifier.watchdog_interval or 0.0) / 2
    tick = min(_SUPERVISE_EVERY, ping_every) if ping_every else _SUPERVISE_EVERY
    last_ping = -1e18
    loop_state = Liveness.ALIVE
    level = "ok"
    try:
        while True:
            try:
                signum = signals.get(timeout=tick)
            except queue.Empty:
                signum = None
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("step=stop received %s", signal.Signals(signum).name)
                break
            if signum == signal.SIGHUP and daemon.on_hup is not None:
                daemon.on_hup()
                log.info("step=log reopened on SIGHUP")
            if daemon.steady is not None:
                _follow_clock_step(daemon, daemon.steady.check_step())
            scheduler.ensure_running()
            state = scheduler.thread_state()
            if state != loop_state:
                _log_loop_state(state, watchdog=bool(ping_every))
                loop_state = state
            if state is Liveness.ALIVE:
                daemon.health.record_success(RECOVERY_LOOP)
            else:
                daemon.health.record_failure(RECOVERY_LOOP, state.value)
            report = daemon.health.check()  # logs a change of level once
            if report.level.value != level:
                _health_event(daemon, report.level.value, level, list(report.reasons))
                level = report.level.value
            now = time.monotonic()
            if ping_every and state is Liveness.ALIVE and now - last_ping >= ping_every:
                notifier.send("WATCHDOG=1")
                last_ping = now
    finally:
        notifier.send("STOPPING=1")
        shutdown(daemon)
    return 0


def _follow_clock_step(daemon: Daemon, step: float) -> None:
    """After the wall clock stepped by `step` seconds, move every stored time with it, so each
    schedule keeps its distance from now and the state file's times match the wall clock."""
    if not step:
        return
    for device_id in daemon.store.records():
        daemon.store.update(device_id, lambda cur: None if cur is None else shifted(cur, step))
    daemon.scheduler.shift_times(step)
    daemon.scheduler.wake()


def _let_go(journal: dict[int, float], dismissed: dict[int, float]) -> dict[int, float]:
    """When each device was last let go: the journal's closing events (across restarts) and
    the scheduler's own record (any forget), the later of the two."""
    merged = dict(journal)
    for device_id, at in list(dismissed.items()):
        merged[device_id] = max(at, merged.get(device_id, at))
    return merged


def _loop_problem(state: Liveness) -> str | None:
    return None if state is Liveness.ALIVE else state.value


def _health_event(daemon: Daemon, level: str, before: str, reasons: list[str]) -> None:
    """Journal a change of the health level."""
    detail = f"{before} -> {level}" + (f": {'; '.join(reasons)}" if reasons else "")
    line = daemon.events.emitter.line(EventType.HEALTH, level=level, detail=detail)
    daemon.store.add_events([line])


def _log_loop_state(state: Liveness, *, watchdog: bool) -> None:
    if state is Liveness.ALIVE:
        log.warning("step=supervise the recovery loop makes progress again")
        return
    log.error(
        "step=supervise the recovery loop is %s: /health answers 503%s",
        state.value,
        "; WATCHDOG=1 is no longer sent, systemd will restart the daemon" if watchdog else "",
    )


def shutdown(daemon: Daemon) -> None:
    """Stop accepting, let running steps finish within STOP_TIMEOUT_SEC, save, release."""
    daemon.server.shutdown()
    daemon.server.server_close()
    daemon.reconciler.stop()
    daemon.refresher.stop()
    finished = daemon.scheduler.stop(daemon.cfg.stop_timeout_sec)
    if not finished:
        log.warning(
            "step=stop steps still running after %.0fs: they resume after restart",
            daemon.cfg.stop_timeout_sec,
        )
    if daemon.lease is not None:
        daemon.lease.stop()  # after the steps: a standby takes over at its next try
        daemon.lease.close()
    daemon.store.close()
    daemon.events.stop()
    daemon.events.close()
    daemon.poller.close()
    daemon.api.close()
    log.info(
        "step=stop state saved to %s; %s tracked", daemon.store.path, _devices(daemon.store.count())
    )
    daemon.lock.release()


def _devices(count: int) -> str:
    """ "1 device", "2 devices" (for the log lines)."""
    return f"{count} device{'' if count == 1 else 's'}"
