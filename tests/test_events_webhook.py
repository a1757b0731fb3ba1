"""The signed event webhook against a real receiver that verifies each signature with the
`standardwebhooks` library: retries while it is down, in order, at least once across kill -9,
4xx skipped, and never in the way of acknowledgements or recovery steps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from alert_handler.cli.main import main
from alert_handler.config.event_kinds import secret_key
from alert_handler.events import webhook
from alert_handler.events.journal import EventJournal, EventMaker, EventType
from alert_handler.events.reader import read_events
from alert_handler.events.signing import new_secret, signature
from alert_handler.events.webhook import WebhookOutbox
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
from tests.webhook_receiver import Receiver

SECRET = new_secret()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Receivers made by a test; closed at teardown."""
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def journal_ids(path: Path) -> list[str]:
    return [e.id for e in read_events(path)]


# -- signing ------------------------------------------------------------------------------------
def test_the_signature_is_the_standard_webhooks_one() -> None:
    """The spec's own example: secret, id, timestamp and body give its published signature."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        signature(secret_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_webhook_secret_prints_a_fresh_valid_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """`alert-handler webhook-secret` prints a whsec_ secret of 32 bytes, new each time."""
    assert main(["webhook-secret"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["webhook-secret"]) == 0
    second = capsys.readouterr().out.strip()
    assert first != second
    assert len(secret_key(first)) == 32


# -- the outbox on a journal --------------------------------------------------------------------
def test_retries_on_5xx_skips_other_4xx_and_keeps_order(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    """1. Six events are in the journal before the outbox starts (its position file says the
       first was delivered already).
    2. The receiver answers 503 to the first request, 429 to the second, 400 to the event of
       device 3, 2xx to the rest.
    3. Events 2..6 but 3 arrive in order, 3 is skipped (counted as rejected), and the position
       file names the last event."""
    answers = iter([503, 429])

    def answer(event: dict[str, Any]) -> int:
        if event["device_id"] == 3:
            return 400
        return next(answers, 204)

    receiver = Receiver(SECRET, answer=answer)
    receivers.append(receiver)
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path)
    journal.open()
    maker = EventMaker(lambda: 1_700_000_000.0)
    lines = [maker.make(EventType.TRACKED, device_id=i).to_line() for i in range(1, 7)]
    journal.append_batch(lines)
    ids = journal_ids(path)
    position = path.with_name("events.jsonl.webhook-position")
    position.write_text(json.dumps({"delivered": ids[0]}))
    metrics = Metrics()
    outbox = WebhookOutbox(path, receiver.url, SECRET, metrics=metrics, first_backoff=0.05)
    outbox.prepare(ids[-1])
    assert outbox.depth() == 5
    outbox.start()
    try:
        wait_for(lambda: outbox.depth() == 0, what="the outbox emptied")
    finally:
        outbox.stop()
        journal.close()
    assert receiver.ids() == [ids[1], ids[3], ids[4], ids[5]]
    assert receiver.bad == []
    assert json.loads(position.read_text()) == {"delivered": ids[-1]}
    text = metrics.render().decode()
    assert 'alert_handler_event_deliveries_total{result="rejected",target="webhook"} 1.0' in text
    assert 'alert_handler_event_deliveries_total{result="failed",target="webhook"} 2.0' in text
    assert 'alert_handler_event_deliveries_total{result="delivered",target="webhook"} 4.0' in text


def test_a_first_start_delivers_only_new_events(tmp_path: Path, receivers: list[Receiver]) -> None:
    """With no position file, the history already in the journal is not sent (a new receiver
    is not flooded); the position is saved at once, so a restart does not skip new events."""
    receiver = Receiver(SECRET)
    receivers.append(receiver)
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path)
    last = journal.open()
    maker = EventMaker(lambda: 1_700_000_000.0)
    journal.append_batch([maker.make(EventType.TRACKED, device_id=1).to_line()])
    last = journal_ids(path)[-1]
    outbox = WebhookOutbox(path, receiver.url, SECRET)
    outbox.prepare(last)
    assert outbox.depth() == 0
    assert json.loads(outbox.position_path.read_text()) == {"delivered": last}
    outbox.start()
    journal.append_batch([maker.make(EventType.TRACKED, device_id=2).to_line()])
    outbox.notify([])
    wait_for(lambda: len(receiver.ids()) == 1, what="the new event")
    outbox.stop()
    journal.close()
    assert receiver.ids() == journal_ids(path)[1:]


# -- the daemon ---------------------------------------------------------------------------------
def test_receiver_down_then_up_gets_every_event_in_order(
    sim: Simulator, start_daemon: StartDaemon, receivers: list[Receiver]
) -> None:
    """1. EVENT_WEBHOOK_URL points at a port where nothing listens yet.
    2. A device goes through a whole episode (tracked, forced down, attempts, recovered).
    3. The receiver comes up: after the backoff, every journal event arrives, verified, in
       journal order, each id once after de-duplication; the outbox is empty and the metrics
       say so."""
    port = free_port()
    sim.add_device(42, "cpe-42", ports={"port2": "down"})
    d = start_daemon(
        RECOVERY_INTERVAL_SEC="0.5",
        EVENT_WEBHOOK_URL=f"http://127.0.0.1:{port}/hooks/alert-handler",
        EVENT_WEBHOOK_SECRET=SECRET,
    )
    assert d.post(alert_body(42)).status_code == 202
    wait_for(lambda: overwrite(sim, 42) == UNSUP, what="forced down")
    sim.set_link(42, "port2", "up")
    path = Path(d.cfg.events_path())
    wait_for(lambda: [e.type for e in read_events(path)][-1:] == ["recovered"], what="recovery")
    outbox = d.daemon.events.outbox if d.daemon.events else None
    assert outbox is not None
    # The outbox is told of a batch after the journal has it on disk: wait until it counts
    # every journaled event (none delivered, nothing listens), then bring the receiver up.
    wait_for(
        lambda: outbox.depth() == len(journal_ids(path)),
        what="the outbox to hold every journaled event",
    )
    assert outbox.depth() >= 4
    receiver = Receiver(SECRET, port=port)
    receivers.append(receiver)
    wait_for(lambda: outbox.depth() == 0, what="every event delivered")
    assert receiver.unique_ids() == journal_ids(path)
    assert receiver.bad == []
    assert [e["type"] for e in receiver.received][:2] == ["tracked", "forced_down"]
    text = d.daemon.metrics.render().decode()
    assert "alert_handler_event_outbox_depth 0.0" in text
    assert "alert_handler_event_outbox_oldest_age_seconds 0.0" in text


def test_kill_9_mid_delivery_loses_nothing(
    sim: Simulator, tmp_path: Path, receivers: list[Receiver]
) -> None:
    """1. A slow receiver (each delivery takes a moment) and 12 devices forced down and
       recovering: the daemon, a real process, is SIGKILLed while deliveries are under way.
    2. Restarted: every event of the journal reaches the receiver, in journal order after
       de-duplication by webhook-id (some arrive twice: at least once, never lost)."""
    import threading

    gate = threading.Event()

    def slow(_event: dict[str, Any]) -> int:
        gate.wait(0.05)
        return 200

    receiver = Receiver(SECRET, answer=slow)
    receivers.append(receiver)
    ids = list(range(301, 313))
    for i in ids:
        sim.add_device(i, f"cpe-{i}", ports={"port2": "down"})
    port = free_port()
    env = base_env(
        sim,
        tmp_path,
        LISTEN_PORT=str(port),
        RECOVERY_INTERVAL_SEC="0.3",
        EVENT_WEBHOOK_URL=receiver.url,
        EVENT_WEBHOOK_SECRET=SECRET,
    )
    daemon = DaemonProcess(tmp_path, env, port)
    for i in ids:
        assert daemon.post(alert_body(i)).status_code == 202
    wait_for(lambda: len(receiver.ids()) >= 10, what="deliveries under way")
    daemon.kill()
    journal = tmp_path / "device_state.events.jsonl"  # named after STATE_FILE
    assert len(journal_ids(journal)) > len(receiver.unique_ids())  # some still undelivered
    for i in ids:
        sim.set_link(i, "port2", "up")
    daemon = DaemonProcess(tmp_path, env, port)
    wait_for(
        lambda: {e.device_id for e in read_events(journal) if e.type == "recovered"} >= set(ids),
        what="every device recovered",
    )
    wait_for(lambda: receiver.unique_ids() == journal_ids(journal), what="all delivered")
    daemon.terminate()
    assert receiver.unique_ids() == journal_ids(journal)
    assert receiver.bad == []


def test_a_hanging_receiver_delays_neither_acks_nor_recovery(
    sim: Simulator,
    start_daemon: StartDaemon,
    receivers: list[Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1. The receiver takes the first delivery and never answers (timeout 60 s).
    2. Meanwhile alerts are acknowledged and a device is forced down, checked and recovered:
       the whole episode is journaled while that one delivery still hangs."""
    monkeypatch.setattr(webhook, "DELIVERY_TIMEOUT", 60.0)
    receiver = Receiver(SECRET, answer=lambda _event: None)
    receivers.append(receiver)
    sim.add_device(5, "cpe-5", ports={"port2": "down"})
    sim.add_device(6, "cpe-6", ports={"port2": "down"})
    d = start_daemon(
        RECOVERY_INTERVAL_SEC="0.5",
        EVENT_WEBHOOK_URL=receiver.url,
        EVENT_WEBHOOK_SECRET=SECRET,
    )
    assert d.post(alert_body(5)).status_code == 202
    wait_for(lambda: receiver.hanging == 1, what="the first delivery to hang")
    assert d.post(alert_body(6)).status_code == 202
    wait_for(lambda: overwrite(sim, 6) == UNSUP, what="forced down")
    sim.set_link(6, "port2", "up")
    path = Path(d.cfg.events_path())
    wait_for(
        lambda: ("recovered", 6) in [(e.type, e.device_id) for e in read_events(path)],
        what="device 6 recovered",
    )
    assert receiver.hanging == 1 and receiver.received == []
    assert requests.get(d.url + "/health", timeout=5).status_code == 200
