"""The poller against a real OpenSSH sshd on loopback, and as a local process.

The poll command is a small script (POLL_SCRIPT) standing in for `lnms device:poll <id>`: what it
does depends on the device id, and it leaves a marker file for every id it ran for.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from alert_handler.config.table import Config
from alert_handler.poll import (
    HostKeyMismatch,
    LocalPoller,
    PollError,
    PollResult,
    SSHPoller,
    make_poller,
)
from alert_handler.poll.result import config_problem, log_result
from tests.conftest import wait_for
from tests.sshd import SSHD, keygen, require_password_user, require_sshd, running_sshd

POLL_SCRIPT = r"""#!/bin/sh
# Stands in for `lnms device:poll <id>`; what it does depends on the device id.
here=$(dirname "$0")
touch "$here/ran/$1" 2>/dev/null
echo "Starting polling run:"
echo "user=$(id -un)"
case "$1" in
  1) echo "No devices found matching your given device specification." >&2; exit 1 ;;
  6) echo "Device was down, unable to poll." >&2; exit 6 ;;
  7) echo $$ > "$here/sleeper.pid"; exec sleep 30 ;;
  1[0-9][0-9])
    touch "$here/running/$$"
    echo "concurrent=$(ls "$here/running" | wc -l)"
    sleep 0.4
    rm -f "$here/running/$$" ;;
