"""Evaluation files with several references per row (DialogSum's test layout: summary1..3).

A copy of the session's tiny trained run is turned into a dialogue-summary run (response column
`summary`); the test files are written here, DialogSum-style, with no `summary` column.
"""
from __future__ import annotations

import json
import shutil

import pytest

from evaluation.compare import Comparison
from evaluation.run_eval import evaluate_run, load_eval_rows, load_meta
from finetune_core.data.dataset import write_jsonl
from finetune_core.errors import InputError
from finetune_core.config import RunConfig
from finetune_core.runs.store import Run, create_run, write_json_atomic

DIALOGUES = [
    {"fname": "test_0", "dialogue": "#Person1#: Shall we meet at six?\n#Person2#: Six is fine.",
     "summary1": "They agree to meet at six.", "summary2": "#Person2# accepts six o'clock.",
     "summary3": "A meeting is set for six.", "topic": "meeting"},
    {"fname": "test_1", "dialogue": "#Person1#: Is the shop open?\n#Person2#: Not on Sundays.",
     "summary1": "The shop is closed on Sundays.", "summary2": "", "topic": "shopping"},  # one empty, one absent
    {"fname": "test_2", "dialogue": "#Person1#: I lost my keys.\n#Person2#: Check your coat.",
     "summary1": None, "summary2": "#Person2# suggests the coat pocket.",
     "summary3": "#Person1# lost the keys.", "topic": "keys"},
]


def summary_run(tmp_path, trained_run=None, **mapping) -> Run:
    """A dialogue -> summary run mapped with `mapping`: a private copy of the tiny trained run when
    given (to evaluate with its model), else a bare run folder (enough to read evaluation rows)."""
    if trained_run is not None:
        run = Run(shutil.copytree(trained_run.path, tmp_path / trained_run.id))
    else:
        run = create_run(RunConfig.from_dict({"model": "bundled", "data_path": "dialogsum_train.jsonl"}))
    run.config().with_overrides({"data_format": "auto", **mapping}).save(run.path / "run.yaml")
    write_json_atomic(run.data_dir / "report.json", {"format": "columns", "rows": 48, "labels": None,
                                                     "columns": ["dialogue", "summary"]})
    return run


@pytest.fixture()
def test_file(tmp_path):
    path = tmp_path / "dialogsum_test.jsonl"
    write_jsonl(path, DIALOGUES)
    return path


@pytest.mark.parametrize("mapping", [
    {"prompt_column": "dialogue", "completion_column": "summary", "data_format": "columns"},
    {},  # auto: the training file's columns (dialogue, summary) tell which column answered
])
def test_numbered_columns_become_the_row_s_references(runs_root, tmp_path, test_file, mapping):
    rows, labels, source = load_eval_rows(summary_run(tmp_path, **mapping), str(test_file))
    assert labels is None and source == str(test_file)
    assert [r["references"] for r in rows] == [
        ["They agree to meet at six.", "#Person2# accepts six o'clock.", "A meeting is set for six."],
        ["The shop is closed on Sundays."],
        ["#Person2# suggests the coat pocket.", "#Person1# lost the keys."],
    ]
    assert rows[0]["prompt"][-1]["content"] == DIALOGUES[0]["dialogue"]


def test_underscored_numbers_and_the_completion_template(runs_root, tmp_path):
    run = summary_run(tmp_path, prompt_template="Summarize: {dialogue}",
                      completion_template="Summary: {summary}", data_format="columns")
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"dialogue": "A: hi", "summary_2": "They greet.", "summary_1": "A says hi."}])
    rows, _labels, _source = load_eval_rows(run, str(path))
    assert rows[0]["references"] == ["Summary: A says hi.", "Summary: They greet."]  # by number, rendered
    assert rows[0]["prompt"][-1]["content"] == "Summarize: A: hi"


def test_a_row_without_any_reference_is_named(runs_root, tmp_path):
    run = summary_run(tmp_path, prompt_column="dialogue", completion_column="summary",
                      data_format="columns")
    path = tmp_path / "gaps.jsonl"
    write_jsonl(path, [DIALOGUES[0], {"dialogue": "A: hi", "summary1": " ", "summary3": None}])
    with pytest.raises(InputError, match=r"Row 2 of gaps.jsonl has no reference: the columns summary1, "
                                         r"summary2, summary3 are all missing or empty"):
        load_eval_rows(run, str(path))


def test_a_file_with_the_response_column_is_read_as_before(runs_root, tmp_path):
    run = summary_run(tmp_path, prompt_column="dialogue", completion_column="summary",
                      data_format="columns")
    path = tmp_path / "single.jsonl"
    write_jsonl(path, [{"dialogue": "A: hi", "summary": "A greets.", "summary1": "ignored"}])
    rows, _labels, _source = load_eval_rows(run, str(path))
    assert "references" not in rows[0] and rows[0]["completion"][0]["content"] == "A greets."
    missing = tmp_path / "other.jsonl"
    write_jsonl(missing, [{"dialogue": "A: hi", "gist": "A greets."}])
    with pytest.raises(InputError, match="not usable"):
        load_eval_rows(run, str(missing))


def test_evaluating_a_multi_reference_file_scores_and_saves_every_reference(trained_run, tmp_path, test_file):
    from finetune_core.inference.generation import InferenceModel

    run = summary_run(tmp_path, trained_run, prompt_column="dialogue", completion_column="summary",
                      data_format="columns")
    model = InferenceModel.from_run(trained_run)
    c = evaluate_run(run, data_path=str(test_file), max_new_tokens=4, metrics=["chrf"], model=model)
    assert c.task == "generation" and c.rows == 3 and c.metrics_used == ["rouge", "exact_match", "chrf"]
    ex = c.examples.sort_index()
    assert ex.loc[0, "reference"].startswith("[1] They agree to meet at six.\n[2] ")
    assert ex.loc[1, "reference"] == "The shop is closed on Sundays."
    assert json.loads(ex.loc[2, "references"]) == [DIALOGUES[2]["summary2"], DIALOGUES[2]["summary3"]]
    assert all(e["interval"] is not None and e["verdict_text"] for e in c.summary)
    loaded = Comparison.load(run.eval_dir)
    assert loaded.examples.equals(c.examples) and loaded.summary == c.summary
    assert load_meta(run)["metrics"] == ["rouge", "exact_match", "chrf"]
