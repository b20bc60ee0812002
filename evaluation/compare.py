"""Paired base-vs-tuned comparison on the same held-out rows.

`compare(...)` scores both systems with `evaluation.scoring.score_rows` (the
task's default metrics plus any asked for) and returns a `Comparison`: a
summary table (metric, base, tuned, delta, higher_is_better, and the 95%
interval with its sentence from `evaluation.intervals`), a per-example table
sorted so the biggest wins come first (with every metric's per-row scores as
"base:<metric>" / "tuned:<metric>" columns), win/tie/loss counts and, for
classification, both confusion matrices. A row may have several references
(a list): the "reference" column shows them numbered, one per line, and a
"references" column keeps them as a JSON list. It saves to and loads from a
folder (normally `runs/<id>/eval/`) as results.json + examples.csv; results
saved before intervals and per-row columns existed still load.

    >>> c = compare("generation", ["q"], ["a b"], ["x"], ["a b"])
    >>> (c.wins, c.ties, c.losses), c.summary[2]["delta"]
    ((1, 0, 0), 1.0)
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evaluation.intervals import add_intervals
from evaluation.metric_registry import DEFAULT_METRICS, higher_is_better
from evaluation.metrics import TASKS, classification_metrics, default_labels, extract_label, reference_list
from evaluation.scoring import score_rows

RESULTS_FILE = "results.json"
EXAMPLES_FILE = "examples.csv"
TEXT_COLUMNS = ["input", "reference", "base_output", "tuned_output"]
SCORE_COLUMNS = ["base_score", "tuned_score", "delta"]
REFERENCES_COLUMN = "references"  # JSON list of a row's references, only when some row has several
SIDE_PREFIXES = ("base:", "tuned:")  # per-row score columns: "base:rougeL", "tuned:rougeL"
TIE_TOLERANCE = 1e-9  # |delta| below this is a tie; at or above, a win or a loss


@dataclass
class Comparison:
    """Everything the Evaluate tab, the CLI and the run folder need about one evaluation."""

    task: str
    rows: int
    summary: list[dict]
    examples: pd.DataFrame = field(repr=False)
    wins: int
    ties: int
    losses: int
    base_metrics: dict[str, float]
    tuned_metrics: dict[str, float]
    confusion: dict | None = None
    metrics_used: list[str] = field(default_factory=list)  # the metric modules scored, e.g. ["rouge", "exact_match"]

    def biggest_wins(self, n: int = 10) -> pd.DataFrame:
        """Up to n examples where tuned beat base, largest gain first."""
        better = self.examples[self.examples["delta"] >= TIE_TOLERANCE]
        return better.sort_values("delta", ascending=False, kind="stable").head(n)

    def biggest_losses(self, n: int = 10) -> pd.DataFrame:
        """Up to n examples where tuned did worse than base, largest drop first."""
        worse = self.examples[self.examples["delta"] <= -TIE_TOLERANCE]
        return worse.sort_values("delta", ascending=True, kind="stable").head(n)

    def to_json_dict(self) -> dict:
        """Plain JSON-able summary (no per-example rows: those go to the CSV)."""
        return {
            "task": self.task,
            "rows": self.rows,
            "base": dict(self.base_metrics),
            "tuned": dict(self.tuned_metrics),
            "summary": [dict(entry) for entry in self.summary],
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "confusion": self.confusion,
            "metrics_used": list(self.metrics_used),
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write folder/results.json and folder/examples.csv; returns the folder.

        Each file is written to a temporary name and renamed into place, so a
        reader (the UI polling a run folder) never sees a half-written file.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # allow_nan=False: a NaN would make results.json invalid for browsers.
        text = json.dumps(self.to_json_dict(), indent=2, allow_nan=False)
        _atomic_write(folder / RESULTS_FILE, text)
        _atomic_write(folder / EXAMPLES_FILE, self.examples.to_csv(index=True))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Comparison":
        """Read back what `save` wrote."""
        folder = Path(folder)
        data = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
        path = folder / EXAMPLES_FILE
        header = list(pd.read_csv(path, nrows=0).columns)
        # keep_default_na=False and str dtypes: an empty output must come back
        # as "", and a numeric-looking answer ("4") must stay text.
        numbers = SCORE_COLUMNS + [c for c in header if c.startswith(SIDE_PREFIXES)]
        examples = pd.read_csv(
            path, index_col="row", keep_default_na=False,
            dtype={col: str for col in TEXT_COLUMNS + [REFERENCES_COLUMN]} | {col: float for col in numbers},
        )
        summary = data["summary"]
        for entry in summary:  # saved before intervals existed: say "none" rather than leave the key out
            entry.setdefault("interval", None)
            entry.setdefault("verdict_text", None)
        return cls(
            task=data["task"], rows=int(data["rows"]), summary=summary,
            examples=examples, wins=int(data["wins"]), ties=int(data["ties"]),
            losses=int(data["losses"]), base_metrics=data["base"],
            tuned_metrics=data["tuned"], confusion=data.get("confusion"),
            metrics_used=data.get("metrics_used", list(DEFAULT_METRICS.get(data["task"], ()))),
        )


def improved(entry: dict) -> bool | None:
    """True when tuned beat base on this summary entry, whichever way the metric points
    (``higher_is_better``, True unless said); None when equal or unknown.

    >>> improved({"delta": -0.2, "higher_is_better": False})
    True
    """
    delta = entry.get("delta")
    if delta is None or delta == 0:
        return None
    return (delta > 0) == entry.get("higher_is_better", True)


def verdict(entry: dict) -> str:
    """The word the report and the Evaluate tab show for a summary entry: better, worse,
    same, or "—" when either side is unknown."""
    if entry.get("delta") is None:
        return "—"
    return {True: "better", False: "worse", None: "same"}[improved(entry)]


def copy_results(eval_dir: Path, folder: Path, prefix: str) -> list[Path]:
    """Copy a saved evaluation's results.json and examples.csv into ``folder`` as
    ``<prefix>-results.json`` / ``<prefix>-examples.csv`` (for a download). FileNotFoundError
    when either is missing, as while an evaluation is being swapped in: the copies made are
    removed again."""
    copied = []
    try:
        for name in (RESULTS_FILE, EXAMPLES_FILE):
            target = Path(folder) / f"{prefix}-{name}"
            shutil.copyfile(Path(eval_dir) / name, target)
            copied.append(target)
    except FileNotFoundError:
        for path in copied:
            path.unlink(missing_ok=True)
        raise
    return copied


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def compare(
    task: str,
    inputs: list[str],
    references: list,
    base_outputs: list[str | None],
    tuned_outputs: list[str | None],
    labels: list[str] | None = None,
    metrics: list[str] | tuple = (),
) -> Comparison:
    """Score base and tuned outputs on the same rows and pair them up.

    A reference is a string or a list of strings (several references). `metrics`
    adds checked metric names (`metric_registry.metric_names`) to the task's
    defaults. Empty or missing outputs score 0. Raises ValueError when the four
    lists differ in length or are empty, or when the task is unknown.
    """
    _validate(task, inputs, references, base_outputs, tuned_outputs)
    inputs = [_text(x) for x in inputs]
    references = [reference_list(r) if isinstance(r, (list, tuple)) else [_text(r)] for r in references]
    base_outputs = [_text(x) for x in base_outputs]
    tuned_outputs = [_text(x) for x in tuned_outputs]
    if task == "classification":
        # Fix the label set once so both systems are scored against the same rows.
        labels = list(labels) if labels else default_labels([r[0] for r in references if r])
    base = score_rows(task, base_outputs, references, labels, metrics)
    tuned = score_rows(task, tuned_outputs, references, labels, metrics)
    examples = _examples_table(inputs, references, base_outputs, tuned_outputs, base, tuned)
    deltas = examples["delta"]
    return Comparison(
        task=task,
        rows=len(references),
        summary=add_intervals(_summary(base.aggregate, tuned.aggregate), base, tuned),
        examples=examples,
        wins=int((deltas >= TIE_TOLERANCE).sum()),
        ties=int((deltas.abs() < TIE_TOLERANCE).sum()),
        losses=int((deltas <= -TIE_TOLERANCE).sum()),
        base_metrics=base.aggregate,
        tuned_metrics=tuned.aggregate,
        confusion=_confusion([r[0] if r else "" for r in references], base_outputs, tuned_outputs, labels)
        if task == "classification" else None,
        metrics_used=list(base.metrics_used),
    )


def _validate(task, inputs, references, base_outputs, tuned_outputs) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    lengths = {"inputs": len(inputs), "references": len(references),
               "base_outputs": len(base_outputs), "tuned_outputs": len(tuned_outputs)}
    if len(set(lengths.values())) > 1:
        named = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"inputs, references and outputs must have the same length; got {named}")
    if not references:
        raise ValueError("nothing to compare: 0 rows (is the held-out split empty?)")


def _text(value) -> str:
    # None (a failed or skipped generation) becomes "" and so scores 0.
    return "" if value is None else str(value)


def join_references(refs: list[str]) -> str:
    """A row's references as one readable text: the reference itself, or one numbered line each.

    >>> print(join_references(["Amy calls Bob.", "Bob gets a call."]))
    [1] Amy calls Bob.
    [2] Bob gets a call.
    """
    if len(refs) == 1:
        return refs[0]
    return "\n".join(f"[{i}] {ref}" for i, ref in enumerate(refs, 1))


def _examples_table(inputs, references, base_outputs, tuned_outputs, base, tuned) -> pd.DataFrame:
    table = pd.DataFrame({
        "input": inputs, "reference": [join_references(r) for r in references],
        "base_output": base_outputs, "tuned_output": tuned_outputs,
        "base_score": [float(s) for s in base.per_example],
        "tuned_score": [float(s) for s in tuned.per_example],
    })
    table["delta"] = table["tuned_score"] - table["base_score"]
    for name in base.per_row:  # every metric's own per-row scores: what its interval was computed from
        table[f"base:{name}"] = base.per_row[name]
        table[f"tuned:{name}"] = tuned.per_row[name]
    if any(len(r) > 1 for r in references):
        table[REFERENCES_COLUMN] = [json.dumps(r, ensure_ascii=False) for r in references]
    # The index keeps each example's position in the held-out split ("row"),
    # so a sorted table still points back to the source data.
    table.index.name = "row"
    # Stable sort: equal deltas stay in data order, so output is reproducible.
    return table.sort_values("delta", ascending=False, kind="stable")


def _summary(base: dict[str, float], tuned: dict[str, float]) -> list[dict]:
    names = list(base) + [name for name in tuned if name not in base]
    rows = []
    for name in names:
        b, t = base.get(name), tuned.get(name)
        delta = None if b is None or t is None else t - b
        rows.append({"metric": name, "base": b, "tuned": t, "delta": delta,
                     "higher_is_better": higher_is_better(name)})
    return rows


def _confusion(references, base_outputs, tuned_outputs, labels) -> dict:
    base = classification_metrics([extract_label(o, labels) for o in base_outputs], references, labels)
    tuned = classification_metrics([extract_label(o, labels) for o in tuned_outputs], references, labels)
    return {"labels": base["labels"], "columns": base["columns"],
            "base": base["confusion"], "tuned": tuned["confusion"]}
