"""Notifications through Apprise, to real receivers on loopback: an SMTP server (aiosmtpd) for a
mailto:// target and a UDP listener for rsyslog:// (Apprise's remote syslog); the rate limit
that turns a storm into a digest; notify-test and check; no secret in logs or output."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from alert_handler.cli.main import main
from alert_handler.events.digest import RateLimit, digest, message
from alert_handler.events.journal import EventMaker, EventType
from alert_handler.events.notify import Notifier
from alert_handler.events.reader import read_events
from alert_handler.ops.metrics import Metrics
from alert_handler.sim.simulator import Simulator
from tests.conftest import (
    UNSUP,
    DaemonProcess,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    overwrite,
    wait_for,
)


@dataclass
class Mailbox:
    """What the SMTP server received: (subject, body) per message."""

    messages: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email

        parsed = email.message_from_bytes(envelope.content)
        part = next(p for p in parsed.walk() if p.get_content_type() == "text/plain")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        self.messages.append((str(parsed["Subject"]), payload.decode()))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, str]]:
    """A local SMTP server and the mailto:// URL that reaches it."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    url = (
        f"mailto://127.0.0.1:{port}?from=alert-handler@example.com&to=noc@example.com&mode=insecure"
    )
    yield box, url
    controller.stop()


@pytest.fixture
def syslog() -> Iterator[tuple[socket.socket, str]]:
    """A UDP socket listening like a syslog server, and the rsyslog:// URL for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock, f"rsyslog://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_messages_are_short_and_human() -> None:
    """Device, hostname, what happened, for how long."""
    maker = EventMaker(lambda: 0.0)
    down = maker.make(
        EventType.RECOVERED, device_id=42, hostname="cpe-42", attempt=3, down_seconds=725.0
    )
    assert message(down).title == "cpe-42 (device 42) recovered"
    assert message(down).body == "cpe-42 (device 42) is back after 12m05s (3 attempts)."
    held = RateLimit(2, 300.0)
    forced = maker.make(EventType.FORCED_DOWN, device_id=1, hostname="cpe-1")
    assert held.offer(forced, 0.0) is not None and held.offer(forced, 1.0) is not None
    for t in range(37):
        assert held.offer(forced, 2.0 + t) is None
    assert held.offer(maker.make(EventType.GAVE_UP, device_id=2), 50.0) is None
    assert held.due(299.0) is None
    text = held.due(300.0)
    assert text is not None
    assert text.body == "37 more devices forced down, 1 more device given up in the last 5 minutes"
    assert text.title == "alert-handler: 38 more events"
    one = digest(Counter({EventType.FORCED_DOWN.value: 1}), 300.0)  # one is singular
    assert (one.title, one.body) == (
        "alert-handler: 1 more event",
        "1 more device forced down in the last 5 minutes",
    )


def test_a_device_forced_down_reaches_mail_and_syslog(
    sim: Simulator,
    start_daemon: StartDaemon,
    smtp: tuple[Mailbox, str],
    syslog: tuple[socket.socket, str],
) -> None:
    """1. NOTIFY_URLS: the SMTP server and the syslog listener.
    2. A device is forced down: each gets one message naming it, what happened and its
       original; `tracked` and `attempt` (not in NOTIFY_EVENTS) send nothing."""
    box, mail_url = smtp
    sock, syslog_url = syslog
    sim.add_device(7, "cpe-7", overwrite_ip="198.51.100.7", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="30", NOTIFY_URLS=f"{mail_url} {syslog_url}")
    assert d.post(alert_body(7)).status_code == 202
    wait_for(lambda: overwrite(sim, 7) == UNSUP, what="forced down")
    wait_for(lambda: box.messages, what="the mail")
    subject, body = box.messages[0]
    assert subject == "cpe-7 (device 7) forced down"
    assert "Original overwrite_ip: 198.51.100.7." in body
    datagram = sock.recv(4096).decode()
    assert "cpe-7 (device 7) forced down" in datagram
    # `tracked` was journaled before `forced_down`, and each target takes its events in journal
    # order: once forced_down is counted as sent, tracked has been looked at and left out.
    kinds = [e.type for e in read_events(Path(d.cfg.events_path()))]
    assert kinds.index("tracked") < kinds.index("forced_down")
    sent = 'alert_handler_event_deliveries_total{result="sent",target="%s"} 1.0'
    wait_for(
        lambda: all(sent % t in d.daemon.metrics.render().decode() for t in ("mailto", "rsyslog")),
        what="both deliveries counted",
    )
    assert len(box.messages) == 1
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)  # no second datagram


def test_a_500_device_storm_gives_a_bounded_number_of_messages(
    smtp: tuple[Mailbox, str],
) -> None:
    """1. 500 devices are forced down at once (the events a storm journals), with at most 3
       messages per 5 s window.
    2. The SMTP server gets 3 messages and then, when the window ends, one digest: "497 more
       devices forced down in the last 5 seconds", and nothing more."""
    box, url = smtp
    metrics = Metrics()
    notifier = Notifier([url], ["forced_down"], limit=3, window=5.0, metrics=metrics)
    notifier.start()
    maker = EventMaker(time.time)
    events = [
        maker.make(EventType.FORCED_DOWN, device_id=i, hostname=f"cpe-{i}") for i in range(500)
    ]
    try:
        for n in range(0, 500, 50):
            notifier.consume(events[n : n + 50])
        wait_for(lambda: len(box.messages) >= 4, what="the digest")
        # Every event looked at (3 sent, 497 digested), the digest sent, and nothing left due:
        # the target's thread now waits for the next event only.
        counted = 'alert_handler_event_deliveries_total{result="%s",target="mailto"} %s'
        wait_for(
            lambda: all(
                counted % pair in metrics.render().decode()
                for pair in (("sent", "4.0"), ("digested", "497.0"))
            ),
            what="every event counted",
        )
        assert [t._limit.next_due() for t in notifier.targets] == [None]
    finally:
        notifier.stop()
    subjects = [s for s, _ in box.messages]
    assert subjects[:3] == [f"cpe-{i} (device {i}) forced down" for i in range(3)]
    assert len(box.messages) == 4
    assert box.messages[3][1].strip() == "497 more devices forced down in the last 5 seconds"


