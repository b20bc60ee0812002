"""Evaluate a trained run: two sides (base vs tuned by default) on the run's own held-out rows.

`evaluate_run(run)` loads the run's base weights with its adapter (one copy in
memory), generates greedily for every held-out prompt twice — adapter off
(base) and adapter on (tuned) — scores both with `evaluation.compare` and
saves the result in `runs/<id>/eval/` (results.json, examples.csv, meta.json).

Any two sides (finetune_core.inference.sides: "base" or "run:<id>", a run's
whole chain) can be compared instead: ``sides=(a, b)``. A run's default pair
(`default_sides`: its parent vs the run, else base vs the run) is saved in
`runs/<id>/eval/`; any other pair in `runs/<id>/eval/pairs/<a>--vs--<b>/`,
and meta.json records "sides" and their "labels". The rows are `run`'s (pass
the newer run of the pair). Preference pairs (prompt / chosen / rejected) are
scored by reward accuracy on both sides, plus generation on the first prompts
with chosen as the reference (evaluation/pair_eval.py).

    python -m evaluation --run runs/<id> --json

    >>> from finetune_core.runs.store import run_from_dir        # doctest: +SKIP
    >>> evaluate_run(run_from_dir("runs/<id>"), limit=20).summary  # doctest: +SKIP

Choices worth knowing
- Task: "classification" when the run's report.json has a label set (the
  labels are its sorted keys), else "generation". Language-modelling rows
  ("text" only) have no prompt to answer, so only held-out loss applies.
- max_new_tokens default: classification = longest label in tokens + 8 (room
  for "Label: x." without paying for long rambles); generation = longest
  reference in tokens + 16, capped at 256 (a summary task stops early, and
  the cap bounds CPU time on long references).
- Optional held-out loss ("eval_loss", completion-only mean NLL per token, and
  "perplexity" = exp(eval_loss)) is LOWER-is-better and never counts towards
  wins; see `evaluation.heldout_loss`.
- Metrics: the task's defaults (generation: ROUGE + exact match; classification:
  accuracy + exact match + per label) plus any named in `metrics` ("chrf",
  "bleu", or a Hub metric where the owner allows them), checked before the
  model loads (`evaluation.metric_registry`).
- Several references: a `data_path` without the run's response column but with
  numbered ones (`summary1..3`) is scored against all of them
  (`evaluation.multi_reference`); held-out loss then uses the first reference.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from evaluation.compare import SCORE_COLUMNS, TEXT_COLUMNS, Comparison, compare
from evaluation.heldout_loss import add_losses, check_cancel, heldout_loss_rows, mark_direction
from evaluation.metric_registry import SHIPPED, load_metric, metric_names
from evaluation.pair_eval import PAIRS_DIR, check_sides, result_dir, side_meta
from finetune_core.data.dataset import is_text_rows, read_jsonl
from finetune_core.errors import InputError
from finetune_core.limits import limits
from finetune_core.zerogpu import call_duration, gpu_call, on_zerogpu

Progress = Callable[[str, float], None]

META_FILE = "meta.json"
LM_TASK = "language_modeling"
CLASSIFICATION_SLACK = 8  # tokens beyond the longest label
GENERATION_SLACK = 16  # tokens beyond the longest reference
GENERATION_CAP = 256
GEN_SHARE = 0.8  # share of each half of the progress bar spent generating when loss is on too


# -- rows -------------------------------------------------------------------

def load_eval_rows(run, data_path: str | None = None) -> tuple[list[dict], list[str] | None, str]:
    """(rows, labels or None, source) for a run: its held-out split, or a data
    file prepared with the run's own column mapping."""
    report = _read_report(run)
    labels = sorted(report["labels"]) if report.get("labels") else None
    if data_path is None:
        path = run.data_dir / "heldout.jsonl"
        if not path.is_file():
            raise InputError(f"Run {run.id} has no saved held-out split ({path.name} is missing).")
        return read_jsonl(path), labels, "heldout"
    from evaluation.multi_reference import load_multi_reference
    from finetune_core.data.dataset import prepare_data

    mapping = run.config().data.for_file(data_path)
    several = load_multi_reference(mapping, data_path, report.get("columns") or [],
                                   lambda row: reference_text(row, False))
    if several is not None:
        return several, labels, str(data_path)
    prepared = prepare_data(mapping)
    if not prepared.usable:
        first = "; ".join(i.text() for i in prepared.issues[:3]) or "no usable rows"
        raise InputError(f"The data file {data_path} is not usable: {first}")
    # The run's label set wins: the model was trained to answer with those labels.
    labels = labels or (sorted(prepared.labels) if prepared.labels else None)
    return prepared.rows, labels, str(data_path)