esac
echo ">>> Polled dev$1 ($1) in 0.01 seconds <<<"
"""


def install_script(directory: Path) -> Path:
    """Write POLL_SCRIPT and its marker directories into `directory`."""
    script = directory / "poll.sh"
    script.write_text(POLL_SCRIPT)
    script.chmod(0o755)
    for sub in ("ran", "running"):
        (directory / sub).mkdir(exist_ok=True)
    return script


def ran(directory: Path, device_id: int) -> bool:
    """Whether the script ran for `device_id`."""
    return (directory / "ran" / str(device_id)).exists()


def base_config(**kw: Any) -> Config:
    cfg = Config(librenms_url="http://librenms.test/api/v0", librenms_api_token="abcdefgh1234")
    return replace(cfg, **kw)


def ssh_config(server: SSHD, **kw: Any) -> Config:
    """Key auth as the current user against `server`, accept-new into a fresh known_hosts."""
    defaults: dict[str, Any] = {
        "poll_method": "ssh",
        "poll_command": f"{server.dir / 'poll.sh'} {{device_id}}",
        "ssh_host": server.host,
        "ssh_port": server.port,
        "ssh_user": server.user,
        "ssh_key_file": str(server.client_key),
        "ssh_known_hosts": str(server.dir / "known_hosts"),
        "ssh_connect_timeout_sec": 5.0,
        "poll_timeout_sec": 10.0,
    }
    return base_config(**{**defaults, **kw})


@pytest.fixture(autouse=True)
def hermetic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ssh-agent and no ~/.ssh keys of whoever runs the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def server() -> Iterator[SSHD]:
    require_sshd()
    with running_sshd() as sshd:
        install_script(sshd.dir)
        yield sshd
        # A timed-out command outlives its channel (and may outlive sshd's session process).
        sleeper = sshd.dir / "sleeper.pid"
        if sleeper.exists():
            with suppress(ProcessLookupError):
                os.kill(int(sleeper.read_text()), signal.SIGKILL)


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="alert_handler")
    return caplog


@pytest.mark.parametrize(
    ("status", "meaning"),
    [(0, "polled"), (6, "device down"), (1, "no such device or database error"), (2, "error")],
)
def test_meaning_names_lnms_exit_statuses(status: int, meaning: str) -> None:
    assert PollResult(5, status, (), 0.1).meaning == meaning


def test_key_auth_polls_and_logs(server: SSHD, log_lines: pytest.LogCaptureFixture) -> None:
    """1. Key auth, poll device 5.  2. Exit 0, output tail and log line reported.
    3. check() names the server and its host key fingerprint."""
    with closing(SSHPoller(ssh_config(server))) as poller:
        result = poller.poll(5)
        description = poller.check()
    assert (result.device_id, result.exit_status, result.meaning) == (5, 0, "polled")
    assert result.output_tail == (
        "Starting polling run:",
        f"user={server.user}",
        ">>> Polled dev5 (5) in 0.01 seconds <<<",
    )
    assert ran(server.dir, 5)
    assert "device=5 step=poll exit=0 meaning=polled" in log_lines.text
    fingerprint = server.host_public_key().fingerprint
    assert description.startswith(f"connected to 127.0.0.1:{server.port} as {server.user}, ")
    assert fingerprint in description
    assert server.count("Accepted publickey") == 1


def test_password_auth(server: SSHD, log_lines: pytest.LogCaptureFixture) -> None:
    """1. No key file, a password.  2. sshd accepted the password; the command ran as that user.
    3. The password is in no log line."""
    user, password = require_password_user()
    cfg = ssh_config(server, ssh_user=user, ssh_password=password, ssh_key_file=None)
    with closing(SSHPoller(cfg)) as poller:
        result = poller.poll(5)
    assert result.exit_status == 0
    assert f"user={user}" in result.output_tail
    assert server.count(f"Accepted password for {user}") == 1
    assert password not in log_lines.text


def test_wrong_password_fails_without_revealing_it(
    server: SSHD, log_lines: pytest.LogCaptureFixture
) -> None:
    """1. A wrong password and no key.  2. PollError naming the account, not the password."""
    secret = "Wrong-pw-0921"
    cfg = ssh_config(server, ssh_key_file=None, ssh_password=secret)
    with closing(SSHPoller(cfg)) as poller, pytest.raises(PollError) as caught:
        poller.poll(5)
    assert f"authentication failed for {server.user}@127.0.0.1:{server.port}" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in log_lines.text
    assert not ran(server.dir, 5)


def test_encrypted_key_of_another_type(server: SSHD) -> None:
    """1. An ECDSA key with a passphrase works.  2. A wrong passphrase is a PollError that does
    not contain it; so is a missing one."""
    key = keygen(server.dir / "client_ecdsa", kind="ecdsa", passphrase="Key-pass-5521")
    server.authorize(key)
    cfg = ssh_config(server, ssh_key_file=str(key), ssh_key_passphrase="Key-pass-5521")
    with closing(SSHPoller(cfg)) as poller:
        assert poller.poll(5).exit_status == 0
    bad = replace(cfg, ssh_key_passphrase="Not-the-pass-77")
    with closing(SSHPoller(bad)) as poller, pytest.raises(PollError) as caught:
        poller.poll(5)
    assert "wrong SSH_KEY_PASSPHRASE" in str(caught.value)
    assert "Not-the-pass-77" not in str(caught.value)
    missing = replace(cfg, ssh_key_passphrase=None)
    with closing(SSHPoller(missing)) as poller, pytest.raises(PollError, match="is encrypted"):
        poller.poll(5)


def test_accept_new_records_host_key_on_first_contact(server: SSHD) -> None:
    """1. known_hosts and its directory do not exist.  2. The first poll creates them (0700/0600)
    with the server's key under OpenSSH's [host]:port name.  3. strict now accepts it."""
    known_hosts = server.dir / "dot-ssh" / "known_hosts"
    cfg = ssh_config(server, ssh_known_hosts=str(known_hosts))
    with closing(SSHPoller(cfg)) as poller:
        assert poller.poll(5).exit_status == 0
    key = server.host_public_key()
    assert known_hosts.read_text() == f"[127.0.0.1]:{server.port} ssh-ed25519 {key.get_base64()}\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert known_hosts.parent.stat().st_mode & 0o777 == 0o700
    with closing(SSHPoller(replace(cfg, ssh_host_key_policy="strict"))) as poller:
        assert poller.poll(6).exit_status == 6


def test_changed_host_key_is_refused_and_nothing_runs(server: SSHD) -> None:
    """1. Poll once: the key is recorded.  2. sshd comes back with a new host key.
    3. HostKeyMismatch names host:port and both fingerprints; the command did not run, no
    credentials were offered, known_hosts is unchanged, also for a new poller."""
    cfg = ssh_config(server)
    old = server.host_public_key().fingerprint
    with closing(SSHPoller(cfg)) as poller:
        assert poller.poll(2).exit_status == 0
        recorded = Path(cfg.ssh_known_hosts).read_text()
        server.restart(new_host_key=True)
        new = server.host_public_key().fingerprint
        with pytest.raises(HostKeyMismatch) as caught:
            poller.poll(3)
    with closing(SSHPoller(cfg)) as poller, pytest.raises(HostKeyMismatch):
        poller.poll(4)
    message = str(caught.value)
    assert f"127.0.0.1:{server.port}" in message
    assert old in message and new in message and old != new
    assert not ran(server.dir, 3) and not ran(server.dir, 4)
    assert server.count("Accepted publickey") == 1
    assert Path(cfg.ssh_known_hosts).read_text() == recorded


def test_strict_refuses_unknown_host_key(server: SSHD) -> None:
    """1. strict and an empty known_hosts.  2. PollError, nothing recorded, nothing run."""
    cfg = ssh_config(server, ssh_host_key_policy="strict")
    with closing(SSHPoller(cfg)) as poller, pytest.raises(PollError) as caught:
        poller.poll(5)
    assert not isinstance(caught.value, HostKeyMismatch)
    assert "strict" in str(caught.value)
    assert server.host_public_key().fingerprint in str(caught.value)
    assert not Path(cfg.ssh_known_hosts).exists()
    assert not ran(server.dir, 5)
    assert server.count("Accepted") == 0


def test_command_past_poll_timeout_is_cut_off(server: SSHD) -> None:
    """1. Device 7 sleeps 30 s; POLL_TIMEOUT_SEC=1.  2. PollError saying it timed out after
    1 s (how soon is not asserted: timings belong in bench/).  3. The connection is still used
    for the next poll."""
    with closing(SSHPoller(ssh_config(server, poll_timeout_sec=1.0))) as poller:
        with pytest.raises(PollError, match=r"timed out after 1s"):
            poller.poll(7)
        assert poller.poll(5).exit_status == 0
    assert server.count("Accepted publickey") == 1


@pytest.mark.parametrize(
    ("device_id", "meaning", "last_line"),
    [
        (6, "device down", "Device was down, unable to poll."),
        (1, "no such device or database error", "No devices found matching"),
    ],
)
def test_exit_statuses_reported(server: SSHD, device_id: int, meaning: str, last_line: str) -> None:
    """1. The script exits 6 or 1, writing to stderr.  2. Status, meaning and stderr reported."""
    with closing(SSHPoller(ssh_config(server))) as poller:
        result = poller.poll(device_id)
    assert (result.exit_status, result.meaning) == (device_id, meaning)
    assert result.output_tail[-1].startswith(last_line)


def test_reconnects_after_sshd_restart(server: SSHD, log_lines: pytest.LogCaptureFixture) -> None:
    """1. Poll.  2. sshd and its sessions are killed and sshd restarts.  3. The next poll
    reconnects once (a WARNING) and succeeds."""
    with closing(SSHPoller(ssh_config(server))) as poller:
        assert poller.poll(2).exit_status == 0
        server.restart()
        assert poller.poll(3).exit_status == 0
    assert server.count("Accepted publickey") == 2
    warnings = [r.getMessage() for r in log_lines.records if r.levelno == logging.WARNING]
    assert [m for m in warnings if "reconnecting" in m] == [
        f"device=3 step=ssh reconnecting to 127.0.0.1:{server.port}: connection lost"
    ]


def test_reconnects_when_the_connection_hangs(
    server: SSHD, log_lines: pytest.LogCaptureFixture
) -> None:
    """1. Poll.  2. Freeze the sshd processes serving that connection: it still looks open but
    answers nothing.  3. The next poll's channel open times out after SSH_CONNECT_TIMEOUT_SEC,
    it reconnects once and succeeds."""
    with closing(SSHPoller(ssh_config(server, ssh_connect_timeout_sec=1.0))) as poller:
        assert poller.poll(2).exit_status == 0
        for pid in server.session_pids():
            os.kill(pid, signal.SIGSTOP)
        assert poller.poll(3).exit_status == 0
    assert server.count("Accepted publickey") == 2
    warnings = [r.getMessage() for r in log_lines.records if r.levelno == logging.WARNING]
    assert [m for m in warnings if "reconnecting" in m] == [
        f"device=3 step=ssh reconnecting to 127.0.0.1:{server.port}:"
        " cannot open a channel: Timeout opening channel."
    ]


def test_concurrent_polls_share_one_connection(server: SSHD) -> None:
    """1. 12 threads poll 12 devices, SSH_MAX_CHANNELS=4 (sshd allows 30 sessions).
    2. All succeed over one SSH connection, never more than 4 commands at once."""
    devices = list(range(100, 112))
    with (
        closing(SSHPoller(ssh_config(server), max_channels=4)) as poller,
        ThreadPoolExecutor(max_workers=len(devices)) as pool,
    ):
        results = list(pool.map(poller.poll, devices))
    assert [r.exit_status for r in results] == [0] * len(devices)
    seen = [
        int(line.split("=")[1])
        for r in results
        for line in r.output_tail
        if line.startswith("concurrent=")
    ]
    assert len(seen) == len(devices)
    assert 2 <= max(seen) <= 4
    assert server.count("Accepted publickey") == 1


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, left to an init that may not reap, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_local_poller_reports_exit_status(tmp_path: Path) -> None:
    """1. Run the script locally for devices 5 and 6.  2. Status, meaning and tail reported."""
    script = install_script(tmp_path)
    poller = LocalPoller(base_config(poll_method="local", poll_command=f"{script} {{device_id}}"))
    ok, down = poller.poll(5), poller.poll(6)
    assert (ok.exit_status, ok.meaning, ok.output_tail[-1]) == (
        0,
        "polled",
        ">>> Polled dev5 (5) in 0.01 seconds <<<",
    )
    assert (down.exit_status, down.meaning, down.output_tail[-1]) == (
        6,
        "device down",
        "Device was down, unable to poll.",
    )
    assert ran(tmp_path, 5) and ran(tmp_path, 6)


def test_local_poller_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """1. The command starts a background sleep and waits; POLL_TIMEOUT_SEC=1.
    2. PollError promptly, and the background child is gone too."""
    pidfile = tmp_path / "child.pid"
    command = f"sh -c 'sleep 30 & echo $! > {pidfile}; wait' {{device_id}}"
    poller = LocalPoller(base_config(poll_method="local", poll_command=command, poll_timeout_sec=1))
    with pytest.raises(PollError, match=r"^timed out after 1s$"):
        poller.poll(5)
    child = int(pidfile.read_text())
    wait_for(lambda: not _alive(child), what="the background child to be killed")


def test_local_poller_splits_with_shlex_and_uses_no_shell(tmp_path: Path) -> None:
    """1. The template holds `$(touch marker)` and a quoted 'a  b'.  2. echo receives them as
    words: nothing is expanded, the quoted words stay one argument."""
    marker = tmp_path / "expanded"
    command = f"echo $(touch {marker}) 'a  b' {{device_id}}"
    result = LocalPoller(base_config(poll_method="local", poll_command=command)).poll(5)
    assert result.output_tail == (f"$(touch {marker}) a  b 5",)
    assert not marker.exists()


def test_local_poller_missing_program_is_poll_error(tmp_path: Path) -> None:
    cfg = base_config(poll_method="local", poll_command=f"{tmp_path}/no-such-lnms {{device_id}}")
    with pytest.raises(PollError, match="cannot run"):
        LocalPoller(cfg).poll(5)
    with pytest.raises(PollError, match="not found"):
        LocalPoller(cfg).check()


@pytest.mark.parametrize("bad", [True, 0, -3])
def test_device_id_must_be_a_positive_int(tmp_path: Path, bad: int) -> None:
    """1. A bool, zero or negative id.  2. ValueError before anything runs or connects (the SSH
    poller points at a closed port and would raise PollError if it tried)."""
    script = install_script(tmp_path)
    template = f"{script} {{device_id}}"
    ssh = base_config(ssh_host="127.0.0.1", ssh_port=1, ssh_user="nobody", poll_command=template)
    local = replace(ssh, poll_method="local")
    for poller in (SSHPoller(ssh), LocalPoller(local)):
        with closing(poller), pytest.raises(ValueError, match="positive integer"):
            poller.poll(bad)
    assert list((tmp_path / "ran").iterdir()) == []


def test_unreachable_host_is_poll_error(tmp_path: Path) -> None:
    cfg = base_config(
        ssh_host="127.0.0.1",
        ssh_port=1,
        ssh_user="nobody",
        ssh_known_hosts=str(tmp_path / "known_hosts"),
    )
    with closing(SSHPoller(cfg)) as poller, pytest.raises(PollError, match="cannot connect"):
        poller.check()


def test_make_poller_follows_poll_method() -> None:
    """The default route (every group not in POLLER_GROUP_HOSTS) is POLL_METHOD's poller."""
    local = base_config(poll_method="local")
    ssh = base_config(ssh_host="127.0.0.1", ssh_user="librenms")
    with closing(make_poller(local)) as poller:
        assert isinstance(poller.route(0).target, LocalPoller)
    with closing(make_poller(ssh)) as poller:
        assert isinstance(poller.route(7).target, SSHPoller)
        assert poller.labels() == ["librenms@127.0.0.1:22"]


