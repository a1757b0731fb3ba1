"""The status page at GET /: a pure renderer with every value escaped, behind the webhook token
(Basic auth for browsers), loaded in real headless Chromium, which also takes a screenshot kept
under the test's tmp_path."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.times import iso
from alert_handler.events.chart import DownTimeline, down_changes, peaks, svg_chart
from alert_handler.events.history import Episode
from alert_handler.events.journal import Event
from alert_handler.events.page import PageData, render_page
from alert_handler.events.signing import new_secret
from alert_handler.sim.simulator import Simulator
from tests.conftest import (
    UNSUP,
    WEBHOOK_TOKEN,
    StartDaemon,
    alert_body,
    on_teardown,
    overwrite,
    spawn,
    wait_for,
)

NASTY = '<script>alert("x")</script>&"'


def test_the_page_escapes_every_value_and_refreshes_itself() -> None:
    """1. Hostnames, errors and health values holding markup come out as text.
    2. The page has a meta refresh, no script, and the banners for paused and the storm guard."""
    rec = DeviceRecord(
        3,
        phase=Phase.DOWN,
        hostname=NASTY,
        attempts=2,
        forced_down_at=1000.0,
        next_attempt_at=1300.0,
        last_error=NASTY,
    )
    episode = Episode("ep_1", 3, NASTY, "2025-01-01T00:00:00.000Z", outcome=NASTY)
    page = render_page(
        PageData(
            now=1187.0,
            health={"status": "ok", NASTY: NASTY},
            devices=[rec],
            episodes=[episode],
            paused=True,
            storm_engaged=True,
            max_forced_down=50,
            forced_down=50,
        )
    )
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;" in page
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "PAUSED" in page and "storm guard engaged" in page and "3m07s" in page


def _event(t: float, kind: str, episode: str | None) -> Event:
    return Event(id=f"evt_{t}", time=str(iso(T0 + t)), type=kind, device_id=1, episode=episode)


T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z, on the hour
HOUR = 3600.0


def test_the_chart_counts_devices_forced_down_at_once_per_hour() -> None:
    """1. Episodes open at `forced_down`/`adopted` and close at their ending; a repeated
    ending or a `still_down` changes nothing.
    2. Each hour's bar is the most at once within it, carried over from the hour before.
    3. The timeline keeps one day (plus the level at its start)."""
    events = [
        _event(0.5 * HOUR, "forced_down", "ep_a"),
        _event(0.6 * HOUR, "forced_down", "ep_b"),
        _event(0.7 * HOUR, "still_down", "ep_b"),
        _event(0.9 * HOUR, "recovered", "ep_b"),
        _event(0.95 * HOUR, "recovered", "ep_b"),
        _event(2.5 * HOUR, "adopted", "ep_c"),
        _event(3.2 * HOUR, "gave_up", "ep_a"),
        _event(3.4 * HOUR, "released", "ep_c"),
    ]
    changes = down_changes(events)
    assert [c[1] for c in changes] == [1, 2, 1, 2, 1, 0]
    assert peaks(changes, T0, T0 + 5 * HOUR, 5) == [2, 1, 2, 2, 0]
    assert peaks([], T0, T0 + DAY_, 24) == [0] * 24
    timeline = DownTimeline()
    timeline.add(events)
    assert timeline.series(T0 + 5 * HOUR)[-6:] == [0, 2, 1, 2, 2, 0]
    assert timeline.series(T0 + 4.5 * HOUR)[-6:] == [0, 2, 1, 2, 2, 0]  # to the next hour
    timeline.add([_event(DAY_ + 10 * HOUR, "forced_down", "ep_d")])
    assert timeline.now_down() == 1
    series = timeline.series(T0 + DAY_ + 10.5 * HOUR)
    assert series[-1] == 1 and sum(series[:-1]) == 0  # the first day is gone


DAY_ = 86400.0


def test_the_chart_is_svg_without_script_or_style() -> None:
    """24 bars (each with a tooltip), the y axis from 0 to a round top, an hour label every
    fourth bar; only presentation attributes (the CSP allows no script; style stays in CSS)."""
    series = [0] * 20 + [3, 7, 2, 0]
    svg = svg_chart(series, T0 + DAY_, DAY_)
    assert svg.count('class="bar"') == 24 and svg.count("<title>") == 24
    assert re.findall(r'class="ylabel"[^>]*>(\d+)<', svg) == ["10", "0"]
    assert re.findall(r'class="xlabel"[^>]*>([^<]+)<', svg) == [
        "16:00",
        "20:00",
        "00:00",
        "04:00",
        "08:00",
        "12:00",
        "16:00",
    ]
    assert "style=" not in svg and "<script" not in svg and "on" + "load" not in svg
    assert "13:00-14:00 UTC: at most 7 forced down" in svg


def test_health_silences_and_the_storm_guard_read_as_words() -> None:
    """The Health table shows no Python values ([], False, None, dict dumps): "none", "no",
    "—", and a row per dependency; the active silences and the storm guard are on the page."""
    health = {
        "status": "degraded",
        "reasons": [],
        "paused": False,
        "last_cycle": None,
        "dependencies": {
            "librenms": {
                "status": "failing",
                "consecutive_failures": 3,
                "last_success": None,
                "last_failure": "2025-11-24T16:00:00.000Z",
                "last_error": "GET /devices/7: HTTP 500",
            },
            "poller": {"status": "ok", "consecutive_failures": 0, "last_success": None},
        },
    }
    silence = {
        "target": "301",
        "until": "2025-11-24T18:00:00.000Z",
        "reason": "on-site",
        "by": "10.0.0.9",
        "created": "2025-11-24T16:00:00.000Z",
    }
    page = render_page(
        PageData(
            now=T0,
            health=health,
            devices=[],
            episodes=[],
            paused=False,
            max_forced_down=50,
            forced_down=3,
            down_series=[0] * 23 + [3],
            silences=[silence],
        )
    )
    tables = re.findall(r"<h2>Health</h2>.*", page, re.S)[0]
    for python in ("[]", "False", "None", "{", "'"):
        assert python not in tables, python
    assert "<tr><th>reasons</th><td>none</td></tr>" in tables
    assert "<tr><th>paused</th><td>no</td></tr>" in tables
    assert "<tr><th>last cycle</th><td>\u2014</td></tr>" in tables
    assert "<tr><th>librenms</th><td>failing</td><td>3</td><td>\u2014</td>" in tables
    assert "<tr><th>poller</th><td>ok</td><td>0</td>" in tables
    assert "<h2>Active silences (1)</h2>" in page and "<td>on-site</td>" in page
    assert "storm guard:</span> armed: 3 of MAX_FORCED_DOWN=50 forced down" in page
    assert page.count('class="bar"') == 24 and "at most 3 at once; now 3" in page
    off = render_page(PageData(now=T0, health={}, devices=[], episodes=[], paused=False))
    assert "off (MAX_FORCED_DOWN=0: no limit)" in off and "No active silence." in off
    assert "no device was forced down in the last 24 hours" in off


def chromium() -> str:
    """Debian's chromium (.ci/run installs it); the test fails without it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does)")
    return found


