"""`python -m finetune_core benchmarks`: the general-skill check from the command line, on the tiny trained
run and the small benchmark files of tests/benchmark_fixtures.py. The table a person reads, the saved
object with --json, exit status 2 on bad input and 130 when interrupted (nothing saved)."""
from __future__ import annotations

import json
import shutil

import pytest

from benchmark_fixtures import ARC_ROWS, write_benchmark_folder, write_jsonl
from finetune_core.__main__ import main as program


@pytest.fixture()
def run_dir(tmp_path, trained_run):
    return shutil.copytree(trained_run.path, tmp_path / "runs" / trained_run.id)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_benchmark_folder(tmp_path_factory.mktemp("cli-bench-data"))


def _args(run_dir, data_dir, *more):
    return ["benchmarks", "--run", str(run_dir), "--data-dir", str(data_dir), "--batch-size", "4", *more]


def test_the_table_shows_each_metric_with_its_sentence_and_the_first_flips(run_dir, data_dir, capsys):
    assert program(_args(run_dir, data_dir, "--tasks", "arc_easy,mmlu", "--limit", "6")) == 0
    out, err = capsys.readouterr()
    saved = json.loads((run_dir / "checks" / "benchmarks.json").read_text())
    lines = out.splitlines()
    assert lines[0].startswith(f"General-skill check of run {run_dir.name} (") and "zero-shot, first 6 items" in lines[0]
    assert lines[2].split() == ["benchmark", "metric", "base", "tuned", "delta", "95%", "CI"]
    for bench in saved["benchmarks"]:
        for m in bench["metrics"]:
            star = "*" if m["metric"] == bench["primary"] else ""
            row = next(i for i, line in enumerate(lines) if line.startswith(f"{bench['title']:<14} {m['metric'] + star} "))
            iv = m["interval"]
            assert lines[row].split()[-6:] == [f"{m['base']:.3f}", f"{m['tuned']:.3f}", f"{m['delta']:+.3f}",
                                               f"{iv['low']:+.3f}", "to", f"{iv['high']:+.3f}"]
            assert lines[row + 1].strip() == m["verdict_text"] and "on 6 items" in m["verdict_text"]
        flips = bench["flips"]
        assert (f"{bench['title']} ({bench['primary']}): {len(flips['right_to_wrong'])} right→wrong, "
                f"{len(flips['wrong_to_right'])} wrong→right") in lines
        for item in flips["right_to_wrong"][:3]:
            assert any(line.startswith(f"  #{item['doc_id']} right→wrong: ") for line in lines)
    assert lines[-1] == f"saved to {run_dir / 'checks' / 'benchmarks.json'}"
    assert "ARC-Easy: base model" in err and "MMLU: tuned model" in err  # progress, on stderr only


def test_json_prints_the_saved_object(run_dir, data_dir, capsys):
    assert program(_args(run_dir, data_dir, "--tasks", "hellaswag", "--limit", "0", "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((run_dir / "checks" / "benchmarks.json").read_text())
    assert printed["limit"] is None and printed["benchmarks"][0]["items"] == 5


@pytest.mark.parametrize("more,message", [
    (["--tasks", "arc_easy,piqa"], "Unknown benchmark 'piqa'"),
    (["--fewshot", "99"], "num_fewshot must be from 0 to 25"),
    (["--limit", "-3"], "limit must be"),
])
def test_bad_input_exits_2_with_the_reason(run_dir, data_dir, more, message, capsys):
    assert program(_args(run_dir, data_dir, *more)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (run_dir / "checks").exists()


def test_a_bad_file_or_a_missing_run_exits_2(run_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "arc_easy_test.jsonl", [ARC_ROWS[0], {"question": "no choices"}])
    assert program(_args(run_dir, tmp_path, "--tasks", "arc_easy")) == 2
    assert "arc_easy_test.jsonl line 2: field 'choices'" in capsys.readouterr().err
    assert program(_args(tmp_path / "nothing", tmp_path)) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_an_interrupted_check_exits_130_and_saves_nothing(run_dir, data_dir, capsys, monkeypatch):
    import evaluation.benchmarks

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation.benchmarks, "run_benchmarks", interrupted)
    assert program(_args(run_dir, data_dir)) == 130
    assert "interrupted: nothing was saved" in capsys.readouterr().err
    assert not (run_dir / "checks").exists()
