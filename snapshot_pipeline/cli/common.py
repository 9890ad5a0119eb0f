"""What every command of the CLI shares: its error types, exit codes, JSON output and argument types.

Argument types reuse the settings parsers (:func:`snapshot_pipeline.parsing.parse_int`,
:func:`~snapshot_pipeline.parsing.parse_date`), so a bound is checked, and worded, in one place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from collections.abc import Callable

from snapshot_pipeline.parsing import SettingsError, parse_date, parse_int

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CliError(RuntimeError):
    """A user-facing error: printed to stderr, exit code 1."""


class BadInput(CliError):
    """A bad argument or setting: printed to stderr as one line, exit code 2 (as argparse's usage errors)."""


def int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high`` (:func:`parsing.parse_int`), ``what`` named;
    ASCII digits only, as Blnk's server parses numbers (``int()`` alone would take "٥" for 5)."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]+", text.strip(), re.ASCII):
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a whole number in ASCII digits 0-9")
        try:
            return parse_int(text, what, low, high)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def date_arg(text: str) -> dt.date:
    """An argparse ``type``: a ``YYYY-MM-DD`` date in ASCII digits (:func:`parsing.parse_date`)."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text.strip(), re.ASCII):
        raise argparse.ArgumentTypeError(f"date={text!r} is not a date in YYYY-MM-DD form")
    try:
        return parse_date(text, "date")
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def print_json(payload: object) -> None:
    """The command's machine-readable result, on stdout."""
    print(json.dumps(payload, indent=2, default=str))