def browse(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on `url` (root needs --no-sandbox; a fresh profile each run). It runs
    in its own session: its helper processes are killed with it when the test ends."""
    browser = spawn(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--user-data-dir=" + str(Path(url.split("#")[-1])),
            *extra,
            url.split("#")[0],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    on_teardown(lambda: _kill_group(browser.pid))
    out, err = browser.communicate(timeout=300)
    return subprocess.CompletedProcess(browser.args, browser.returncode, out, err)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group (chromium's renderer and zygote helpers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def test_the_status_page_in_a_real_browser(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. Two devices: one forced down (its hostname holds markup), one that recovered.
    2. Without credentials the page is refused (401, with a Basic challenge).
    3. Headless Chromium with Basic auth (any user, the token as password) dumps the DOM:
       tracked device, phase, recovered episode, health, the markup as text, no script; no
       secret of the configuration is on the page.
    4. It takes a screenshot, kept under tmp_path (its path is printed)."""
    secret = new_secret()
    sim.add_device(11, "cpe-11", ports={"port2": "down"})
    sim.add_device(12, "cpe-12", ports={"port2": "down"})
    d = start_daemon(
        RECOVERY_INTERVAL_SEC="30",
        EVENT_WEBHOOK_URL="http://127.0.0.1:9/hook",
        EVENT_WEBHOOK_SECRET=secret,
        NOTIFY_URLS="json://127.0.0.1:9/notify?token=NotifyTokenZ9",
    )
    body = alert_body(11).replace('"host": "cpe-11"', '"host": "<b>cpe-11</b>"')
    assert d.post(body).status_code == 202
    assert d.post(alert_body(12)).status_code == 202
    wait_for(lambda: overwrite(sim, 11) == UNSUP and overwrite(sim, 12) == UNSUP, what="down")
    sim.set_link(12, "port2", "up")
    requests.post(
        d.url + "/alert",
        data=alert_body(12, state=0),
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "text/plain"},
        timeout=5,
    )
    wait_for(lambda: d.daemon.store.get(12) is None, what="device 12 recovered")
    silenced = requests.post(
        d.url + "/silences",
        json={"target": "301", "for": "2h", "reason": "on-site work"},
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        timeout=5,
    )
    assert silenced.status_code == 200, silenced.text
    refused = requests.get(d.url + "/", timeout=5)
    assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    basic = base64.b64encode(f"noc:{WEBHOOK_TOKEN}".encode()).decode()
    direct = requests.get(d.url + "/", headers={"Authorization": f"Basic {basic}"}, timeout=5)
    assert direct.status_code == 200 and direct.headers["Content-Type"].startswith("text/html")
    # The chart is inline SVG with presentation attributes: the CSP is what it was.
    assert (
        direct.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    )
    host, port = d.daemon.address
    url = f"http://noc:{WEBHOOK_TOKEN}@{host}:{port}/"
    dumped = browse(url + "#" + str(tmp_path / "profile-dom"), "--dump-dom")
    dom = dumped.stdout
    assert "<h1>alert-handler</h1>" in dom, dumped.stderr[-2000:]
    assert "Tracked devices (1)" in dom
    assert "&lt;b&gt;cpe-11&lt;/b&gt;" in dom and "<b>cpe-11</b>" not in dom
    assert 'class="phase-down">down<' in dom
    assert 'class="outcome-recovered">recovered<' in dom and "cpe-12" in dom
    assert "recovery thread" in dom and "<script" not in dom
    # The chart: 24 bars, the last hour's at most 2 devices at once (11 and 12), its axis.
    assert dom.count('class="bar"') == 24
    assert "at most 2 at once; now 1" in dom
    assert re.findall(r'class="ylabel"[^>]*>(\d+)<', dom) == ["2", "0"]
    assert dom.count('class="xlabel"') == 7
    # Silences, the storm guard and the health table in words.
    assert "<h2>Active silences (1)</h2>" in dom and "on-site work" in dom
    assert "storm guard:</span> off (MAX_FORCED_DOWN=0: no limit)" in dom
    health = dom.split("<h2>Health</h2>")[1]
    for python in ("[]", "False", "None", "{"):
        assert python not in health, python
    assert "<th>librenms</th>" in health and "<th>poller</th>" in health
    for value in d.cfg.secrets():
        assert value not in dom and value not in direct.text
    shot = tmp_path / "status-page.png"
    taken = browse(
        url + "#" + str(tmp_path / "profile-shot"),
        f"--screenshot={shot}",
        "--window-size=1200,1500",
        "--hide-scrollbars",
    )
    assert shot.exists() and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    print(f"status page screenshot: {shot}")
