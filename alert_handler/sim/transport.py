"""LibreNMS's API alert transport as the simulator plays it: the body template LibreNMS renders
and the POST it sends (urllib, no proxies: the targets are on loopback)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from alert_handler.sim.api import php_str

DEFAULT_BODY_TEMPLATE = (
    '{"device_id": {{ $device_id }}, "host": "{{ $hostname }}", "ip": "{{ $ip }}",'
    ' "state": {{ $state }}, "rule": {{ $name|json_encode }}, "uid": "{{ $uid }}"}'
)
_TEMPLATE_VAR = re.compile(r"\{\{ \$(\w+)(\|json_encode)? \}\}")


def render_template(template: str, values: dict[str, Any]) -> str:
    """LibreNMS's `{{ $var }}` templating: values go in raw, `|json_encode` JSON-escapes."""

    def substitute(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return php_json(value) if match.group(2) else php_str(value)

    return _TEMPLATE_VAR.sub(substitute, template)


def php_json(value: Any) -> str:
    """PHP json_encode() of a scalar (it escapes "/")."""
    return json.dumps(value).replace("/", "\\/")


def post(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    """urllib without proxies (loopback targets); an HTTP error status is a result, not raised."""
    if request.type not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {request.full_url}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
