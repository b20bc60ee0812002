"""The 95% interval and the plain sentence for each entry of a held-out comparison.

Base and tuned are scored on the same rows, so every interval is paired
(evaluation/significance.py). `add_intervals(summary, base, tuned)` gives each
summary entry "interval" (`Interval.to_dict()`, or None) and "verdict_text"
(`significance.describe`, unit "rows", or None):

- a metric scored per row (ROUGE, exact match, accuracy): `paired_delta` on
  the per-row scores (the exact McNemar test for 0/1 scores, a paired
  bootstrap otherwise); its estimate is the mean delta, which is the table's delta;
- a corpus metric (BLEU, chrF): the table's delta is between corpus scores,
  which are not means of row scores, so `corpus_bootstrap` resamples rows
  (both sides together) and recomputes both corpus scores from the rows'
  statistics each time, as sacreBLEU's paired bootstrap does;
- "accuracy/<label>": `paired_delta` on that label's rows only;
- no per-row scores (eval_loss, perplexity, a Hub metric returning one
  number): None for both.

    >>> import numpy as np
    >>> stats = np.array([[1, 2], [0, 2], [2, 2]])
    >>> iv = corpus_bootstrap(stats, stats, lambda t: t[0] / t[1], lambda t: t[0] / t[1])
    >>> iv.estimate, iv.low, iv.high, iv.n
    (0.0, 0.0, 0.0, 3)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from evaluation.significance import CONFIDENCE, RESAMPLES, Interval, describe, paired_delta, percentile_interval

UNIT = "rows"
CORPUS_METHOD = "paired bootstrap (corpus score recomputed)"


def corpus_bootstrap(base_stats, tuned_stats, base_score: Callable, tuned_score: Callable,
                     resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    """tuned - base of a corpus score (computed from per-row statistics summed over rows), with a
    percentile interval from resampling the rows with replacement, both sides together."""
    b, t = np.asarray(base_stats), np.asarray(tuned_stats)
    if b.shape[0] != t.shape[0]:
        raise ValueError(f"paired scores need the same rows on both sides (base {b.shape[0]}, tuned {t.shape[0]})")
    n = b.shape[0]
    if n == 0:
        return Interval(0.0, 0.0, 0.0, 0, CORPUS_METHOD, None, confidence)
    estimate = float(tuned_score(t.sum(axis=0)) - base_score(b.sum(axis=0)))
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    # chunks keep memory flat: resamples x rows x statistics numbers at once otherwise
    chunk = max(1, 2_000_000 // (n * max(b.shape[1], t.shape[1], 1)))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(resamples, start + chunk) - start, n))
        for offset, (bt, tt) in enumerate(zip(b[idx].sum(axis=1), t[idx].sum(axis=1))):
            deltas[start + offset] = tuned_score(tt) - base_score(bt)
    # a resample can hold no scorable row (every one truncated away, for a loss): percentile_interval drops it
    return percentile_interval(deltas, estimate, n, CORPUS_METHOD, confidence)


def entry_interval(name: str, base, tuned) -> Interval | None:
    """The interval for one summary entry from both sides' `scoring.RowScores`, or None without row scores."""
    if name in base.stats and name in tuned.stats:
        return corpus_bootstrap(base.stats[name], tuned.stats[name], base.from_stats[name], tuned.from_stats[name])
    if name in base.per_row and name in tuned.per_row:
        return paired_delta(base.per_row[name], tuned.per_row[name])
    rows = base.label_rows.get(name)
    if rows is not None and base.headline in base.per_row and base.headline in tuned.per_row:
        return paired_delta([base.per_row[base.headline][i] for i in rows],
                            [tuned.per_row[tuned.headline][i] for i in rows])
    return None


def add_intervals(summary: list[dict], base, tuned) -> list[dict]:
    """Give every summary entry "interval" and "verdict_text" (None where the metric has no row scores)."""
    for entry in summary:
        iv = entry_interval(entry["metric"], base, tuned)
        entry["interval"] = iv.to_dict() if iv else None
        entry["verdict_text"] = describe(iv, UNIT, entry.get("higher_is_better", True)) if iv else None
    return summary


def headline_sentence(entry: dict | None) -> str | None:
    """"<metric>: <verdict_text>" for an entry with an interval (what the CLI prints under its table)."""
    if not entry or not entry.get("verdict_text"):
        return None
    return f"{entry['metric']}: {entry['verdict_text']}"
