"""The status page at GET /: a pure renderer with every value escaped, behind the webhook token
(Basic auth for browsers), loaded in real headless Chromium, which also takes a screenshot kept
under the test's tmp_path."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.history import Episode
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
    refused = requests.get(d.url + "/", timeout=5)
    assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    basic = base64.b64encode(f"noc:{WEBHOOK_TOKEN}".encode()).decode()
    direct = requests.get(d.url + "/", headers={"Authorization": f"Basic {basic}"}, timeout=5)
    assert direct.status_code == 200 and direct.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in direct.headers["Content-Security-Policy"]
    host, port = d.daemon.address
    url = f"http://noc:{WEBHOOK_TOKEN}@{host}:{port}/"
    dumped = browse(url + "#" + str(tmp_path / "profile-dom"), "--dump-dom")
    dom = dumped.stdout
    assert "<h1>alert-handler</h1>" in dom, dumped.stderr[-2000:]
    assert "Tracked devices (1)" in dom
    assert "&lt;b&gt;cpe-11&lt;/b&gt;" in dom and "<b>cpe-11</b>" not in dom
    assert 'class="phase-down">down<' in dom
    assert 'class="outcome-recovered">recovered<' in dom and "cpe-12" in dom
    assert "recovery_thread" in dom and "<script" not in dom
    for value in d.cfg.secrets():
        assert value not in dom and value not in direct.text
    shot = tmp_path / "status-page.png"
    taken = browse(
        url + "#" + str(tmp_path / "profile-shot"),
        f"--screenshot={shot}",
        "--window-size=1200,800",
        "--hide-scrollbars",
    )
    assert shot.exists() and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    print(f"status page screenshot: {shot}")
