"""The daemon's configuration: one frozen object, validated once at start.

`parse(mapping)` is pure: it takes the merged `.env` + environment mapping and returns a Config, or
raises `ConfigError` naming the first bad key. Only `cli.py` reads files or the environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

DEFAULT_POLL_COMMAND = "php /opt/librenms/artisan device:poll {device_id}"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{8,128}$")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; `str()` names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Config:
    """Every setting of the daemon; secrets are kept out of `repr`."""

    librenms_url: str
    librenms_api_token: str = field(repr=False)
    librenms_verify_tls: bool = True
    librenms_ca_bundle: str | None = None
    unsupervised_ip: str = "127.0.0.50"
    target_ifname: str = "port2"
    recovery_interval_sec: float = 60.0
    state_file: str = "device_state.json"
    log_file: str = "alert_handler.log"
    listen_host: str = "0.0.0.0"
    listen_port: int = 5000
    poll_method: str = "ssh"
    poll_command: str = DEFAULT_POLL_COMMAND
    ssh_host: str | None = None
    ssh_port: int = 22
    ssh_user: str | None = None
    ssh_password: str | None = field(default=None, repr=False)
    ssh_key_file: str | None = None
    ssh_key_passphrase: str | None = field(default=None, repr=False)
    ssh_known_hosts: str = "~/.ssh/known_hosts"
    ssh_host_key_policy: str = "accept-new"
    ssh_connect_timeout_sec: float = 10.0
    ssh_max_channels: int = 8
    max_parallel: int = 4
    trigger_rules: tuple[str, ...] = ()
    api_timeout_sec: float = 10.0
    api_retries: int = 2
    poll_timeout_sec: float = 300.0
    webhook_token: str | None = field(default=None, repr=False)
    allowed_clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    client_timeout_sec: float = 10.0
    max_connections: int = 1000
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    dry_run: bool = False
    max_forced_down: int = 0
    ack_alerts: bool = False
    reconcile_interval_sec: float = 300.0
    stop_timeout_sec: float = 20.0
    max_attempts: int = 0

    def secrets(self) -> list[str]:
        """Every configured secret, for redaction and for tests that grep logs."""
        values = [
            self.librenms_api_token,
            self.ssh_password,
            self.ssh_key_passphrase,
            self.webhook_token,
        ]
        return [v for v in values if v]


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _get(env: Mapping[str, str], *keys: str) -> tuple[str, str | None]:
    """The first key of `keys` that is set to a non-empty value, and that value."""
    for key in keys:
        value = env.get(key)
        if value is not None and value.strip() != "":
            return key, value.strip()
    return keys[0], None


def _number(key: str, raw: str, kind: Callable[[str], T], *, minimum: float, what: str) -> T:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(key, f"must be {what}, got {raw!r}") from None
    if not value >= minimum:  # type: ignore[operator]
        raise ConfigError(key, f"must be {what}, got {raw!r}")
    if isinstance(value, float) and value != value:  # NaN
        raise ConfigError(key, f"must be {what}, got {raw!r}")
    return value


_MAX_SECONDS = 7 * 24 * 3600.0  # a week: beyond it a setting is a typo, not a choice


def _positive_float(key: str, raw: str) -> float:
    value = _number(key, raw, float, minimum=0.0, what="a positive number")
    if value <= 0 or value == float("inf"):
        raise ConfigError(key, f"must be a positive number, got {raw!r}")
    if value > _MAX_SECONDS:
        raise ConfigError(key, f"must be at most {_MAX_SECONDS:.0f} seconds, got {raw!r}")
    return value


def _bool(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"must be true or false, got {raw!r}")


def _port(key: str, raw: str, *, allow_zero: bool = False) -> int:
    value = _number(key, raw, int, minimum=0 if allow_zero else 1, what="a port number")
    if value > 65535:
        raise ConfigError(key, f"must be a port number, got {raw!r}")
    return value


def _ip(key: str, raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(key, f"must be an IP address, got {raw!r}") from None


def _librenms_url(key: str, raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(key, "must start with http:// or https:// and name a host")
    url = raw.rstrip("/")
    if not url.endswith("/api/v0"):
        url += "/api/v0"
    return url


def parse(env: Mapping[str, str]) -> Config:
    """Validate `env` (merged .env and environment) into a Config or raise ConfigError."""
    key, url = _get(env, "LIBRENMS_URL")
    if url is None:
        raise ConfigError(key, "is required (e.g. http://librenms.example/api/v0)")
    kw: dict[str, object] = {"librenms_url": _librenms_url(key, url)}

    key, token = _get(env, "LIBRENMS_API_TOKEN", "API_TOKEN")
    if token is None:
        raise ConfigError("LIBRENMS_API_TOKEN", "is required (an admin API token)")
    if not _TOKEN_RE.match(token):
        raise ConfigError(key, "must be the API token's letters and digits only")
    kw["librenms_api_token"] = token

    def opt(name: str, *aliases: str) -> tuple[str, str | None]:
        return _get(env, name, *aliases)

    k, v = opt("LIBRENMS_VERIFY_TLS")
    if v is not None:
        kw["librenms_verify_tls"] = _bool(k, v)
    k, v = opt("LIBRENMS_CA_BUNDLE")
    if v is not None:
        kw["librenms_ca_bundle"] = v
    k, v = opt("UNSUPERVISED_IP")
    if v is not None:
        kw["unsupervised_ip"] = _ip(k, v)
    k, v = opt("TARGET_IFNAME")
    if v is not None:
        kw["target_ifname"] = v
    for name, attr in (
        ("RECOVERY_INTERVAL_SEC", "recovery_interval_sec"),
        ("API_TIMEOUT_SEC", "api_timeout_sec"),
        ("POLL_TIMEOUT_SEC", "poll_timeout_sec"),
        ("SSH_CONNECT_TIMEOUT_SEC", "ssh_connect_timeout_sec"),
        ("CLIENT_TIMEOUT_SEC", "client_timeout_sec"),
        ("RECONCILE_INTERVAL_SEC", "reconcile_interval_sec"),
        ("STOP_TIMEOUT_SEC", "stop_timeout_sec"),
    ):
        k, v = opt(name)
        if v is not None:
            kw[attr] = _positive_float(k, v)
    for name, attr in (("STATE_FILE", "state_file"), ("LOG_FILE", "log_file")):
        k, v = opt(name)
        if v is not None:
            kw[attr] = v
    k, v = opt("LISTEN_HOST")
    if v is not None:
        kw["listen_host"] = _ip(k, v) if v != "localhost" else "127.0.0.1"
    k, v = opt("LISTEN_PORT")
    if v is not None:
        kw["listen_port"] = _port(k, v, allow_zero=True)

    k, v = opt("POLL_METHOD")
    method = (v or "ssh").lower()
    if method not in ("ssh", "local"):
        raise ConfigError(k, f"must be ssh or local, got {v!r}")
    kw["poll_method"] = method
    k, v = opt("POLL_COMMAND")
    if v is not None:
        kw["poll_command"] = _poll_command(k, v)

    k, v = opt("SSH_HOST")
    kw["ssh_host"] = v
    if method == "ssh" and v is None:
        raise ConfigError(k, "is required when POLL_METHOD=ssh")
    k, v = opt("SSH_PORT")
    if v is not None:
        kw["ssh_port"] = _port(k, v)
    k, v = opt("SSH_USER")
    kw["ssh_user"] = v
    if method == "ssh" and v is None:
        raise ConfigError(k, "is required when POLL_METHOD=ssh")
    k, v = opt("SSH_PASSWORD", "SSH_PASS")
    kw["ssh_password"] = v
    k, v = opt("SSH_KEY_FILE")
    kw["ssh_key_file"] = v
    k, v = opt("SSH_KEY_PASSPHRASE")
    kw["ssh_key_passphrase"] = v
    k, v = opt("SSH_KNOWN_HOSTS")
    if v is not None:
        kw["ssh_known_hosts"] = v
    k, v = opt("SSH_HOST_KEY_POLICY")
    if v is not None:
        if v not in ("accept-new", "strict"):
            raise ConfigError(k, f"must be accept-new or strict, got {v!r}")
        kw["ssh_host_key_policy"] = v
    k, v = opt("SSH_MAX_CHANNELS")
    if v is not None:
        kw["ssh_max_channels"] = _number(k, v, int, minimum=1, what="a positive integer")

    k, v = opt("MAX_PARALLEL")
    if v is not None:
        kw["max_parallel"] = _number(k, v, int, minimum=1, what="a positive integer")
    k, v = opt("MAX_CONNECTIONS")
    if v is not None:
        kw["max_connections"] = _number(k, v, int, minimum=1, what="a positive integer")
    for name, attr in (
        ("API_RETRIES", "api_retries"),
        ("MAX_FORCED_DOWN", "max_forced_down"),
        ("MAX_ATTEMPTS", "max_attempts"),
    ):
        k, v = opt(name)
        if v is not None:
            kw[attr] = _number(k, v, int, minimum=0, what="a whole number of 0 or more")
    k, v = opt("TRIGGER_RULES")
    if v is not None:
        kw["trigger_rules"] = tuple(r.strip() for r in v.split(",") if r.strip())

    k, v = opt("WEBHOOK_TOKEN")
    if v is not None:
        if len(v) < 16 or any(c.isspace() or not c.isprintable() for c in v):
            raise ConfigError(k, "must be at least 16 printable characters without spaces")
        if v.startswith("change-me"):
            raise ConfigError(k, "is still the example value: generate a random one")
        kw["webhook_token"] = v
    k, v = opt("ALLOWED_CLIENTS")
    if v is not None:
        nets = []
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigError(k, f"must be a comma-separated CIDR list, got {part!r}") from None
        kw["allowed_clients"] = tuple(nets)
    k, v = opt("TLS_CERT_FILE")
    kw["tls_cert_file"] = v
    k2, v2 = opt("TLS_KEY_FILE")
    kw["tls_key_file"] = v2
    if (v is None) != (v2 is None):
        raise ConfigError(k if v is None else k2, "TLS_CERT_FILE and TLS_KEY_FILE go together")

    for name, attr in (("DRY_RUN", "dry_run"), ("ACK_ALERTS", "ack_alerts")):
        k, v = opt(name)
        if v is not None:
            kw[attr] = _bool(k, v)
    return Config(**kw)  # type: ignore[arg-type]


def _poll_command(key: str, raw: str) -> str:
    """Accept a template whose only placeholder is `{device_id}`."""
    placeholders = re.findall(r"\{([^{}]*)\}", raw)
    if "device_id" not in placeholders:
        raise ConfigError(key, "must contain {device_id}")
    others = [p for p in placeholders if p != "device_id"]
    if others:
        raise ConfigError(key, f"{{device_id}} is the only placeholder, found {{{others[0]}}}")
    return raw


def render_poll_command(template: str, device_id: int) -> str:
    """The poll command for a validated device id; refuses anything but a positive int."""
    if type(device_id) is not int or device_id <= 0:
        raise ValueError(f"device_id must be a positive integer, got {device_id!r}")
    return template.replace("{device_id}", str(device_id))
