"""What one row or cell of a data file may hold: the per-cell checks of the loader.

A cell is refused (its row becomes a bad row, named by row and column) when it
is longer than ``limits().cell_chars`` characters, nested deeper than
``json_depth`` levels, or holds a lone UTF-16 surrogate, which UTF-8 cannot
encode (the tokenizer, the JSON writer and the browser would all fail on it
later). `data_load` calls these while reading; `data_formats` uses
`has_broken_text` for templates.
"""
from __future__ import annotations

import re

from finetune_core.limits import Limits

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
BROKEN_TEXT = ("holds a broken character (a lone UTF-16 surrogate such as \\ud800, often half of an emoji); "
               "fix that text in the file")


def json_text_within(text: str, lim: Limits) -> bool:
    """True when no value decoded from this JSON text can break a cell limit: decoding
    never makes text longer, each bracket adds at most one level, and a lone
    surrogate can only come from a \\uD800-\\uDFFF escape (UTF-8 cannot hold one)."""
    return (len(text) <= lim.cell_chars and text.count("[") + text.count("{") <= lim.json_depth
            and _SURROGATE_ESCAPE.search(text) is None)


def record_problem(record: dict, lim: Limits) -> tuple[str, str] | None:
    """(column, message) for the first cell of a row that cannot be used, or None."""
    limit = lim.cell_chars
    for key, value in record.items():
        # Inline fast path for a short clean text cell under a clean name (most cells of most files).
        if type(value) is str and len(value) <= limit and (value.isascii() or not _SURROGATE.search(value)) \
                and type(key) is str and (key.isascii() or not _SURROGATE.search(key)):
            continue
        key = str(key)
        if has_broken_text(key):
            return printable(key), f"the column name {BROKEN_TEXT}"
        message = cell_problem(value, lim)
        if message:
            return key, f"column {key!r} {message}"
    return None


def cell_problem(value, lim: Limits) -> str | None:
    """Why one cell cannot be used (too long, nested too deep, broken text), or None.

    Nested values (message lists) count all their strings towards the cell's length.
    """
    if isinstance(value, str):  # most cells
        return _text_problem(value, len(value), lim)
    if not isinstance(value, (dict, list, tuple)):
        return None
    text = _message_list_text(value)
    if text is not None and lim.json_depth >= 3:  # row, list, message: three levels
        return _text_problem(text, len(text), lim)
    return _walk_cell(value, lim)


def _message_list_text(value) -> str | None:
    """All the strings of a list of flat objects (the usual message list), joined; None
    for any other shape. Twice as fast as the general walk on the common case."""
    if type(value) is not list or not all(type(item) is dict for item in value):
        return None
    parts = [x for item in value for pair in item.items() for x in pair]
    if any(isinstance(x, (dict, list, tuple)) for x in parts):
        return None
    return "".join(x for x in parts if type(x) is str)


def _walk_cell(value, lim: Limits) -> str | None:
    """The exact checks of a nested cell, walked with a stack (no recursion)."""
    chars, stack = 0, [(value, 2)]  # the row object itself is level 1
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            chars += len(item)
            problem = _text_problem(item, chars, lim)
            if problem:
                return problem
        elif isinstance(item, (dict, list, tuple)):
            if depth > lim.json_depth:
                return f"is {too_deep(lim)}"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _text_problem(text: str, chars: int, lim: Limits) -> str | None:
    if chars > lim.cell_chars:
        return (f"is longer than this server's limit of {lim.cell_chars:,} characters per cell "
                f"(setting {lim.setting('cell_chars')})")
    # A lone surrogate cannot be encoded as UTF-8, so the tokenizer, the JSON
    # writer and the browser would all fail on it later. The row is reported,
    # not silently repaired: cleaning would train on text that differs from the
    # file without the user knowing, and "Drop bad rows" keeps the rest usable.
    if has_broken_text(text):
        return BROKEN_TEXT
    return None


def has_broken_text(text: str) -> bool:
    """Whether the text holds a lone surrogate (cheap for ASCII text)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def printable(text: str) -> str:
    """Text safe to show and encode: lone surrogates written as \\udXXX escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def too_deep(lim: Limits) -> str:
    """The end of a "too deeply nested" message, naming this server's limit and the setting that raises it."""
    return f"nested deeper than this server's limit of {lim.json_depth} levels (setting {lim.setting('json_depth')})"
