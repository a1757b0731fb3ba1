"""What the listener tells the operator, over real sockets: every rejected body in the log (with
an excerpt that locates a JSON error in the transport's template), and deliveries from LibreNMS
counted apart from the operator's own requests (issue 12, bug 6)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import requests

from alert_handler.sim.simulator import Simulator
from tests.conftest import AUTH, WEBHOOK_TOKEN, StartDaemon, alert_body
from tests.security_support import AUTH as RAW_AUTH
from tests.security_support import exchange, post
from tests.test_operator_cli import cli, start_with_env
from tests.test_operator_daemon import scrape, val

STALE = "a-stale-token-from-last-year-0123"


def lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]


def test_rejected_bodies_are_logged_with_an_excerpt(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. A body template with a missing comma: 400, and one log line with the client, the
    JSON error's position and the body around that position, marked `>>>`.
    2. A body with newlines and an escape sequence: its excerpt is escaped, the line is one line.
    3. A body that is not JSON at all: the excerpt is its start.
    4. 413 (from the headers), 411 (chunked) and a bad Content-Length: one line each, naming
       the client, the request and the status."""
    caplog.set_level(logging.INFO, logger="alert_handler")
    d = start_daemon(RECOVERY_INTERVAL_SEC="60")
    typo = (
        '{"device_id": 42, "host": "cpe-42", "ip": "192.0.2.1", "state": 1, '
        '"rule": "Port2 down" "uid": "7"}'
    )
    assert d.post(typo).status_code == 400
    [line] = lines(caplog, r"step=webhook .*rejected")
    found = re.search(r"line 1 column (\d+)", line)
    assert found is not None, line
    at = int(found.group(1)) - 1
    assert line.startswith("step=webhook client=127.0.0.1 rejected (400): body is not valid JSON")
    assert f"; body: ...{typo[at - 40 : at]}>>>{typo[at:]}" in line, line
    assert typo[at - 13 : at - 1] == '"Port2 down"'  # the comma missing after the rule

    hostile = '{"device_id": 4\n2, "host": "\x1b[2J"}'
    assert d.post(hostile).status_code == 400
    line = lines(caplog, r"step=webhook .*rejected")[-1]
    assert 'body: {"device_id": 4\\n>>>2, "host": "\\x1b[2J"}' in line, line
    assert "\n" not in line and "\x1b" not in line

    assert d.post("just words").status_code == 400
    assert lines(caplog, r"rejected")[-1].endswith(
        "body is neither JSON nor form-encoded; body: just words"
    )

    assert exchange(d.url, post("/alert", b"", length=70_000)).status == 413
    chunked = (
        b"POST /alert HTTP/1.1\r\n" + RAW_AUTH.encode() + b"Transfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert exchange(d.url, chunked).status == 411
    assert exchange(d.url, post("/alert", b"{}", length=-1)).status == 400
    assert lines(caplog, r"^step=http ") == [
        "step=http client=127.0.0.1 POST /alert -> 413: body of 70000 bytes is larger than 64 KiB",
        "step=http client=127.0.0.1 POST /alert -> 411: chunked body (Transfer-Encoding)",
        "step=http client=127.0.0.1 POST /alert -> 400: bad Content-Length",
    ]


def test_operator_commands_are_not_counted_as_failed_deliveries(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. `alert-handler status`, `pause` and `track` with a stale WEBHOOK_TOKEN: refused (401).
    2. alerts_received_total{result="unauthorized"} stays 0, so the "deliveries failing" alert
       rule stays quiet; operator_requests_total counts each refusal by endpoint.
    3. A delivery (POST /alert and POST /) with the stale token: counted as unauthorized there.
    4. Successful operator requests and /health are counted as ok, by endpoint."""
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    for args in (("status",), ("pause",), ("track", "--force", "7")):
        refused = cli(tmp_path, *args, WEBHOOK_TOKEN=STALE)
        assert refused.returncode != 0, (args, refused.stdout)
    m = scrape(d)
    assert val(m, "alert_handler_alerts_received_total", result="unauthorized") == 0
    for endpoint in ("devices", "pause", "track"):
        got = val(
            m, "alert_handler_operator_requests_total", endpoint=endpoint, result="unauthorized"
        )
        assert got >= 1, endpoint
    assert (
        val(m, "alert_handler_operator_requests_total", endpoint="release", result="unauthorized")
        == 0
    )

    stale = {"Authorization": f"Bearer {STALE}"}
    assert d.post(alert_body(8), auth=False, headers=stale).status_code == 401
    reply = requests.post(d.url + "/", data=alert_body(8), headers=stale, timeout=5)
    assert reply.status_code == 401
    requests.get(d.url + "/health", timeout=5)
    assert requests.get(d.url + "/devices", headers=AUTH, timeout=5).status_code == 200
    assert requests.get(d.url + "/nope", headers=AUTH, timeout=5).status_code == 404
    m = scrape(d)
    assert val(m, "alert_handler_alerts_received_total", result="unauthorized") == 2
    ok = {
        e: val(m, "alert_handler_operator_requests_total", endpoint=e, result="ok")
        for e in ("health", "devices", "metrics")
    }
    assert ok["health"] >= 1 and ok["devices"] == 1 and ok["metrics"] >= 1
    assert val(m, "alert_handler_operator_requests_total", endpoint="other", result="rejected") == 1
    assert WEBHOOK_TOKEN not in requests.get(d.url + "/metrics", timeout=5).text
