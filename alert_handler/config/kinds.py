"""How a setting is declared, read from text and documented; the table itself is `config.Config`.

A setting is a field of `Config` declared with `setting()`: its annotation, its kind (which reads
the text) and its default sit on one line, so mypy checks that they agree. The few settings
without a default are `field(metadata=required(...))`, so that mypy still requires them.
`python -m alert_handler.config --markdown` prints docs/configuration.md from the table.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field, replace
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alert_handler.core.verdict import ControlError, Selector, parse_exclusions

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

MAX_SECONDS = 7 * 24 * 3600  # a week: beyond it a setting is a typo, not a choice
_METADATA = "alert_handler.setting"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{8,128}$")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; `str()` names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Kind(Generic[T_co]):
    """A type of value: `read(key, text)` returns it or raises ConfigError naming `key`."""

    name: str
    bounds: str
    read: Callable[[str, str], T_co]


@dataclass(frozen=True)
class Setting(Generic[T_co]):
    """One row of the table; `name` is the Config field, `key` the variable in .env."""

    kind: Kind[T_co]
    default: T_co | None
    group: str
    doc: str
    aliases: tuple[str, ...] = ()
    required: str | None = None  # the problem reported when it is missing
    name: str = ""  # these two are filled in from the field by `declared()`
    secret: bool = False

    @property
    def key(self) -> str:
        """The environment variable: the field's name in capitals."""
        return self.name.upper()


def setting(
    kind: Kind[T],
    default: T,
    group: str,
    doc: str,
    *,
    secret: bool = False,
    aliases: tuple[str, ...] = (),
) -> T:
    """A Config field read by `kind`, `default` when unset; a secret stays out of repr."""
    spec = Setting(kind, default, group, doc, aliases)
    return field(default=default, repr=not secret, metadata={_METADATA: spec})


def required(
    kind: Kind[T], group: str, doc: str, *, problem: str, aliases: tuple[str, ...] = ()
) -> dict[str, Setting[T]]:
    """Metadata for `field(metadata=required(...))` (mypy then still requires the field)."""
    return {_METADATA: Setting(kind, None, group, doc, aliases=aliases, required=problem)}


def declared(spec_field: Field[Any]) -> Setting[object]:
    """The Setting declared on a Config field, named after it; secret when kept out of repr."""
    spec = spec_field.metadata.get(_METADATA)
    if not isinstance(spec, Setting):
        raise TypeError(f"Config.{spec_field.name} is not declared with setting() or required()")
    return replace(spec, name=spec_field.name, secret=not spec_field.repr)


# -- kinds ---------------------------------------------------------------------------------------
def _text(_key: str, raw: str) -> str:
    return raw


TEXT = Kind("text", "", _text)
PATH = Kind("path", "", _text)


def _bool(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"must be true or false, got {raw!r}")


BOOL = Kind("boolean", "true/false, yes/no, on/off, 1/0", _bool)