def test_threads_are_not_left_behind(server: SSHD) -> None:
    """1. Poll and close.  2. paramiko's transport thread has ended."""
    before = threading.active_count()
    with closing(SSHPoller(ssh_config(server))) as poller:
        poller.poll(5)
        assert threading.active_count() > before
    wait_for(lambda: threading.active_count() <= before, what="paramiko's thread to end")
    assert threading.active_count() == before


def test_known_key_type_is_asked_for_first(server: SSHD) -> None:
    """1. sshd serves Ed25519 (paramiko's first choice) and ECDSA host keys; known_hosts holds
    only the ECDSA one, and strict.  2. The poll asks for ECDSA and is accepted."""
    ecdsa = server.add_host_key("ecdsa")
    server.restart()
    key = server.host_public_key(ecdsa)
    known_hosts = server.dir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {key.get_name()} {key.get_base64()}\n")
    with closing(SSHPoller(ssh_config(server, ssh_host_key_policy="strict"))) as poller:
        assert poller.poll(5).exit_status == 0
        assert key.fingerprint in poller.check()


def test_known_hosts_hashed_entry_is_honoured(server: SSHD) -> None:
    """1. known_hosts holds the key under a hashed name (HashKnownHosts yes), and strict.
    2. The poll is accepted; with another key under that hashed name it is refused."""
    import hashlib
    import hmac

    salt = os.urandom(20)
    name = f"[127.0.0.1]:{server.port}".encode()
    digest = hmac.new(salt, name, hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    known_hosts = server.dir / "known_hosts"
    known_hosts.write_text(f"{hashed} ssh-ed25519 {server.host_public_key().get_base64()}\n")
    cfg = ssh_config(server, ssh_host_key_policy="strict")
    with closing(SSHPoller(cfg)) as poller:
        assert poller.poll(5).exit_status == 0
    other = keygen(server.dir / "other", kind="ed25519")
    known_hosts.write_text(f"{hashed} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]))
    with closing(SSHPoller(cfg)) as poller, pytest.raises(HostKeyMismatch):
        poller.poll(2)
    assert not ran(server.dir, 2)


def test_the_wrong_user_is_recognised_in_the_output() -> None:
    """lnms exits 1 for the wrong user, as for "no such device": the output tells them apart."""
    assert config_problem(1, ("Error: lnms must not run as root.",)) is not None
    wrong = config_problem(1, ("x", "Error: lnms must be run as the user librenms."))
    assert wrong is not None and "sudo -u librenms" in wrong
    assert config_problem(1, ("No devices found matching your given device specification",)) is None
    assert config_problem(6, ("Error: lnms must not run as root.",)) is None
    result = log_result(PollResult(5, 1, ("Error: lnms must not run as root.",), 0.1))
    assert result.meaning == "configuration error" and result.config_error is not None
