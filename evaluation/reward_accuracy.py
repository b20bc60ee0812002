"""Reward accuracy: does a model prefer the chosen answer of a held-out preference pair?

For each pair (prompt, chosen, rejected message lists, as the data layer
normalises preference files) the model scores the summed log-probability of
the chosen completion given the prompt and of the rejected one; the pair counts
as preferred when chosen > rejected (a tie does not count). Both are tokenised
as TRL's DPOTrainer does (`pair_tokens`): the chat template applied to prompt
and prompt + completion, the completion starting where the two renderings
part (the shorter of chosen's and rejected's common prefix), truncated from the
end to max_length (keep_start). TRL drops a pair whose prompt alone fills
max_length; such a pair is left out here too and counted as "skipped".

    >>> from evaluation.significance import sign_test
    >>> round(sign_test(9, 1), 4)   # 9 of 10 pairs preferred: unlikely by chance
    0.0215

`reward_accuracy(model, rows, tuned)` scores one side of an InferenceModel:
{correct, total, accuracy, interval (bootstrap over pairs, p-value: the exact
binomial test against 50%), margins (chosen - rejected per pair, None for a
skipped pair), skipped, per_token (the same comparison of mean log-probabilities
per token, which a longer answer is not penalised in: {correct, total, accuracy,
margins}; reported beside the decided summed measure, never instead of it)}.
`compare_sides` adds, for both sides on the same pairs, the paired difference
(`significance.paired_exact`: bootstrap interval and exact McNemar test).
"""
from __future__ import annotations

import threading
from typing import Callable

from evaluation.heldout_loss import _batch_nll, _loss_batches, check_cancel
from evaluation.significance import Interval, bootstrap_mean, describe, paired_bootstrap, paired_exact, sign_test
from finetune_core.errors import InputError

PAIR_KEYS = ("prompt", "chosen", "rejected")
UNIT = "pairs"
METRIC = "reward_accuracy"
MARGIN_METRIC = "reward_margin"


def is_pair_rows(rows: list[dict]) -> bool:
    """Whether rows are normalised preference pairs (data.preference.rows_kind says "pairs").

    >>> is_pair_rows([{"prompt": [], "chosen": [], "rejected": []}]), is_pair_rows([{"prompt": [], "completion": []}])
    (True, False)
    """
    from finetune_core.data.preference import rows_kind

    return bool(rows) and rows_kind(rows) == "pairs"


def pair_tokens(row: dict, tokenizer, max_length: int | None = None
                ) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    """((ids, completion mask) of prompt + chosen, the same for prompt + rejected), as TRL's DPO builds them."""
    from finetune_core.data.stats import training_tokens

    sides = [training_tokens({"prompt": row["prompt"], "completion": row[k]}, tokenizer) for k in PAIR_KEYS[1:]]
    # the completion starts where either rendering first parts from the prompt's (TRL: min of both)
    start = min(m.index(1) if 1 in m else len(m) for _, m in sides)
    out = []
    for ids, _mask in sides:
        mask = [0] * start + [1] * (len(ids) - start)
        out.append((ids[:max_length], mask[:max_length]) if max_length else (ids, mask))
    return out[0], out[1]


def _check_rows(rows: list[dict]) -> None:
    """InputError naming the first row and field that is not a preference pair."""
    for i, row in enumerate(rows):
        for key in PAIR_KEYS:
            if not isinstance(row.get(key) if isinstance(row, dict) else None, list):
                raise InputError(f"Row {i}: field {key!r} must be a list of messages for reward accuracy "
                                 "(preference pairs: prompt, chosen, rejected).")


