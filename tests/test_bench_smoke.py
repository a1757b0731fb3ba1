"""The benchmark scripts still run: each in its tiny --quick mode, as a subprocess.

Only that they finish and print their figure lines is checked; no figure is asserted (the
machine is shared and noisy: speed is read from the scripts' output, not tested).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    ("script", "figures"),
    [
        (
            "ingest.py",
            (
                "RESULT daemon:",
                "RESULT bare server:",
                "RESULT ratio daemon/bare throughput:",
                "RESULT p99 latency:",
                "RESULT unacknowledged alerts: 0 ",
                "RESULT devices in the state file: 50/50 ",
            ),
        ),
        (
            "ha_takeover.py",
            (
                "RESULT takeover after kill -9: median ",
                "RESULT takeover after a clean stop (lease released): median ",
            ),
        ),
        (
            "sequential.py",
            ("RESULT sequential, 20 tracked: daemon p50 ",),
        ),
        (
            "storm_then_sequential.py",
            ("RESULT storm then sequential: daemon p50 ",),
        ),
        (
            "recovery_round.py",
            (
                "RESULT P=4 N=20: round ",
                "RESULT goal P=4 N=20 within 10% of ideal:",
                "RESULT no device attempted twice within an interval: met",
            ),
        ),
        (
            "events.py",
            (
                "RESULT building one event line:",
                "RESULT journal append of 8 line(s), fdatasync'd:",
                "RESULT group commit without events:",
                "RESULT group commit with events:",
            ),
        ),
        (
            "scale.py",
            (
                "RESULT state file: 20 devices",
                "RESULT state commit of 16 changed device(s), durable",
                "RESULT start-up with 20 devices:",
                "RESULT start-up with 20 devices and a journal of 100 lines",
                "RESULT resident memory:",
                "RESULT idle CPU over",
                "RESULT ingest with 20 tracked:",
            ),
        ),
        (
            "sim_story.py",
            (
                "RESULT flip down -> forced down:",
                "RESULT flip up -> restored and forgotten:",
                "RESULT alerts sent by the simulator:",
            ),
        ),
    ],
)
def test_bench_script_runs(script: str, figures: tuple[str, ...]) -> None:
    """1. The script runs in --quick mode against the simulator on loopback and exits 0.
    2. It prints each of its figure lines."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for figure in figures:
        assert any(line.startswith(figure) for line in lines), (figure, done.stdout)


def test_python_load_client_runs() -> None:
    """The load generator's Python fallback (used where no `cc` exists) still works: the ingest
    script with --python-client."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "ingest.py"), "--quick", "--python-client"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Python client" in done.stdout
    assert "RESULT unacknowledged alerts: 0 " in done.stdout