def write_env(tmp_path: Path, **settings: str) -> str:
    path = tmp_path / "notify.env"
    lines = {
        "LIBRENMS_URL": f"http://127.0.0.1:{free_port()}/api/v0",
        "LIBRENMS_API_TOKEN": "abcdefgh1234",
        "POLL_METHOD": "local",
        "STATE_FILE": str(tmp_path / "device_state.json"),
        **settings,
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    path.chmod(0o600)
    return str(path)


def test_notify_test_sends_a_sample_to_every_target_and_says_how_it_went(
    tmp_path: Path, smtp: tuple[Mailbox, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """1. notify-test --event gave_up: the SMTP target gets a sample and says sent; a URL
       Apprise does not know says so; the exit status is 1 (one failed).
    2. check validates the same URLs and sends nothing; no line shows a token."""
    box, url = smtp
    token = "NotifyToken0123456789"
    closed = f"json://127.0.0.1:{free_port()}/hook"
    env = write_env(tmp_path, NOTIFY_URLS=f"{url} nosuchservice://{token}/x {closed}")
    assert main(["notify-test", "--env-file", env, "--event", "gave_up"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "\u2714 #1 mailto: sent '[TEST] cpe-42.example (device 42): gave up'"
    assert out[1] == "\u2718 #2 nosuchservice: not a URL Apprise supports"
    # A failure shows Apprise's own words, without its time and level prefix.
    assert out[2].startswith("\u2718 #3 json: not sent: "), out[2]
    assert not re.search(r"\d\d:\d\d:\d\d|WARNING|ERROR", out[2]), out[2]
    assert len(box.messages) == 1 and "gave up" in box.messages[0][0]
    subject, body = box.messages[0]
    assert subject.startswith("[TEST] ")  # the reader sees it is a test (issue 22, item 10)
    assert body.lstrip().startswith("[TEST] a sample sent by `alert-handler notify-test`")
    assert main(["check", "--env-file", env]) == 1  # LibreNMS is not there
    checked = capsys.readouterr().out
    assert "\u2714 notification target #1 mailto: valid (nothing sent)" in checked
    assert "\u2718 notification target #2 nosuchservice: not a URL Apprise supports" in checked
    assert "event journal" in checked
    assert token not in checked and len(box.messages) == 1


def test_no_notification_secret_reaches_the_log(sim: Simulator, tmp_path: Path) -> None:
    """1. The daemon, a real process, with a notification target whose URL holds a token and
       that cannot be reached, and a webhook secret.
    2. A device is forced down: the notification fails and is logged, naming the target by
       number and service only; neither the token nor the secret is in the log or output."""
    token = "SecretNotifyToken0123"
    secret = "whsec_U2VjcmV0U2lnbmluZ0tleTAxMjM0NTY3ODkwMTIzNDU="
    sim.add_device(8, "cpe-8", ports={"port2": "down"})
    port = free_port()
    env = base_env(
        sim,
        tmp_path,
        LISTEN_PORT=str(port),
        RECOVERY_INTERVAL_SEC="30",
        NOTIFY_URLS=f"json://127.0.0.1:{free_port()}/hook?token={token}",
        EVENT_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/events",
        EVENT_WEBHOOK_SECRET=secret,
    )
    daemon = DaemonProcess(tmp_path, env, port)
    try:
        assert daemon.post(alert_body(8)).status_code == 202
        log_file = tmp_path / "alert_handler.log"
        wait_for(lambda: "step=notify target=#1 json not sent" in log_file.read_text())
    finally:
        daemon.terminate()
    text = log_file.read_text() + daemon.output()
    assert token not in text and secret not in text
    assert "step=webhook-out" in text


def test_report_at_mails_the_daily_report_once_a_day(
    sim: Simulator, start_daemon: StartDaemon, smtp: tuple[Mailbox, str], tmp_path: Path
) -> None:
    """REPORT_AT=00:00 (always past): the daemon mails the day's report when it starts, past
    the rate limit, and remembers the day in <EVENTS_FILE>.report-sent; a second daemon on the
    same files the same day finds it sent (its `run_once` sends nothing)."""
    box, mail_url = smtp
    sim.add_device(7, "cpe-7", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="30", NOTIFY_URLS=mail_url, REPORT_AT="00:00")
    wait_for(lambda: any("daily report" in s for s, _ in box.messages), what="the report mail")
    subject, body = next(m for m in box.messages if "daily report" in m[0])
    assert subject.startswith("alert-handler daily report: 0 forced down")
    words = " ".join(body.split())  # the mail's text part is Apprise's rendering of the text
    assert "Forced down: 0 times, 0 devices" in words and "Needed a person: nothing" in words
    sent = (tmp_path / "device_state.events.jsonl.report-sent").read_text().strip()
    assert d.daemon.events is not None and d.daemon.events.daily is not None
    assert d.daemon.events.daily.last_sent() == sent
    d.stop()
    again = start_daemon(RECOVERY_INTERVAL_SEC="30", NOTIFY_URLS=mail_url, REPORT_AT="00:00")
    assert again.daemon.events is not None and again.daemon.events.daily is not None
    assert again.daemon.events.daily.run_once() is None
