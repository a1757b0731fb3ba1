"""The log as a person tailing it reads it: what each decision line says (what was written, how
long a recovery took), values shown as the state file shows them (null, bare text, never a Python
repr); the form of a line is in test_log_format.py."""

from __future__ import annotations

import pytest

from alert_handler.core.alerts import excerpt, plain
from alert_handler.core.facts import DeviceInfo, PortInfo
from alert_handler.core.machine import (
    Reason,
    Rules,
    after_check,
    after_force_down,
    after_inspect,
    after_release,
    plan_release,
)
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.times import from_iso, span
from alert_handler.store.codec import snapshot_from_json

UNSUP = "127.0.0.50"
NOW = 1_700_000_000.0
RULES = Rules(unsupervised_ip=UNSUP, target_ifname="port2", interval=60.0)


def restoring(original: str | None, attempts: int = 2, down_for: float = 754.0) -> DeviceRecord:
    """A device being checked, forced down `down_for` seconds before NOW."""
    return DeviceRecord(
        device_id=42,
        phase=Phase.RESTORING,
        original_recorded=True,
        original_overwrite_ip=original,
        port_id=7,
        attempts=attempts,
        first_seen=NOW - down_for - 1,
        forced_down_at=NOW - down_for,
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0.0s"),
        (4.26, "4.3s"),
        (42.9, "42s"),
        (754, "12m34s"),
        (11_220, "3h07m"),
        (187_200, "2d04h"),
        (-3, "0.0s"),
    ],
)
def test_span(seconds: float, text: str) -> None:
    assert span(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        ("abc", "abc"),
        (7, "7"),
        (True, "true"),
        ("a\nb'c", "a\\nb'c"),
        ({"x": None}, '{"x": null}'),
        ("", ""),
        (float("nan"), "NaN"),
    ],
)
def test_plain_shows_values_as_the_state_file_does(value: object, text: str) -> None:
    assert plain(value) == text


def test_recovery_line_says_what_was_written_and_how_long_it_took() -> None:
    """Recovered: the original written back, the time since the first force-down and the
    number of attempts."""
    decision = after_check(restoring(None), 0, "up", NOW, RULES)
    assert decision.reason is Reason.RECOVERED
    assert decision.detail == (
        "restored overwrite_ip null, port2 is up: recovered after 12m34s forced down and 2 attempts"
    )
    one = after_check(restoring("198.51.100.7", attempts=1, down_for=61), 0, "up", NOW, RULES)
    assert one.detail == (
        "restored overwrite_ip 198.51.100.7, port2 is up: recovered after 1m01s forced down and "
        "1 attempt"
    )


@pytest.mark.parametrize(
    ("poll_exit", "status", "said"),
    [
        (0, "down", "port2 is down"),
        (0, None, "port2 is missing"),
        (6, None, "poll: device down (exit 6)"),
        (1, None, "poll exited 1"),
    ],
)
def test_still_down_line_says_what_was_written(
    poll_exit: int, status: str | None, said: str
) -> None:
    """The detail names the restore; last_error (shown by `status`) only the cause."""
    decision = after_check(restoring("192.0.2.5"), poll_exit, status, NOW, RULES)
    assert decision.detail == f"restored overwrite_ip 192.0.2.5, {said}"
    assert decision.record is not None and decision.record.last_error == said


def test_give_up_line_says_how_long_and_how_often() -> None:
    rules = Rules(unsupervised_ip=UNSUP, max_attempts=3)
    decision = after_check(restoring(None, attempts=3, down_for=3600), 0, "down", NOW, rules)
    assert decision.reason is Reason.GAVE_UP
    assert decision.detail == (
        "restored overwrite_ip null, port2 is down: gave up after 1h00m forced down and 3 attempts"
    )


def test_dry_run_lines_say_would() -> None:
    """DRY_RUN sends no PATCH: the lines never claim one was sent."""
    rules = Rules(unsupervised_ip=UNSUP, dry_run=True)
    assert after_check(restoring(None), 0, "down", NOW, rules).detail == (
        "DRY_RUN would restore overwrite_ip null, port2 is down"
    )
    forcing = DeviceRecord(device_id=42, phase=Phase.FORCING_DOWN, original_recorded=True)
    assert (
        after_force_down(forcing, NOW, rules).detail == "DRY_RUN would set overwrite_ip 127.0.0.50"
    )
    assert after_force_down(forcing, NOW, RULES).detail == "set overwrite_ip 127.0.0.50"
    down = restoring("192.0.2.5")
    assert after_release(down, plan_release(down, None, rules)).detail == (
        "DRY_RUN would restore overwrite_ip 192.0.2.5"
    )
    assert after_release(down, plan_release(down, None, RULES)).detail == (
        "restored overwrite_ip 192.0.2.5"
    )


def test_no_python_repr_in_decision_details() -> None:
    new = DeviceRecord(device_id=42)
    device = DeviceInfo(42, "cpe-42", None, "192.0.2.42", True)
    no_port = after_inspect(new, device, [PortInfo(1, "port20", "down")], NOW, RULES)
    assert no_port.detail == "no port named port2"
    forcing = after_inspect(new, device, [PortInfo(1, "port2", "down")], NOW, RULES)
    assert forcing.detail == "port2 is down, original overwrite_ip null"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"version": 1, "devices": {"4x": {}}}', "device key 4x is not a positive integer"),
        ('{"version": "2", "devices": {}}', "unknown state file version 2"),
        ('{"version": 1, "devices": {"4": {"phase": "gone"}}}', "phase gone is not a phase"),
        ('{"version": 1, "devices": {"4": {"first_seen": "soon"}}}', "not a time: soon"),
        ('{"version": 1, "devices": {"4": {"first_seen": -5}}}', "time out of range: -5"),
    ],
)
def test_corrupt_state_file_errors_have_no_repr(text: str, said: str) -> None:
    """These messages end up in the `step=load ... is corrupt (...)` line."""
    with pytest.raises(ValueError) as caught:
        snapshot_from_json(text, NOW)
    assert said in str(caught.value)
    assert "'" not in str(caught.value) and "None" not in str(caught.value)


def test_from_iso_errors_have_no_repr() -> None:
    with pytest.raises(ValueError, match=r"^not a time: \[1\]$"):
        from_iso([1])


def test_excerpt_of_a_rejected_body() -> None:
    """Around the JSON error's position, marked; else the start; always escaped and short."""
    body = b'{"device_id": 42,\n "rule": "Port2 down" "uid": 7}'
    at = body.index(b'"uid"')
    assert excerpt(body, at, width=12) == '...Port2 down" >>>"uid": 7}'
    assert excerpt(b"x" * 500, None) == "x" * 80 + "..."
    assert excerpt(b"\xff\xfe\x1b[2J", None) == "\\ufffd\\ufffd\\x1b[2J"
    assert excerpt(body, 0, width=5) == '>>>{"dev...'
