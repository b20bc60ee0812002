"""Score one system's outputs on the evaluation rows with the metric modules.

`score_rows(task, predictions, references, labels, metrics)` runs the task's
default metrics (generation: rouge + exact_match; classification: accuracy +
exact_match, plus accuracy per label) and any extra ones asked for, all
through `evaluation.metric_registry` (the studio's `evaluate` modules), and
returns `RowScores`: the corpus scores in summary order, every metric's
per-row scores (the paired intervals need them), the row statistics that
corpus metrics (BLEU, chrF) are recomputed from, and for classification the
rows of each label. `score` is the short form the win/loss table uses.

A reference may be a string or a list of strings (a row with several
references); each metric scores a row against all of them.

    >>> per_example, aggregate = score("generation", ["the cat sat"], [["a dog", "the cat sat"]])
    >>> per_example, aggregate["rougeL"], aggregate["exact_match"]
    ([1.0], 1.0, 1.0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from evaluation.metric_registry import DEFAULT_METRICS, compute_metric, metric_names
from evaluation.metrics import TASKS, canonical_label, classification_metrics, default_labels, extract_label, \
    reference_list

# ranks each row's win / tie / loss; "preference" (held-out pairs, evaluation/pair_eval.py) is headlined
# by reward accuracy, while its rows are still ranked by rougeL against chosen
HEADLINE = {"generation": "rougeL", "classification": "accuracy", "preference": "reward_accuracy"}


@dataclass
class RowScores:
    """One system's scores on the evaluation rows."""

    aggregate: dict[str, float]  # summary name -> corpus score, in summary order
    per_row: dict[str, list[float]] = field(default_factory=dict)  # name -> one score per row
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # corpus metrics: rows x statistics
    from_stats: dict[str, Callable[[np.ndarray], float]] = field(default_factory=dict)
    label_rows: dict[str, list[int]] = field(default_factory=dict)  # "accuracy/<label>" -> its rows
    headline: str = ""
    metrics_used: list[str] = field(default_factory=list)

    @property
    def per_example(self) -> list[float]:
        """The headline metric per row (rougeL, or 1/0 for the right label)."""
        return self.per_row[self.headline]


def score_rows(task: str, predictions: list[str | None], references: list, labels: list[str] | None = None,
               metrics: list[str] | tuple = ()) -> RowScores:
    """Corpus and per-row scores of one system; `metrics` adds to the task's defaults (checked names).

    Raises ValueError when the lists differ in length or are empty, or the task is unknown.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) "
                         "must have the same length")
    if not references:
        raise ValueError("no rows to score: the evaluation set is empty")
    predictions = [p if isinstance(p, str) else "" for p in predictions]
    refs = [reference_list(r) for r in references]
    names = metric_names(metrics, task=task)
    if task == "classification":
        labels = list(labels) if labels else default_labels([r[0] for r in refs if r])
    result = RowScores(aggregate={}, headline=HEADLINE[task], metrics_used=names)
    defaults = len(DEFAULT_METRICS[task])
    for i, name in enumerate(names):
        if i == defaults and task == "classification":
            _add_per_label(result, predictions, refs, labels)  # after the defaults, as the table always had them
        kwargs = {"labels": labels} if name == "accuracy" and task == "classification" else {}
        scores = compute_metric(name, predictions, refs, **kwargs)
        result.aggregate.update(scores.scores)
        result.per_row.update(scores.per_row)
        result.stats.update(scores.stats)
        result.from_stats.update(scores.from_stats)
    if len(names) == defaults and task == "classification":
        _add_per_label(result, predictions, refs, labels)
    return result


def _add_per_label(result: RowScores, predictions: list[str], refs: list[list[str]], labels: list[str]) -> None:
    """accuracy/<label> for each label in the references (recall: undefined for the others), and its rows."""
    first = [r[0] if r else "" for r in refs]
    cls = classification_metrics([extract_label(p, labels) for p in predictions], first, labels)
    rows = cls["labels"]  # the label set plus any reference outside it
    for label, value in cls["per_label"].items():
        result.aggregate[f"accuracy/{label}"] = value
        result.label_rows[f"accuracy/{label}"] = [
            i for i, ref in enumerate(first) if (canonical_label(ref, rows) or str(ref)) == label]


def score(task: str, predictions: list[str | None], references: list, labels: list[str] | None = None,
          metrics: list[str] | tuple = ()) -> tuple[list[float], dict[str, float]]:
    """Per-example headline scores and corpus-level scores (all 0..1) for one system.

    generation: per example = rougeL F; aggregate rouge1/2/L/Lsum + exact_match.
    classification: per example = 1/0 for the label extracted from the output;
    aggregate accuracy, exact_match and "accuracy/<label>" for each label seen
    in the references. Without `labels` the distinct references are used.
    """
    scored = score_rows(task, predictions, references, labels, metrics)
    return scored.per_example, scored.aggregate
