"""Reward accuracy on held-out preference pairs, and evaluating any pair of sides.

A model prefers its own greedy answer to random words, so pairs built that way have a known answer:
accuracy 1 with chosen = the greedy answer, 0 with the two swapped. Completions are tokenised as TRL's
DPOTrainer tokenises them. `evaluate_run(run, sides=...)` writes a pair other than the run's default
under eval/pairs/ and records the sides; the CLI's --against picks the pair.

    .venv/bin/python -m pytest -q tests/test_reward_accuracy.py
"""
from __future__ import annotations

import json
import threading

import pytest

from evaluation.__main__ import main
from evaluation.compare import Comparison
from evaluation.reward_accuracy import pair_tokens, reward_accuracy
from evaluation.run_eval import evaluate_run, load_meta
from finetune_core.errors import InputError
from finetune_core.inference import sides
from finetune_core.inference.generation import GenSettings, InferenceModel
from side_support import PREFERENCE_ROWS, adapter_run

NOISE = "zebra quantum velvet harbour seventeen oblique marmalade"


@pytest.fixture(scope="module")
def pair_runs(tiny_model_dir, tmp_path_factory):
    """A parent and its child whose held-out rows are preference pairs, in a module-wide runs root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_RUNS_DIR", str(tmp_path_factory.mktemp("pair-runs")))
        parent = adapter_run(tiny_model_dir, seed=1)
        child = adapter_run(tiny_model_dir, parent=parent, seed=2, heldout=PREFERENCE_ROWS)
        yield parent, child


@pytest.fixture(scope="module")
def model(pair_runs):
    parent, child = pair_runs
    return InferenceModel.for_sides(sides.run_key(parent), sides.run_key(child))


def _own_answer_pairs(model, tuned: bool) -> list[dict]:
    prompts = [row["prompt"] for row in PREFERENCE_ROWS]
    answers = model.generate(prompts, tuned=tuned, settings=GenSettings(max_new_tokens=8))
    return [{"prompt": p, "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": NOISE}]} for p, a in zip(prompts, answers)]


def test_a_model_prefers_its_own_greedy_answer(model):
    rows = _own_answer_pairs(model, tuned=True)
    result = reward_accuracy(model, rows, tuned=True, batch_size=4)
    assert (result["correct"], result["total"], result["accuracy"], result["skipped"]) == (6, 6, 1.0, 0)
    assert all(m > 0 for m in result["margins"])
    iv = result["interval"]
    assert iv["estimate"] == 1.0 and iv["n"] == 6 and iv["p_value"] == pytest.approx(2 / 64)  # exact vs 50%
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    flipped = reward_accuracy(model, swapped, tuned=True, batch_size=4)
    assert flipped["accuracy"] == 0.0
    assert flipped["margins"] == pytest.approx([-m for m in result["margins"]], rel=1e-5)
    assert flipped["per_token"]["margins"] == pytest.approx([-m for m in result["per_token"]["margins"]], rel=1e-5)


def test_per_token_accuracy_does_not_penalise_a_longer_chosen_answer(monkeypatch):
    from evaluation import reward_accuracy as module

    # chosen: 10 tokens at -1 each; rejected: 2 tokens at -2 each. Summed, rejected wins (-4 > -10);
    # per token, chosen does (-1 > -2). The second pair was truncated away.
    monkeypatch.setattr(module, "pair_logps", lambda *a, **k: [(-10.0, -4.0, 10, 2), None])
    rows = [{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]}] * 2
    result = module.reward_accuracy(object(), rows, tuned=True)
    assert (result["correct"], result["total"], result["skipped"], result["margins"]) == (0, 1, 1, [-6.0, None])
    assert result["per_token"] == {"correct": 1, "total": 1, "accuracy": 1.0, "margins": [1.0, None]}


def test_a_tie_is_not_a_preference(model):
    same = [{**PREFERENCE_ROWS[0], "rejected": PREFERENCE_ROWS[0]["chosen"]}]
    result = reward_accuracy(model, same, tuned=False)
    assert result["margins"] == [0.0] and result["correct"] == 0 and result["total"] == 1


def test_completions_are_tokenised_as_trl_dpo_does(model):
    from trl.data_utils import _tokenize
    from trl.trainer.dpo_trainer import common_prefix_length

    tok, row = model.tokenizer, PREFERENCE_ROWS[1]
    prompt = _tokenize(tok, row["prompt"], add_generation_prompt=True)["input_ids"]
    full = {k: _tokenize(tok, row["prompt"] + row[k])["input_ids"] for k in ("chosen", "rejected")}
    start = min(common_prefix_length(prompt, ids) for ids in full.values())
    (chosen, chosen_mask), (rejected, rejected_mask) = pair_tokens(row, tok)
    assert chosen == full["chosen"] and rejected == full["rejected"]
    assert chosen_mask == [0] * start + [1] * (len(chosen) - start)
    assert rejected_mask == [0] * start + [1] * (len(rejected) - start)


def test_truncated_pairs_are_skipped_and_bad_rows_named(model):
    prompt_len = pair_tokens(PREFERENCE_ROWS[0], model.tokenizer)[0][1].index(1)
    result = reward_accuracy(model, PREFERENCE_ROWS[:2], tuned=False, max_length=prompt_len)
    assert result["total"] == 0 and result["skipped"] == 2 and result["accuracy"] is None
    with pytest.raises(InputError, match="Row 1: field 'rejected'"):
        reward_accuracy(model, [PREFERENCE_ROWS[0], {"prompt": [], "chosen": []}], tuned=False)
    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        reward_accuracy(model, PREFERENCE_ROWS, tuned=False, cancel=stop)


def test_evaluating_a_pair_of_sides_on_preference_rows(pair_runs, model):
    parent, child = pair_runs
    pair = ("base", sides.run_key(child))
    base_pair = InferenceModel.for_sides(*pair)
    comparison = evaluate_run(child, batch_size=4, max_new_tokens=3, sides=pair, model=base_pair)
    folder = child.eval_dir / "pairs" / sides.pair_slug(*pair)
    assert sorted(p.name for p in folder.iterdir()) == ["examples.csv", "meta.json", "results.json"]
    meta = load_meta(child, pair)
    assert meta["sides"] == {"a": "base", "b": sides.run_key(child)}
    assert meta["labels"] == {"a": "Base model", "b": child.name}
    assert comparison.task == "preference" and comparison.rows == 6 and meta["generated_rows"] == 6
    entry = comparison.summary[0]
    assert entry["metric"] == "reward_accuracy" and entry["interval"]["n"] == 6 and entry["verdict_text"]
    for side, tuned in (("a", False), ("b", True)):
        saved = meta["reward_accuracy"][side]
        assert saved == {**reward_accuracy(base_pair, PREFERENCE_ROWS, tuned), "sentence": saved["sentence"]}
        assert saved["sentence"].startswith(meta["labels"][side] + ": prefers chosen in")
    assert list(Comparison.load(folder).examples["reference"])[:3] == ["red", "blue", "green"]  # chosen
    # the run's default pair (its parent vs the run) goes to eval/ and keeps the other pairs' results
    evaluate_run(child, batch_size=4, max_new_tokens=3, model=model)
    assert load_meta(child)["sides"] == {"a": sides.run_key(parent), "b": sides.run_key(child)}
    assert (child.eval_dir / "results.json").is_file() and (folder / "results.json").is_file()


def test_cli_against_names_the_pair(pair_runs, capsys):
    parent, child = pair_runs
    assert main([str(child.path), "--against", "parent", "--max-new-tokens", "2", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    # both runs have the same name here: the id's time and tail tell them apart
    assert "preference: 6 rows" in out and f"side A (base columns): {parent.label()}" in out
    assert f"{parent.label()}: prefers chosen in" in out and str(child.eval_dir) in out
    assert main([str(child.path), "--against", "base", "--json", "--max-new-tokens", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sides"]["a"] == "base" and data["saved_to"].endswith(sides.pair_slug("base", sides.run_key(child)))
    assert data["reward_accuracy"]["b"]["total"] == 6
    assert main([str(parent.path), "--against", "parent"]) == 2
    assert "has no parent run" in capsys.readouterr().err
