"""Held-out loss of one side (base or tuned), and the lower-is-better metrics it adds.

`heldout_loss` is the completion-only mean NLL per trained token, tokenised and
truncated as the trainer did; `evaluation.run_eval` asks for it on both sides
when the user ticks "Also compute held-out loss" (always for language-modelling
rows, which have no prompt to answer).

"eval_loss" and "perplexity" (= exp(eval_loss)) are LOWER-is-better. Win/tie/loss
counts come only from the per-example text scores, never from these. Their
summary entries keep delta = tuned − base (negative = improvement) and carry
"higher_is_better": False; every other entry carries True, so a table or chart
can colour by improvement instead of by sign.

Their intervals: the loss is a ratio over all rows (summed NLL / trained
tokens), not a mean of per-row losses, so `heldout_loss_rows` keeps each row's
(NLL sum, token count) and the interval resamples rows and recomputes both
sides' ratio (`evaluation.intervals.corpus_bootstrap`), as for BLEU.
"""
from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np

from evaluation.compare import Comparison
from evaluation.intervals import UNIT, corpus_bootstrap
from evaluation.significance import Interval, describe
from finetune_core.errors import InputError

LOWER_IS_BETTER = ("eval_loss", "perplexity")
LOSS_TOKEN_BUDGET = 2048  # tokens per loss forward pass: bounds the batch × length × vocab logits


def check_cancel(cancel: threading.Event | None, message: str = "Evaluation cancelled.") -> None:
    """Raise InterruptedError(message) once `cancel` is set: the held-out evaluation, the general-skill
    check and the judge check it between batches and save nothing after it."""
    if cancel is not None and cancel.is_set():
        raise InterruptedError(message)


def _loss_batches(encoded: list[tuple[list[int], list[int]]], batch_size: int) -> list[list[int]]:
    """Row indices grouped by length, each group within the token budget."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    groups: list[list[int]] = []
    for i in order:
        longest = len(encoded[i][0])  # sorted ascending: the newest row is the longest
        if groups and len(groups[-1]) < batch_size and (len(groups[-1]) + 1) * longest <= LOSS_TOKEN_BUDGET:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _batch_nll(target, batch: list[tuple[list[int], list[int]]], pad_id: int, device
               ) -> tuple[list[float], list[int]]:
    """Per row of one right-padded batch: the summed NLL of its masked (trained) tokens, and their count."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    weight = torch.zeros((len(batch), width), dtype=torch.float32)
    for row, (tokens, mask) in enumerate(batch):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        attention[row, :len(tokens)] = 1
        weight[row, :len(mask)] = torch.tensor(mask, dtype=torch.float32)
    ids, attention, weight = ids.to(device), attention.to(device), weight.to(device)
    logits = target(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    # Token t is predicted from positions < t: compare logits[t-1] with ids[t].
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    trained = weight[:, 1:]
    return (nll * trained).sum(dim=1).tolist(), [int(n) for n in trained.sum(dim=1).tolist()]


def heldout_loss_rows(model, rows: list[dict], tuned: bool, max_length: int, batch_size: int = 8,
                      progress: Callable[[int, int], None] | None = None,
                      cancel: threading.Event | None = None) -> np.ndarray:
    """Each row's (summed NLL, trained tokens) as a rows x 2 array, in the rows' order; tokenised and
    truncated exactly as the trainer did (`data_stats.training_tokens`)."""
    import torch

    from finetune_core.data.stats import training_tokens

    encoded = [training_tokens(row, model.tokenizer, max_length) for row in rows]
    stats = np.zeros((len(rows), 2))
    done = 0
    for group in _loss_batches(encoded, batch_size):
        check_cancel(cancel)
        # A fresh context per batch: disable_adapter() is a one-shot context manager,
        # and releasing the lock between batches lets the chat tab interleave.
        target, context = model.side(tuned)
        with model.lock, torch.inference_mode(), context:
            nll, n = _batch_nll(target, [encoded[i] for i in group], model.tokenizer.pad_token_id,
                                model.policy.device)
        stats[group, 0], stats[group, 1] = nll, n
        done += len(group)
        if progress:
            progress(done, len(rows))
    if stats[:, 1].sum() == 0:
        raise InputError("No completion tokens to score: every row was truncated away (max_length too small?).")
    return stats


def mean_loss(stats) -> float:
    """Mean NLL per trained token of rows' (summed NLL, tokens) statistics, summed or not."""
    totals = np.asarray(stats, dtype=float).reshape(-1, 2).sum(axis=0)
    return float(totals[0] / totals[1]) if totals[1] else math.nan


def heldout_loss(model, rows: list[dict], tuned: bool, max_length: int, batch_size: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> float:
    """Mean NLL per trained token (completion tokens; every token for text rows) of one side."""
    return mean_loss(heldout_loss_rows(model, rows, tuned, max_length, batch_size, progress, cancel))


def _perplexity(nll: float) -> float | None:
    # exp overflows past ~709; a diverged model's perplexity is reported as unknown.
    return math.exp(nll) if math.isfinite(nll) and nll < 700 else None


def add_lower_is_better(comparison: Comparison, name: str, base: float | None, tuned: float | None,
                        interval: Interval | None = None) -> None:
    """Add a lower-is-better metric to a Comparison (metrics dicts + summary entry, with its interval
    and sentence when there is one, else null for both)."""
    comparison.base_metrics[name] = base
    comparison.tuned_metrics[name] = tuned
    delta = None if base is None or tuned is None else tuned - base
    comparison.summary.append({"metric": name, "base": base, "tuned": tuned, "delta": delta,
                               "higher_is_better": False, "interval": interval.to_dict() if interval else None,
                               "verdict_text": describe(interval, UNIT, higher_is_better=False) if interval else None})


def mark_direction(comparison: Comparison) -> None:
    """Give every summary entry its "higher_is_better" flag (False only for LOWER_IS_BETTER metrics)."""
    for entry in comparison.summary:
        entry.setdefault("higher_is_better", entry["metric"] not in LOWER_IS_BETTER)


def add_losses(comparison: Comparison, row_stats: dict[bool, np.ndarray]) -> None:
    """Add eval_loss and perplexity, with their paired intervals, from each side's `heldout_loss_rows`
    (``{tuned: stats}``) to `comparison`."""
    base, tuned = (_finite(mean_loss(row_stats[False])), _finite(mean_loss(row_stats[True])))
    known = base is not None and tuned is not None
    loss_iv = corpus_bootstrap(row_stats[False], row_stats[True], mean_loss, mean_loss) if known else None
    add_lower_is_better(comparison, "eval_loss", base, tuned, loss_iv)
    base_ppl = _perplexity(base) if base is not None else None
    tuned_ppl = _perplexity(tuned) if tuned is not None else None
    ppl_iv = None
    if base_ppl is not None and tuned_ppl is not None and max(base, tuned) < 300:
        # a resample's loss stays near the full one; 300 keeps exp() finite with a wide margin
        ppl_iv = corpus_bootstrap(row_stats[False], row_stats[True], _ppl_of, _ppl_of)
    add_lower_is_better(comparison, "perplexity", base_ppl, tuned_ppl, ppl_iv)


def _ppl_of(stats) -> float:
    return math.exp(min(mean_loss(stats), 700.0))  # one resample of very bad rows must not overflow


def _finite(value: float) -> float | None:
    # NaN/inf cannot go into results.json (saved with allow_nan=False).
    return value if math.isfinite(value) else None

