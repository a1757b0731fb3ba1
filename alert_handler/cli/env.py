"""Settings from the environment and the env file: the one place that reads them."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from alert_handler.config import Config, ConfigError, parse, unknown_key_warnings


def read_env(env_file: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`.env` (./.env or --env-file) merged under the real environment, which wins."""
    merged: dict[str, str] = {}
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    if env_file and not path.is_file():
        raise ConfigError("--env-file", f"{path} does not exist")
    if path.is_file():
        for key, value in dotenv_values(path).items():
            if value is not None:
                merged[key] = value
    merged.update(os.environ if environ is None else environ)
    return merged


def env_file_warning(env_file: str | None) -> str | None:
    """A warning when the env file holding secrets can be read by other users."""
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    return None


def setting_warnings(env_file: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Unknown names in the env file, and misspelt-looking ones in the environment."""
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    in_file = list(dotenv_values(path)) if path.is_file() else []
    in_environ = os.environ if environ is None else environ
    return unknown_key_warnings(in_file, in_environ, source=env_file or ".env")


def load_config(args: argparse.Namespace) -> Config:
    """The validated config, or exit 2 with one line naming the key (and any unknown names)."""
    try:
        return parse(read_env(args.env_file))
    except ConfigError as exc:
        print(f"alert-handler: configuration error: {exc}", file=sys.stderr)
        for text in setting_warnings(args.env_file):
            print(f"alert-handler: {text}", file=sys.stderr)
        raise SystemExit(2) from None
