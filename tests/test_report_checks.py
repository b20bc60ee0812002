"""The stakeholder report shows every check a run had, with its interval and sentence, in HTML and Markdown.

A run made for each test (nothing trained): a held-out evaluation saved by
evaluation.compare with intervals added in the METRICS helper's schema, the checks'
JSON files from tests/test_ui_eval_checks.py, and blind votes. A run without them
says which checks were not run, and shows none of their sections.
"""
from __future__ import annotations

import json

import pytest

from evaluation.compare import RESULTS_FILE, compare
from evaluation.report import report
from evaluation.report_checks import vote_interval
from evaluation.significance import describe, paired_exact
from test_ui_eval_checks import GAINED_QUESTION, LOST_QUESTION, make_run, write_benchmarks, write_judge

VOTES = [{"winner": "tuned"}] * 5 + [{"winner": "base"}, {"winner": "tie"}, {"winner": "both_bad"}]


def _evaluate(run, with_intervals: bool = True) -> str:
    """Save a classification evaluation (0/3 -> 2/3 right); with intervals, accuracy gets its sentence."""
    compare("classification", ["a?", "b?", "c?"], ["red", "blue", "red"], ["", "", ""], ["red", "blue", "x"],
            labels=["red", "blue"]).save(run.eval_dir)
    iv = paired_exact([0, 0, 0], [1, 1, 0])
    sentence = describe(iv, "rows")
    path = run.eval_dir / RESULTS_FILE
    data = json.loads(path.read_text())
    for entry in data["summary"]:
        if not with_intervals:  # as saved before intervals existed
            entry.pop("interval", None), entry.pop("verdict_text", None)
        elif entry["metric"] == "accuracy":
            entry.update(interval=iv.to_dict(), verdict_text=sentence)
    path.write_text(json.dumps(data))
    return sentence


@pytest.fixture()
def checked_run(runs_root):
    run = make_run()
    sentence = _evaluate(run)
    bench, judge = write_benchmarks(run.path), write_judge(run.path)
    (run.path / "votes.jsonl").write_text("\n".join(map(json.dumps, VOTES)) + "\n", encoding="utf-8")
    return run, sentence, bench, judge


def _both(run, tmp_path) -> tuple[str, str]:
    html_path, md_path = report(run, tmp_path / "report")
    return html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")


def test_every_check_is_reported_with_its_interval(checked_run, tmp_path):
    run, sentence, bench, judge = checked_run
    page, text = _both(run, tmp_path)
    arc_acc = bench["benchmarks"][0]["metrics"][0]
    mmlu = bench["benchmarks"][1]["metrics"][0]
    assert mmlu["verdict_text"].startswith("worse on 40 items")  # the fixture's MMLU forgot a lot
    votes = vote_interval(VOTES)["verdict_text"]
    for shown in (page, text):
        # held-out: the headline names accuracy's sentence, the table its interval
        assert f"accuracy: {sentence}" in shown and "not distinguishable from no change on 3 rows" in sentence
        assert "95% CI" in shown and "+0.000 to +1.000" in shown
        # general skills: the table, the sentences, right -> wrong before wrong -> right
        assert "General skills (did it forget anything?)" in shown
        assert arc_acc["verdict_text"] in shown and mmlu["verdict_text"] in shown
        assert "2 items went from right to wrong after fine-tuning, 1 from wrong to right" in shown
        assert shown.index(LOST_QUESTION) < shown.index(GAINED_QUESTION)
        assert "lm-evaluation-harness 0.4.13" in shown and "0-shot" in shown
        # the judge: result with its sentence, per category, agreement with the votes
        assert "Tuned vs base on 20 prompts: 9 wins, 6 ties, 5 losses (win rate 0.60" in shown
        assert judge["verdict_text"] in shown and "judge.example.com" in shown
        assert "writing" in shown and "0.71" in shown and "3 of 4 prompts (75%)" in shown
        # blind votes: counts, win rate over decided votes, net preference with its interval
        assert "8 blind votes" in shown and "83%" in shown and votes in shown
        assert "Not run for this run" not in shown
    assert "<td class='num'>+0.000 to +1.000</td>" in page
    assert "| accuracy | 0.0000 | 0.6667 | +0.6667 | +0.000 to +1.000 | no clear change |" in text


def test_model_text_in_checks_is_inert(checked_run, tmp_path):
    run, *_ = checked_run
    page, text = _both(run, tmp_path)
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in text and "&lt;script&gt;" in text


def test_checks_not_run_are_named_and_absent(runs_root, tmp_path):
    run = make_run()
    _evaluate(run, with_intervals=False)  # saved before intervals existed: still reported, no CI
    page, text = _both(run, tmp_path)
    for shown in (page, text):
        assert ("Not run for this run: general skills (did it forget anything?), pairwise judge, "
                "blind A/B votes.") in shown
        assert "General skills (did it forget anything?)</h2>" not in shown and "## General skills" not in shown
        assert "Judge (pairwise)" not in shown and "Net preference" not in shown
        assert "Tuned beat base on" in shown  # the held-out evaluation is there, without intervals
    assert "| accuracy | 0.0000 | 0.6667 | +0.6667 | — | better |" in text
    never = make_run()
    page, _text = _both(never, tmp_path / "never")
    assert "Not run for this run: held-out evaluation, general skills" in page
