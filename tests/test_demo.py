"""`alert-handler demo`, the README's first command, as a new user runs it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import installed_cli


def test_demo_succeeds_and_shows_the_cycle(tmp_path: Path) -> None:
    """1. The demo runs the daemon against the built-in simulator (no .env, no LibreNMS).
    2. It exits 0 and every CPE ends on its own original overwrite_ip.
    3. Its output shows a device forced down, the self-inflicted alert as a repeat, a device
       forced down again, and recoveries with what was restored and how long they took.
    4. Every log line starts with an ISO 8601 UTC time and holds no Python repr (None, 'x').
    5. It leaves nothing behind: its temporary folder is removed.
    6. Its first line says in plain words what runs; each "port2 of CPE N comes back" is
       followed by N's recovery, never by a line about a check made before it (issue 22)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [*installed_cli(), "demo", "--interval", "1"],
        cwd=workdir,
        env={**os.environ, "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "demo succeeded" in out
    assert "device 102: original overwrite_ip 198.51.100.7   now 198.51.100.7   OK" in out
    assert "device 101: original overwrite_ip null           now null           OK" in out
    for line in (
        "-> forced down",
        "-> repeat alert",
        "-> port not up: forcing down again",
        "-> port already up: stale alert, not forced down",
        "-> port up: recovered",
    ):
        assert line in out, line
    recovered = re.findall(
        r"device=10[12] step=check (restored overwrite_ip \S+), port2 is up: "
        r"recovered after [0-9.]+s forced down and 2 attempts ->",
        out,
    )
    assert sorted(recovered) == ["restored overwrite_ip 198.51.100.7", "restored overwrite_ip null"]
    logged = [line for line in out.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert len(logged) > 30, out
    for line in logged:
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ ", line), line
        assert "None" not in line and "'" not in line, line
    assert list(workdir.iterdir()) == []  # the demo keeps its files out of the user's directory
    assert list(temp.iterdir()) == []  # ... and removes its temporary folder
    assert "its files are removed (--keep keeps them)" in out
    first = result.stderr.splitlines()[0]
    assert first.startswith("=== alert-handler demo: a stand-in LibreNMS with four CPEs"), first
    assert "step=" not in first
    lines = result.stderr.splitlines()
    for device_id in (101, 102, 104):  # no line about an older check after "comes back"
        said = lines.index(f"=== port2 of CPE {device_id} comes back")
        later = [x for x in lines[said:] if f"device={device_id} " in x and "->" in x]
        assert later and all("forcing down again" not in x for x in later), later
        assert any("-> port up: recovered" in x for x in later), later
    result_lines = [line for line in out.splitlines() if line.startswith("  device ")]
    assert len(result_lines) == 4
    assert not any("None" in line or "'" in line for line in result_lines)  # null, bare strings


def test_demo_keep_leaves_its_files(tmp_path: Path) -> None:
    """`demo --keep`: the state and log files stay in the temporary folder it names."""
    result = subprocess.run(
        [*installed_cli(), "demo", "--interval", "1", "--keep"],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("alert-handler-demo-")
    assert (folder / "alert_handler.log").stat().st_size > 0
    assert f"log: {folder / 'alert_handler.log'}" in result.stderr