def pair_logps(model, rows: list[dict], tuned: bool, max_length: int | None = None, batch_size: int = 8,
               progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> list[tuple[float, float, int, int] | None]:
    """Per pair, (summed log-probability of chosen, of rejected, chosen's scored tokens, rejected's) for one
    side of `model`; None for a pair whose completions were truncated away. Batched by length; cancellable
    between batches."""
    import torch

    encoded, owner = [], []  # one sequence per completion: row i's chosen, then its rejected
    for i, row in enumerate(rows):
        for seq in pair_tokens(row, model.tokenizer, max_length):
            encoded.append(seq)
            owner.append(i)
    sums = [0.0] * len(encoded)
    counts = [0] * len(encoded)
    done = 0
    for group in _loss_batches(encoded, batch_size):
        check_cancel(cancel)
        target, context = model.side(tuned)  # a fresh context per batch (PEFT's is one-shot)
        with model.lock, torch.inference_mode(), context:
            nll, n = _batch_nll(target, [encoded[i] for i in group], model.tokenizer.pad_token_id,
                                model.policy.device)
        for j, i in enumerate(group):
            sums[i], counts[i] = -nll[j], n[j]
        done += len(group)
        if progress:
            progress(done // 2, len(rows))
    return [None if counts[2 * i] == 0 or counts[2 * i + 1] == 0 else
            (sums[2 * i], sums[2 * i + 1], counts[2 * i], counts[2 * i + 1]) for i in range(len(rows))]


def one_side_interval(correct: list[int]) -> Interval:
    """The accuracy of 0/1 outcomes with a bootstrap interval; its p-value is the exact binomial test
    against 50% (a model with no preference)."""
    iv = bootstrap_mean(correct, method="bootstrap + exact binomial test vs 50%")
    wins = sum(correct)
    return Interval(iv.estimate, iv.low, iv.high, iv.n, iv.method, sign_test(wins, len(correct) - wins),
                    iv.confidence)


def accuracy_sentence(result: dict, label: str = "") -> str:
    """One side's result in words, e.g. "SFT run: prefers chosen in 7 of 10 pairs (0.700, 95% CI ...)"."""
    iv = result.get("interval") or {}
    who = f"{label}: " if label else ""
    if not result.get("total"):
        return f"{who}no pairs to score"
    chance = (f"; vs chance (50%): exact test p = {iv['p_value']:.3f}" if iv.get("p_value") is not None else "")
    return (f"{who}prefers chosen in {result['correct']} of {result['total']} pairs ({result['accuracy']:.3f}, "
            f"95% CI {iv.get('low', 0):.3f} to {iv.get('high', 0):.3f}{chance})")


def reward_accuracy(model, rows: list[dict], tuned: bool, batch_size: int = 8, cancel: threading.Event | None = None,
                    max_length: int | None = None, limit: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """One side's reward accuracy on preference pairs (the first `limit` rows when given); see the module
    docstring for the keys. InputError names a row that is not a pair."""
    rows = rows[:limit] if limit else rows
    _check_rows(rows)
    logps = pair_logps(model, rows, tuned, max_length, batch_size, progress, cancel)
    margins = [None if lp is None else lp[0] - lp[1] for lp in logps]
    correct = [int(m > 0) for m in margins if m is not None]
    total = len(correct)
    # the same comparison per token (mean log-probability): a longer answer is not penalised for its length
    per_token = [None if lp is None else lp[0] / lp[2] - lp[1] / lp[3] for lp in logps]
    per_token_correct = sum(1 for m in per_token if m is not None and m > 0)
    return {"correct": sum(correct), "total": total, "accuracy": sum(correct) / total if total else None,
            "interval": one_side_interval(correct).to_dict() if total else None,
            "margins": margins, "skipped": len(rows) - total,
            "per_token": {"correct": per_token_correct, "total": total,
                          "accuracy": per_token_correct / total if total else None, "margins": per_token}}


def compare_sides(a: dict, b: dict) -> dict:
    """Summary entries (reward accuracy, mean margin) for side B against side A on the same pairs, each
    with its paired interval and sentence; pairs skipped on either side are left out."""
    both = [(x, y) for x, y in zip(a["margins"], b["margins"]) if x is not None and y is not None]
    ca, cb = [int(x > 0) for x, _ in both], [int(y > 0) for _, y in both]
    ma, mb = [x for x, _ in both], [y for _, y in both]
    entries = []
    for name, base, tuned, iv in ((METRIC, ca, cb, paired_exact(ca, cb) if both else None),
                                  (MARGIN_METRIC, ma, mb, paired_bootstrap(ma, mb) if both else None)):
        mean_a = sum(base) / len(base) if base else None
        mean_b = sum(tuned) / len(tuned) if tuned else None
        entries.append({"metric": name, "base": mean_a, "tuned": mean_b,
                        "delta": None if mean_a is None else mean_b - mean_a, "higher_is_better": True,
                        "interval": iv.to_dict() if iv else None,
                        "verdict_text": describe(iv, UNIT) if iv else None})
    return {"entries": entries, "pairs": len(both)}
