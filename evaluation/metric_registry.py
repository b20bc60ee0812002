"""Which metrics an evaluation can use, and loading and running them through `evaluate`.

The studio ships its metrics as `evaluate` metric modules, one folder each in
evaluation/metric_modules/<name>/<name>.py, and loads them with
`evaluate.load(<that folder>)`: no network, so they work offline and on a
Space without internet. `available_metrics()` lists them with one line each
(the Evaluate tab's choices); `metric_names("chrf, bleu")` checks what a user
asked for before anything loads; `compute_metric(name, predictions, references)`
runs one and returns its corpus scores and per-row scores (the paired
intervals need those).

Any other name is a metric on the Hugging Face Hub (`meteor`,
`owner/metric`): code fetched from the Hub and run on this server. It is
allowed only when the owner sets STUDIO_HUB_METRICS=1, and never on a public
deployment (STUDIO_PUBLIC=1). A Hub metric's numbers become
"<name>/<key>" entries (or "<name>" when its key is its name); it has per-row
scores only when it returns one number per row (e.g. bertscore), otherwise no
interval.

    >>> sorted(available_metrics())
    ['accuracy', 'bleu', 'chrf', 'exact_match', 'rouge']
    >>> metric_names(" chrf, BLEU,chrf ")
    ['chrf', 'bleu']
    >>> metric_names(["chrf"], task="generation")
    ['rouge', 'exact_match', 'chrf']
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from finetune_core.errors import InputError, one_line

MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
SHIPPED: dict[str, str] = {
    "rouge": "ROUGE-1/2/L/Lsum F-measure with stemming (rouge_score); best over a row's references",
    "exact_match": "Output equals the reference (or any reference), ignoring case, punctuation and spacing",
    "accuracy": "Label accuracy: the first label named in the output is the row's label (classification)",
    "bleu": "BLEU by sacreBLEU (13a tokenizer), corpus score on a 0-1 scale; multi-reference",
    "chrf": "chrF2 by sacreBLEU (character n-grams), corpus score on a 0-1 scale; multi-reference",
}
DEFAULT_METRICS = {"generation": ("rouge", "exact_match"), "classification": ("accuracy", "exact_match")}
HUB_SETTING = "STUDIO_HUB_METRICS"
PUBLIC_SETTING = "STUDIO_PUBLIC"
# Hub metrics where a lower number is better (their summary entries say so); all shipped ones are higher-is-better.
LOWER_IS_BETTER_HUB = frozenset({"wer", "cer", "ter", "mae", "mse", "perplexity", "mape", "smape"})
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def available_metrics() -> dict[str, str]:
    """The shipped metrics: name -> one line saying what it scores (for a picker)."""
    return dict(SHIPPED)


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def hub_metrics_allowed() -> bool:
    """True when this server may fetch and run metrics from the Hub (STUDIO_HUB_METRICS=1, not public)."""
    return _flag(HUB_SETTING) and not _flag(PUBLIC_SETTING)


def metric_names(requested: str | Iterable[str] | None, task: str | None = None) -> list[str]:
    """The metrics asked for ("chrf,bleu" or a list), checked, deduplicated, in order; with `task`,
    that task's default metrics come first. An unknown name is an InputError naming it and
    listing the available ones (a Hub name is refused unless the owner allowed Hub metrics)."""
    if isinstance(requested, str):
        requested = requested.split(",")
    names = list(DEFAULT_METRICS.get(task, ())) if task else []
    for raw in requested or ():
        name = str(raw).strip()
        if not name:
            continue
        name = name.lower() if name.lower() in SHIPPED else name
        if name not in SHIPPED:
            _check_hub_name(name)
        if name not in names:
            names.append(name)
    return names


def _check_hub_name(name: str) -> None:
    shipped = ", ".join(SHIPPED)
    if not _HUB_NAME.match(name) or ".." in name or Path(name).exists():
        # never a path: evaluate.load would run a local script from it
        raise InputError(f"Unknown metric {name!r}: the available metrics are {shipped} "
                         "(a Hub metric is named like 'meteor' or 'owner/metric').")
    if _flag(PUBLIC_SETTING):
        raise InputError(f"Unknown metric {name!r}: the available metrics are {shipped}. Metrics from the "
                         "Hugging Face Hub are code fetched and run on the server, so a public deployment "
                         f"({PUBLIC_SETTING}=1) never loads them.")
    if not _flag(HUB_SETTING):
        raise InputError(f"Unknown metric {name!r}: the available metrics are {shipped}. A metric from the "
                         "Hugging Face Hub is code fetched and run on the server: the server's owner allows "
                         f"them with {HUB_SETTING}=1.")


def higher_is_better(name: str) -> bool:
    """Whether a bigger number is better for this summary entry: "wer", "owner/wer", "cer/score" and a few
    other Hub metrics no; per-label accuracy ("accuracy/<label>", whatever the label) yes.

    >>> higher_is_better("rougeL"), higher_is_better("owner/wer"), higher_is_better("accuracy/mae")
    (True, False, True)
    """
    if name.startswith("accuracy/"):
        return True
    return not any(part.lower() in LOWER_IS_BETTER_HUB for part in name.split("/"))


def load_metric(name: str):
    """The `evaluate` module for a checked name: a shipped one from its folder, a Hub one (when allowed) by name."""
    import evaluate

    if name in SHIPPED:
        # keep_in_memory: the rows stay in memory, no Arrow cache files on disk for each evaluation
        return evaluate.load(str(MODULES_DIR / name), keep_in_memory=True)
    metric_names([name])  # the Hub gate, checked again right before fetching code
    try:
        return evaluate.load(name, keep_in_memory=True)
    except (FileNotFoundError, ConnectionError, ImportError, OSError) as exc:
        raise InputError(f"Could not load the metric {name!r} from the Hugging Face Hub: {one_line(exc)}") from exc


@dataclass
class MetricScores:
    """One metric module's results on one system's outputs."""

    scores: dict[str, float]  # summary name -> corpus score
    per_row: dict[str, list[float]] = field(default_factory=dict)  # summary name -> one score per row
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # corpus metrics: each row's statistics
    from_stats: dict[str, Callable[[np.ndarray], float]] = field(default_factory=dict)  # summed stats -> score


def compute_metric(name: str, predictions: list[str], references: list[list[str]], **kwargs) -> MetricScores:
    """Run one metric (a checked name) on one system's outputs; `references` holds each row's references."""
    module = load_metric(name)
    if name in SHIPPED:
        out = module.compute(predictions=predictions, references=references, **kwargs)
        return _shipped_scores(module, out)
    single = all(len(refs) == 1 for refs in references)
    try:
        out = module.compute(predictions=predictions,
                             references=[refs[0] for refs in references] if single else references, **kwargs)
    except Exception as exc:  # noqa: BLE001 - third-party code chosen by the user; say what failed
        raise InputError(f"The metric {name!r} could not score these rows"
                         f"{'' if single else ' (rows with several references)'}: {one_line(exc)}") from exc
    return _hub_scores(name, out or {}, len(predictions))


def _shipped_scores(module, out: dict) -> MetricScores:
    stats = {key: np.asarray(rows, dtype=np.int64) for key, rows in out.get("row_stats", {}).items()}
    return MetricScores(
        scores={key: float(value) for key, value in out.items() if key not in ("per_row", "row_stats")},
        per_row={key: [float(v) for v in rows] for key, rows in out.get("per_row", {}).items()},
        stats=stats,
        from_stats={key: (lambda totals, key=key: module.score_from_stats(key, totals)) for key in stats},
    )


def _hub_scores(name: str, out: dict, rows: int) -> MetricScores:
    """Numbers become corpus scores; lists of one number per row become per-row scores (and their mean)."""
    base = name.split("/")[-1]
    result = MetricScores(scores={})
    for key, value in out.items():
        label = name if key == base else f"{name}/{key}"
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            result.scores[label] = float(value)
        elif isinstance(value, (list, tuple, np.ndarray)) and len(value) == rows and rows and all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value):
            result.per_row[label] = [float(v) for v in value]
            result.scores[label] = float(np.mean(result.per_row[label]))
    if not result.scores:
        raise InputError(f"The metric {name!r} returned no number to show (keys: {', '.join(map(str, out)) or 'none'}).")
    return result
