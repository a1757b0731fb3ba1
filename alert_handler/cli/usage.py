"""Usage mistakes: one line on stderr and exit 2, with "did you mean" for a close misspelling
of a command, an option or a choice; and the argparse types that refuse a bad value as such a
mistake (a negative count or wait, a duration, a silence target, a port).

A refusal (the daemon or LibreNMS says no, a file cannot be read) is another thing: one line
and exit 1, written by the command itself.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

from alert_handler.cli.output import device_id_arg
from alert_handler.core.verdict import ControlError, parse_duration, parse_target

_CHOICE_RE = re.compile(r"invalid choice: '(?P<word>[^']*)' \(choose from (?P<choices>.*)\)")


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean X?)" when `word` is a close misspelling of one of `candidates`."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line: `prog: what; see prog --help`, exit 2."""

    def error(self, message: str) -> NoReturn:
        choice = _CHOICE_RE.search(message)
        if choice:
            words = [w.strip().strip("'") for w in choice.group("choices").split(",")]
            word = choice.group("word")
            message = message[: choice.start()] + (
                f"invalid choice: {word!r}{did_you_mean(word, words)}"
            )
        self.usage_error(message)

    def usage_error(self, message: str) -> NoReturn:
        """One line on stderr and exit 2."""
        text = " ".join(message.split())  # never more than one line
        self.exit(2, f"{self.prog}: {text}; see `{self.prog} --help`\n")

    def unrecognized(self, extras: list[str], commands: Iterable[str] = ()) -> NoReturn:
        """The words this parser does not know, with the closest option (or command) named."""
        word = extras[0]
        if not word.startswith("-") and commands:
            self.usage_error(f"unknown command {word!r}{did_you_mean(word, commands)}")
        name = word.split("=", 1)[0]
        hint = did_you_mean(name, self._option_string_actions) if name.startswith("-") else ""
        self.usage_error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def usage(args: argparse.Namespace, message: str) -> int:
    """A usage mistake found by a command after parsing: one line, exit status 2."""
    prog = f"alert-handler {args.command}" if getattr(args, "command", None) else "alert-handler"
    print(f"{prog}: {message}; see `{prog} --help`", file=sys.stderr)
    return 2


def _number(
    kind: Callable[[str], float], test: Callable[[float], bool], what: str
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if value != value or not test(value):  # NaN is no number
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return value

    return parse


non_negative_int = _number(int, lambda v: v >= 0, "must be a whole number, 0 or more")
non_negative_seconds = _number(
    float, lambda v: 0 <= v < float("inf"), "must be a number of seconds, 0 or more"
)
positive_seconds = _number(
    float, lambda v: 0 < v < float("inf"), "must be a number of seconds above 0"
)
port_number = _number(int, lambda v: 0 <= v <= 65535, "must be a port number, 0 to 65535")


def duration_arg(text: str) -> str:
    """A silence's `--for` (30m, 2h, 1d), checked here and passed on as written."""
    try:
        parse_duration(text)
    except ControlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def silence_target_arg(text: str) -> str:
    """A silence target (a device id or a hostname glob), checked here."""
    if text.strip().isdigit():
        return str(device_id_arg(text.strip()))
    try:
        return str(parse_target(text, allow_group=False))
    except ControlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