def _read_report(run) -> dict:
    path = run.data_dir / "report.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")) or {}




def input_text(row: dict) -> str:
    """The last user message: what a reader needs to judge the answer."""
    users = [m for m in row.get("prompt", []) if m.get("role") == "user"]
    last = users[-1] if users else (row.get("prompt") or [{}])[-1]
    return str(last.get("content", ""))


def reference_text(row: dict, classification: bool) -> str:
    """The expected answer. For classification the row's label when it has one:
    a completion template may dress the label up ("Intent: refund")."""
    if classification and row.get("label") is not None:
        return str(row["label"])
    return "\n".join(str(m.get("content", "")) for m in row.get("completion", []))


def row_references(row: dict, classification: bool) -> str | list[str]:
    """The row's references: its "references" list (a multi-reference file), else `reference_text`."""
    return list(row["references"]) if row.get("references") else reference_text(row, classification)


# -- settings ----------------------------------------------------------------

def default_max_new_tokens(tokenizer, task: str, references: list, labels: list[str] | None) -> int:
    """Enough room for the expected answer (the longest, with several references per row), not more
    (generation time is per token)."""
    references = [r for ref in references for r in ([ref] if isinstance(ref, str) else ref)]
    if task == "classification":
        return _longest_in_tokens(tokenizer, labels or references) + CLASSIFICATION_SLACK
    return min(GENERATION_CAP, _longest_in_tokens(tokenizer, references) + GENERATION_SLACK)


def _longest_in_tokens(tokenizer, texts: list[str]) -> int:
    texts = [t for t in texts if t]
    if not texts:
        return 0
    return max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def _check_args(limit, batch_size, max_new_tokens, metrics=None) -> list[str]:
    """The settings' bounds, checked before anything loads; each message names the setting
    as the Evaluate tab shows it and as the API takes it. Returns the extra metrics' checked names."""
    extra = metric_names(metrics)  # an unknown name is refused here, listing the available ones
    if limit is not None and limit < 1:
        raise InputError(f"Rows to evaluate (limit) must be at least 1 (got {limit}).")
    if batch_size < 1:
        raise InputError(f"Batch size (batch_size) must be at least 1 (got {batch_size}).")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise InputError(f"Max new tokens (max_new_tokens) must be at least 1 (got {max_new_tokens}).")
    if max_new_tokens is not None:  # checked before the model loads; LimitError is a ValueError
        limits().check("max_new_tokens", max_new_tokens, "Max new tokens")
    return extra


# -- progress ----------------------------------------------------------------

def _span(progress: Progress, start: float, end: float, label: str) -> Callable[[int, int], None]:
    """Map a phase's (done, total) onto [start, end] of the whole bar."""
    def report(done: int, total: int) -> None:
        progress(f"{label} {done}/{total} rows", start + (end - start) * done / max(total, 1))
    return report


def _phases(with_generation: bool, with_loss: bool) -> dict[tuple[bool, str], tuple[float, float]]:
    """(tuned, kind) -> bar span. Base takes 0–50 %, tuned 50–100 %."""
    gen_end = GEN_SHARE if (with_generation and with_loss) else 1.0
    spans = {}
    for tuned, offset in ((False, 0.0), (True, 0.5)):
        if with_generation:
            spans[(tuned, "generate")] = (offset, offset + 0.5 * gen_end)
        if with_loss:
            start = offset + 0.5 * gen_end if with_generation else offset
            spans[(tuned, "loss")] = (start, offset + 0.5)
    return spans


def _side_name(tuned: bool, labels: dict | None = None) -> str:
    """A side in progress messages: base and tuned as ever, other sides by their label."""
    if labels and labels.get("a") != "Base model":
        return f"Side {'B' if tuned else 'A'} ({labels['b' if tuned else 'a']})"
    return "Tuned (adapter on)" if tuned else "Base (adapter off)"


# -- one side ------------------------------------------------------------------

def _run_side(model, tuned: bool, rows: list[dict], prompts: list[list[dict]] | None, settings,
              batch_size: int, max_length: int, spans: dict, progress: Progress,
              cancel: threading.Event | None) -> tuple[list[str] | None, np.ndarray | None, dict]:
    """Generate (when prompts are given) and/or score loss for one side.
    Returns (outputs, each row's loss statistics, seconds by phase)."""
    outputs, loss, seconds = None, None, {}
    name = _side_name(tuned, side_meta(model).get("labels"))
    if (tuned, "generate") in spans:
        start = time.perf_counter()
        report = _span(progress, *spans[(tuned, "generate")], f"{name}: generating")
        outputs = model.generate(prompts, tuned=tuned, settings=settings, batch_size=batch_size,
                                 progress=report, cancel=cancel)
        # generate() stops mid-batch when cancelled and returns cut answers: never score those.
        check_cancel(cancel)
        seconds["tuned" if tuned else "base"] = round(time.perf_counter() - start, 3)
    if (tuned, "loss") in spans:
        start = time.perf_counter()
        report = _span(progress, *spans[(tuned, "loss")], f"{name}: held-out loss")
        loss = heldout_loss_rows(model, rows, tuned, max_length, batch_size, report, cancel)
        seconds[("tuned" if tuned else "base") + "_loss"] = round(time.perf_counter() - start, 3)
    return outputs, loss, seconds


