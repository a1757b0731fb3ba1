"""The event journal under kill -9: the daemon as a real process, SIGKILLed while alerts arrive
and devices are forced down; no acknowledged change is without its event and readers never
trip on what the kill left."""

from __future__ import annotations

import concurrent.futures
import json
import random
from pathlib import Path

import requests

from alert_handler.events.journal import Event
from alert_handler.events.reader import read_events
from alert_handler.sim.simulator import Simulator
from tests.conftest import UNSUP, DaemonProcess, alert_body, base_env, free_port, wait_for


def _status(daemon: DaemonProcess, body: str) -> int | None:
    try:
        return daemon.post(body).status_code
    except requests.RequestException:
        return None


def _events(path: Path) -> list[Event]:
    return list(read_events(path))


def test_kill_9_loses_no_event_and_tears_no_line(sim: Simulator, tmp_path: Path) -> None:
    """1. 40 CPEs lose port2; their alerts arrive 8 at a time while the daemon forces devices
       down (interval 0.3 s); the daemon is SIGKILLed after the 10th and the 30th 2xx.
    2. After each kill: every acknowledged device has its `tracked` event; every line of the
       journal but an unterminated last one is a whole event.
    3. A restart cuts off any torn tail; port2 comes back everywhere; in the end every device
       forced down has exactly one episode that opened with `forced_down` and closed with
       `recovered`, with its original."""
    ids = list(range(201, 241))
    originals = {i: None if i % 2 else f"198.51.100.{i - 200}" for i in ids}
    for i in ids:
        sim.add_device(i, f"cpe-{i}", overwrite_ip=originals[i], ports={"port2": "down"})
    port = free_port()
    journal = tmp_path / "device_state.events.jsonl"  # named after STATE_FILE
    acked: set[int] = set()
    order = random.Random(13)
    for kill_after in (10, 30):
        env = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVAL_SEC="0.3")
        env["LOG_FILE"] = str(tmp_path / "alert_handler.log")
        daemon = DaemonProcess(tmp_path, env, port)
        shuffled = ids[:]
        order.shuffle(shuffled)
        ok = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = {pool.submit(_status, daemon, alert_body(i)): i for i in shuffled}
            for future in concurrent.futures.as_completed(futures):
                status = future.result()
                if status is not None and 200 <= status < 300:
                    acked.add(futures[future])
                    ok += 1
                    if ok == kill_after:
                        daemon.kill()
        if daemon.proc.poll() is None:
            daemon.kill()
        tracked = {e.device_id for e in _events(journal) if e.type == "tracked"}
        assert acked <= tracked, f"acknowledged without an event: {sorted(acked - tracked)}"
        raw = journal.read_bytes().split(b"\n")
        for line in raw[:-1]:
            json.loads(line)  # every terminated line is whole
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVAL_SEC="0.3")
    daemon = DaemonProcess(tmp_path, env, port)
    try:
        assert journal.read_bytes().endswith(b"\n")
        for i in ids:
            if i not in acked:
                assert daemon.post(alert_body(i)).status_code in (200, 202)
        wait_for(
            lambda: {e.device_id for e in _events(journal) if e.type == "forced_down"} >= set(ids),
            60,
            "every device forced down",
        )
        assert all(sim.patches(i)[0] == (i, UNSUP) for i in ids)
        for i in ids:
            sim.set_link(i, "port2", "up")

        def recovered() -> set[int | None]:
            return {e.device_id for e in _events(journal) if e.type == "recovered"}

        wait_for(lambda: recovered() >= set(ids), 60, "every device recovered")
    finally:
        daemon.terminate()
    events = _events(journal)
    for i in ids:
        mine = [e for e in events if e.device_id == i and e.episode is not None]
        assert len({e.episode for e in mine}) == 1, [e.type for e in mine]
        assert mine[0].type == "forced_down" and mine[-1].type == "recovered"
        assert mine[0].original_overwrite_ip == originals[i] and mine[0].original_known
        assert sim.device(i)["overwrite_ip"] == originals[i]
