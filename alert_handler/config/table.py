"""The daemon's configuration: one frozen object, validated once at start.

`Config` is the table of settings: each field names its kind, default, group and one-line doc
(see `kinds.py`). `parse(mapping)` is pure: it takes the merged `.env` + environment mapping
and returns a Config, or raises `ConfigError` naming the first bad key. The settings are read
from the env file and the environment by `cli/env.py` alone (a few parts read variables of their
own: NOTIFY_SOCKET and WATCHDOG_USEC for systemd, proxies and CA bundles for the API client,
SSH_AUTH_SOCK for the SSH agent).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from alert_handler.config import event_kinds as ek
from alert_handler.config import ha_kinds as hk
from alert_handler.config import kinds as s
from alert_handler.config.kinds import ConfigError, Setting, required, setting
from alert_handler.core.verdict import Selector

__all__ = [
    "DEFAULT_POLL_COMMAND",
    "SETTINGS",
    "Config",
    "ConfigError",
    "parse",
    "redact",
    "render_poll_command",
    "unknown_key_warnings",
]

DEFAULT_POLL_COMMAND = "php /opt/librenms/artisan device:poll {device_id}"

API = "LibreNMS API"
WORK = "What the daemon does"
POLL = "Polling: `lnms device:poll <id>` on the LibreNMS host"
LISTENER = "The webhook listener"
STEER = "Steering: exclusions, silences, confirmation"
FILES = "Files and shutdown"
EVENTS = "Events: journal, webhook, notifications"
HA = "High availability: a standby daemon on another host (docs/high-availability.md)"
DEFAULT_NOTIFY_EVENTS = ("forced_down", "gave_up", "storm_engaged", "storm_cleared", "health")


@dataclass(frozen=True)
class Config:
    """Every setting of the daemon, in the order of .env.example; secrets are kept out of repr."""

    # fmt: off
    librenms_url: str = field(metadata=required(
        s.URL, API, "Base URL of LibreNMS.",
        problem="is required (e.g. http://librenms.example/api/v0)"))
    librenms_api_token: str = field(repr=False, metadata=required(  # repr=False: a secret
        s.API_TOKEN, API, "An admin API token (read-only tokens cannot PATCH).",
        problem="is required (an admin API token)", aliases=("API_TOKEN",)))
    librenms_verify_tls: bool = setting(
        s.BOOL, True, API, "https only: verify the LibreNMS certificate.")
    api_timeout_sec: float = setting(s.SECONDS, 10.0, API, "Seconds per API call.")
    api_retries: int = setting(
        s.COUNT, 2, API, "How many times a timeout, 5xx or 429 is retried within a step.")
    librenms_timezone: str | None = setting(
        s.TIMEZONE, None, API, "The LibreNMS server's time zone: its alert times are local "
        "times with no offset (unset: this host's zone, from $TZ or /etc/localtime).")

    unsupervised_ip: str = setting(
        s.IP, "127.0.0.50", WORK, "Where forced-down devices point: an address where nothing "
        "answers.")
    target_ifname: str = setting(
        s.TEXT, "port2", WORK, "The port whose ifOperStatus decides recovery (exact ifName match).")
    recovery_interval_sec: float = setting(
        s.SECONDS, 60.0, WORK, "Seconds between recovery attempts of one device.")
    max_parallel: int = setting(s.POSITIVE, 4, WORK, "Devices worked on at the same time.")
    trigger_rules: tuple[str, ...] = setting(
        s.NAMES, (), WORK, "Alert rule names that may start handling a device (empty: any rule); "
        "alerts of other rules only count as repeats for devices already tracked.")
    max_attempts: int = setting(
        s.COUNT, 0, WORK, "Give up after this many attempts: restore the original and forget the "
        "device (0: never).")
    max_forced_down: int = setting(
        s.COUNT, 0, WORK, "Storm guard: above this many devices forced down, new ones are only "
        "recorded (0: no limit).")
    dry_run: bool = setting(
        s.BOOL, False, WORK, "Log every PATCH that would be sent instead of sending it.")
    ack_alerts: bool = setting(
        s.BOOL, False, WORK, "Acknowledge the triggering alert with a note once a device is "
        "forced down.")
    reconcile_interval_sec: float = setting(
        s.SECONDS, 300.0, WORK, "Seconds between reconciliations with LibreNMS (adopt devices "
        "left on UNSUPERVISED_IP, pick up alerts that never arrived).")
    check_repoll_sec: int = setting(
        s.integer(0, 600, "a whole number of seconds from 0 to 600", "seconds"), 4, WORK,
        "When a recovery check reads the port not up, wait this long, poll and read once more "
        "before forcing the device down again: an SNMP agent may answer from a cache older than "
        "the port's change (net-snmp's ifTable: 3 s); keep it above the agents' cache age "
        "(0: decide on the first read).")

    exclude: tuple[Selector, ...] = setting(
        s.EXCLUSIONS, (), STEER, "Devices never forced down: ids, hostname globs, group:NAME "
        "(LibreNMS device groups); a tracked one that becomes excluded is restored and forgotten.")
    exclude_refresh_sec: float = setting(
        s.SECONDS, 300.0, STEER, "Seconds between reads of the EXCLUDE groups' members.")
    confirm_above: int = setting(
        s.COUNT, 50, STEER, "Above this many new devices within CONFIRM_WINDOW_SEC, new "
        "force-downs are held until `alert-handler confirm` (0: never ask).")
    confirm_window_sec: float = setting(
        s.SECONDS, 300.0, STEER, "The window CONFIRM_ABOVE counts new force-downs in.")

    poll_method: str = setting(
        s.choice("ssh", "local", fold_case=True), "ssh", POLL,
        "ssh: run POLL_COMMAND on SSH_HOST; local: run it here, without a shell.")
    poll_command: str = setting(
        s.POLL_COMMAND, DEFAULT_POLL_COMMAND, POLL,
        "The poll command; lnms refuses to run as root, so `sudo -u librenms lnms device:poll "
        "{device_id}` or `docker exec librenms lnms device:poll {device_id}` are common.")
    poll_timeout_sec: float = setting(s.SECONDS, 300.0, POLL, "Seconds one poll may take.")
    ssh_host: str | None = setting(
        s.TEXT, None, POLL, "The LibreNMS host to poll over SSH; required when POLL_METHOD=ssh.")
    ssh_port: int = setting(s.PORT, 22, POLL, "The SSH port of SSH_HOST.")
    ssh_user: str | None = setting(
        s.TEXT, None, POLL, "The SSH user; required when POLL_METHOD=ssh.")
    ssh_key_file: str | None = setting(
        s.PATH, None, POLL, "Private key for SSH (recommended over a password).")
    ssh_key_passphrase: str | None = setting(
        s.TEXT, None, POLL, "Passphrase of SSH_KEY_FILE.", secret=True)
    ssh_password: str | None = setting(
        s.TEXT, None, POLL, "SSH password, when no key is used.", secret=True,
        aliases=("SSH_PASS",))
    ssh_known_hosts: str = setting(
        s.PATH, "~/.ssh/known_hosts", POLL, "Where SSH host keys are checked (and learnt).")
    ssh_host_key_policy: str = setting(
        s.choice("accept-new", "strict"), "accept-new", POLL,
        "accept-new: trust on first use and refuse changes; strict: only known keys.")
    ssh_connect_timeout_sec: float = setting(
        s.SECONDS, 10.0, POLL, "Seconds to connect and log in over SSH.")
    poller_group_hosts: tuple[s.PollTarget, ...] = setting(
        s.POLL_TARGETS, (), POLL, "Where each LibreNMS poller group's devices are polled, e.g. "
        "`2=poller-east,3=librenms@10.0.3.5:2222,4=local`: `lnms device:poll` polls from the "
        "host it runs on, so a device must be polled on a poller of its group. SSH targets use "
        "the SSH_* key and known-hosts settings (user: SSH_USER, port: 22); one connection per "
        "host. Groups not listed use POLL_METHOD (and SSH_HOST).")

    listen_host: str = setting(
        s.LISTEN_IP, "0.0.0.0", LISTENER, "Address the webhook listens on.")
    listen_port: int = setting(
        s.LISTEN_PORT, 5000, LISTENER, "Port the webhook listens on (0: any free port).")
    webhook_token: str | None = setting(
        s.WEBHOOK_TOKEN, None, LISTENER, "Requests must carry it (Bearer, X-Auth-Token or "
        "Basic password); unset: anyone is accepted, with a warning.", secret=True)
    allowed_clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        s.NETWORKS, (), LISTENER, "Clients allowed to connect at all; others get 403 "
        "(empty: any).")
    client_timeout_sec: float = setting(
        s.SECONDS, 10.0, LISTENER, "Seconds a client has to send a whole request.")
    max_connections: int = setting(
        s.POSITIVE, 1000, LISTENER, "Connections served at once; past it the oldest one "
        "that has not finished its request is cut to make room (503 only if none can be).")
    tls_cert_file: str | None = setting(
        s.PATH, None, LISTENER, "Serve https (TLS 1.2+) with this certificate; needs "
        "TLS_KEY_FILE.")
    tls_key_file: str | None = setting(
        s.PATH, None, LISTENER, "The private key of TLS_CERT_FILE.")

    state_file: str = setting(
        s.PATH, "device_state.json", FILES, "The state file: devices being handled (a "
        "relative path is relative to the working directory).")
    log_file: str = setting(
        s.PATH, "alert_handler.log", FILES, "The log file, reopened on SIGHUP (a relative path "
        "is relative to the working directory).")
    log_format: str = setting(
        s.choice("text", "json", fold_case=True), "text", FILES,
        "text: one line per fact; json: one JSON object per line (time, level, logger, message, "
        "device, step) for Loki or ELK. Applies to the log file and stderr.")
    stop_timeout_sec: float = setting(
        s.SECONDS, 20.0, FILES, "Seconds running steps get to finish on SIGTERM.")

    events_file: str | None = setting(
        s.PATH, None, EVENTS, "The event journal (JSON lines); unset: <STATE_FILE without "
        ".json>.events.jsonl next to STATE_FILE (device_state.events.jsonl), one per state file.")
    event_webhook_url: str | None = setting(
        ek.WEBHOOK_URL, None, EVENTS, "POST every event here, signed (Standard Webhooks), at "
        "least once and in order; needs EVENT_WEBHOOK_SECRET.")
    event_webhook_secret: str | None = setting(
        ek.WEBHOOK_SECRET, None, EVENTS, "The signing secret; `alert-handler webhook-secret` "
        "makes one.", secret=True)
    notify_urls: tuple[str, ...] = setting(
        ek.APPRISE_URLS, (), EVENTS, "Apprise URLs that people are notified at (mailto://, "
        "slack://, tgram://, rsyslog://, ...).", secret=True)
    notify_events: tuple[str, ...] = setting(
        ek.EVENT_TYPES, DEFAULT_NOTIFY_EVENTS, EVENTS, "The event types sent to NOTIFY_URLS.")

    report_at: str | None = setting(
        ek.TIME_OF_DAY, None, EVENTS, "Send the daily report (`alert-handler report`: the last "
        "24 hours) to NOTIFY_URLS at this time of day, HH:MM in this host's time zone; once a "
        "day, also across restarts (unset: never).")

    ha_redis_url: str | None = setting(
        hk.REDIS_URL, None, HA, "Share one lease in this Redis with the other daemons: only "
        "the holder changes LibreNMS (unset: no HA, no Redis).", secret=True)
    ha_lease_sec: float = setting(
        hk.LEASE_SECONDS, 10.0, HA, "How long the lease lasts unless renewed; a standby takes "
        "over at most HA_LEASE_SEC + HA_RENEW_SEC after the holder dies.")
    ha_renew_sec: float = setting(
        hk.RENEW_SECONDS, 3.0, HA, "How often the holder renews the lease and a standby tries "
        "to take it (less than HA_LEASE_SEC / 2).")
    ha_instance: str | None = setting(
        hk.INSTANCE, None, HA, "This daemon's name in the lease and in LibreNMS requests "
        "(unset: hostname:pid).")
    ha_lease_key: str = setting(
        hk.LEASE_KEY, "alert-handler:lease", HA, "The Redis key of the lease (one per group "
        "of daemons sharing a LibreNMS).")
    # fmt: on

    def secrets(self) -> list[str]:
        """Every configured secret, for redaction and for tests that grep logs (and each part of
        an Apprise URL that may be a token)."""
        values = (getattr(self, spec.name) for spec in SETTINGS if spec.secret)
        found = [v for v in values if isinstance(v, str) and v]
        for url in self.notify_urls:
            found += ek.url_secrets(url)
        return found

    def events_path(self) -> str:
        """EVENTS_FILE, or `<STATE_FILE stem>.events.jsonl` beside the state file (one journal
        per state file: see events/place.py for the earlier `events.jsonl`)."""
        if self.events_file:
            return self.events_file
        folder, name = os.path.split(self.state_file)
        stem = os.path.splitext(name)[0] or name
        return os.path.join(folder, f"{stem}.events.jsonl")


SETTINGS: tuple[Setting[object], ...] = tuple(s.declared(f) for f in fields(Config))
_BY_KEY = {name: spec for spec in SETTINGS for name in (spec.key, *spec.aliases)}


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _get(env: Mapping[str, str], keys: Iterable[str]) -> tuple[str, str] | None:
    """The first of `keys` set to a non-empty value, and that value stripped."""
    for key in keys:
        value = env.get(key)
        if value is not None and value.strip() != "":
            return key, value.strip()
    return None


def parse(env: Mapping[str, str]) -> Config:
    """Validate `env` (merged .env and environment) into a Config or raise ConfigError."""
    # Any, not object: each value comes from its field's own kind, and mypy checked that kind
    # against the field's annotation where `setting()` declares it. This walk only moves them.
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        found = _get(env, (spec.key, *spec.aliases))
        if found is not None:
            values[spec.name] = spec.kind.read(*found)
        elif spec.required is not None:
            raise ConfigError(spec.key, spec.required)
    cfg = Config(**values)
    _check_together(cfg)
    return cfg


def _check_together(cfg: Config) -> None:
    """The rules that involve more than one setting."""
    if cfg.poll_method == "ssh":
        if cfg.ssh_host is None:
            raise ConfigError("SSH_HOST", "is required when POLL_METHOD=ssh")
        if cfg.ssh_user is None:
            raise ConfigError("SSH_USER", "is required when POLL_METHOD=ssh")
    if cfg.event_webhook_url and not cfg.event_webhook_secret:
        raise ConfigError(
            "EVENT_WEBHOOK_SECRET",
            "is required when EVENT_WEBHOOK_URL is set (alert-handler webhook-secret makes one)",
        )
    for target in cfg.poller_group_hosts:
        if target.host is not None and target.user is None and cfg.ssh_user is None:
            raise ConfigError(
                "POLLER_GROUP_HOSTS", f"group {target.group}: {target} needs USER@ or SSH_USER"
            )
    if cfg.report_at and not cfg.notify_urls:
        raise ConfigError("REPORT_AT", "needs NOTIFY_URLS: the report goes to those targets")
    if (cfg.tls_cert_file is None) != (cfg.tls_key_file is None):
        missing = "TLS_CERT_FILE" if cfg.tls_cert_file is None else "TLS_KEY_FILE"
        raise ConfigError(missing, "TLS_CERT_FILE and TLS_KEY_FILE go together")
    hk.check_timing(cfg.ha_lease_sec, cfg.ha_renew_sec)


_NEAR_IN_FILE = 0.6  # difflib's own default: the line is printed anyway, the hint is a bonus
_NEAR_IN_ENVIRONMENT = 0.9  # a near-certain typo only: SSL_CERT_FILE is 0.85 from TLS_CERT_FILE


def _closest(key: str, cutoff: float) -> str | None:
    """The known setting nearest to `key` (case aside), if one is at least `cutoff` alike."""
    if key.upper() in _BY_KEY:
        return key.upper()
    near = difflib.get_close_matches(key.upper(), sorted(_BY_KEY), n=1, cutoff=cutoff)
    return near[0] if near else None


def _named(key: str) -> str:
    """`key` as it can go on a log line: itself when plain, else its repr."""
    return key if key.replace("_", "").replace("-", "").replace(".", "").isalnum() else repr(key)


# Settings that became constants: a key of these in an existing .env is warned about, never refused.
REMOVED = {
    "LIBRENMS_CA_BUNDLE": "set REQUESTS_CA_BUNDLE in the environment instead (requests reads it)",
    "SSH_MAX_CHANNELS": "now fixed at 8 polls at once per SSH connection",
    "EVENTS_MAX_BYTES": "the event journal now rotates at 10 MB",
    "EVENTS_KEEP_FILES": "the event journal now keeps 4 rotated files",
    "EVENT_WEBHOOK_TIMEOUT_SEC": "the event webhook's receiver now has 10 s per delivery",
    "NOTIFY_MAX_PER_WINDOW": "now fixed at 5 messages per target per 5 minutes, then a digest",
    "NOTIFY_WINDOW_SEC": "now fixed at 5 minutes",
}


def unknown_key_warnings(
    file_keys: Iterable[str], environ_keys: Iterable[str] = (), *, source: str = ".env"
) -> list[str]:
    """A line per unknown name in the env file, and per near miss in the environment."""
    # The environment also holds PATH, HOME and the like: only a near miss is worth a line.
    lines: list[str] = []
    seen = set(_BY_KEY)
    for key in (*file_keys, *environ_keys):
        if key in REMOVED and key not in seen:
            seen.add(key)
            lines.append(f"setting {key} is no longer read: {REMOVED[key]}")
    for key in file_keys:
        if key not in seen:
            seen.add(key)
            near = _closest(key, _NEAR_IN_FILE)
            hint = f": did you mean {near}?" if near else ""
            lines.append(f"unknown setting {_named(key)} in {source}{hint}")
    for key in environ_keys:
        if key not in seen:
            seen.add(key)
            near = _closest(key, _NEAR_IN_ENVIRONMENT)
            if near:
                lines.append(
                    f"unknown setting {_named(key)} in the environment: did you mean {near}?"
                )
    return lines


def render_poll_command(template: str, device_id: int) -> str:
    """The poll command for a validated device id; refuses anything but a positive int."""
    if type(device_id) is not int or device_id <= 0:
        raise ValueError(f"device_id must be a positive integer, got {device_id!r}")
    return template.replace("{device_id}", str(device_id))


def main(argv: Sequence[str]) -> int:
    """`--markdown`: print the configuration reference; exit 2 on anything else."""
    if list(argv) != ["--markdown"]:
        print("usage: python -m alert_handler.config --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(s.render_markdown(SETTINGS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
