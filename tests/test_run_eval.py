"""evaluation.run_eval and `python -m evaluation` on the tiny trained run.

The session's `trained_run` learned to answer "blue" (its base answers "").
Observed tuned outputs on the 8 held-out rows (items 40-47, red/blue
alternating): "blue Loan ..." on rows 0, 2-5 and 7, "blueblueblue..." on row 1
(no whole-word label, so no credit) and "families..." on row 6. Base accuracy
is therefore 0.0 and tuned 3/8 = 0.375 (rows 3, 5, 7). Tests that write eval/ use a copy of the run.
"""
from __future__ import annotations

import json
import math
import shutil
import threading

import pytest

from evaluation.__main__ import main
from evaluation.compare import Comparison
from evaluation.metrics import extract_label
from evaluation.heldout_loss import heldout_loss
from evaluation.run_eval import GENERATION_CAP, default_max_new_tokens, evaluate_run, load_meta
from finetune_core.data.dataset import read_jsonl, write_jsonl
from finetune_core.runs.store import Run

LABELS = ["blue", "red"]


@pytest.fixture(scope="module")
def inference(trained_run):
    from finetune_core.inference.generation import InferenceModel

    return InferenceModel.from_run(trained_run)


@pytest.fixture()
def run(trained_run, tmp_path) -> Run:
    """A private copy of the trained run: evaluations write into it."""
    return Run(shutil.copytree(trained_run.path, tmp_path / trained_run.id))


@pytest.fixture(scope="module")
def evaluated(trained_run, inference, tmp_path_factory):
    """One full evaluation (with progress recorded), shared by the read-only checks."""
    copy = Run(shutil.copytree(trained_run.path, tmp_path_factory.mktemp("eval") / trained_run.id))
    calls = []
    comparison = evaluate_run(copy, batch_size=4, progress=lambda text, f: calls.append((text, f)),
                              model=inference)
    return copy, comparison, calls


def test_classification_scores_follow_the_outputs(evaluated):
    _run, c, _calls = evaluated
    assert c.task == "classification" and c.rows == 8
    ex = c.examples
    # Recompute accuracy from the texts themselves: the numbers must follow the outputs.
    for side in ("base", "tuned"):
        hits = [extract_label(o, LABELS) == r for o, r in zip(ex[f"{side}_output"], ex["reference"])]
        assert getattr(c, f"{side}_metrics")["accuracy"] == sum(hits) / 8
        assert list(ex[f"{side}_score"]) == [float(h) for h in hits]
    assert c.base_metrics["accuracy"] == 0.0
    assert c.tuned_metrics["accuracy"] == 0.375 > c.base_metrics["accuracy"]
    assert c.tuned_metrics["accuracy/blue"] == 0.75 and c.tuned_metrics["accuracy/red"] == 0.0
    assert (c.wins, c.ties, c.losses) == (3, 5, 0)
    assert sorted(c.biggest_wins().index) == [3, 5, 7]
    assert sorted(ex["reference"]) == ["blue"] * 4 + ["red"] * 4
    assert ex.loc[1, "input"] == "Item 41: which colour is the blue ball number 41?"


def test_empty_generations_score_zero(evaluated):
    _run, c, _calls = evaluated
    assert list(c.examples["base_output"]) == [""] * 8  # the tiny base model answers nothing
    assert list(c.examples["base_score"]) == [0.0] * 8
    assert c.base_metrics["exact_match"] == 0.0


