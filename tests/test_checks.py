"""evaluation.checks: a run's benchmark and judge results, kept beside its held-out evaluation."""
from __future__ import annotations

import json
import math

import pytest

from evaluation.checks import CHECKS_DIR, checks_dir, read_check, write_check
from evaluation.compare import compare
from evaluation.run_eval import save_evaluation
from finetune_core.config import RunConfig
from finetune_core.runs.store import create_run


@pytest.fixture()
def run(runs_root):
    return create_run(RunConfig.from_dict({"model": "bundled", "data_path": "notes.jsonl"}))


def test_write_then_read_back(run):
    assert read_check(run, "benchmarks") is None  # nothing yet
    data = {"schema_version": 1, "run": run.id, "benchmarks": [{"name": "arc_easy", "items": 3}], "note": "é"}
    path = write_check(run, "benchmarks", data)
    assert path == run.path / CHECKS_DIR / "benchmarks.json" == checks_dir(run) / "benchmarks.json"
    assert read_check(run, "benchmarks") == data
    assert read_check(run, "judge") is None
    assert [p.name for p in checks_dir(run).iterdir()] == ["benchmarks.json"]  # no temporary file left


def test_a_new_check_replaces_the_old_one_entirely(run):
    write_check(run, "judge", {"items": 20, "wins": 12, "per_category": []})
    write_check(run, "judge", {"items": 5})
    assert read_check(run, "judge") == {"items": 5}


def test_the_held_out_evaluation_never_removes_the_checks(run):
    write_check(run, "judge", {"items": 1})
    comparison = compare("generation", ["q"], ["a b"], ["x"], ["a b"])
    save_evaluation(run, comparison, {"run": run.id})
    save_evaluation(run, comparison, {"run": run.id})  # replaces eval/ as a whole, twice
    assert read_check(run, "judge") == {"items": 1} and (run.eval_dir / "results.json").is_file()


@pytest.mark.parametrize("name", ["votes", "../eval/results", "judge.json", ""])
def test_only_the_known_checks_have_files(run, name):
    with pytest.raises(ValueError, match="unknown check"):
        write_check(run, name, {})
    with pytest.raises(ValueError, match="unknown check"):
        read_check(run, name)
    assert not checks_dir(run).exists()


def test_a_value_json_cannot_hold_is_refused_and_the_old_file_kept(run):
    write_check(run, "benchmarks", {"delta": 0.1})
    with pytest.raises(ValueError):
        write_check(run, "benchmarks", {"delta": math.nan})
    assert read_check(run, "benchmarks") == {"delta": 0.1}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_an_unreadable_file_reads_as_no_result(run, text):
    checks_dir(run).mkdir()
    (checks_dir(run) / "judge.json").write_text(text, encoding="utf-8")
    assert read_check(run, "judge") is None
    write_check(run, "judge", {"items": 2})  # the next check replaces it
    assert json.loads((checks_dir(run) / "judge.json").read_text(encoding="utf-8")) == {"items": 2}