def _loss_only_comparison(rows: int) -> Comparison:
    """An empty Comparison for language-modelling rows: no texts to compare."""
    examples = pd.DataFrame({col: pd.Series(dtype=str) for col in TEXT_COLUMNS}
                            | {col: pd.Series(dtype=float) for col in SCORE_COLUMNS})
    examples.index.name = "row"
    return Comparison(task=LM_TASK, rows=rows, summary=[], examples=examples, wins=0, ties=0,
                      losses=0, base_metrics={}, tuned_metrics={}, confusion=None)


# -- the whole evaluation -----------------------------------------------------

def evaluate_run(run, data_path: str | None = None, limit: int | None = None, batch_size: int = 64,
                 max_new_tokens: int | None = None, with_loss: bool = False,
                 progress: Progress | None = None, cancel: threading.Event | None = None,
                 model=None, load_model: Callable[[], object] | None = None,
                 metrics: list[str] | str | None = None, sides: tuple[str, str] | None = None) -> Comparison:
    """Score two sides on the same rows, save to `result_dir(run, sides)`, return the Comparison.

    `sides` (side keys, default `default_sides(run)`): side A is the Comparison's "base", side B its
    "tuned". `metrics` adds metrics to the task's defaults (["chrf", "bleu"] or "chrf,bleu").
    `model` reuses an already-loaded `InferenceModel` of these sides; `load_model` gets one (the UI's
    shared copy) only after every check here has passed; otherwise it is loaded. Raises InputError
    (a ValueError) on unusable input or an unknown metric, RunError when a run has no adapter (both
    StudioErrors), InterruptedError when `cancel` is set (nothing is written then).
    """
    from evaluation.pair_eval import evaluate_pairs
    from evaluation.reward_accuracy import is_pair_rows

    extra = _check_args(limit, batch_size, max_new_tokens, metrics)
    sides = check_sides(run, sides)
    for name in extra:
        if name not in SHIPPED:
            load_metric(name)  # a Hub metric is fetched now: a bad name fails before the model loads
    rows, labels, source = load_eval_rows(run, data_path)
    rows = rows[:limit] if limit else rows
    if not rows:
        raise InputError("Nothing to evaluate: 0 held-out rows (was eval_fraction 0?).")
    lm = is_text_rows(rows)
    if lm and not with_loss:
        raise InputError("These are language-modelling rows (plain text, no prompt to answer): only held-out "
                         "loss applies. Ask for it: 'Also compute held-out loss' in the Evaluate tab, "
                         "with_loss=True, --loss on the command line.")
    check_cancel(cancel)
    say = progress or (lambda _text, _fraction: None)
    model = model or load_run_model(run, say, load_model, sides=sides)
    if not model.has_tuned:
        raise InputError(f"Run {run.id} has no tuned side to compare (no adapter loaded).")
    if is_pair_rows(rows):
        comparison, meta = evaluate_pairs(model, run, rows, batch_size, max_new_tokens, with_loss, say, cancel,
                                          extra)
    else:
        task = LM_TASK if lm else ("classification" if labels else "generation")
        comparison, meta = _evaluate(model, run, rows, task, labels, batch_size, max_new_tokens,
                                     with_loss, say, cancel, extra)
    meta.update(source=source, limit=limit, **side_meta(model, sides))
    save_evaluation(run, comparison, meta, result_dir(run, sides))
    say("Done.", 1.0)
    return comparison


def evaluate_in_call(run_path: str, settings: dict, sides: tuple[str, str] | None = None) -> Comparison:
    """`evaluate_run` as one GPU call on ZeroGPU (finetune_core/zerogpu.py gpu_call): plain arguments in
    (the run's folder, evaluate_run's settings, the sides), the Comparison out; the model is loaded in the
    call (ZeroGPU's worker cannot reach the app's copy), without progress or cancel."""
    from finetune_core.runs.store import Run

    return evaluate_run(Run(Path(run_path)), **settings, sides=sides)


# decorated at import: spaces looks for its decorated functions when the app starts
EVALUATE_IN_CALL = gpu_call(evaluate_in_call, call_duration)


