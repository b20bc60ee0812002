"""Text metrics for held-out evaluation: ROUGE, exact match and label accuracy.

Pure functions over lists of strings; no model, no gradio. `score(task, ...)`
is the single entry point the comparison uses: it returns one number per
example (for the paired win/loss table) and a dict of corpus-level means.

    >>> score("generation", ["the cat sat"], ["the cat sat"])[1]["rougeL"]
    1.0
    >>> extract_label("I think it is Positive, not negative.", ["negative", "positive"])
    'positive'

Why not `evaluate.load("rouge")`: evaluate 0.4.6 ships no metric scripts in
its wheel; `load` fetches `rouge.py` from the Hugging Face Hub (or its local
cache), so it fails on an offline machine or a Space without network. Its
rouge module is a thin wrapper around Google's `rouge_score`, which we call
directly with the same tokenizer, so the numbers match evaluate's with
`use_stemmer=True` and `use_aggregator=False`.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TASKS = ("generation", "classification")
NONE_COLUMN = "none"


def normalize_text(s: str | None) -> str:
    """Lowercase, drop punctuation (any Unicode P* category), collapse whitespace.

    >>> normalize_text("  Hello,   World!! ")
    'hello world'
    """
    if s is None:
        return ""
    # Unicode categories rather than string.punctuation so that curly quotes,
    # em dashes and CJK punctuation from model outputs are removed too.
    kept = "".join(ch for ch in str(s).lower() if not unicodedata.category(ch).startswith("P"))
    return " ".join(kept.split())


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # Stemming on (what papers and the HF summarisation scripts report).
    # rougeLsum splits summaries on "\n" (split_summaries=False), the same as
    # evaluate's wrapper; the default tokenizer keeps only [a-z0-9] tokens, so
    # non-Latin scripts score 0 here exactly as they do in evaluate.
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True, split_summaries=False)


def rouge_per_example(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """F-measures (0..1) per example for rouge1, rouge2, rougeL and rougeLsum.

    An empty or whitespace-only prediction scores 0.0 on every key.
    """
    _check_lengths(predictions, references)
    out: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    scorer = _rouge_scorer()
    for pred, ref in zip(predictions, references):
        pred, ref = pred or "", ref or ""
        if not pred.strip() or not ref.strip():
            # Nothing to match: 0 by definition, and skips the scorer's
            # zero-length edge cases entirely.
            for key in ROUGE_KEYS:
                out[key].append(0.0)
            continue
        scores = scorer.score(ref, pred)  # rouge_score's order is (target, prediction)
        for key in ROUGE_KEYS:
            out[key].append(float(scores[key].fmeasure))
    return out


def exact_match(pred: str | None, ref: str | None) -> float:
    """1.0 when the normalised texts are equal, else 0.0 (two empties do not match)."""
    p, r = normalize_text(pred), normalize_text(ref)
    # An empty output must never earn credit, even against an empty reference.
    return 1.0 if p and p == r else 0.0


def extract_label(output: str | None, labels: list[str]) -> str | None:
    """The label that occurs first in `output` (case-insensitive, whole word).

    Ties at the same position go to the longer label ("very negative" beats
    "very"). Returns the label as spelled in `labels`, or None.

    >>> extract_label("Not sad at all: joy!", ["joy", "sadness", "sad"])
    'sad'
    """
    if not output:
        return None
    best: tuple[int, int, str] | None = None  # (position, -length, label)
    for label in labels:
        if not label or not label.strip():
            continue
        # \w look-arounds instead of \b so labels that start or end with
        # punctuation ("c++", "4 stars.") still match as whole words.
        pattern = r"(?<!\w)" + re.escape(label.strip()) + r"(?!\w)"
        found = re.search(pattern, output, flags=re.IGNORECASE)
        if found:
            key = (found.start(), -len(label.strip()), label)
            if best is None or key[:2] < best[:2]:
                best = key
    return None if best is None else best[2]


def _canonical(value: str | None, labels: list[str]) -> str | None:
    """Map a label string onto the spelling used in `labels` (case/space-insensitive)."""
    if value is None:
        return None
    wanted = normalize_text(value)
    for label in labels:
        if normalize_text(label) == wanted:
            return label
    return None


def _check_lengths(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions ({len(predictions)}) and references ({len(references)}) "
            "must have the same length"
        )


def classification_metrics(
    predicted: list[str | None], references: list[str], labels: list[str]
) -> dict:
    """Accuracy, per-label accuracy (recall) and a confusion matrix.

    Returns {"accuracy", "per_label", "support", "labels", "columns",
    "confusion"}. `confusion[i][j]` counts rows whose reference is labels[i]
    and whose prediction is columns[j]; columns are the labels plus a final
    "none" for outputs in which no label was found. A reference outside the
    label set gets its own row (appended) so no example silently disappears.
    `per_label` only has labels that occur in the references: recall is
    undefined for the others.
    """
    _check_lengths(predicted, references)
    rows = list(labels)
    ref_rows: list[str] = []
    for ref in references:
        row = _canonical(ref, rows)
        if row is None:
            row = str(ref)
            rows.append(row)
        ref_rows.append(row)
    columns = rows + [NONE_COLUMN]
    confusion = [[0] * len(columns) for _ in rows]
    correct = {row: 0 for row in rows}
    support = {row: 0 for row in rows}
    for pred, row in zip(predicted, ref_rows):
        col = _canonical(pred, rows)
        i = rows.index(row)
        confusion[i][len(rows) if col is None else rows.index(col)] += 1
        support[row] += 1
        correct[row] += int(col == row)
    n = len(references)
    return {
        "accuracy": sum(correct.values()) / n if n else 0.0,
        "per_label": {row: correct[row] / support[row] for row in rows if support[row]},
        "support": {row: support[row] for row in rows if support[row]},
        "labels": rows,
        "columns": columns,
        "confusion": confusion,
    }


def default_labels(references: list[str]) -> list[str]:
    """The label set when none is given: the distinct references, sorted."""
    return sorted({str(r).strip() for r in references if r is not None and str(r).strip()})


def score(
    task: str,
    predictions: list[str | None],
    references: list[str],
    labels: list[str] | None = None,
) -> tuple[list[float], dict[str, float]]:
    """Per-example scores and corpus-level means (all 0..1) for one system.

    generation: per example = rougeL F; aggregate rouge1/2/L/Lsum + exact_match.
    classification: per example = 1/0 for the label extracted from the output;
    aggregate accuracy, exact_match and "accuracy/<label>" for each label seen
    in the references. Without `labels` the distinct references are used.
    """
    _check_lengths(predictions, references)
    if not references:
        raise ValueError("no rows to score: the evaluation set is empty")
    predictions = [p if isinstance(p, str) else "" for p in predictions]
    em = [exact_match(p, r) for p, r in zip(predictions, references)]
    if task == "generation":
        rouge = rouge_per_example(predictions, references)
        aggregate = {key: _mean(rouge[key]) for key in ROUGE_KEYS}
        aggregate["exact_match"] = _mean(em)
        return rouge["rougeL"], aggregate
    if task == "classification":
        labels = list(labels) if labels else default_labels(references)
        extracted = [extract_label(p, labels) for p in predictions]
        cls = classification_metrics(extracted, references, labels)
        rows = cls["labels"]
        # Same canonical mapping as the confusion matrix, so that the mean of
        # the per-example scores is exactly the reported accuracy.
        per_example = [
            1.0 if got is not None and _canonical(got, rows) == _canonical(ref, rows) else 0.0
            for got, ref in zip(extracted, references)
        ]
        aggregate = {"accuracy": cls["accuracy"], "exact_match": _mean(em)}
        aggregate.update({f"accuracy/{k}": v for k, v in cls["per_label"].items()})
        return per_example, aggregate
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
