"""config.parse: defaults, required keys, every rule, and secrets kept out of repr and errors."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_handler.config.kinds import render_markdown
from alert_handler.config.table import (
    DEFAULT_POLL_COMMAND,
    SETTINGS,
    Config,
    ConfigError,
    parse,
    render_poll_command,
    unknown_key_warnings,
)
from alert_handler.sim.simulator import Simulator
from tests.conftest import DaemonProcess, base_env, free_port, installed_cli

TOKEN = "0123456789abcdef0123456789abcdef"
URL = "http://librenms.example"
FLOAT_KEYS = {
    "RECOVERY_INTERVAL_SEC": "recovery_interval_sec",
    "API_TIMEOUT_SEC": "api_timeout_sec",
    "POLL_TIMEOUT_SEC": "poll_timeout_sec",
    "SSH_CONNECT_TIMEOUT_SEC": "ssh_connect_timeout_sec",
    "CLIENT_TIMEOUT_SEC": "client_timeout_sec",
    "RECONCILE_INTERVAL_SEC": "reconcile_interval_sec",
    "STOP_TIMEOUT_SEC": "stop_timeout_sec",
}
POSITIVE_INT_KEYS = {
    "MAX_PARALLEL": "max_parallel",
    "MAX_CONNECTIONS": "max_connections",
}
COUNT_KEYS = {
    "API_RETRIES": "api_retries",
    "MAX_FORCED_DOWN": "max_forced_down",
    "MAX_ATTEMPTS": "max_attempts",
}
PORT_KEYS = {"LISTEN_PORT": "listen_port", "SSH_PORT": "ssh_port"}


def env(**extra: str) -> dict[str, str]:
    """The smallest valid settings (local polling, so no SSH keys), plus `extra`."""
    base = {"LIBRENMS_URL": URL, "LIBRENMS_API_TOKEN": TOKEN, "POLL_METHOD": "local"}
    base.update(extra)
    return base


def error_of(mapping: dict[str, str]) -> ConfigError:
    """The ConfigError that parsing `mapping` raises."""
    with pytest.raises(ConfigError) as info:
        parse(mapping)
    return info.value


# -- defaults and required keys ----------------------------------------------------------------
def test_defaults() -> None:
    cfg = parse(env())
    assert cfg == Config(
        librenms_url=URL + "/api/v0", librenms_api_token=TOKEN, poll_method="local"
    )
    assert cfg.unsupervised_ip == "127.0.0.50"
    assert cfg.target_ifname == "port2"
    assert cfg.recovery_interval_sec == 60.0
    assert cfg.listen_host == "0.0.0.0"
    assert cfg.listen_port == 5000
    assert cfg.poll_command == DEFAULT_POLL_COMMAND
    assert cfg.librenms_verify_tls is True
    assert cfg.webhook_token is None
    assert cfg.allowed_clients == ()
    assert cfg.trigger_rules == ()
    assert cfg.tls_cert_file is None and cfg.tls_key_file is None
    assert cfg.dry_run is False and cfg.ack_alerts is False
    assert cfg.max_attempts == 0 and cfg.max_forced_down == 0


def test_ssh_is_the_default_poll_method_and_needs_host_and_user() -> None:
    base = {"LIBRENMS_URL": URL, "LIBRENMS_API_TOKEN": TOKEN}
    assert error_of(base).key == "SSH_HOST"
    assert error_of({**base, "SSH_HOST": "nms.example"}).key == "SSH_USER"
    assert error_of({**base, "SSH_USER": "librenms"}).key == "SSH_HOST"
    cfg = parse({**base, "SSH_HOST": "nms.example", "SSH_USER": "librenms"})
    assert cfg.poll_method == "ssh"
    assert (cfg.ssh_host, cfg.ssh_user, cfg.ssh_port) == ("nms.example", "librenms", 22)


def test_ssh_keys_are_optional_for_local_polling() -> None:
    cfg = parse(env(POLL_METHOD="LOCAL"))
    assert cfg.poll_method == "local"
    assert cfg.ssh_host is None and cfg.ssh_user is None


def test_poll_method_must_be_ssh_or_local() -> None:
    err = error_of(env(POLL_METHOD="telnet"))
    assert err.key == "POLL_METHOD"
    assert str(err).startswith("POLL_METHOD: ")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_librenms_url_is_required(value: str | None) -> None:
    mapping = env()
    if value is None:
        del mapping["LIBRENMS_URL"]
    else:
        mapping["LIBRENMS_URL"] = value
    err = error_of(mapping)
    assert err.key == "LIBRENMS_URL"
    assert "required" in str(err)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_api_token_is_required(value: str | None) -> None:
    mapping = env()
    if value is None:
        del mapping["LIBRENMS_API_TOKEN"]
    else:
        mapping["LIBRENMS_API_TOKEN"] = value
    err = error_of(mapping)
    assert err.key == "LIBRENMS_API_TOKEN"
    assert "required" in str(err)


def test_api_token_alias() -> None:
    mapping = env()
    del mapping["LIBRENMS_API_TOKEN"]
    mapping["API_TOKEN"] = TOKEN
    assert parse(mapping).librenms_api_token == TOKEN
    # The canonical name wins over the alias.
    mapping["LIBRENMS_API_TOKEN"] = "f" * 32
    assert parse(mapping).librenms_api_token == "f" * 32


def test_an_invalid_alias_token_is_reported_under_the_alias() -> None:
    mapping = env()
    del mapping["LIBRENMS_API_TOKEN"]
    mapping["API_TOKEN"] = "not a token!"
    assert error_of(mapping).key == "API_TOKEN"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://h", "http://h/api/v0"),
        ("http://h/", "http://h/api/v0"),
        ("https://h:8443", "https://h:8443/api/v0"),
        ("http://h/api/v0", "http://h/api/v0"),
        ("http://h/api/v0/", "http://h/api/v0"),
        ("https://h/librenms", "https://h/librenms/api/v0"),
    ],
)
def test_api_v0_is_appended(raw: str, expected: str) -> None:
    assert parse(env(LIBRENMS_URL=raw)).librenms_url == expected


@pytest.mark.parametrize("raw", ["librenms.example", "ftp://h", "http://", "http:// h", "//h"])
def test_librenms_url_must_be_http_with_a_host(raw: str) -> None:
    assert error_of(env(LIBRENMS_URL=raw)).key == "LIBRENMS_URL"


# -- numbers -----------------------------------------------------------------------------------
BAD_POSITIVE = ["abc", "", "nan", "NaN", "inf", "-inf", "Infinity", "-1", "-0.5", "0", "0.0", "-0"]


@pytest.mark.parametrize("key", sorted(FLOAT_KEYS))
@pytest.mark.parametrize("raw", [r for r in BAD_POSITIVE if r])
def test_positive_float_keys_reject_junk_naming_the_key(key: str, raw: str) -> None:
    err = error_of(env(**{key: raw}))
    assert err.key == key
    assert str(err) == f"{key}: must be a positive number, got {raw!r}"


def test_the_documented_message() -> None:
    err = error_of(env(RECOVERY_INTERVAL_SEC="abc"))
    assert str(err) == "RECOVERY_INTERVAL_SEC: must be a positive number, got 'abc'"


@pytest.mark.parametrize("key", sorted(FLOAT_KEYS))
@pytest.mark.parametrize(("raw", "value"), [("0.5", 0.5), ("60", 60.0), ("1e3", 1000.0)])
def test_positive_float_keys_accept_numbers(key: str, raw: str, value: float) -> None:
    assert getattr(parse(env(**{key: raw})), FLOAT_KEYS[key]) == value


@pytest.mark.parametrize("key", sorted(POSITIVE_INT_KEYS))
@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "0", "nan", "inf", "1e3"])
def test_positive_int_keys_reject_junk_naming_the_key(key: str, raw: str) -> None:
    err = error_of(env(**{key: raw}))
    assert err.key == key
    assert str(err) == f"{key}: must be a positive integer, got {raw!r}"


@pytest.mark.parametrize("key", sorted(POSITIVE_INT_KEYS))
def test_positive_int_keys_accept_integers(key: str) -> None:
    assert getattr(parse(env(**{key: "7"})), POSITIVE_INT_KEYS[key]) == 7


@pytest.mark.parametrize("key", sorted(COUNT_KEYS))
@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "nan", "inf"])
def test_count_keys_reject_junk_naming_the_key(key: str, raw: str) -> None:
    err = error_of(env(**{key: raw}))
    assert err.key == key
    assert str(err) == f"{key}: must be a whole number of 0 or more, got {raw!r}"


@pytest.mark.parametrize("key", sorted(COUNT_KEYS))
@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("3", 3)])
def test_count_keys_accept_zero_and_more(key: str, raw: str, value: int) -> None:
    assert getattr(parse(env(**{key: raw})), COUNT_KEYS[key]) == value


@pytest.mark.parametrize("key", sorted(PORT_KEYS))
@pytest.mark.parametrize("raw", ["abc", "-1", "65536", "80.5", "nan"])
def test_port_keys_reject_junk_naming_the_key(key: str, raw: str) -> None:
    err = error_of(env(**{key: raw}))
    assert err.key == key
    assert str(err) == f"{key}: must be a port number, got {raw!r}"


def test_listen_port_may_be_zero_but_ssh_port_may_not() -> None:
    assert parse(env(LISTEN_PORT="0")).listen_port == 0
    assert error_of(env(SSH_PORT="0")).key == "SSH_PORT"
    assert parse(env(SSH_PORT="65535", LISTEN_PORT="65535")).ssh_port == 65535


# -- other values ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("TRUE", True), ("yes", True), ("off", False), ("0", False)]
)
def test_booleans(raw: str, value: bool) -> None:
    cfg = parse(env(DRY_RUN=raw, ACK_ALERTS=raw, LIBRENMS_VERIFY_TLS=raw))
    assert (cfg.dry_run, cfg.ack_alerts, cfg.librenms_verify_tls) == (value, value, value)


@pytest.mark.parametrize("key", ["DRY_RUN", "ACK_ALERTS", "LIBRENMS_VERIFY_TLS"])
def test_booleans_reject_junk(key: str) -> None:
    err = error_of(env(**{key: "maybe"}))
    assert str(err) == f"{key}: must be true or false, got 'maybe'"


def test_ip_addresses() -> None:
    cfg = parse(env(UNSUPERVISED_IP=" 127.0.0.51 ", LISTEN_HOST="localhost"))
    assert cfg.unsupervised_ip == "127.0.0.51"
    assert cfg.listen_host == "127.0.0.1"
    assert parse(env(LISTEN_HOST="::1")).listen_host == "::1"
    assert error_of(env(UNSUPERVISED_IP="127.0.0.500")).key == "UNSUPERVISED_IP"
    assert error_of(env(LISTEN_HOST="example.com")).key == "LISTEN_HOST"


def test_trigger_rules_are_a_trimmed_comma_list() -> None:
    cfg = parse(env(TRIGGER_RULES=" Port2 down , Device Down,, "))
    assert cfg.trigger_rules == ("Port2 down", "Device Down")


def test_ssh_host_key_policy() -> None:
    assert parse(env(SSH_HOST_KEY_POLICY="strict")).ssh_host_key_policy == "strict"
    assert error_of(env(SSH_HOST_KEY_POLICY="none")).key == "SSH_HOST_KEY_POLICY"


def test_ssh_pass_alias() -> None:
    assert parse(env(SSH_PASS="hunter2hunter2")).ssh_password == "hunter2hunter2"
    both = parse(env(SSH_PASS="alias-value", SSH_PASSWORD="canonical-value"))
    assert both.ssh_password == "canonical-value"


# -- POLL_COMMAND --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        "sudo -u librenms lnms device:poll {device_id}",
        "docker exec librenms lnms device:poll {device_id}",
        "lnms device:poll {device_id} && echo done-{device_id}",
    ],
)
def test_poll_command_accepts_device_id_only(command: str) -> None:
    assert parse(env(POLL_COMMAND=command)).poll_command == command


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("lnms device:poll 42", "must contain {device_id}"),
        ("lnms device:poll {device}", "must contain {device_id}"),
        ("lnms device:poll {device_id!r}", "must contain {device_id}"),
        ("lnms device:poll {device_id} {host}", "{host}"),
        ("lnms device:poll {device_id} {}", "{}"),
        ("lnms device:poll {0} {device_id}", "{0}"),
    ],
)
def test_poll_command_rejects_other_placeholders(command: str, problem: str) -> None:
    err = error_of(env(POLL_COMMAND=command))
    assert err.key == "POLL_COMMAND"
    assert problem in err.problem


def test_render_poll_command() -> None:
    assert render_poll_command("lnms device:poll {device_id}", 42) == "lnms device:poll 42"
    assert render_poll_command("a {device_id} b {device_id}", 7) == "a 7 b 7"


@pytest.mark.parametrize("device_id", [0, -1, True, False, "42", 42.0, None])
def test_render_poll_command_rejects_anything_but_a_positive_int(device_id: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        render_poll_command("lnms device:poll {device_id}", device_id)  # type: ignore[arg-type]


# -- webhook token, clients, TLS -------------------------------------------------------------------
def test_webhook_token_accepted() -> None:
    token = "Abcdefgh-12345678/+="
    assert parse(env(WEBHOOK_TOKEN=token)).webhook_token == token


@pytest.mark.parametrize(
    "token",
    ["fifteen-chars15", "sixteen chars ok", "tab\tinside-the-token", "bell\x07-in-the-token"],
)
def test_webhook_token_rules(token: str) -> None:
    err = error_of(env(WEBHOOK_TOKEN=token))
    assert err.key == "WEBHOOK_TOKEN"
    assert token not in str(err)


def test_allowed_clients_parses_cidrs() -> None:
    cfg = parse(env(ALLOWED_CLIENTS="10.0.0.0/8, 192.168.1.5 ,2001:db8::/32,10.1.2.3/16,"))
    assert cfg.allowed_clients == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.5/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.1.0.0/16"),  # host bits are dropped, not refused
    )


@pytest.mark.parametrize("bad", ["example.com", "10.0.0.0/33", "10.0.0.0/8/8", "300.1.1.1"])
def test_allowed_clients_rejects_junk(bad: str) -> None:
    err = error_of(env(ALLOWED_CLIENTS=f"10.0.0.0/8,{bad}"))
    assert err.key == "ALLOWED_CLIENTS"
    assert repr(bad) in str(err)


def test_tls_files_go_together() -> None:
    assert error_of(env(TLS_CERT_FILE="/etc/cert.pem")).key == "TLS_KEY_FILE"
    assert error_of(env(TLS_KEY_FILE="/etc/key.pem")).key == "TLS_CERT_FILE"
    cfg = parse(env(TLS_CERT_FILE="/etc/cert.pem", TLS_KEY_FILE="/etc/key.pem"))
    assert (cfg.tls_cert_file, cfg.tls_key_file) == ("/etc/cert.pem", "/etc/key.pem")


# -- secrets -------------------------------------------------------------------------------------
SECRETS = {
    "LIBRENMS_API_TOKEN": "SecretApiToken0123456789",
    "SSH_PASSWORD": "SecretSshPassword",
    "SSH_KEY_PASSPHRASE": "SecretKeyPassphrase",
    "WEBHOOK_TOKEN": "SecretWebhookToken0123",
    "EVENT_WEBHOOK_SECRET": "whsec_U2VjcmV0U2lnbmluZ0tleTAxMjM0NTY3ODkwMTIzNDU=",
    "NOTIFY_URLS": "tgram://123456789:SecretBotToken0123/4242",
    "HA_REDIS_URL": "redis://:SecretRedisPassword@127.0.0.1:6379/0",
}


def test_secrets_are_not_in_repr() -> None:
    cfg = parse(env(**SECRETS))
    text = repr(cfg) + str(cfg)
    # Each Apprise URL is a secret, and so is each part of it that may be a token.
    assert set(cfg.secrets()) == {*SECRETS.values(), "SecretBotToken0123"}
    for secret in SECRETS.values():
        assert secret not in text
    assert "librenms.example" in text  # repr still says something useful


@pytest.mark.parametrize(
    "mapping",
    [
        env(**{**SECRETS, "RECOVERY_INTERVAL_SEC": "abc"}),
        env(**{**SECRETS, "POLL_COMMAND": "lnms {host}"}),
        env(**{**SECRETS, "TLS_CERT_FILE": "/c.pem"}),
        env(**{**SECRETS, "ALLOWED_CLIENTS": "nope"}),
        {**SECRETS, "LIBRENMS_URL": "ftp://x"},
    ],
)
def test_no_error_message_carries_a_secret(mapping: dict[str, str]) -> None:
    err = error_of(mapping)
    for secret in SECRETS.values():
        assert secret not in str(err)
        assert secret not in repr(err)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_an_invalid_api_token_is_never_echoed(tail: str) -> None:
    token = "s3cr3t-" + tail  # the dash makes it invalid
    err = error_of(env(LIBRENMS_API_TOKEN=token))
    assert err.key == "LIBRENMS_API_TOKEN"
    assert "s3cr3t" not in str(err)
    assert "s3cr3t" not in repr(err)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=9),  # too short
        st.tuples(
            st.text(max_size=20), st.sampled_from(" \t\x00\x7f\u2028"), st.text(max_size=20)
        ).map(lambda parts: parts[0] + parts[1] + "x" + parts[2]),  # a bad character inside
    )
)
def test_an_invalid_webhook_token_is_never_echoed(tail: str) -> None:
    token = "s3cr3t" + tail
    err = error_of(env(WEBHOOK_TOKEN=token))
    assert err.key == "WEBHOOK_TOKEN"
    assert "s3cr3t" not in str(err)
    assert "s3cr3t" not in repr(err)


# -- POLLER_GROUP_HOSTS -----------------------------------------------------------------------
def test_poller_group_hosts() -> None:
    """GROUP=TARGET pairs; TARGET local or [USER@]HOST[:PORT]; blanks around items dropped."""
    cfg = parse(
        env(
            POLLER_GROUP_HOSTS=" 2=poller-east, 3=librenms@10.0.3.5:2222,4=local,5=[2001:db8::5]",
            SSH_USER="librenms",
        )
    )
    assert [str(t) for t in cfg.poller_group_hosts] == [
        "poller-east",
        "librenms@10.0.3.5:2222",
        "local",
        "[2001:db8::5]",
    ]
    assert [(t.group, t.host, t.user, t.port) for t in cfg.poller_group_hosts][:2] == [
        (2, "poller-east", None, None),
        (3, "10.0.3.5", "librenms", 2222),
    ]
    assert parse(env()).poller_group_hosts == ()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("east=poller", "is not GROUP=TARGET"),
        ("2", "is not GROUP=TARGET"),
        ("2=", "is not GROUP=TARGET"),
        ("2=poller east", "is neither local nor [USER@]HOST[:PORT]"),
        ("2=-oProxyCommand=x", "is neither local nor [USER@]HOST[:PORT]"),
        ("2=poller:0", "0 is not a port number"),
        ("2=a,2=b", "poller group 2 is listed twice"),
        ("2=poller-east", "needs USER@ or SSH_USER"),
    ],
)
def test_bad_poller_group_hosts_name_the_variable(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(env(POLLER_GROUP_HOSTS=raw))
    assert caught.value.key == "POLLER_GROUP_HOSTS" and problem in str(caught.value)


def test_librenms_timezone() -> None:
    assert parse(env(LIBRENMS_TIMEZONE="Europe/Berlin")).librenms_timezone == "Europe/Berlin"
    assert parse(env()).librenms_timezone is None  # this host's zone
    for bad in ("Mars/Olympus", "../../etc/passwd", "Europe/"):
        with pytest.raises(ConfigError) as caught:
            parse(env(LIBRENMS_TIMEZONE=bad))
        assert caught.value.key == "LIBRENMS_TIMEZONE" and "IANA time zone" in str(caught.value)


# -- the table, .env.example and docs/configuration.md ------------------------------------------
ROOT = Path(__file__).parent.parent
ASSIGNMENT = re.compile(r"^(#?)([A-Z][A-Z0-9_]+)=(.*)$", flags=re.M)


def test_the_table_is_config() -> None:
    """One Setting per Config field, in field order; names unique with aliases; the secrets are
    the six that stay out of repr and that Config.secrets() returns."""
    assert [spec.name for spec in SETTINGS] == [f.name for f in fields(Config)]
    names = [name for spec in SETTINGS for name in (spec.key, *spec.aliases)]
    assert len(names) == len(set(names))
    assert {spec.key for spec in SETTINGS if spec.secret} == set(SECRETS)
    assert {spec.key for spec in SETTINGS if spec.required} == {
        "LIBRENMS_URL",
        "LIBRENMS_API_TOKEN",
    }
    for spec, f in zip(SETTINGS, fields(Config), strict=True):
        assert f.repr is not spec.secret, spec.key
        if spec.required is None:
            assert f.default == spec.default, spec.key


def test_env_example_assigns_every_setting_once_in_table_order() -> None:
    """.env.example has one `KEY=` or `#KEY=` line per setting, in the table's order, and no
    other; the aliases are named in comments."""
    example = (ROOT / ".env.example").read_text()
    assert [key for _, key, _ in ASSIGNMENT.findall(example)] == [s.key for s in SETTINGS]
    for spec in SETTINGS:
        for alias in spec.aliases:
            assert (
                f"{alias} is accepted as an alias" in example or f"{alias} is an alias" in example
            )


def test_env_example_shows_the_defaults() -> None:
    """A commented-out line of a setting that has a default shows that default."""
    example = (ROOT / ".env.example").read_text()
    by_key = {spec.key: spec for spec in SETTINGS}
    for commented, key, value in ASSIGNMENT.findall(example):
        spec = by_key[key]
        if commented and spec.default not in (None, ()):
            assert spec.kind.read(key, value) == spec.default, key


def test_docs_are_rendered_from_the_table() -> None:
    """docs/configuration.md is what `python -m alert_handler.config --markdown` prints, with
    one row per setting and no row for anything else."""
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_markdown(SETTINGS), (
        "regenerate: python -m alert_handler.config --markdown > docs/configuration.md"
    )
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", committed, flags=re.M)
    assert rows == [spec.key for spec in SETTINGS]


def test_the_generator_prints_the_docs() -> None:
    """The documented command prints the committed file and refuses other arguments."""
    command = [sys.executable, "-m", "alert_handler.config.table"]
    out = subprocess.run([*command, "--markdown"], capture_output=True, text=True, check=True)
    assert out.stdout == (ROOT / "docs" / "configuration.md").read_text()
    assert subprocess.run(command, capture_output=True).returncode == 2


# -- unknown names ------------------------------------------------------------------------------
def test_a_misspelt_key_in_the_env_file_names_the_closest_setting() -> None:
    assert unknown_key_warnings(["LIBRENMS_URL", "RECOVERY_INTERVALL_SEC"]) == [
        "unknown setting RECOVERY_INTERVALL_SEC in .env: did you mean RECOVERY_INTERVAL_SEC?"
    ]
    assert unknown_key_warnings(["dry_run"], source="/etc/ah.env") == [
        "unknown setting dry_run in /etc/ah.env: did you mean DRY_RUN?"
    ]


def test_every_unknown_key_in_the_env_file_is_named() -> None:
    assert unknown_key_warnings(["COMPOSE_PROJECT_NAME", "COMPOSE_PROJECT_NAME"]) == [
        "unknown setting COMPOSE_PROJECT_NAME in .env"
    ]


def test_settings_and_aliases_are_known() -> None:
    known = [name for spec in SETTINGS for name in (spec.key, *spec.aliases)]
    assert unknown_key_warnings(known, known) == []


def test_only_near_misses_in_the_environment_are_named() -> None:
    """The environment of a login shell or a systemd service is quiet; a typo is not."""
    noise = [
        *("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TERM", "PWD", "TZ"),
        *("SSH_AUTH_SOCK", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "HOSTNAME", "MAIL"),
        *("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"),
        *("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "STATE_DIRECTORY", "LOGS_DIRECTORY"),
        *("RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY", "SYSTEMD_EXEC_PID", "MAINPID"),
        *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
        *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "no_proxy", "VIRTUAL_ENV"),
        *("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"),
    ]
    assert unknown_key_warnings([], noise) == []
    assert unknown_key_warnings([], [*noise, "WEBHOK_TOKEN"]) == [
        "unknown setting WEBHOK_TOKEN in the environment: did you mean WEBHOOK_TOKEN?"
    ]


def test_a_key_in_the_file_and_the_environment_is_named_once() -> None:
    assert unknown_key_warnings(["DRYRUN"], ["DRYRUN"]) == [
        "unknown setting DRYRUN in .env: did you mean DRY_RUN?"
    ]


def test_a_strange_key_is_quoted() -> None:
    assert unknown_key_warnings(["A B\nC"]) == ["unknown setting 'A B\\nC' in .env"]


def test_check_and_serve_name_a_misspelt_key(tmp_path: Path) -> None:
    """1. `check` with a .env whose SSH_HOST is misspelt: exit 2 on SSH_HOST, then the hint.
    2. `serve` with the same .env: exit 2 with the same hint on stderr."""
    (tmp_path / ".env").write_text(
        f"LIBRENMS_URL={URL}\nLIBRENMS_API_TOKEN={TOKEN}\nSSH_HOTS=nms\nSSH_USER=librenms\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_", "POLL"))}
    cli = installed_cli()
    check = subprocess.run(
        [*cli, "check"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 2
    assert check.stdout.splitlines() == [
        "\u2718 configuration: SSH_HOST: is required when POLL_METHOD=ssh",
        "\u2718 unknown setting SSH_HOTS in .env: did you mean SSH_HOST? (warning only)",
    ]
    serve = subprocess.run(
        [*cli, "serve"], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )
    assert serve.returncode == 2
    assert serve.stderr.splitlines()[-1] == (
        "alert-handler: unknown setting SSH_HOTS in .env: did you mean SSH_HOST?"
    )


def test_serve_logs_a_misspelt_key(sim: Simulator, tmp_path: Path) -> None:
    """1. The daemon starts with a valid .env that also holds RECOVERY_INTERVALL_SEC.
    2. Its log has one WARNING line naming it and the setting it is near; it stops cleanly."""
    port = free_port()
    settings = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVALL_SEC="30")
    # An UNSUPERVISED_IP that does not answer: a loopback one is warned about at start too.
    settings["UNSUPERVISED_IP"] = "203.0.113.254"
    daemon = DaemonProcess(tmp_path, settings, port)
    assert daemon.terminate() == 0
    warnings = [line for line in daemon.output().splitlines() if " WARNING " in line]
    assert [line.split(" WARNING ", 1)[1] for line in warnings] == [
        "step=config unknown setting RECOVERY_INTERVALL_SEC in .env: "
        "did you mean RECOVERY_INTERVAL_SEC?"
    ]


def test_a_removed_setting_is_warned_about_with_what_replaced_it() -> None:
    """A key of a setting that became a constant starts the daemon anyway, with one line each."""
    lines = unknown_key_warnings(["LIBRENMS_CA_BUNDLE", "NOTIFY_WINDOW_SEC"], ["SSH_MAX_CHANNELS"])
    assert lines == [
        "setting LIBRENMS_CA_BUNDLE is no longer read: set REQUESTS_CA_BUNDLE in the environment "
        "instead (requests reads it)",
        "setting NOTIFY_WINDOW_SEC is no longer read: now fixed at 5 minutes",
        "setting SSH_MAX_CHANNELS is no longer read: now fixed at 8 polls at once per SSH "
        "connection",
    ]
    env = {"LIBRENMS_URL": "http://127.0.0.1/", "LIBRENMS_API_TOKEN": "a" * 32}
    parse({**env, "POLL_METHOD": "local", "EVENTS_KEEP_FILES": "9"})  # no refusal


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("short", "got 5 characters"),
        ("a" * 129, "got 129 characters"),
        ("abcd-efgh", "it holds a character that is neither"),
    ],
)
def test_a_bad_api_token_says_the_rule(value: str, says: str) -> None:
    """The message states LibreNMS's rule, 8 to 128 letters and digits, and what is wrong
    with the value, never the value itself (issue 22, item 8)."""
    mapping = env()
    mapping["LIBRENMS_API_TOKEN"] = value
    text = str(error_of(mapping))
    assert "8 to 128 characters, letters and digits only" in text and says in text
    assert value not in text
    for ok in ("a" * 8, "Z9" * 64):
        mapping["LIBRENMS_API_TOKEN"] = ok
        assert parse(mapping).librenms_api_token == ok
