"""Validation of data rows: the checks that turn a bad row into a named issue.

Per-row checks raise ``RowProblem(column, message)``; the caller attaches the
1-based row number. File-wide checks (mixed types, duplicates, train/held-out
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
    counts the groups and row numbers left out.
    """
    limit = limits().duplicates_listed if limit is None else limit
    numbers = row_numbers or list(range(1, len(rows) + 1))
    groups: dict[str, list[int]] = {}
    for row, number in zip(rows, numbers):
        groups.setdefault(row_key(row), []).append(number)
    repeated = [g for g in groups.values() if len(g) > 1]
    examples = [g[:ROWS_PER_GROUP] for g in repeated[:limit]]
    out = {"count": sum(len(g) - 1 for g in repeated), "groups": len(repeated), "examples": examples}
    rows_left = sum(len(g) for g in repeated) - sum(len(g) for g in examples)
    if rows_left:
        out["not_listed"] = {"groups": len(repeated) - len(examples), "rows": rows_left}
    return out


def find_leakage(train: list[dict], held_out: list[dict], limit: int = 20) -> dict:
    """Held-out rows that also appear in training: exactly, or with the same prompt.

    ``examples`` gives 1-based positions in the held-out list.
    """
    train_keys = {row_key(r) for r in train}
    train_prompts = {_prompt_key(r) for r in train}
    exact = [i for i, r in enumerate(held_out, start=1) if row_key(r) in train_keys]
    same_prompt = [i for i, r in enumerate(held_out, start=1) if _prompt_key(r) in train_prompts]
    return {"count": len(exact), "same_prompt": len(same_prompt), "examples": exact[:limit]}


def _prompt_key(row: dict) -> str:
    return json.dumps(row.get("prompt", row.get("text")), ensure_ascii=False, sort_keys=True)