def _seconds(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(key, f"must be a positive number, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):  # also refuses NaN
        raise ConfigError(key, f"must be a positive number, got {raw!r}")
    if value > MAX_SECONDS:
        raise ConfigError(key, f"must be at most {MAX_SECONDS} seconds, got {raw!r}")
    return value


SECONDS = Kind(
    "seconds", f"more than 0, at most {MAX_SECONDS} (a week); decimals allowed", _seconds
)


def integer(minimum: int, maximum: int | None, what: str, name: str = "integer") -> Kind[int]:
    """Whole numbers from `minimum` to `maximum` (None: no limit); errors say `must be {what}`."""

    def read(key: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(key, f"must be {what}, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(key, f"must be {what}, got {raw!r}")
        return value

    bounds = f"{minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
    return Kind(name, bounds, read)


def _exclusions(key: str, raw: str) -> tuple[Selector, ...]:
    try:
        return parse_exclusions(raw)
    except ControlError as exc:
        raise ConfigError(key, str(exc)) from None


EXCLUSIONS = Kind(
    "target list",
    "comma-separated device ids, hostname globs (cpe-lab-*) and group:NAME",
    _exclusions,
)


POSITIVE = integer(1, None, "a positive integer")
COUNT = integer(0, None, "a whole number of 0 or more")
PORT = integer(1, 65535, "a port number", "port")
LISTEN_PORT = integer(0, 65535, "a port number", "port")  # 0: any free port (tests)


def choice(*options: str, fold_case: bool = False) -> Kind[str]:
    """One of `options` (compared in lower case when `fold_case`)."""
    wanted = " or ".join(options)

    def read(key: str, raw: str) -> str:
        value = raw.lower() if fold_case else raw
        if value not in options:
            raise ConfigError(key, f"must be {wanted}, got {raw!r}")
        return value

    return Kind("choice", wanted + (" (any case)" if fold_case else ""), read)


def _ip(key: str, raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(key, f"must be an IP address, got {raw!r}") from None


IP = Kind("IP address", "IPv4 or IPv6", _ip)


def _listen_ip(key: str, raw: str) -> str:
    return "127.0.0.1" if raw == "localhost" else _ip(key, raw)


LISTEN_IP = Kind("IP address", "IPv4 or IPv6; localhost means 127.0.0.1", _listen_ip)


def _names(_key: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


NAMES = Kind("list", "comma-separated; blanks around names are dropped", _names)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(key: str, raw: str) -> tuple[Network, ...]:
    nets: list[Network] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(key, f"must be a comma-separated CIDR list, got {part!r}") from None
    return tuple(nets)


NETWORKS = Kind("CIDR list", "comma-separated; host bits are dropped", _networks)


@dataclass(frozen=True)
class PollTarget:
    """Where one poller group's polls run: `local`, or over SSH to `[user@]host[:port]` (user
    None: SSH_USER; port None: 22)."""

    group: int
    host: str | None  # None: local
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.host is None:
            return "local"
        where = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{user}{where}" + (f":{self.port}" if self.port is not None else "")


_TARGET_RE = re.compile(
    r"^(?:([A-Za-z0-9._][A-Za-z0-9._-]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::([0-9]+))?$"
)


def _poll_target(key: str, group: int, raw: str) -> PollTarget:
    if raw == "local":
        return PollTarget(group, None)
    match = _TARGET_RE.match(raw)
    if match is None:
        raise ConfigError(key, f"{raw!r} is neither local nor [USER@]HOST[:PORT]")
    user, host, port = match.groups()
    host = host.strip("[]")
    number = None
    if port is not None:
        number = int(port)
        if not 1 <= number <= 65535:
            raise ConfigError(key, f"{raw!r}: {port} is not a port number")
    return PollTarget(group, host, user, number)


def _poll_targets(key: str, raw: str) -> tuple[PollTarget, ...]:
    targets: dict[int, PollTarget] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        group, sep, target = (x.strip() for x in part.partition("="))
        if not sep or not group.isascii() or not group.isdigit() or not target:
            raise ConfigError(
                key, f"{part!r} is not GROUP=TARGET (a poller group id, e.g. 2=poller2)"
            )
        if int(group) in targets:
            raise ConfigError(key, f"poller group {int(group)} is listed twice")
        targets[int(group)] = _poll_target(key, int(group), target)
    return tuple(targets.values())


POLL_TARGETS = Kind(
    "poller group map",
    "comma-separated GROUP=TARGET; TARGET is local or [USER@]HOST[:PORT]",
    _poll_targets,
)


def _timezone(key: str, raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            key, f"must be an IANA time zone such as Europe/Berlin, got {raw!r}"
        ) from None
    return raw


TIMEZONE = Kind("time zone", "an IANA name, e.g. Europe/Berlin or UTC", _timezone)


def _librenms_url(key: str, raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(key, "must start with http:// or https:// and name a host")
    url = raw.rstrip("/")
    return url if url.endswith("/api/v0") else url + "/api/v0"


URL = Kind("URL", "http:// or https:// and a host; /api/v0 is appended when missing", _librenms_url)


def _api_token(key: str, raw: str) -> str:
    if not _TOKEN_RE.match(raw):  # the value is never echoed (a secret): only its length
        what = "8 to 128 characters, letters and digits only (as LibreNMS makes API tokens)"
        if 8 <= len(raw) <= 128:
            raise ConfigError(key, f"must be {what}; it holds a character that is neither")
        raise ConfigError(key, f"must be {what}; got {len(raw)} characters")
    return raw


API_TOKEN = Kind("token", "8 to 128 letters and digits", _api_token)


def _webhook_token(key: str, raw: str) -> str:
    if len(raw) < 16 or any(c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(key, "must be at least 16 printable characters without spaces")
    if raw.startswith("change-me"):
        raise ConfigError(key, "is still the example value: generate a random one")
    return raw


WEBHOOK_TOKEN = Kind("token", "16 or more printable characters, no spaces", _webhook_token)


def _poll_command(key: str, raw: str) -> str:
    """Accept a template whose only placeholder is `{device_id}`."""
    placeholders = re.findall(r"\{([^{}]*)\}", raw)
    if "device_id" not in placeholders:
        raise ConfigError(key, "must contain {device_id}")
    others = [p for p in placeholders if p != "device_id"]
    if others:
        raise ConfigError(key, f"{{device_id}} is the only placeholder, found {{{others[0]}}}")
    return raw


POLL_COMMAND = Kind("command", "{device_id} is the only placeholder", _poll_command)


# -- the reference -------------------------------------------------------------------------------
def shown(spec: Setting[object]) -> str:
    """The Default cell of the reference: a value as it would be written in .env, in backticks."""
    value = spec.default
    if spec.required is not None:
        return "**required**"
    if value is None or value == ():
        return "unset" if value is None else "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


_PREAMBLE = """\
# Configuration reference

<!-- Generated from the table in alert_handler/config/table.py by
     `python -m alert_handler.config --markdown > docs/configuration.md`: do not edit. -->

Settings are read from `.env` in the working directory (or the file given with `--env-file`);
real environment variables override the file. An empty value counts as unset. `.env.example`
holds every setting with its default. `alert-handler check` validates them all and names the
first bad one (`KEY: problem`); it and the daemon also warn about names they do not know, with
the closest known name when one is near.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "-"


def render_markdown(settings: Sequence[Setting[object]]) -> str:
    """docs/configuration.md: one table per group, one row per setting, in table order."""
    groups: dict[str, list[Setting[object]]] = {}
    for spec in settings:
        groups.setdefault(spec.group, []).append(spec)
    out = [_PREAMBLE]
    for group, specs in groups.items():
        out.append(f"\n## {group}\n\n")
        out.append("| Setting | Type | Default | Bounds | Description |\n")
        out.append("|---|---|---|---|---|\n")
        for spec in specs:
            kind = spec.kind.name + (", secret" if spec.secret else "")
            doc = spec.doc + "".join(f" Alias: `{alias}`." for alias in spec.aliases)
            row = [f"`{spec.key}`", kind, shown(spec), spec.kind.bounds, doc]
            out.append("| " + " | ".join(_cell(c) for c in row) + " |\n")
    return "".join(out)