def test_files_written_and_reloadable(evaluated, inference):
    run, c, _calls = evaluated
    assert sorted(p.name for p in run.eval_dir.iterdir()) == ["examples.csv", "meta.json", "results.json"]
    assert not list(run.path.glob(".eval-*"))  # no temporary folder left behind
    loaded = Comparison.load(run.eval_dir)
    assert loaded.to_json_dict() == json.loads(json.dumps(c.to_json_dict()))
    meta = load_meta(run)
    label_tokens = max(len(inference.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in LABELS)
    assert meta["rows"] == 8 and meta["batch_size"] == 4 and meta["source"] == "heldout"
    assert meta["max_new_tokens"] == label_tokens + 8
    assert set(meta["seconds"]) == {"base", "tuned"} and all(v >= 0 for v in meta["seconds"].values())
    assert meta["timestamp"] and meta["task"] == "classification"
    assert meta["metrics"] == ["accuracy", "exact_match"] == loaded.metrics_used
    assert list(loaded.examples.sort_index()["tuned:accuracy"]) == list(c.examples.sort_index()["tuned_score"])


def test_progress_base_first_half_tuned_second_half(evaluated):
    _run, _c, calls = evaluated
    fractions = [f for _t, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    base = [f for t, f in calls if t.startswith("Base")]
    tuned = [f for t, f in calls if t.startswith("Tuned")]
    assert base and tuned and max(base) == 0.5 and min(tuned) > 0.5 and max(tuned) == 1.0
    assert "Base (adapter off): generating 4/8 rows" in [t for t, _f in calls]


def test_summary_marks_direction(evaluated):
    _run, c, _calls = evaluated
    assert all(e["higher_is_better"] is True for e in c.summary)


def test_accuracy_gain_has_its_exact_interval(evaluated):
    _run, c, _calls = evaluated
    acc = next(e for e in c.summary if e["metric"] == "accuracy")
    # 3 rows gained, none lost: exact McNemar p = 2 / 2^3 = 0.25, so 8 rows cannot tell
    assert acc["interval"]["estimate"] == pytest.approx(0.375) and acc["interval"]["p_value"] == pytest.approx(0.25)
    assert acc["verdict_text"].startswith("not distinguishable from no change on 8 rows (+0.375")


def test_an_unknown_metric_is_refused_before_the_model_loads(run):
    def load_model():
        raise AssertionError("the model was loaded before the metric names were checked")

    with pytest.raises(ValueError, match=r"Unknown metric 'rogue'.*available metrics are rouge"):
        evaluate_run(run, metrics="chrf,rogue", load_model=load_model)
    assert not run.eval_dir.exists()


def test_cancel_before_start_writes_nothing(run, inference):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(InterruptedError):
        evaluate_run(run, cancel=cancel, model=inference)
    assert not run.eval_dir.exists()


def test_cancel_midway_writes_nothing(run, inference):
    cancel = threading.Event()

    def progress(text, fraction):
        if text.startswith("Tuned"):
            cancel.set()  # during the tuned side, after its first batch

    with pytest.raises(InterruptedError):
        evaluate_run(run, batch_size=2, progress=progress, cancel=cancel, model=inference)
    assert not run.eval_dir.exists() and not list(run.path.glob(".eval-*"))


def test_limit_and_explicit_max_new_tokens(run, inference):
    c = evaluate_run(run, limit=3, batch_size=2, max_new_tokens=2, model=inference)
    assert c.rows == 3 and len(c.examples) == 3
    assert load_meta(run)["max_new_tokens"] == 2 and load_meta(run)["limit"] == 3


def test_bad_arguments_fail_before_loading(run):
    for kwargs in ({"limit": 0}, {"batch_size": 0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            evaluate_run(run, **kwargs)


def test_with_loss_tuned_below_base(run, inference):
    plain = evaluate_run(run, model=inference)
    c = evaluate_run(run, with_loss=True, model=inference)
    for side in (c.base_metrics, c.tuned_metrics):
        assert math.isfinite(side["eval_loss"]) and side["perplexity"] == pytest.approx(math.exp(side["eval_loss"]))
    assert c.tuned_metrics["eval_loss"] < c.base_metrics["eval_loss"]
    entries = {e["metric"]: e for e in c.summary}
    for name in ("eval_loss", "perplexity"):
        assert entries[name]["higher_is_better"] is False
        assert entries[name]["delta"] == pytest.approx(entries[name]["tuned"] - entries[name]["base"]) and entries[name]["delta"] < 0
        # the loss is a ratio over all rows: its interval resamples rows and recomputes it on both sides
        interval = entries[name]["interval"]
        assert interval["estimate"] == pytest.approx(entries[name]["delta"]) and interval["n"] == 8
        assert interval["low"] <= interval["estimate"] <= interval["high"] < 0  # clearly lower on 8 rows
        assert entries[name]["verdict_text"].startswith("better on 8 rows")
    # Win/tie/loss come from the per-example text scores only.
    assert (c.wins, c.ties, c.losses) == (plain.wins, plain.ties, plain.losses)
    assert set(load_meta(run)["seconds"]) == {"base", "tuned", "base_loss", "tuned_loss"}


def test_heldout_loss_matches_transformers_loss(trained_run, inference):
    """One row: our completion-only mean NLL equals the model's own loss with the prompt masked."""
    import torch

    from finetune_core.data.stats import training_tokens

    row = read_jsonl(trained_run.data_dir / "heldout.jsonl")[0]
    ids, mask = training_tokens(row, inference.tokenizer, 512)
    labels = [t if m else -100 for t, m in zip(ids, mask)]
    with torch.no_grad():
        expected = inference.model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
    assert heldout_loss(inference, [row], tuned=True, max_length=512) == pytest.approx(expected, rel=1e-5)


def test_language_modelling_rows_need_loss(run, inference):
    write_jsonl(run.data_dir / "heldout.jsonl", [{"text": f"The ball number {i} is blue."} for i in range(3)])
    with pytest.raises(ValueError, match="only held-out loss applies"):
        evaluate_run(run, model=inference)
    c = evaluate_run(run, with_loss=True, model=inference)
    assert c.task == "language_modeling" and c.rows == 3 and c.examples.empty
    assert [e["metric"] for e in c.summary] == ["eval_loss", "perplexity"]
    assert Comparison.load(run.eval_dir).summary == c.summary


def test_other_data_file_uses_the_run_mapping(run, inference, tmp_path):
    from conftest import toy_rows

    path = tmp_path / "more.jsonl"
    write_jsonl(path, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(6)])
    c = evaluate_run(run, data_path=str(path), model=inference)
    assert c.rows == 6 and c.task == "classification"  # the run's label set still applies
    assert load_meta(run)["source"] == str(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json at all\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not usable"):
        evaluate_run(run, data_path=str(bad), model=inference)


def test_default_max_new_tokens(inference):
    tok = inference.tokenizer
    refs = ["a short summary", "a slightly longer summary of the dialogue"]
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs)
    assert default_max_new_tokens(tok, "generation", refs, None) == longest + 16
    assert default_max_new_tokens(tok, "generation", ["word " * 400], None) == GENERATION_CAP


# -- command line ----------------------------------------------------------------

def test_cli_json(run, capsys):
    assert main(["--run", str(run.path), "--json", "--batch-size", "8", "--metrics", "chrf"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 8 and out["task"] == "classification"
    assert out["base"]["accuracy"] == 0.0 and out["tuned"]["accuracy"] == 0.375
    assert set(out["seconds"]) == {"base", "tuned"} and out["lower_is_better"] == []
    assert out["metrics_used"] == ["accuracy", "exact_match", "chrf"]
    entries = {e["metric"]: e for e in out["summary"]}
    assert entries["accuracy"]["interval"]["p_value"] == pytest.approx(0.25)
    assert entries["chrf"]["interval"]["estimate"] == pytest.approx(entries["chrf"]["delta"])
    assert all(e["verdict_text"] for e in out["summary"])


def test_cli_text(run, capsys):
    assert main(["--run", str(run.path), "--limit", "4", "--loss"]) == 0
    out = capsys.readouterr().out
    assert "classification: 4 rows" in out
    assert "per example, tuned vs base: 1 wins, 3 ties, 0 losses" in out
    assert "(lower is better)" in out and "Biggest wins:" in out and "Biggest losses:\n  (none)" in out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split()[-2:] == ["95%", "CI"]
    # 1 row gained of 4: the interval reaches 0 and the headline sentence says so
    assert "\naccuracy: not distinguishable from no change on 4 rows (+0.250" in out
    loss = next(line for line in out.splitlines() if line.startswith("eval_loss"))
    assert loss.endswith("  (lower is better)") and " to " in loss  # its interval, on the same line


def test_cli_bad_input_exits_2(run, tmp_path, capsys):
    assert main(["--run", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    shutil.rmtree(run.adapter_dir)
    assert main(["--run", str(run.path)]) == 2
    assert "no saved adapter" in capsys.readouterr().err
    assert main(["--run", str(run.path), "--limit", "x"]) == 2
    assert main(["--run", str(run.path), "--metrics", "bleu,meteor"]) == 2
    assert "Unknown metric 'meteor'" in capsys.readouterr().err
