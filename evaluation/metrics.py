"""Text metrics for held-out evaluation: ROUGE, exact match, label accuracy, BLEU and chrF.

Pure functions over lists of strings; no model, no gradio, no `evaluate`. They
are the scoring inside the studio's shipped `evaluate` metric modules
(evaluation/metric_modules/, loaded by evaluation/metric_registry.py), which
`evaluation.scoring.score` runs for a comparison. A reference may be one
string or a list of strings (a row with several references): each row is then
scored against all of them the standard way (ROUGE: the best F-measure, as
rouge_score's `score_multi`; exact match: equal to any; BLEU/chrF: sacreBLEU's
multi-reference statistics).

    >>> rouge_per_example(["the cat sat"], [["a dog", "the cat sat"]])["rougeL"]
    [1.0]
    >>> extract_label("I think it is Positive, not negative.", ["negative", "positive"])
    'positive'
    >>> exact_match("Paris.", ["London", "paris"])
    1.0

ROUGE is Google's `rouge_score` with the tokenizer and stemming that
evaluate's Hub "rouge" module uses (`use_stemmer=True`, `use_aggregator=False`),
so the numbers match that module's; BLEU and chrF are sacreBLEU's, on a 0-1
scale like every other score here (sacreBLEU prints 0-100).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

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


def reference_list(reference: str | list[str] | tuple | None) -> list[str]:
    """A row's references as a list of strings (one string is one reference; None is none).

    >>> reference_list("a"), reference_list(["a", None, "b"]), reference_list(None)
    (['a'], ['a', 'b'], [])
    """
    if reference is None:
        return []
    if isinstance(reference, str):
        return [reference]
    return [str(r) for r in reference if r is not None]


def rouge_per_example(predictions: list[str], references: list) -> dict[str, list[float]]:
    """F-measures (0..1) per example for rouge1, rouge2, rougeL and rougeLsum.

    A reference may be a list (several references): each key then takes the
    best F-measure over them, as rouge_score's `score_multi` does. An empty or
    whitespace-only prediction, or a row without a non-empty reference, scores 0.0 on every key.
    """
    _check_lengths(predictions, references)
    out: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    scorer = _rouge_scorer()
    for pred, ref in zip(predictions, references):
        pred = pred or ""
        targets = [r for r in reference_list(ref) if r.strip()]
        if not pred.strip() or not targets:
            # Nothing to match: 0 by definition, and skips the scorer's
            # zero-length edge cases entirely.
            for key in ROUGE_KEYS:
                out[key].append(0.0)
            continue
        scores = scorer.score_multi(targets, pred)  # rouge_score's order is (targets, prediction)
        for key in ROUGE_KEYS:
            out[key].append(float(scores[key].fmeasure))
    return out


def exact_match(pred: str | None, ref: str | list[str] | None) -> float:
    """1.0 when the normalised texts are equal (to any of several references), else 0.0
    (two empties do not match)."""
    p = normalize_text(pred)
    # An empty output must never earn credit, even against an empty reference.
    return 1.0 if p and any(p == normalize_text(r) for r in reference_list(ref)) else 0.0


# -- sacreBLEU (BLEU, chrF) --------------------------------------------------------

SACREBLEU_KINDS = ("bleu", "chrf")


def _sacrebleu(kind: str, sentence: bool = False):
    from sacrebleu.metrics import BLEU, CHRF

    if kind == "bleu":
        # sacreBLEU's defaults (13a tokenizer, exp smoothing); one row alone is scored with
        # effective order, as sacreBLEU advises for sentence BLEU (else most short rows score 0).
        return BLEU(effective_order=sentence)
    if kind == "chrf":
        return CHRF()  # chrF2: character 6-grams, beta 2 (sacreBLEU's default)
    raise ValueError(f"unknown sacreBLEU metric {kind!r}; expected one of {SACREBLEU_KINDS}")


def sacrebleu_rows(kind: str, predictions: list[str], references: list) -> tuple[float, list[float], np.ndarray]:
    """sacreBLEU's corpus score, each row's own score (0..1) and each row's sufficient statistics.

    The corpus score comes from the summed statistics (sacreBLEU's corpus_score), so a paired
    bootstrap can recompute it for any resample of rows (`sacrebleu_from_stats`).

    >>> corpus, rows, stats = sacrebleu_rows("chrf", ["the cat sat", ""], [["the cat sat"], "a dog"])
    >>> rows, stats.shape, corpus == sacrebleu_from_stats("chrf", stats.sum(axis=0))
    ([1.0, 0.0], (2, 18), True)
    """
    _check_lengths(predictions, references)
    refs = [[r for r in reference_list(ref) if r.strip()] or [""] for ref in references]
    width = max(len(r) for r in refs) if refs else 1
    # sacreBLEU takes reference streams (the k-th reference of every row); a row with fewer
    # references has None in the streams it lacks, which sacreBLEU skips.
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    hyps = [p or "" for p in predictions]
    stats = np.asarray(_sacrebleu(kind)._extract_corpus_statistics(hyps, streams), dtype=np.int64)
    sentence = _sacrebleu(kind, sentence=True)
    per_row = [float(sentence._compute_score_from_stats(row.tolist()).score) / 100 for row in stats]
    return sacrebleu_from_stats(kind, stats.sum(axis=0)), per_row, stats


def sacrebleu_from_stats(kind: str, totals) -> float:
    """The corpus score (0..1) from statistics summed over rows (see `sacrebleu_rows`)."""
    return float(_sacrebleu(kind)._compute_score_from_stats([int(v) for v in totals]).score) / 100


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


def canonical_label(value: str | None, labels: list[str]) -> str | None:
    """Map a label string onto the spelling used in `labels` (case/space-insensitive); None when it is none of them.

    >>> canonical_label(" JOY ", ["joy", "anger"]), canonical_label("fear", ["joy"])
    ('joy', None)
    """
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
        row = canonical_label(ref, rows)
        if row is None:
            row = str(ref)
            rows.append(row)
        ref_rows.append(row)
    columns = rows + [NONE_COLUMN]
    confusion = [[0] * len(columns) for _ in rows]
    correct = {row: 0 for row in rows}
    support = {row: 0 for row in rows}
    for pred, row in zip(predicted, ref_rows):
        col = canonical_label(pred, rows)
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


def label_hits(outputs: list[str | None], references: list, labels: list[str]) -> list[float]:
    """Per row 1.0 when the label found in the output (`extract_label`) is the row's reference
    label (or one of its references), else 0.0; the mean is the accuracy.

    >>> label_hits(["It is joy.", "anger", ""], ["joy", "sadness", "sadness"], ["joy", "sadness", "anger"])
    [1.0, 0.0, 0.0]
    """
    _check_lengths(outputs, references)
    hits = []
    for output, ref in zip(outputs, references):
        got = extract_label(output, labels)
        # The same canonical mapping as the confusion matrix, so that the mean of these
        # scores is exactly `classification_metrics`' accuracy.
        wanted = {canonical_label(r, labels) for r in reference_list(ref)}
        hits.append(1.0 if got is not None and got in wanted else 0.0)
    return hits
