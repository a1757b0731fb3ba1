"""Settings from the environment and the env file: the one place that reads them, and the
warnings about them that `serve` logs and `check` prints alike."""

from __future__ import annotations

import argparse
import io
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from alert_handler.config.table import Config, ConfigError, parse, unknown_key_warnings
from alert_handler.ops.unsupervised import unsupervised_ip_warning

_read: dict[str, dict[str, str | None]] = {}  # each env file is read once (it may be a pipe)


def env_path(env_file: str | None) -> Path:
    """The env file: --env-file, else ./.env."""
    return Path(env_file) if env_file else Path.cwd() / ".env"


def _file_values(env_file: str | None) -> dict[str, str | None]:
    """The env file's names and values; {} when ./.env is absent. Any file that can be read
    counts: /dev/null is an empty env file, `--env-file <(...)` a pipe read once."""
    path = env_path(env_file)
    key = str(path)
    if key not in _read:
        where = "--env-file" if env_file else ".env"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if env_file:
                raise ConfigError(where, f"{path} does not exist") from None
            text = ""
        except IsADirectoryError:
            raise ConfigError(where, f"{path} is a directory, not a file") from None
        except PermissionError:
            raise ConfigError(where, f"{path} cannot be read (permission denied)") from None
        except UnicodeDecodeError:
            raise ConfigError(where, f"{path} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(where, f"{path} cannot be read ({exc.strerror or exc})") from None
        bad = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
        if bad:  # refused, not skipped: the line may be a setting someone believes is set
            lines = ", ".join(str(n) for n in bad)
            raise ConfigError(
                where,
                f"{path} line{'s' if len(bad) > 1 else ''} {lines} cannot be read: each line is "
                "NAME=value, a comment (#) or empty",
            )
        _read[key] = dict(dotenv_values(stream=io.StringIO(text)))
    return _read[key]


def read_env(env_file: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`.env` (./.env or --env-file) merged under the real environment, which wins."""
    merged = {k: v for k, v in _file_values(env_file).items() if v is not None}
    merged.update(os.environ if environ is None else environ)
    return merged


def env_file_warning(env_file: str | None) -> str | None:
    """A warning when the env file holding secrets can be read by other users."""
    path = env_path(env_file)
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) and mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    return None


def setting_warnings(env_file: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Unknown names in the env file, and misspelt-looking ones in the environment."""
    try:
        in_file = list(_file_values(env_file))
    except ConfigError:
        in_file = []
    in_environ = os.environ if environ is None else environ
    return unknown_key_warnings(in_file, in_environ, source=env_file or ".env")


def start_warnings(cfg: Config, env_file: str | None) -> list[str]:
    """What a valid configuration still leaves open: `serve` logs these at start, `check`
    prints them (the unknown names are `setting_warnings`)."""
    found = []
    if cfg.webhook_token is None:
        found.append("WEBHOOK_TOKEN is not set: anyone who can reach the port can post alerts")
    if not cfg.librenms_verify_tls and cfg.librenms_url.startswith("https://"):
        found.append("LIBRENMS_VERIFY_TLS=false: the LibreNMS certificate is not checked")
    readable = env_file_warning(env_file)
    if readable:
        found.append(readable)
    answers = unsupervised_ip_warning(cfg.unsupervised_ip)
    if answers:
        found.append(answers)
    return found


def no_env_file_note(env_file: str | None) -> str:
    """ " (no ./.env found in <cwd>; ...)" when settings were looked for in a missing ./.env."""
    if env_file or env_path(None).exists():
        return ""
    return f" (no ./.env found in {Path.cwd()}; pass --env-file FILE)"


def load_config(args: argparse.Namespace) -> Config:
    """The validated config, or exit 2 with one line naming the key (and any unknown names)."""
    try:
        return parse(read_env(args.env_file))
    except ConfigError as exc:
        note = no_env_file_note(args.env_file)
        print(f"alert-handler: configuration error: {exc}{note}", file=sys.stderr)
        for text in setting_warnings(args.env_file):
            print(f"alert-handler: {text}", file=sys.stderr)
        raise SystemExit(2) from None
