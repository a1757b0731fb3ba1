"""The read-only status page (GET /): a pure function from what the daemon holds to HTML.

Plain HTML and CSS, no script; it reloads itself every REFRESH seconds (meta refresh). Every
value is escaped: hostnames and errors come from LibreNMS and alerts.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.times import iso, span
from alert_handler.events.chart import DAY, chart_end, svg_chart
from alert_handler.events.history import Episode

REFRESH = 10  # seconds
MAX_DEVICES = 500  # rows of the devices table (a storm may track thousands)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40%}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee} td.num{text-align:right} .muted{color:#777}
.banner{padding:.5em .8em;margin:.6em 0;border-radius:4px;font-weight:600}
.ok{background:#e3f4e1;color:#1d5e1a} .warn{background:#fff3cd;color:#7a5a00}
.error{background:#f8d7da;color:#842029}
.phase-down,.phase-forcing_down{color:#842029} .phase-restoring{color:#7a5a00}
.outcome-recovered{color:#1d5e1a} .outcome-gave_up,.outcome-device_gone{color:#842029}
h3{font-size:1em;margin:1em 0 .3em} ul.summary{list-style:none;padding:0;margin:.4em 0}
.label{font-weight:600} figure.chart{margin:0} svg.chart{max-width:100%;height:auto;background:#fff}
"""


@dataclass(frozen=True)
class PageData:
    """What the page shows, gathered by the App."""

    now: float
    health: Mapping[str, Any]  # the body of GET /health
    devices: list[DeviceRecord]
    episodes: list[Episode]
    paused: bool
    storm_engaged: bool = False
    max_forced_down: int = 0
    forced_down: int = 0
    down_series: Sequence[int] = ()  # devices forced down, the most at once in each hour
    silences: Sequence[Mapping[str, Any]] = ()  # the active silences (controls.silence_row)


def _e(value: object) -> str:
    return html.escape("-" if value is None or value == "" else str(value), quote=True)


def ago(seconds: float | None) -> str:
    """A duration as `core.times.span` shows it; `-` for None."""
    return "-" if seconds is None else span(seconds)


