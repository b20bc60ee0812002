"""Evaluating a pair of sides: where its results live, what they are called, and preference rows.

Any two sides (finetune_core.inference.sides) can be evaluated on a run's rows
(`evaluation.run_eval.evaluate_run(run, sides=(a, b))`): side A fills the
Comparison's "base" columns and side B its "tuned" ones. A run's default pair
is saved in `runs/<id>/eval/`, any other in `runs/<id>/eval/pairs/<slug>/`
(`result_dir`), and meta.json says which sides and labels (`side_meta`).

Held-out preference pairs (prompt / chosen / rejected) are scored by
`evaluate_pairs`: reward accuracy of both sides on every pair
(evaluation.reward_accuracy: the headline, with its paired interval), plus
greedy answers to the first GENERATED_ROWS prompts scored against chosen as
the reference, so the examples show where the answers changed (bounded: on a
CPU each generated row costs seconds per side).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from finetune_core.errors import InputError

Progress = Callable[[str, float], None]
PAIRS_DIR = "pairs"  # under eval/: the results of pairs other than the run's default one
PREFERENCE_TASK = "preference"
GENERATED_ROWS = 16  # preference prompts answered by both sides for the examples
PAIR_NEW_TOKENS_CAP = 128  # default answer length for them (chosen answers can run long)
REWARD_SHARE = 0.5  # of the progress bar: reward accuracy of both sides; generation takes the rest


def check_sides(run, sides: tuple[str, str] | None) -> tuple[str, str]:
    """The pair to compare: `sides` checked (two well-formed, different side keys), else the run's default."""
    from finetune_core.inference.sides import check_side, default_sides

    if sides is None:
        return default_sides(run)
    a, b = (check_side(k) for k in sides)
    if a == b:
        raise InputError("Side A and side B are the same model: pick two different ones.")
    return a, b


def side_meta(model, sides: tuple[str, str] | None = None) -> dict:
    """{"sides": {"a", "b"}, "labels": {"a", "b"}} for results files, from the model's side keys (or
    `sides`) and labels; {} for a model made without sides."""
    keys = sides or getattr(model, "side_keys", None)
    labels = getattr(model, "side_labels", None) or {}
    if not keys:
        return {}
    return {"sides": {"a": keys[0], "b": keys[1]},
            "labels": {"a": labels.get(False, keys[0]), "b": labels.get(True, keys[1])}}


def result_dir(run, sides: tuple[str, str] | None = None) -> Path:
    """Where a pair's evaluation of `run` is saved: run.eval_dir for its default pair, else
    run.eval_dir/pairs/<slug made from the side keys>."""
    from finetune_core.inference.sides import default_sides, pair_slug

    if sides is None or tuple(sides) == default_sides(run):
        return run.eval_dir
    return run.eval_dir / PAIRS_DIR / pair_slug(*sides)


def evaluate_pairs(model, run, rows: list[dict], batch_size: int, max_new_tokens: int | None, with_loss: bool,
                   say: Progress, cancel: threading.Event | None, metrics: list[str] = ()) -> tuple:
    """(Comparison, meta) for preference pairs: reward accuracy of both sides on all `rows` (summary entries
    "reward_accuracy" and "reward_margin" first), then generation on the first GENERATED_ROWS prompts
    with chosen as the reference (and held-out loss of chosen when `with_loss`)."""
    from evaluation.heldout_loss import check_cancel
    from evaluation.reward_accuracy import accuracy_sentence, compare_sides
    from evaluation.run_eval import _evaluate, default_max_new_tokens, reference_text
    from finetune_core.limits import limits

    labels = side_meta(model).get("labels") or {"a": "base", "b": "tuned"}
    results = {tuned: _reward_side(model, run, rows, tuned, batch_size, say, cancel) for tuned in (False, True)}
    check_cancel(cancel)
    generated = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows[:GENERATED_ROWS]]
    if max_new_tokens is None:
        refs = [reference_text(r, False) for r in generated]
        max_new_tokens = min(PAIR_NEW_TOKENS_CAP, limits().max_new_tokens,
                             default_max_new_tokens(model.tokenizer, "generation", refs, None))
    comparison, meta = _evaluate(model, run, generated, "generation", None, batch_size, max_new_tokens, with_loss,
                                 lambda text, f: say(text, REWARD_SHARE + (1 - REWARD_SHARE) * f), cancel, metrics)
    entries = compare_sides(results[False], results[True])["entries"]
    comparison.summary = entries + comparison.summary
    for entry in entries:
        comparison.base_metrics[entry["metric"]] = entry["base"]
        comparison.tuned_metrics[entry["metric"]] = entry["tuned"]
    comparison.task, comparison.rows = PREFERENCE_TASK, len(rows)
    meta.update(task=PREFERENCE_TASK, rows=len(rows), generated_rows=len(generated), reward_accuracy={
        side: {**results[tuned], "sentence": accuracy_sentence(results[tuned], labels[side])}
        for side, tuned in (("a", False), ("b", True))})
    return comparison, meta


def _reward_side(model, run, rows, tuned: bool, batch_size: int, say: Progress, cancel) -> dict:
    """One side's reward accuracy, reported on its share of the progress bar."""
    from evaluation.reward_accuracy import reward_accuracy
    from evaluation.run_eval import _side_name

    name = _side_name(tuned, side_meta(model).get("labels"))
    start = REWARD_SHARE / 2 * tuned

    def report(done: int, total: int) -> None:
        say(f"{name}: reward accuracy {done}/{total} rows", start + REWARD_SHARE / 2 * done / max(total, 1))

    return reward_accuracy(model, rows, tuned, batch_size=batch_size, cancel=cancel,
                           max_length=run.config().max_length, progress=report)
