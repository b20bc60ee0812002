"""Validation of data rows: the checks that turn a bad row into a named issue.

Per-row checks raise ``RowProblem(column, message)``; the caller attaches the
1-based row number. A row left out on purpose (a tie vote, a pair whose chosen
answer equals the rejected one) raises ``LeftOut(reason)`` instead: it is
counted, not reported as a problem. File-wide checks (mixed types, duplicates, train/held-out
leakage) return issues or JSON-able summaries directly.

    >>> check_conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "messages")
"""
from __future__ import annotations

import json
from collections import Counter

from finetune_core.data.records import Issue
from finetune_core.errors import StudioError
from finetune_core.limits import limits

ROLES = ("system", "user", "assistant")
ROWS_PER_GROUP = 20  # row numbers listed for one duplicate group


class RowProblem(StudioError):
    """One row cannot be used; ``column`` names where the problem is."""

    def __init__(self, column: str | None, message: str):
        super().__init__(message)
        self.column = column
        self.message = message


class LeftOut(StudioError):
    """A row left out on purpose, counted under ``reason`` ("ties", "both_bad", "identical")."""

    def __init__(self, reason: str):
        super().__init__(f"left out: {reason}")
        self.reason = reason


def require_text(value, column: str, what: str | None = None) -> str:
    """A non-empty string, else a RowProblem naming the column."""
    what = what or f"column {column!r}"
    if value is None:
        raise RowProblem(column, f"{what} is missing or null")
    if not isinstance(value, str):
        raise RowProblem(column, f"{what} should be text, got {type_name(value)}")
    if not value.strip():
        raise RowProblem(column, f"{what} is empty")
    return value


def check_conversation(messages: list[dict], column: str) -> None:
    """Known roles, non-empty text, an optional leading system message, then
    user and assistant turns alternating from a user turn."""
    expected = "user"
    for i, msg in enumerate(messages, start=1):
        role = msg.get("role")
        if role not in ROLES:
            raise RowProblem(column, f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        require_text(msg.get("content"), column, f"message {i} ({role}) content")
        if role == "system":
            if i != 1:
                raise RowProblem(column, f"message {i}: a system message is only allowed first")
            continue
        if role != expected:
            raise RowProblem(column, f"roles not alternating: message {i} is {role!r}, expected {expected!r}")
        expected = "assistant" if role == "user" else "user"


def missing_columns(required: list[str], columns: list[str], what: str) -> list[Issue]:
    """File-level issues for columns the chosen format or mapping needs."""
    present = set(columns)
    return [
        Issue(None, name, f"{what} needs column {name!r}, which the file lacks (columns: {', '.join(columns) or 'none'})")
        for name in required
        if name and name not in present
    ]


def type_name(value) -> str:
    """A JSON value's type as messages name it to a user: null, boolean, number, text, list or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def mixed_type_issues(records: list[dict], row_numbers: list[int], columns: list[str]) -> list[Issue]:
    """One warning per column whose values mix kinds (e.g. text and numbers).

    Warnings have ``row=None`` so they do not count as bad rows; the rows that
    really cannot be used get their own issue from the format's normaliser.
    """
    issues = []
    for column in columns:
        kinds: Counter = Counter()
        first_row: dict[str, int] = {}
        for record, number in zip(records, row_numbers):
            if column not in record or record[column] is None:
                continue
            kind = type_name(record[column])
            kinds[kind] += 1
            first_row.setdefault(kind, number)
        if len(kinds) < 2:
            continue
        counts = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        rare = kinds.most_common()[-1][0]
        issues.append(Issue(
            None, column,
            f"column {column!r} mixes types: {counts} (first {rare} value at row {first_row[rare]})",
        ))
    return issues


def row_key(row: dict) -> str:
    """Canonical text of a normalised row, for exact-duplicate comparison."""
    return json.dumps({k: row[k] for k in sorted(row) if k != "label"}, ensure_ascii=False, sort_keys=True)


def find_duplicates(rows: list[dict], row_numbers: list[int] | None = None, limit: int | None = None) -> dict:
    """Exact duplicate rows: how many rows repeat an earlier one, and example groups.

    At most ``limit`` groups (default ``limits().duplicates_listed``) of at most
    ROWS_PER_GROUP row numbers are listed, so a file of a million copies still
    makes a small report; ``not_listed`` (present only when something was cut)
    counts the groups and row numbers left out. Preference rows also get
    ``same_prompt``, the same summary for rows that ask the same prompt: several
    pairs per prompt are allowed, but a user should know how many there are.
    """
    limit = limits().duplicates_listed if limit is None else limit
    numbers = row_numbers or list(range(1, len(rows) + 1))
    out = _repeats(rows, numbers, row_key, limit)
    if rows and ("chosen" in rows[0] or "desirable" in rows[0]):
        out["same_prompt"] = _repeats(rows, numbers, prompt_key, limit)
    return out


def _repeats(rows: list[dict], numbers: list[int], key, limit: int) -> dict:
    groups: dict[str, list[int]] = {}
    for row, number in zip(rows, numbers):
        groups.setdefault(key(row), []).append(number)
    repeated = [g for g in groups.values() if len(g) > 1]
    examples = [g[:ROWS_PER_GROUP] for g in repeated[:limit]]
    out = {"count": sum(len(g) - 1 for g in repeated), "groups": len(repeated), "examples": examples}
    rows_left = sum(len(g) for g in repeated) - sum(len(g) for g in examples)
    if rows_left:
        out["not_listed"] = {"groups": len(repeated) - len(examples), "rows": rows_left}
    return out


def find_leakage(train: list[dict], held_out: list[dict], limit: int = 20) -> dict:
    """Held-out rows that also appear in training: exactly, or with the same prompt
    (for preference rows the prompt is what counts: a held-out pair whose prompt was
    trained on measures memory more than preference).

    ``examples`` gives 1-based positions in the held-out list.
    """
    train_keys = {row_key(r) for r in train}
    train_prompts = {prompt_key(r) for r in train}
    exact = [i for i, r in enumerate(held_out, start=1) if row_key(r) in train_keys]
    same_prompt = [i for i, r in enumerate(held_out, start=1) if prompt_key(r) in train_prompts]
    return {"count": len(exact), "same_prompt": len(same_prompt), "examples": exact[:limit]}


def prompt_key(row: dict) -> str:
    """Canonical text of a row's prompt (its text for language-modelling rows)."""
    return json.dumps(row.get("prompt", row.get("text")), ensure_ascii=False, sort_keys=True)
