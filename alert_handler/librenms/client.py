"""LibreNMS API v0 client over one `requests.Session`; every failure is a `LibreNMSError`.

Only the fields the daemon needs are taken from device rows: rows carry SNMP secrets and are
never logged whole. Timeouts, refused connections, 5xx and 429 are retried a few times with
exponential backoff and jitter; other 4xx are final.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.parse
from collections.abc import Callable
from datetime import timezone, tzinfo
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from alert_handler.core.alerts import log_safe
from alert_handler.core.facts import (
    DeviceInfo,
    DeviceNotFound,
    LibreNMSError,
    OpenAlert,
    PortInfo,
)
from alert_handler.librenms.zone import read_time

log = logging.getLogger(__name__)

Observer = Callable[[str, str, float], None]  # (endpoint, status, seconds)
# Why a write may not be sent now (the HA lease's fence), or None to send it.
Fence = Callable[[str], "str | None"]
# GETs that change LibreNMS: fenced like the writes.
_CHANGING_GETS = frozenset({"GET /devices/{id}/discover"})
_NO_ROUTE = "This API route doesn't exist."


def _flag(value: Any) -> bool:
    """A tinyint column as get_device (a JSON bool), list_devices (0/1) or an old release's raw
    SQL ("0"/"1") shows it."""
    return value is True or value == 1 or value == "1"


def _group(value: Any) -> int:
    """devices.poller_group as an int (an old release's raw SQL gives "2"); 0 when unreadable."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _poll_started(row: dict[str, Any], zone: tzinfo) -> float | None:
    """last_polled (ISO UTC from 26.5, else the server's local time) minus its duration."""
    ended = read_time(row.get("last_polled"), zone)
    try:
        took = float(row.get("last_polled_timetaken") or 0.0)
    except (TypeError, ValueError):
        took = 0.0
    return None if ended is None else ended - took


def _device_info(row: dict[str, Any], zone: tzinfo = timezone.utc) -> DeviceInfo:
    status = row.get("status")
    return DeviceInfo(
        device_id=int(row["device_id"]),
        hostname=row.get("hostname"),
        overwrite_ip=row.get("overwrite_ip") or None,
        ip=row.get("ip"),
        status=_flag(status) if status is not None else None,
        poller_group=_group(row.get("poller_group")),
        disabled=_flag(row.get("disabled")),
        ignore=_flag(row.get("ignore")),
        last_up_poll_started=_poll_started(row, zone),
    )


class LibreNMS:
    """The API calls the daemon makes."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        verify: bool | str = True,
        pool_size: int = 4,
        dry_run: bool = False,
        observe: Observer | None = None,
        backoff: float = 0.5,
        zone: tzinfo = timezone.utc,
        fence: Fence | None = None,
        user_agent: str | None = None,
    ) -> None:
        """`zone`: the LibreNMS server's time zone, for the naive local times it sends.
        `fence(endpoint)` is asked right before every request that changes LibreNMS (each
        try): a reason refuses it (a LibreNMSError, not retried)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.dry_run = dry_run
        self.backoff = backoff
        self.zone = zone
        self._observe = observe
        self._fence = fence
        self._session = requests.Session()
        if user_agent is not None:
            self._session.headers["User-Agent"] = user_agent
        self._session.headers["X-Auth-Token"] = token
        self._session.headers["Accept"] = "application/json"
        self._session.verify = verify
        self._resolve_environment(verify)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"LibreNMS({self.base_url!r})"

    def _resolve_environment(self, verify: bool | str) -> None:
        """Read once what `requests` would otherwise read from the environment on every call.

        With `trust_env` a session looks up proxy variables, ~/.netrc and REQUESTS_CA_BUNDLE
        for each request (about a quarter of its CPU per call here). All calls go to one host,
        so the answers are taken at start: the proxies for `base_url` (NO_PROXY applied), netrc
        credentials for it, and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE when no CA bundle is
        configured and verification is on. An explicit LIBRENMS_CA_BUNDLE or
        LIBRENMS_VERIFY_TLS=false is used as configured (a per-call environment lookup let
        REQUESTS_CA_BUNDLE override both).
        """
        session = self._session
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        netrc = requests.utils.get_netrc_auth(self.base_url)
        if netrc is not None:
            session.auth = netrc
        if verify is True:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                session.verify = bundle
        session.trust_env = False

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    # -- transport ---------------------------------------------------------------------------
    def _call(
        self, method: str, path: str, endpoint: str, *, body: Any = None, params: Any = None
    ) -> tuple[int, dict[str, Any]]:
        """One API call with retries, but a POST or DELETE (not idempotent: a retry of one that
        landed makes a second component, or answers 500) is tried once; returns (status,
        decoded JSON) for 2xx and 404."""
        data = None if body is None else json.dumps(body)
        retries = 0 if method in ("POST", "DELETE") else self.retries
        attempt = 0
        changes = method != "GET" or endpoint in _CHANGING_GETS
        while True:
            if changes and self._fence is not None:
                refused = self._fence(endpoint)
                if refused is not None:
                    raise LibreNMSError(f"{endpoint}: refused by fencing: {refused}")
            started = time.monotonic()
            try:
                resp = self._session.request(
                    method, self.base_url + path, data=data, params=params, timeout=self.timeout
                )
            except requests.RequestException as exc:
                self._record(endpoint, "error", started)
                error: LibreNMSError | None = LibreNMSError(
                    f"{endpoint}: {type(exc).__name__}: {_reason(exc)}", retryable=True
                )
            else:
                self._record(endpoint, str(resp.status_code), started)
                error = self._check(method, endpoint, resp)
                if error is None:
                    return resp.status_code, _json(resp)
            assert error is not None
            if not error.retryable or attempt >= retries:
                raise error
            attempt += 1
            delay = self.backoff * (2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random()))

    def _record(self, endpoint: str, status: str, started: float) -> None:
        if self._observe is not None:
            self._observe(endpoint, status, time.monotonic() - started)

    @staticmethod
    def _check(method: str, endpoint: str, resp: requests.Response) -> LibreNMSError | None:
        code = resp.status_code
        if 200 <= code < 300 or code == 404:
            return None
        message = _json(resp).get("message") or resp.reason or ""
        text = f"{endpoint}: HTTP {code} {log_safe(str(message), 200)}"  # LibreNMS's words
        if code == 401:
            text += " (check LIBRENMS_API_TOKEN)"
        if code == 403:
            text += " (the API token needs admin rights, or since 26.7 this call's permission)"
        return LibreNMSError(text, status=code, retryable=code >= 500 or code == 429)

    # -- calls -------------------------------------------------------------------------------
    def get_device(self, device_id: int) -> DeviceInfo:
        """GET /devices/{id}; DeviceNotFound when it does not exist."""
        status, data = self._call("GET", f"/devices/{device_id}", "GET /devices/{id}")
        devices = data.get("devices")
        if status == 404 or not isinstance(devices, list) or not devices:
            raise DeviceNotFound(f"device {device_id} does not exist in LibreNMS", status=status)
        return _device_info(devices[0], self.zone)

    def under_maintenance(self, device_id: int) -> bool:
        """GET /devices/{id}/maintenance: whether a maintenance window is active now (whatever
        its behaviour); DeviceNotFound when the device does not exist."""
        status, data = self._call(
            "GET", f"/devices/{device_id}/maintenance", "GET /devices/{id}/maintenance"
        )
        if status == 404 and data.get("message") == _NO_ROUTE:
            return False  # a release older than the route: no window can be seen
        if status == 404:
            raise DeviceNotFound(f"device {device_id} does not exist in LibreNMS", status=status)
        value = data.get("is_under_maintenance")
        if not isinstance(value, bool):
            raise LibreNMSError(f"maintenance of device {device_id}: unexpected answer")
        return value

    def set_overwrite_ip(self, device_id: int, value: str | None) -> None:
        """PATCH /devices/{id} overwrite_ip (None clears it). Logged only in dry-run mode."""
        if self.dry_run:
            log.info(
                "device=%s step=patch DRY_RUN would set overwrite_ip %s",
                device_id,
                "null" if value is None else value,
            )
            return
        body = {"field": "overwrite_ip", "data": value}
        status, data = self._call(
            "PATCH", f"/devices/{device_id}", "PATCH /devices/{id}", body=body
        )
        if status == 404:
            raise DeviceNotFound(f"device {device_id} not found", status=404)
        if data.get("status") != "ok":
            raise LibreNMSError(f"PATCH /devices/{device_id}: unexpected answer", status=status)

    def discover(self, device_id: int) -> None:
        """GET /devices/{id}/discover: queue a rediscovery."""
        status, data = self._call(
            "GET", f"/devices/{device_id}/discover", "GET /devices/{id}/discover"
        )
        # result.status is the number of rows changed: 0 when a discovery is already queued
        # (last_discovered already NULL), so only the envelope tells success from failure.
        if data.get("status") != "ok":
            raise LibreNMSError(f"discover of device {device_id} refused", status=status)

    def device_ports(self, device_id: int) -> list[PortInfo]:
        """GET /devices/{id}/ports with port_id, ifName, ifOperStatus, deleted; [] when it has
        none. LibreNMS hides deleted ports here; `deleted` is read in case one shows."""
        status, data = self._call(
            "GET",
            f"/devices/{device_id}/ports",
            "GET /devices/{id}/ports",
            params={"columns": "port_id,ifName,ifOperStatus,deleted"},
        )
        if status == 404:
            return []
        ports = data.get("ports") or []
        return [
            PortInfo(
                int(p["port_id"]),
                str(p.get("ifName") or ""),
                p.get("ifOperStatus"),
                deleted=bool(p.get("deleted")),
            )
            for p in ports
            if isinstance(p, dict) and "port_id" in p
        ]

    def list_devices(self) -> list[DeviceInfo]:
        """GET /devices?type=all."""
        _, data = self._call("GET", "/devices", "GET /devices", params={"type": "all"})
        rows = data.get("devices") or []
        return [_device_info(row, self.zone) for row in rows if isinstance(row, dict)]

    def group_members(self, name: str) -> set[int] | None:
        """GET /devicegroups/{name}: the group's device ids; None if there is no such group."""
        path = "/devicegroups/" + urllib.parse.quote(name, safe="")
        status, data = self._call("GET", path, "GET /devicegroups/{name}")
        if status == 404:
            return None
        members = set()
        for row in data.get("devices") or []:
            try:
                members.add(int(row["device_id"]))
            except (KeyError, TypeError, ValueError):
                continue
        return members

    def open_alerts(self) -> list[OpenAlert]:
        """GET /alerts?state=1: alerts that are firing now."""
        return self._alerts("1")

    def acknowledged_alerts(self) -> list[OpenAlert]:
        """GET /alerts?state=2: alerts acknowledged now."""
        return self._alerts("2")

    def _alerts(self, state: str) -> list[OpenAlert]:
        status, data = self._call("GET", "/alerts", "GET /alerts", params={"state": state})
        if status == 404:
            return []
        out = []
        for row in data.get("alerts") or []:
            try:
                out.append(
                    OpenAlert(
                        alert_id=int(row["id"]),
                        device_id=int(row["device_id"]),
                        rule_name=row.get("name"),
                        state=int(row.get("state", 1)),
                        timestamp=row.get("timestamp"),
                        alerted=_flag(row.get("alerted", 1)),
                        raised_at=read_time(row.get("timestamp"), self.zone),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def ack_alert(self, alert_id: int, note: str) -> None:
        """PUT /alerts/{id}: acknowledge with a note."""
        if self.dry_run:
            log.info("alert=%s step=ack DRY_RUN would acknowledge", alert_id)
            return
        self._call(
            "PUT",
            f"/alerts/{alert_id}",
            "PUT /alerts/{id}",
            body={"note": note, "until_clear": False},
        )

    def unmute_alert(self, alert_id: int, note: str) -> None:
        """PUT /alerts/unmute/{id}: back to state 1, LibreNMS notifies again."""
        if self.dry_run:
            log.info("alert=%s step=unmute DRY_RUN would unmute", alert_id)
            return
        self._call(
            "PUT", f"/alerts/unmute/{alert_id}", "PUT /alerts/unmute/{id}", body={"note": note}
        )

    # -- how LibreNMS is run (for `check`) --------------------------------------------------
    def version(self) -> str | None:
        """GET /system: LibreNMS's version (`local_ver`, e.g. "26.7.0"), None if not shown."""
        _, data = self._call("GET", "/system", "GET /system")
        rows = data.get("system")
        row = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else {}
        value = row.get("local_ver")
        return str(value) if value else None

    def poller_groups(self) -> dict[int, str]:
        """GET /poller_group: id -> group_name (group 0, the default, has no row)."""
        _, data = self._call("GET", "/poller_group", "GET /poller_group")
        rows = data.get("get_poller_group") or []
        return {
            int(r["id"]): str(r.get("group_name") or "")
            for r in rows
            if isinstance(r, dict) and str(r.get("id", "")).isdigit()
        }

    def pollers(self) -> dict[str, set[int]]:
        """GET /pollers: poller name -> the groups it serves (the dispatcher's poller_groups;
        a legacy poller row has none)."""
        _, data = self._call("GET", "/pollers", "GET /pollers")
        out: dict[str, set[int]] = {}
        for row in data.get("pollers") or []:
            if isinstance(row, dict) and row.get("poller_name"):
                groups = str(row.get("poller_groups") or "").split(",")
                out[str(row["poller_name"])] = {int(g) for g in groups if g.strip().isdigit()}
        return out

    def has_admin_rights(self) -> bool:
        """Whether the token may write: an ignored field on device 0 answers 404 for admins."""
        try:
            self._call(
                "PATCH",
                "/devices/0",
                "PATCH /devices/{id}",
                body={"field": "x_check", "data": None},
            )
        except LibreNMSError as exc:
            if exc.status == 403:
                return False
            raise
        return True


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reason(exc: requests.RequestException) -> str:
    """A short description of a transport error without URLs or headers."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return exc.__class__.__name__
