"""The one base class for problems a user can fix.

`StudioError` means: the message is written for the person using the studio
(it names the row, column, field, run or setting to change) and there is
nothing for a developer to look at. Every such error in the core derives from
it (ConfigError, LimitError, ModelError, RunError, AccessError, Busy,
TrainingError, ExportError, GGUFExportError, ...; they keep their names and
modules). The edges decide what to do with an exception by this one test:

- the UI (ui/errors.py) shows a StudioError's message as it is, and shows
  anything else as "Internal error" after logging its traceback;
- the command lines print ``error: <message>`` and exit 2 for a StudioError,
  and let anything else end with its traceback.

So a plain ValueError, KeyError or FileNotFoundError raised inside the core is
a bug, not the user's mistake: raise a StudioError subclass for what the user
did. Several subclasses also inherit ValueError (or PermissionError) because
callers and tests that predate this module catch those.
"""
from __future__ import annotations

import sys
from typing import Callable

USER_ERROR_EXIT = 2  # a command line's exit status for a StudioError


class StudioError(Exception):
    """A problem the user can fix; the message says what to change and is shown as it is.

    Never raise it for a bug: the edges show it without a traceback and do not log it.
    """


class InputError(StudioError, ValueError):
    """A value the user gave cannot be used (a chat message, a vote, a number of rows,
    a sample name); also a ValueError, which callers of the core caught before."""


def one_line(exc: BaseException, width: int = 200) -> str:
    """`exc` as one short line for a page or a terminal: "Type: first line of the message"."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= width else text[:width - 1] + "…"


def run_cli(body: Callable[[], int]) -> int:
    """Run a command line's body and return its exit status. A StudioError prints
    ``error: <message>`` on stderr and gives USER_ERROR_EXIT (2); anything else is
    a bug and propagates, so Python prints its traceback."""
    try:
        return body()
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT


__all__ = ["StudioError", "InputError", "USER_ERROR_EXIT", "one_line", "run_cli"]
