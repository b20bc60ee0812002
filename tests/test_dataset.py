"""The facade: prepare_data end to end, split_rows, JSONL helpers, inspect_file and the CLI."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from finetune_core.data.dataset import (
    DataMapping, Issue, inspect_file, inspect_main, prepare_data, read_jsonl, split_rows, write_jsonl,
)

FIX = Path(__file__).parent / "fixtures" / "data"


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def pc_lines(pairs) -> str:
    return "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs)


@pytest.mark.parametrize("name, fmt, rows", [
    ("prompt_completion.jsonl", "prompt_completion", 3),
    ("prompt_completion_chat.jsonl", "prompt_completion", 2),
    ("messages.jsonl", "messages", 2),
    ("sharegpt_tools.json", "sharegpt", 2),
    ("alpaca.json", "alpaca", 2),
    ("text.jsonl", "text", 2),
    ("classification.csv", "classification", 12),
    ("reviews.tsv", "classification", 6),
])
def test_every_fixture_prepares_usable(name, fmt, rows):
    report = prepare_data(DataMapping(str(FIX / name)))
    assert (report.format, len(report.rows), report.usable, report.fatal) == (fmt, rows, True, False)
    assert [i for i in report.issues if i.row is not None] == []


def test_classification_labels_counted_and_numeric_order():
    report = prepare_data(DataMapping(str(FIX / "classification.csv")))
    assert report.labels == {"negative": 4, "neutral": 4, "positive": 4}
    stars = prepare_data(DataMapping(str(FIX / "reviews.tsv")))
    assert stars.labels == {"1": 2, "3": 2, "5": 2}
    assert stars.rows[0]["prompt"][0]["content"].startswith("Classify the text into one of: 1, 3, 5.")


def test_csv_with_mapping_and_template():
    opts = DataMapping(str(FIX / "tickets.csv"), prompt_template="Ticket:\n{ticket}", completion_column="reply")
    report = prepare_data(opts)
    assert report.format == "columns" and report.usable
    assert report.rows[0]["prompt"][0]["content"] == "Ticket:\nPrinter broken.\r\nPlease help."


def test_csv_missing_mapped_column_is_named():
    report = prepare_data(DataMapping(str(FIX / "tickets.csv"), prompt_column="ticket", completion_column="answer"))
    assert report.fatal and not report.usable
    assert [i.to_dict() for i in report.issues] == [{
        "row": None, "column": "answer",
        "message": "the mapping needs column 'answer', which the file lacks (columns: ticket, reply)",
    }]


def test_unknown_placeholder_is_named():
    report = prepare_data(DataMapping(str(FIX / "tickets.csv"), prompt_template="{tikcet}", completion_column="reply"))
    assert report.fatal
    assert report.issues[0].column == "tikcet"
    assert report.issues[0].message == ("the prompt template uses {tikcet} but the file has no column 'tikcet' "
                                        "(columns: ticket, reply)")


def test_rows_with_empty_completions_are_named_and_dropped(tmp_path):
    path = write(tmp_path, "d.jsonl", pc_lines([("a", "1"), ("b", ""), ("c", "3"), ("d", "   ")]))
    report = prepare_data(DataMapping(path))
    assert [i.to_dict() for i in report.issues] == [
        {"row": 2, "column": "completion", "message": "the completion ('completion') is empty"},
        {"row": 4, "column": "completion", "message": "the completion ('completion') is empty"},
    ]
    assert len(report.rows) == 2 and report.row_numbers == [1, 3] and report.usable
    strict = prepare_data(DataMapping(path, drop_bad_rows=False))
    assert not strict.usable and not strict.fatal and strict.bad_rows == 2


def test_all_completions_empty_is_not_usable(tmp_path):
    report = prepare_data(DataMapping(write(tmp_path, "d.jsonl", pc_lines([("a", ""), ("b", "")]))))
    assert report.fatal and not report.usable and report.rows == []
    assert report.issues[-1] == Issue(None, None, "no usable rows: all 2 rows have problems "
                                                  "(first problem: the completion ('completion') is empty)")


def test_mixed_types_warn_and_still_load(tmp_path):
    lines = [{"text": f"t{i}", "label": "yes" if i % 2 else "no"} for i in range(9)] + [{"text": "t9", "label": 1}]
    path = write(tmp_path, "m.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    report = prepare_data(DataMapping(path))
    assert report.format == "classification" and report.usable and len(report.rows) == 10
    assert report.issues == [Issue(None, "label", "column 'label' mixes types: 9 text, 1 number (first number value at row 10)")]
    assert report.labels == {"1": 1, "no": 5, "yes": 4}


def test_wrong_type_in_a_row(tmp_path):
    path = write(tmp_path, "w.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": ["x"], "completion": "c"}\n')
    report = prepare_data(DataMapping(path))
    assert report.issues[-1].to_dict() == {"row": 2, "column": "prompt",
                                           "message": "message 1 should be an object with role and content"}


def test_size_limit_refusal(tmp_path):
    path = write(tmp_path, "d.jsonl", pc_lines([("a", "b")] * 200))
    report = prepare_data(DataMapping(path), max_file_mb=0.001)
    assert report.fatal and report.rows == [] and "over the 0.001 MB limit" in report.issues[0].message


def test_garbage_never_raises(tmp_path):
    p = tmp_path / "g.json"
    p.write_bytes(bytes(range(1, 120)) * 3)
    report = prepare_data(DataMapping(str(p)))
    assert report.fatal and not report.usable


def test_unknown_columns_and_unknown_format(tmp_path):
    path = write(tmp_path, "u.jsonl", '{"foo": "a", "bar": "b", "baz": "c"}\n')
    report = prepare_data(DataMapping(path))
    assert report.fatal and report.issues[0].message.startswith("could not detect the format (columns: foo, bar, baz)")
    assert prepare_data(DataMapping(path, data_format="yaml")).issues[0].message.startswith("unknown format 'yaml'")


def test_forced_format_with_mapping(tmp_path):
    path = write(tmp_path, "q.jsonl", '{"question": "2+2?", "answer": "4"}\n')
    report = prepare_data(DataMapping(path, data_format="prompt_completion", prompt_column="question",
                                      completion_column="answer"))
    assert report.format == "prompt_completion" and report.rows[0]["completion"][0]["content"] == "4"
    missing = prepare_data(DataMapping(path, data_format="alpaca"))
    assert [i.column for i in missing.issues] == ["instruction", "output"]


def test_summary_is_json_able():
    summary = prepare_data(DataMapping(str(FIX / "classification.csv"))).summary()
    assert json.loads(json.dumps(summary))["format"] == "classification"
    assert {"format", "rows", "total_rows", "issues", "labels", "columns"} <= set(summary)
    assert summary["rows"] == 12 and summary["columns"] == ["text", "label"]


def labelled(n_per_label: dict) -> list[dict]:
    rows = []
    for label, n in n_per_label.items():
        rows += [{"prompt": [{"role": "user", "content": f"{label} {i}"}],
                  "completion": [{"role": "assistant", "content": label}], "label": label} for i in range(n)]
    return rows


def test_split_is_deterministic_and_stratified():
    rows = labelled({"a": 60, "b": 30, "c": 10})
    train, held = split_rows(rows, 0.2, seed=7)
    assert (train, held) == split_rows(rows, 0.2, seed=7)
    assert held != split_rows(rows, 0.2, seed=8)[1]
    assert len(held) == 20 and len(train) == 80
    assert Counter(r["label"] for r in held) == {"a": 12, "b": 6, "c": 2}
    assert {json.dumps(r) for r in train}.isdisjoint(json.dumps(r) for r in held)


def test_split_edge_cases():
    rows = labelled({"x": 2})
    assert [len(s) for s in split_rows(rows, 0.01, 1)] == [1, 1]
    assert split_rows(rows, 0.0, 1) == (rows, [])
    assert split_rows(rows[:1], 0.5, 1) == (rows[:1], [])


def test_split_keeps_duplicates_together_so_no_leakage():
    from finetune_core.data.checks import find_leakage

    rows = labelled({"a": 20})
    rows += [rows[0]] * 5 + [rows[1]] * 5  # heavy duplication
    for seed in range(10):
        train, held = split_rows(rows, 0.2, seed)
        assert len(held) == 6
        assert find_leakage(train, held)["count"] == 0


def test_jsonl_round_trip_is_atomic(tmp_path):
    rows = [{"text": "é\u2028x"}, {"text": "two"}]
    path = tmp_path / "sub" / "rows.jsonl"
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]


def test_inspect_file_reports_duplicates_split_and_leakage(tmp_path):
    path = write(tmp_path, "d.jsonl", pc_lines([("a", "1"), ("b", "2"), ("a", "1"), ("c", "3")] + [(f"q{i}", "x") for i in range(16)]))
    out = inspect_file(DataMapping(path, eval_fraction=0.1, seed=3))
    assert out["rows"] == 20 and out["usable"] is True and out["format"] == "prompt_completion"
    assert out["stats"]["duplicates"] == {"count": 1, "groups": 1, "examples": [[1, 3]]}
    assert out["stats"]["split"] == {"train": 18, "held_out": 2, "eval_fraction": 0.1, "seed": 3}
    assert out["stats"]["leakage"]["count"] == 0
    assert "tokens" not in out["stats"]


def test_inspect_main_json_exit_codes(tmp_path, capsys):
    good = write(tmp_path, "g.jsonl", pc_lines([("a", "1"), ("b", "2")]))
    assert inspect_main([good, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["rows"], out["issues"], out["usable"]) == ("prompt_completion", 2, [], True)
    assert "stats" in out
    bad = write(tmp_path, "b.jsonl", pc_lines([("a", ""), ("b", "")]))
    assert inspect_main([bad, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 0 and out["usable"] is False
    assert out["issues"][0] == {"row": 1, "column": "completion", "message": "the completion ('completion') is empty"}


def test_inspect_main_mapping_and_readable_output(capsys):
    code = inspect_main([str(FIX / "tickets.csv"), "--map", "prompt=ticket", "--map", "completion=reply"])
    text = capsys.readouterr().out
    assert code == 0
    assert text.splitlines()[:2] == ["format: columns", "rows: 2 usable of 2 read"]
    assert text.rstrip().endswith("usable: yes")
    assert inspect_main([str(FIX / "tickets.csv"), "--map", "completion=missing", "--map", "prompt=ticket"]) == 2
    assert "  the mapping needs column 'missing'" in capsys.readouterr().out