def evaluate_on_gpu(run, settings: dict, sides: tuple[str, str] | None = None) -> Comparison | None:
    """On ZeroGPU, `evaluate_run(run, **settings, sides=sides)` as one GPU call (`evaluate_in_call`); None
    elsewhere, where the caller evaluates with its own progress, cancel and model."""
    return EVALUATE_IN_CALL(str(run.path), settings, sides) if on_zerogpu() else None


def load_run_model(run, say: Progress, load_model: Callable[[], object] | None = None, at: float = 0.0,
                   sides: tuple[str, str] | None = None):
    """The run's model (through ``load_model`` when given: the app's shared copy), once the run is known to
    have an adapter: its default pair, or `sides`; the held-out evaluation, the general-skill check and
    the judge all start here. Loading messages go to ``say`` at bar position ``at``."""
    from finetune_core.inference.generation import InferenceModel
    from finetune_core.runs.store import RunError

    if not run.has_adapter():
        raise RunError(f"Run {run.id} has no saved adapter: let it finish training first.")
    say("Loading the model (its first use takes a few seconds)...", at)
    if load_model is not None:
        return load_model()
    if sides is not None:
        return InferenceModel.for_sides(*sides, progress=lambda message: say(message, at), runs=(run,))
    return InferenceModel.from_run(run, progress=lambda message: say(message, at))


def _evaluate(model, run, rows, task, labels, batch_size, max_new_tokens, with_loss, say, cancel,
              metrics: list[str] = ()) -> tuple[Comparison, dict]:
    from finetune_core.inference.generation import GenSettings

    started = time.time()
    lm = task == LM_TASK
    references = [] if lm else [row_references(r, task == "classification") for r in rows]
    if not lm and max_new_tokens is None:
        # sized from the references, so a file of very long labels cannot ask for more than the limit
        max_new_tokens = min(default_max_new_tokens(model.tokenizer, task, references, labels),
                             limits().max_new_tokens)
    settings = GenSettings(max_new_tokens=max_new_tokens or 1)
    spans = _phases(with_generation=not lm, with_loss=with_loss)
    prompts = None if lm else [r["prompt"] for r in rows]
    max_length = run.config().max_length
    results = {}
    seconds: dict[str, float] = {}
    for tuned in (False, True):
        outputs, loss, took = _run_side(model, tuned, rows, prompts, settings, batch_size, max_length,
                                        spans, say, cancel)
        results[tuned] = (outputs, loss)
        seconds.update(took)
    if lm:
        comparison = _loss_only_comparison(len(rows))
    else:
        comparison = compare(task, [input_text(r) for r in rows], references,
                             results[False][0], results[True][0], labels=labels, metrics=metrics)
    if with_loss:
        add_losses(comparison, {False: results[False][1], True: results[True][1]})
    mark_direction(comparison)
    meta = {"run": run.id, "task": task, "rows": len(rows), "batch_size": batch_size,
            "max_new_tokens": None if lm else max_new_tokens, "with_loss": with_loss,
            "metrics": list(comparison.metrics_used),
            "seconds": seconds, "device": model.policy.describe(), "started": started,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return comparison, meta


# -- saving -------------------------------------------------------------------

def save_evaluation(run, comparison: Comparison, meta: dict, folder: Path | None = None) -> Path:
    """Replace `folder` (default run.eval_dir) with a complete new evaluation (results, examples, meta).

    Written to a sibling folder first and swapped in by rename, so a reader
    never sees results.json from one evaluation beside examples.csv from
    another, and a failed save leaves the previous evaluation in place. The
    other pairs' results (eval/pairs/) move into the new eval/ with it.
    """
    from finetune_core.runs.store import write_json_atomic

    target = Path(folder or run.eval_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}-tmp-{os.getpid()}"
    old = target.parent / f".{target.name}-old-{os.getpid()}"
    for leftover in (tmp, old):  # from a process with our pid that died mid-save
        shutil.rmtree(leftover, ignore_errors=True)
    keep = target / PAIRS_DIR if target == run.eval_dir else None
    try:
        comparison.save(tmp)
        write_json_atomic(tmp / META_FILE, meta)
        if keep is not None and keep.is_dir():
            keep.rename(tmp / PAIRS_DIR)
        if target.exists():
            target.rename(old)
        try:
            tmp.rename(target)
        except OSError:
            if old.exists():  # put the previous evaluation back
                old.rename(target)
            raise
    finally:
        if keep is not None and (tmp / PAIRS_DIR).is_dir() and not keep.exists():
            (tmp / PAIRS_DIR).rename(keep)  # the swap failed: the pairs go back where they were
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return target


def load_meta(run, sides: tuple[str, str] | None = None) -> dict:
    """The meta.json of the run's last evaluation of `sides` (default: its default pair); {} when there is none."""
    path = result_dir(run, sides) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
