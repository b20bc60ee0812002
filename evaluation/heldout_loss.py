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
"""
from __future__ import annotations

import math
import threading
from typing import Callable

from evaluation.compare import Comparison
from finetune_core.errors import InputError

LOWER_IS_BETTER = ("eval_loss", "perplexity")
LOSS_TOKEN_BUDGET = 2048  # tokens per loss forward pass: bounds the batch × length × vocab logits


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise InterruptedError once the evaluation's `cancel` event is set (checked between batches)."""
    if cancel is not None and cancel.is_set():
        raise InterruptedError("Evaluation cancelled.")


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


def _batch_nll(target, batch: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[float, int]:
    """Summed NLL of the masked (trained) tokens in one right-padded batch, and their count."""
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
    return float((nll * trained).sum()), int(trained.sum())


def heldout_loss(model, rows: list[dict], tuned: bool, max_length: int, batch_size: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> float:
    """Mean NLL per trained token (completion tokens; every token for text rows),
    tokenised and truncated exactly as the trainer did (`data_stats.training_tokens`)."""
    import torch

    from finetune_core.data.stats import training_tokens

    encoded = [training_tokens(row, model.tokenizer, max_length) for row in rows]
    total, count, done = 0.0, 0, 0
    for group in _loss_batches(encoded, batch_size):
        check_cancel(cancel)
        # A fresh context per batch: disable_adapter() is a one-shot context manager,
        # and releasing the lock between batches lets the chat tab interleave.
        target, context = model.side(tuned)
        with model.lock, torch.inference_mode(), context:
            nll, n = _batch_nll(target, [encoded[i] for i in group], model.tokenizer.pad_token_id,
                                model.policy.device)
        total, count, done = total + nll, count + n, done + len(group)
        if progress:
            progress(done, len(rows))
    if count == 0:
        raise InputError("No completion tokens to score: every row was truncated away (max_length too small?).")
    return total / count


def _perplexity(nll: float) -> float | None:
    # exp overflows past ~709; a diverged model's perplexity is reported as unknown.
    return math.exp(nll) if math.isfinite(nll) and nll < 700 else None


def add_lower_is_better(comparison: Comparison, name: str, base: float | None, tuned: float | None) -> None:
    """Add a lower-is-better metric to a Comparison (metrics dicts + summary entry)."""
    comparison.base_metrics[name] = base
    comparison.tuned_metrics[name] = tuned
    delta = None if base is None or tuned is None else tuned - base
    # no per-row losses are kept, so no paired interval: null, as for any metric without row scores
    comparison.summary.append({"metric": name, "base": base, "tuned": tuned, "delta": delta,
                               "higher_is_better": False, "interval": None, "verdict_text": None})


def mark_direction(comparison: Comparison) -> None:
    """Give every summary entry its "higher_is_better" flag (False only for LOWER_IS_BETTER metrics)."""
    for entry in comparison.summary:
        entry.setdefault("higher_is_better", entry["metric"] not in LOWER_IS_BETTER)


def add_losses(comparison: Comparison, losses: dict[bool, float]) -> None:
    """Add eval_loss and perplexity from each side's held-out loss (``{tuned: loss}``) to `comparison`."""
    base, tuned = (_finite(losses[False]), _finite(losses[True]))
    add_lower_is_better(comparison, "eval_loss", base, tuned)
    add_lower_is_better(comparison, "perplexity", _perplexity(base) if base is not None else None,
                        _perplexity(tuned) if tuned is not None else None)


def _finite(value: float) -> float | None:
    # NaN/inf cannot go into results.json (saved with allow_nan=False).
    return value if math.isfinite(value) else None

