"""Parse a webhook request from LibreNMS's API transport into an `Alert`; pure.

LibreNMS sends the body as `text/plain` unless told otherwise, may send it form-encoded ("Send as
form"), and turns the transport's "Options" into the query string (the only fields a GET carries).
So the body is tried as JSON whatever the Content-Type says, then as a form; query-string fields
fill in what the body lacks.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

MAX_BODY = 64 * 1024
_MAX_DEPTH = 8
_DEVICE_ID_RE = re.compile(r"[0-9]{1,10}")
MAX_DEVICE_ID = 2**31 - 1  # devices.device_id is an unsigned int; refuse what MySQL cannot hold
_TEXT_LIMIT = 255
_MAX_FIELDS = 100  # form or query fields; LibreNMS sends a handful

STATE_RECOVERED = 0
STATE_ALERT = 1
STATE_ACKNOWLEDGED = 2


def counted(count: int, noun: str, nouns: str | None = None) -> str:
    """ "1 device", "2 devices" (`nouns` when the plural is not `noun` + "s"): log lines and
    messages say "1 device tracked", never "1 devices"."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def log_safe(text: str, limit: int) -> str:
    """Untrusted text made safe for one log line: control characters escaped, cut to `limit`."""
    return text.encode("unicode_escape").decode("ascii")[:limit]


def plain(value: Any, limit: int = 80) -> str:
    """Any value for a log line or an error, as the state file would show it: null, true, 7;
    text bare, escaped and cut to `limit` (never a Python repr)."""
    if isinstance(value, str):
        return log_safe(value, limit)
    try:
        text = json.dumps(value, default=str)
    except ValueError:  # a float NaN or infinity, or a circular structure
        text = str(value)
    return log_safe(text, limit)


class BadPayload(ValueError):
    """The request cannot be turned into an alert; `str()` is a reason safe to send back;
    `position`: the character of the body where JSON decoding failed, when it did."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        super().__init__(reason)
        self.position = position


def json_object(body: bytes) -> dict[str, Any]:
    """An operator request's body that must be one JSON object (none at all: `{}`)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    return data


def excerpt(body: bytes, position: int | None, width: int = 40) -> str:
    """A short escaped piece of a rejected body for its log line: the `width` characters
    either side of `position`, marked with `>>>`, or the body's start."""
    text = body.decode("utf-8", errors="replace")
    if position is None:
        more = "..." if len(text) > 2 * width else ""
        return log_safe(text[: 2 * width], 8 * width) + more
    start, end = max(0, position - width), position + width
    before = ("..." if start else "") + log_safe(text[start:position], 8 * width)
    after = log_safe(text[position:end], 8 * width) + ("..." if end < len(text) else "")
    return f"{before}>>>{after}"


@dataclass(frozen=True)
class Alert:
    """One validated notification."""

    device_id: int
    state: int = STATE_ALERT
    host: str | None = None
    ip: str | None = None
    rule: str | None = None
    title: str | None = None
    uid: int | None = None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value, giving up past `limit`."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _decode_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("body is not UTF-8") from None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        # Nesting is bounded before decoding: json's recursion would otherwise cost a stack
        # per level and a RecursionError for hostile input.
        if stripped.count("[") + stripped.count("{") > 4096:
            raise BadPayload("body is too deeply nested")
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise BadPayload("body is too deeply nested") from None
        except json.JSONDecodeError as exc:
            raise BadPayload(f"body is not valid JSON: {_short(str(exc))}", exc.pos) from None
        except ValueError as exc:  # NaN or Infinity (_reject_constant)
            raise BadPayload(f"body is not valid JSON: {_short(str(exc))}") from None
        if not isinstance(value, dict):
            raise BadPayload("body must be a JSON object")
        if _depth(value, _MAX_DEPTH) > _MAX_DEPTH:
            raise BadPayload("body is too deeply nested")
        return value
    if "=" in text:
        return _form(text)
    raise BadPayload("body is neither JSON nor form-encoded")


def _form(text: str) -> dict[str, Any]:
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS))
    except ValueError:
        raise BadPayload(f"more than {_MAX_FIELDS} form fields") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


def parse_device_id(value: Any) -> int:
    """A device id from an int or a string of 1-10 digits, > 0; raises BadPayload otherwise."""
    if isinstance(value, bool):
        raise BadPayload("device_id must be a positive integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DEVICE_ID_RE.fullmatch(value):
        number = int(value)
    else:
        raise BadPayload("device_id must be a positive integer")
    if number <= 0 or number > MAX_DEVICE_ID:
        raise BadPayload("device_id must be a positive integer")
    return number


def _state(value: Any) -> int:
    if value is None or value == "":
        return STATE_ALERT
    if isinstance(value, bool):
        raise BadPayload("state must be an integer from 0 to 5")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) == 1:
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= 5:
        raise BadPayload("state must be an integer from 0 to 5")
    return value


def _printable(text: str) -> str:
    """`text` without control, format or surrogate characters (no log or terminal injection)."""
    if text.isprintable():
        return text
    return "".join(
        " " if ch in "\t\r\n" else ch
        for ch in text
        if ch in "\t\r\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
    )


def _text(fields: dict[str, Any], *names: str) -> str | None:
    """The first of `names` that holds a scalar; free text, made printable and cut to 255."""
    for name in names:
        value = fields.get(name)
        if value is None or isinstance(value, (dict, list, bool)):
            continue
        text = _printable(str(value)).strip()
        if text:
            return text[:_TEXT_LIMIT].rstrip()
    return None


def _ip(fields: dict[str, Any]) -> str | None:
    """The alert's `ip` when it is an IP address; anything else is dropped, not rejected."""
    text = _text(fields, "ip")
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _uid(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _rule_name(fields: dict[str, Any]) -> str | None:
    """The rule name: `name` (LibreNMS's `{{ $name }}`), else `rule` unless that is the rule's
    query-builder JSON (`{{ $rule }}`: `{"condition":"AND","rules":[...]}`), never a name."""
    name = _text(fields, "name")
    if name is not None:
        return name
    rule = _text(fields, "rule")
    if rule is None or not rule.startswith(("{", "[")):
        return rule
    try:
        json.loads(rule)
    except ValueError:
        return rule  # a name that merely starts with a brace
    return None


def parse_alert(body: bytes, query: str = "") -> Alert:
    """Validate a webhook request; raises BadPayload with the reason."""
    if len(body) > MAX_BODY:
        raise BadPayload("body is larger than 64 KiB")
    fields: dict[str, Any] = _form(query) if query else {}
    fields.update(_decode_body(body))
    if "device_id" not in fields or fields["device_id"] in (None, ""):
        raise BadPayload("device_id is required")
    return Alert(
        device_id=parse_device_id(fields["device_id"]),
        state=_state(fields.get("state")),
        host=_text(fields, "host", "hostname"),
        ip=_ip(fields),
        rule=_rule_name(fields),
        title=_text(fields, "title"),
        uid=_uid(fields.get("uid")),
    )
