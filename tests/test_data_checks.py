"""Row checks, mixed types, duplicates and train/held-out leakage."""
from __future__ import annotations

import pytest

from finetune_core.data.checks import (
    RowProblem, check_conversation, find_duplicates, find_leakage, missing_columns, mixed_type_issues,
    require_text,
)


def row(p, c, label=None):
    out = {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
    if label is not None:
        out["label"] = label
    return out


@pytest.mark.parametrize("value, message", [
    (None, "column 'x' is missing or null"),
    (3, "column 'x' should be text, got number"),
    (["a"], "column 'x' should be text, got list"),
    ("   ", "column 'x' is empty"),
])
def test_require_text(value, message):
    with pytest.raises(RowProblem) as exc:
        require_text(value, "x")
    assert (exc.value.column, exc.value.message) == ("x", message)
    assert require_text("ok", "x") == "ok"


def test_check_conversation_accepts_system_then_alternation():
    check_conversation([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                        {"role": "assistant", "content": "a"}], "m")


def test_mixed_types_named_with_first_minority_row():
    records = [{"label": "a"}, {"label": "b"}, {"label": 3}, {"label": "c"}, {"label": None}]
    issues = mixed_type_issues(records, [1, 2, 3, 4, 5], ["label"])
    assert [i.to_dict() for i in issues] == [{
        "row": None, "column": "label",
        "message": "column 'label' mixes types: 3 text, 1 number (first number value at row 3)",
    }]
    assert mixed_type_issues([{"a": "x"}, {"a": "y"}], [1, 2], ["a"]) == []


def test_missing_columns_names_each():
    issues = missing_columns(["dialogue", "summary"], ["id", "dialogue"], "the mapping")
    assert [(i.row, i.column, i.message) for i in issues] == [
        (None, "summary", "the mapping needs column 'summary', which the file lacks (columns: id, dialogue)")]


def test_find_duplicates_counts_repeats_and_groups():
    rows = [row("a", "1"), row("b", "2"), row("a", "1"), row("a", "1"), row("b", "3")]
    assert find_duplicates(rows, [10, 11, 12, 13, 14]) == {"count": 2, "groups": 1, "examples": [[10, 12, 13]]}
    assert find_duplicates([row("a", "1")])["count"] == 0


def test_find_leakage_exact_and_same_prompt():
    train = [row("a", "1"), row("b", "2")]
    held = [row("c", "3"), row("a", "1"), row("b", "other")]
    assert find_leakage(train, held) == {"count": 1, "same_prompt": 2, "examples": [2]}
    assert find_leakage(train, [row("z", "9")]) == {"count": 0, "same_prompt": 0, "examples": []}
    text = find_leakage([{"text": "t"}], [{"text": "t"}])
    assert text["count"] == 1 and text["same_prompt"] == 1
