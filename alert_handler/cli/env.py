"""Settings from the environment and the env file: the one place that reads them."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from alert_handler.config import Config, ConfigError, parse


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


def load_config(args: argparse.Namespace) -> Config:
    """The validated config, or exit 2 with one line naming the key."""
    try:
        return parse(read_env(args.env_file))
    except ConfigError as exc:
        print(f"alert-handler: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
