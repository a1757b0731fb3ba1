"""`alert-handler check` proves UNSUPERVISED_IP is dark from every poller (issue 21): over a real
sshd with the key restricted to the wrapper of docs/ssh-polling.md, LibreNMS's fping (its path
from `lnms config:get fping`) runs with LibreNMS's options against UNSUPERVISED_IP.

The sshd runs on this host: 127.0.0.50 answers there; a blackholed address of 198.18.0.0/15
(the lab's dark address, its blackhole route added for the test and removed after) does not.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_handler.cli.check_dark import FPING_OPTIONS, fping_question
from alert_handler.sim.lab import Lab
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import base_env
from tests.lab_support import require_lab
from tests.sshd import SSHD, require_sshd, running_sshd
from tests.test_operator_cli import cli, write_env
from tests.test_ssh_daemon import DOCUMENTED_WRAPPER


@pytest.fixture
def poller(sim: Simulator) -> Iterator[SSHD]:
    """A poller behind the documented wrapper; its `lnms` answers `config:get fping` with this
    host's fping and polls the simulator."""
    require_sshd()
    with running_sshd() as server:
        fping = shutil.which("fping")
        assert fping is not None, "fping is not installed (apt-get install fping)"
        lnms = server.dir / "lnms"
        lnms.write_text(
            "#!/bin/sh\n"
            'case "$1" in\n'
            f"  config:get) echo {shlex.quote(fping)} ;;\n"
            f"  device:poll) exec {shlex.quote(sys.executable)} -m alert_handler.sim "
            f'poll --url {sim.url} --token {DEFAULT_TOKEN} "$2" ;;\n'
            "esac\n"
        )
        lnms.chmod(0o755)
        wrapper = server.dir / "alert-handler-poll"
        wrapper.write_text(DOCUMENTED_WRAPPER.replace("/opt/librenms/lnms", str(lnms)))
        wrapper.chmod(0o755)
        pub = server.client_key.with_name(server.client_key.name + ".pub").read_text().strip()
        server.authorized_keys.write_text(f'command="{wrapper}",restrict {pub}\n')
        yield server


def test_fping_is_asked_of_lnms_as_polls_run_it() -> None:
    assert fping_question("sudo -u librenms lnms device:poll {device_id}") == (
        "sudo -u librenms lnms config:get fping"
    )
    assert fping_question("/usr/local/bin/poll {device_id}") is None
    assert FPING_OPTIONS == "-e -q -c 3 -p 500 -t 500 -O 0"


def test_check_fails_with_the_fix_where_unsupervised_ip_answers_and_passes_once_it_is_dark(
    sim: Simulator, poller: SSHD, tmp_path: Path
) -> None:
    """1. UNSUPERVISED_IP 127.0.0.50 (the default): LibreNMS's fping on the poller gets 3/3
       replies; check fails (exit 1) with the fix: a TEST-NET address and a blackhole route.
    2. A blackholed address: no reply; every line ✔, exit 0."""
    require_lab()
    sim.add_device(42, "cpe-42", ports={"port2": "up"})
    env = base_env(
        sim,
        tmp_path,
        POLL_METHOD="ssh",
        POLL_COMMAND="lnms device:poll {device_id}",
        SSH_HOST=poller.host,
        SSH_PORT=str(poller.port),
        SSH_USER=poller.user,
        SSH_KEY_FILE=str(poller.client_key),
        SSH_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
    )
    where = f"poller {poller.user}@{poller.host}:{poller.port}"
    write_env(tmp_path, env)
    loud = cli(tmp_path, "check", "42")
    print(loud.stdout)
    assert loud.returncode == 1, loud.stdout + loud.stderr
    failed = [x for x in loud.stdout.splitlines() if x.startswith("\u2718")]
    failed = [x for x in failed if not x.endswith("(warning only)")]
    assert len(failed) == 1, loud.stdout
    assert failed[0].startswith(f"\u2718 UNSUPERVISED_IP 127.0.0.50 ANSWERS ping from {where} ")
    assert "LibreNMS's fping " in failed[0] and "3/3/0%" in failed[0]
    assert "TEST-NET" in failed[0] and "ip route add blackhole" in failed[0]

    with Lab(1, workdir=tmp_path / "lab") as lab:  # its blackhole routes, removed after
        lab.assert_blackholed()
        write_env(tmp_path, {**env, "UNSUPERVISED_IP": lab.dark})
        dark = cli(tmp_path, "check", "42")
    print(dark.stdout)
    assert dark.returncode == 0, dark.stdout + dark.stderr
    lines = dark.stdout.splitlines()
    assert not [x for x in lines if x.startswith("\u2718")], dark.stdout
    assert any(
        x.startswith(f"\u2714 UNSUPERVISED_IP {lab.dark} is dark from {where} (LibreNMS's fping")
        and "3/0/100%" in x
        for x in lines
    ), dark.stdout
