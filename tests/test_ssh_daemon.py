"""The daemon polling over a real OpenSSH sshd, with the restricted key of docs/ssh-polling.md."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import UNSUP, RunningDaemon, alert_body, wait_for
from tests.sshd import SSHD, require_sshd, running_sshd

# The wrapper docs/ssh-polling.md tells operators to install on the LibreNMS host, with the lnms
# path replaced by a stand-in that polls the simulator.
DOCUMENTED_WRAPPER = r"""#!/bin/sh
# /usr/local/bin/alert-handler-poll: the only commands alert-handler's SSH key may run.
lnms=/opt/librenms/lnms
case "$SSH_ORIGINAL_COMMAND" in
  "lnms config:get fping") exec "$lnms" config:get fping ;;
  *" -e -q -c 3 -p 500 -t 500 -O 0 "*)  # check: LibreNMS's fping against UNSUPERVISED_IP
    ip=${SSH_ORIGINAL_COMMAND##* }
    case "$ip" in
      ''|*[!0-9a-fA-F.:]*) echo "alert-handler-poll: refused: $SSH_ORIGINAL_COMMAND" >&2; exit 2 ;;
    esac
    exec "$("$lnms" config:get fping)" -e -q -c 3 -p 500 -t 500 -O 0 "$ip" ;;
esac
id=${SSH_ORIGINAL_COMMAND##* }
case "$id" in
  ''|*[!0-9]*) echo "alert-handler-poll: refused: $SSH_ORIGINAL_COMMAND" >&2; exit 2 ;;
esac
exec "$lnms" device:poll "$id"
"""


def polling_doc_text() -> str:
    return (Path(__file__).parent.parent / "docs" / "ssh-polling.md").read_text()


@pytest.fixture
def server() -> Iterator[SSHD]:
    require_sshd()
    with running_sshd() as sshd:
        yield sshd


def restrict_key(server: SSHD, sim: Simulator) -> Path:
    """authorized_keys as the docs say: command="wrapper",restrict; returns the marker dir."""
    lnms = server.dir / "lnms"
    ran = server.dir / "ran"
    ran.mkdir()
    lnms.write_text(
        "#!/bin/sh\n"
        f'touch {ran}/"$2"\n'
        f"exec {shlex.quote(sys.executable)} -m alert_handler.sim poll "
        f'--url {sim.url} --token {DEFAULT_TOKEN} "$2"\n'
    )
    lnms.chmod(0o755)
    wrapper = server.dir / "alert-handler-poll"
    wrapper.write_text(DOCUMENTED_WRAPPER.replace("/opt/librenms/lnms", str(lnms)))
    wrapper.chmod(0o755)
    pub = server.client_key.with_name(server.client_key.name + ".pub").read_text().strip()
    server.authorized_keys.write_text(f'command="{wrapper}",restrict {pub}\n')
    return ran


def test_wrapper_is_the_one_documented() -> None:
    """The wrapper tested here is, line for line, the one docs/ssh-polling.md shows."""
    text = polling_doc_text()
    for line in DOCUMENTED_WRAPPER.strip().splitlines():
        assert line in text, line


def test_daemon_polls_over_ssh_with_restricted_key(
    sim: Simulator, server: SSHD, start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    """1. The daemon polls over SSH with a key restricted to the documented wrapper.
    2. A device is forced down, restored, polled on the 'LibreNMS host', and recovered.
    3. One SSH connection serves every poll."""
    ran = restrict_key(server, sim)
    sim.add_device(61, "cpe-61", overwrite_ip="192.0.2.61", ports={"port2": "down"})
    d = start_daemon(
        POLL_METHOD="ssh",
        POLL_COMMAND="lnms device:poll {device_id}",
        SSH_HOST=server.host,
        SSH_PORT=str(server.port),
        SSH_USER=server.user,
        SSH_KEY_FILE=str(server.client_key),
        SSH_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
        RECOVERY_INTERVAL_SEC="0.5",
    )
    d.post(alert_body(61))
    wait_for(lambda: (r := d.daemon.store.get(61)) and r.attempts >= 2, what="two attempts")
    assert (ran / "61").exists()
    sim.set_link(61, "port2", "up")
    wait_for(lambda: d.daemon.store.get(61) is None, what="recovery over ssh")
    assert sim.device(61)["overwrite_ip"] == "192.0.2.61"
    assert server.count("Accepted publickey") == 1
    assert (tmp_path / "known_hosts").read_text().startswith(f"[{server.host}]:{server.port} ")
    assert sim.device(61)["overwrite_ip"] != UNSUP


def test_restricted_key_refuses_anything_else(sim: Simulator, server: SSHD) -> None:
    """The key cannot run another command, even one that starts like a poll."""
    ran = restrict_key(server, sim)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(f"[{server.host}]:{server.port}", *_host_key(server))
    try:
        client.connect(
            server.host,
            server.port,
            username=server.user,
            key_filename=str(server.client_key),
            look_for_keys=False,
            allow_agent=False,
        )
        for evil in (
            "lnms device:poll 42; touch /tmp/pwned",
            "sh -c id",
            "lnms device:poll 4 2x",
            "lnms config:get fping; id",  # the check's two commands, exactly, and nothing else
            "fping -e -q -c 3 -p 500 -t 500 -O 0 192.0.2.1;id",
            "fping -e -q -c 3 -p 500 -t 500 -O 0 $(id)",
        ):
            _, stdout, stderr = client.exec_command(evil, timeout=10)
            assert stdout.channel.recv_exit_status() == 2, evil
            assert b"refused" in stderr.read()
        assert list(ran.iterdir()) == []
    finally:
        client.close()


def _host_key(server: SSHD) -> tuple[str, paramiko.PKey]:
    key = server.host_public_key()
    return key.get_name(), key