def _table(headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _device_rows(data: PageData) -> list[str]:
    rows = []
    for rec in sorted(data.devices, key=lambda r: r.device_id)[:MAX_DEVICES]:
        down = None if rec.forced_down_at is None else data.now - rec.forced_down_at
        next_at = None if rec.phase is Phase.NEW else iso(rec.next_attempt_at)
        rows.append(
            "<tr>"
            f'<td class="num">{_e(rec.device_id)}</td><td>{_e(rec.hostname)}</td>'
            f'<td class="phase-{_e(rec.phase.value)}">{_e(rec.phase.value)}</td>'
            f'<td class="num">{_e(rec.attempts)}</td><td>{_e(ago(down))}</td>'
            f"<td>{_e(next_at)}</td><td>{_e(rec.last_error)}</td>"
            "</tr>"
        )
    return rows


def _episode_rows(data: PageData) -> list[str]:
    rows = []
    for ep in data.episodes:
        duration = ep.duration
        if ep.end is None:
            duration = None
        rows.append(
            "<tr>"
            f"<td>{_e(ep.start)}</td><td>{_e(ep.end)}</td><td>{_e(ago(duration))}</td>"
            f'<td class="num">{_e(ep.device_id)}</td><td>{_e(ep.hostname)}</td>'
            f'<td class="num">{_e(ep.attempts)}</td>'
            f'<td class="outcome-{_e(ep.outcome)}">{_e(ep.outcome)}</td>'
            "</tr>"
        )
    return rows


def _banners(data: PageData) -> str:
    status = str(data.health.get("status", "?"))
    out = [f'<div class="banner {"ok" if status == "ok" else "error"}">health: {_e(status)}</div>']
    ha = data.health.get("ha")
    if isinstance(ha, Mapping) and ha.get("role") != "holder":
        out.append(
            f'<div class="banner warn">HA standby ({_e(ha.get("instance"))}): the lease holder '
            f"({_e(ha.get('holder'))}) changes LibreNMS; this daemon only records alerts</div>"
        )
    if data.paused:
        out.append(
            '<div class="banner warn">PAUSED: maintenance mode, no device is changed until '
            "<code>alert-handler resume</code></div>"
        )
    if data.storm_engaged:
        out.append(
            f'<div class="banner warn">storm guard engaged: {_e(data.forced_down)} devices '
            f"forced down, MAX_FORCED_DOWN={_e(data.max_forced_down)}; new devices are held</div>"
        )
    return "".join(out)


def human(value: object) -> str:
    """A value as a person reads it: "none" for an empty list, "yes"/"no", "—" for nothing."""
    if value is None or value == "":
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "; ".join(human(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {human(v)}" for k, v in value.items()) if value else "none"
    return str(value)


_DEPENDENCY_COLUMNS = {
    "status": "status",
    "consecutive_failures": "failures in a row",
    "last_success": "last success",
    "last_failure": "last failure",
    "last_error": "last error",
}


def _health(data: PageData) -> str:
    """The health values, then a row per dependency."""
    rows = [
        f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{_e(human(value))}</td></tr>"
        for key, value in data.health.items()
        if key != "dependencies"
    ]
    out = f"<h2>Health</h2><table><tbody>{''.join(rows)}</tbody></table>"
    deps = data.health.get("dependencies")
    if isinstance(deps, Mapping) and deps:
        dep_rows = []
        for name, state in deps.items():
            state = state if isinstance(state, Mapping) else {"status": state}
            cells = "".join(f"<td>{_e(human(state.get(key)))}</td>" for key in _DEPENDENCY_COLUMNS)
            dep_rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
        out += "<h3>Dependencies</h3>" + _table(
            ["dependency", *_DEPENDENCY_COLUMNS.values()], dep_rows, ""
        )
    return out


def _chart(data: PageData) -> str:
    """The last 24 hours as a bar chart, with its peak in words."""
    series = list(data.down_series) or [0] * 24
    peak = max(series)
    words = (
        "no device was forced down in the last 24 hours"
        if peak == 0
        else f"at most {peak} at once; now {data.forced_down}"
    )
    return (
        "<h2>Devices forced down, last 24 hours</h2>"
        f'<figure class="chart">{svg_chart(series, chart_end(data.now), DAY)}'
        f'<figcaption class="muted">each bar is one hour (UTC; the last one is under way): the '
        f"most devices forced down at once in it; {_e(words)}</figcaption></figure>"
    )


def _storm(data: PageData) -> str:
    """The storm guard in one line."""
    if not data.max_forced_down:
        return "off (MAX_FORCED_DOWN=0: no limit)"
    state = "ENGAGED, new devices are held" if data.storm_engaged else "armed"
    return f"{state}: {data.forced_down} of MAX_FORCED_DOWN={data.max_forced_down} forced down"


def _silences(data: PageData) -> str:
    rows = [
        "<tr>"
        f"<td>{_e(s.get('target'))}</td><td>{_e(s.get('until'))}</td>"
        f"<td>{_e(s.get('reason'))}</td><td>{_e(s.get('by'))}</td>"
        "</tr>"
        for s in data.silences
    ]
    table = _table(["target", "until", "reason", "by"], rows, "No active silence.")
    return f"<h2>Active silences ({len(data.silences)})</h2>{table}"


def summary_lines(data: PageData) -> list[tuple[str, str]]:
    """The (label, text) lines under the title: one fact each, easy to add to."""
    return [
        ("storm guard", _storm(data)),
        ("silences", f"{len(data.silences)} active"),
    ]


def render_page(data: PageData) -> str:
    """The whole page: the sections in order."""
    summary = "".join(
        f'<li><span class="label">{_e(label)}:</span> {_e(text)}</li>'
        for label, text in summary_lines(data)
    )
    devices = _table(
        [
            "device",
            "hostname",
            "phase",
            "attempts",
            "forced down for",
            "next attempt",
            "last error",
        ],
        _device_rows(data),
        "No device is tracked.",
    )
    episodes = _table(
        ["start", "end", "duration", "device", "hostname", "attempts", "outcome"],
        _episode_rows(data),
        "No episode in the event journal yet.",
    )
    more = (
        f'<p class="muted">the first {MAX_DEVICES} by device id; '
        "<code>alert-handler status</code> lists them all</p>"
        if len(data.devices) > MAX_DEVICES
        else ""
    )
    sections = [
        "<h1>alert-handler</h1>",
        f'<p class="muted">as of {_e(iso(data.now))}; this page reloads every {REFRESH} s</p>',
        _banners(data),
        f'<ul class="summary">{summary}</ul>',
        _chart(data),
        f"<h2>Tracked devices ({len(data.devices)})</h2>{devices}{more}",
        _silences(data),
        f"<h2>Recent episodes</h2>{episodes}",
        _health(data),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>alert-handler</title><style>{_CSS}</style></head><body>"
        + "".join(sections)
        + "</body></html>\n"
    )
