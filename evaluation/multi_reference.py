"""Evaluation files with several references per row (`summary1`, `summary2`, `summary3`).

A run trained with the response column `summary` can be evaluated on a test
file that has no `summary` column but numbered ones instead (`summary1..3`,
`summary_1..`, `summary-1..`), as DialogSum's test split has. Then those
columns are each row's references: the prompt is built with the run's own
mapping, and each reference is rendered the way the run's completion was
(its completion template included), so every metric scores the output
against all of them (evaluation/metrics.py says how).

`load_multi_reference(mapping, path, train_columns, completion_text)` returns
the rows (each with a "references" list) or None when the file is not such a
file; then the ordinary `prepare_data` path reads it. A missing or empty
numbered cell just means one reference fewer; a row with none at all is
refused with a message naming the row and the columns.

    >>> numbered_columns("summary", ["dialogue", "summary2", "summary_1", "summary10", "summaryx"])
    ['summary_1', 'summary2', 'summary10']
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from finetune_core.data.checks import RowProblem
from finetune_core.data.dataset import resolve_spec
from finetune_core.data.formats import normalize_row
from finetune_core.data.load import load_records
from finetune_core.data.mapping import DataMapping
from finetune_core.data.templates import template_fields
from finetune_core.errors import InputError

MISSING_SHOWN = 3  # rows named in the message about rows without any reference


def numbered_columns(column: str, columns: list[str]) -> list[str]:
    """The columns named `column` + a number (optionally after "_" or "-"), by that number."""
    pattern = re.compile(rf"^{re.escape(column)}[_-]?(\d+)$")
    found = [(int(m.group(1)), name) for name in columns if (m := pattern.match(name))]
    return [name for _number, name in sorted(found)]


def response_column(mapping: DataMapping, train_columns: list[str]) -> str | None:
    """The column the run's answers came from: the mapped completion column, the one placeholder of
    the completion template, or what the format detected on the training file's columns read."""
    if mapping.completion_column:
        return mapping.completion_column
    fields = template_fields(mapping.completion_template or "")
    if mapping.completion_template:
        return fields[0] if len(set(fields)) == 1 else None
    if not train_columns:
        return None
    spec, problems = resolve_spec(mapping, list(train_columns), [], [])
    if spec is None or problems:
        return None
    return {"alpaca": "output", "prompt_completion": spec.completion_column or "completion",
            "columns": spec.completion_column, "classification": spec.completion_column}.get(spec.format) or None


def _references(record: dict, columns: list[str]) -> list[str]:
    values = [record.get(name) for name in columns]
    return [str(v) for v in values if v is not None and not isinstance(v, (list, dict)) and str(v).strip()]


def load_multi_reference(mapping: DataMapping, path: str, train_columns: list[str],
                         completion_text: Callable[[dict], str]) -> list[dict] | None:
    """The file's rows with their "references" (texts made by `completion_text` from each rendered row),
    or None when the run's response column is in the file or has no numbered siblings there."""
    loaded = load_records(path)
    column = response_column(mapping, train_columns)
    if loaded.fatal or not column or column in loaded.columns:
        return None
    siblings = numbered_columns(column, loaded.columns)
    if not siblings:
        return None
    found = [_references(record, siblings) for record in loaded.records]
    _refuse_rows_without_references(found, loaded.row_numbers, siblings, Path(path).name)
    spec, problems = resolve_spec(mapping, loaded.columns + [column],
                                  [{**record, column: refs[0]} for record, refs in zip(loaded.records, found)], [])
    if spec is None or problems:
        first = "; ".join(issue.text() for issue in problems[:3]) or "its format could not be read"
        raise InputError(f"The data file {Path(path).name} is not usable: {first}")
    rows, skipped = [], []
    for record, refs, number in zip(loaded.records, found, loaded.row_numbers):
        try:
            row = normalize_row({**record, column: refs[0]}, spec)
            texts = [completion_text(normalize_row({**record, column: ref}, spec)) for ref in refs]
        except RowProblem as exc:
            skipped.append(f"row {number}: {exc}")  # dropped, as prepare_data drops a bad row
            continue
        rows.append({**row, "references": texts})
    if not rows:
        raise InputError(f"The data file {Path(path).name} has no usable rows ({'; '.join(skipped[:3])}).")
    return rows


def _refuse_rows_without_references(found: list[list[str]], numbers: list[int], siblings: list[str],
                                    name: str) -> None:
    missing = [number for number, refs in zip(numbers, found) if not refs]
    if not missing:
        return
    shown = ", ".join(str(n) for n in missing[:MISSING_SHOWN])
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    rows = "Row" if len(missing) == 1 else "Rows"
    raise InputError(f"{rows} {shown}{more} of {name} {'has' if len(missing) == 1 else 'have'} no reference: "
                     f"the columns {', '.join(siblings)} are all missing or empty there.")
