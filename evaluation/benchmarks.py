"""General-skill check (forgetting): a run's base and tuned model on ARC-Easy, ARC-Challenge, HellaSwag, MMLU.

Did fine-tuning break what the model already knew? Both sides answer the same
multiple-choice items, scored by EleutherAI's lm-evaluation-harness (lm_eval
0.4.13) itself: its prompts, its log-likelihood of each choice, its metrics acc
and acc_norm (evaluation/benchmark_tasks.py builds its tasks on local files or
its Hub datasets). Zero-shot by default; `num_fewshot` k takes k held-out
examples (see benchmark_tasks).

    python -m finetune_core benchmarks --run runs/<id> --tasks arc_easy,mmlu --limit 100

    >>> result = run_benchmarks(run, names=("arc_easy",), limit=100)   # doctest: +SKIP
    >>> result["benchmarks"][0]["metrics"][1]["verdict_text"]           # doctest: +SKIP
    'not distinguishable from no change on 100 items (-0.010, 95% CI -0.050 to +0.030)'

How the two sides run: lm-eval's HFLM wraps the run's InferenceModel weights
(one copy; its default pair: for a run started from another run, base means
its parent, and the result's "sides" and "labels" say so): the base side is scored inside PEFT's ``disable_adapter()``, the
tuned side with the adapter on (a full fine-tune holds two models). The
model's lock is held for a whole side, so a chat on the same weights cannot
switch the adapter mid-way. The HFLM subclass changes nothing in how lm-eval
scores: it only checks `cancel` and reports progress before each forward pass.
On a CPU with fast bf16 matrix instructions (AMX, AVX512-BF16) and a run whose
precision is "auto", both sides score under HFLM's own bf16 autocast
(`scoring_autocast`; the result's "precision" says which was used).

The result, saved to runs/<id>/checks/benchmarks.json (and returned): per
benchmark, base and tuned acc and acc_norm (MMLU: acc only, as lm-eval
defines it), each delta with the exact paired test of significance.paired_exact
on the per-item 0/1 scores and its sentence; the primary metric (acc_norm where
defined, else acc); and the items that flipped by it, right→wrong and
wrong→right, with question, choices, the right answer and each side's pick.
A pick is the choice lm-eval's metric chose: the highest log-likelihood (acc),
or the highest log-likelihood per character of the choice text (acc_norm:
lm-eval 0.4.13 divides by ``len(choice)``, characters, not bytes; acc_bytes
would use bytes). Nothing is written when the run is cancelled.
"""
from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from evaluation.benchmark_tasks import BENCHMARKS, Prepared, data_folder, prepare
from evaluation.checks import write_check
from evaluation.heldout_loss import check_cancel
from evaluation.pair_eval import side_meta
from evaluation.run_eval import load_run_model
from evaluation.significance import describe, paired_exact
from finetune_core.errors import InputError

__all__ = ["BENCHMARKS", "run_benchmarks", "score_side", "summarise", "pick", "studio_lm", "check_arguments",
           "scoring_autocast"]

Progress = Callable[[str, float], None]
SCHEMA_VERSION = 1
CHECK_NAME = "benchmarks"
UNIT = "items"
MAX_FEWSHOT = 25  # lm-eval's largest customary k (ARC in the Open LLM Leaderboard)
MAX_BATCH = 512
LOAD_SHARE = 0.05  # of the progress bar: reading the items and loading the model
CANCELLED = "Benchmark run cancelled: nothing was saved."  # the InterruptedError once cancelled


def run_benchmarks(run, names: Sequence[str] = tuple(BENCHMARKS), limit: int | None = 100, num_fewshot: int = 0,
                   data_dir: str | None = None, batch_size: int = 32, progress: Progress | None = None,
                   cancel: threading.Event | None = None, model=None,
                   load_model: Callable[[], object] | None = None) -> dict:
    """Score base and tuned on the benchmarks `names` (first `limit` items of each; None: all), save
    runs/<id>/checks/benchmarks.json and return its content.

    Every item file is read and checked before any model loads (InputError naming the folder, file,
    line or field). `model` reuses an InferenceModel of this run; `load_model` gets one (the UI's
    shared copy); else it is loaded from the run. InterruptedError once `cancel` is set (checked
    before every forward pass); nothing is written then.
    """
    names = check_arguments(names, limit, num_fewshot, batch_size)
    say = progress or (lambda _text, _fraction: None)
    started = time.time()
    say("Reading the benchmark items...", 0.0)
    folder = data_folder(data_dir)
    prepared = [prepare(name, folder, num_fewshot, limit) for name in names]
    check_cancel(cancel, CANCELLED)
    model = model or load_run_model(run, say, load_model, at=0.02)
    if not model.has_tuned:
        raise InputError(f"Run {run.id} has no tuned side to compare (no adapter loaded).")
    autocast = scoring_autocast(run.config().precision, model)
    benchmarks = _score_all(model, prepared, batch_size, autocast, say, cancel)
    sources = sorted({p.source for p in prepared})
    data = {"schema_version": SCHEMA_VERSION, "run": run.id, "model": run.config().model,
            "num_fewshot": num_fewshot, "limit": limit, "source": " + ".join(sources),
            "precision": f"{autocast} autocast" if autocast else _weights_dtype(model),
            "lm_eval_version": _lm_eval_version(), "seconds": round(time.time() - started, 2),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), "benchmarks": benchmarks,
            **side_meta(model)}
    check_cancel(cancel, CANCELLED)
    write_check(run, CHECK_NAME, data)
    say("Done.", 1.0)
    return data


def check_arguments(names, limit, num_fewshot, batch_size) -> list[str]:
    """The benchmark names as a list once every argument is usable; InputError naming the one that is not."""
    names = [names] if isinstance(names, str) else list(names or [])
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise InputError(f"Unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}." if unknown
                         else f"No benchmark chosen; choose from {', '.join(BENCHMARKS)}.")
    if len(set(names)) != len(names):
        raise InputError("A benchmark is named twice.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a whole number of items, at least 1 (or none for all), got {limit!r}.")
    if isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int) or not 0 <= num_fewshot <= MAX_FEWSHOT:
        raise InputError(f"num_fewshot must be from 0 to {MAX_FEWSHOT}, got {num_fewshot!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise InputError(f"batch_size must be from 1 to {MAX_BATCH}, got {batch_size!r}.")
    return names


def scoring_autocast(precision: str, model) -> str | None:
    """The dtype lm-eval scores under as autocast (HFLM's own `mixed_precision_dtype`), or None: "bfloat16" for
    float32 weights on a CPU whose bf16 matrix products are fast, and the run's precision "auto" or
    "bfloat16", as its training used; else None (the weights' own dtype).

    Measured on a 2-core Xeon with AMX: 2x the items/s at batch 32 (and slower one item at a time),
    1 ARC-Easy item in 100 scored differently from float32; both sides always share the precision."""
    from finetune_core.models.sources import cpu_has_bf16_matmul

    if model.policy.device != "cpu" or _weights_dtype(model) != "float32" or precision == "float32":
        return None
    return "bfloat16" if precision == "bfloat16" or cpu_has_bf16_matmul() else None


def _weights_dtype(model) -> str:
    return str(next(model.weights(False).parameters()).dtype).removeprefix("torch.")


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


# -- scoring -------------------------------------------------------------------------------------

def _score_all(model, prepared: list[Prepared], batch_size: int, autocast: str | None, say: Progress,
               cancel: threading.Event | None) -> list[dict]:
    """Each benchmark's summary; the progress bar advances by items scored (both sides count)."""
    total = 2 * sum(p.items for p in prepared)
    done = 0
    out = []
    for p in prepared:
        sides = {}
        for tuned in (False, True):
            check_cancel(cancel, CANCELLED)
            start = LOAD_SHARE + (1 - LOAD_SHARE) * done / total
            span = (1 - LOAD_SHARE) * p.items / total
            text = f"{p.title}: {'tuned' if tuned else 'base'} model, {p.items} items"
            say(text, start)
            sides[tuned] = score_side(model, p, tuned, batch_size, cancel,
                                      lambda f, text=text, start=start, span=span: say(text, start + span * f),
                                      autocast)
            done += p.items
        out.append(summarise(p, sides[False], sides[True]))
    return out


def score_side(model, prepared: Prepared, tuned: bool, batch_size: int = 32, cancel: threading.Event | None = None,
               on_progress: Callable[[float], None] | None = None, autocast: str | None = None) -> list[dict]:
    """One side's per-item results from lm-eval, in item order: doc_id, doc (as lm-eval processed it),
    target (the right choice's index), lls (each choice's log-likelihood) and each metric's 0/1 score.
    `autocast`: a dtype for HFLM's mixed precision (see scoring_autocast), None for the weights' own."""
    from lm_eval import evaluator

    weights, context = model.side(tuned)
    lm = studio_lm(weights, model.tokenizer, batch_size, cancel, on_progress, autocast)
    with model.lock, context:  # the whole side with one adapter state
        out = evaluator.evaluate(lm=lm, task_dict={prepared.name: prepared.tasks[tuned]}, log_samples=True,
                                 bootstrap_iters=0)
    samples = sorted(out["samples"][prepared.name], key=lambda s: s["doc_id"])
    return [{"doc_id": int(s["doc_id"]), "doc": s["doc"], "target": int(s["target"]),
             "lls": [float(ll) for ll, _greedy in s["filtered_resps"]],
             **{m: float(s[m]) for m in prepared.metrics}} for s in samples]


def studio_lm(weights, tokenizer, batch_size: int = 32, cancel: threading.Event | None = None,
              on_progress: Callable[[float], None] | None = None, autocast: str | None = None):
    """lm-eval's HFLM on an already-loaded model (adapter state as the caller set it), scoring exactly as
    HFLM does; it only raises InterruptedError before a forward pass once `cancel` is set and reports
    the share of forward passes done to `on_progress` (lm-eval's own progress bar is off)."""
    return _lm_class()(pretrained=weights, tokenizer=tokenizer, batch_size=batch_size, cancel=cancel,
                       on_progress=on_progress, mixed_precision_dtype=autocast)


@functools.lru_cache(maxsize=1)
def _lm_class():
    from lm_eval.models.huggingface import HFLM

    class StudioLM(HFLM):
        """HFLM with a cancel check and a progress report around each forward pass."""

        def __init__(self, *, cancel=None, on_progress=None, **kwargs):
            super().__init__(**kwargs)
            self._cancel, self._on_progress = cancel, on_progress
            self._rows = self._rows_done = 0

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            # rows lm-eval will run: one per request, or one per context when it reuses the logits of
            # answers that differ only in their last token (one-token answers such as MMLU's letters)
            shared = self.backend == "causal" and self.logits_cache
            self._rows = len({tuple(ctx + cont[:-1]) for _, ctx, cont in requests}) if shared else len(requests)
            self._rows_done = 0
            return super()._loglikelihood_tokens(requests, disable_tqdm=True, override_bs=override_bs)

        def _model_call(self, inps, attn_mask=None, labels=None):
            check_cancel(self._cancel, CANCELLED)
            logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
            self._rows_done += int(inps.shape[0])
            if self._on_progress is not None and self._rows:
                self._on_progress(min(1.0, self._rows_done / self._rows))
            return logits

    return StudioLM


# -- the result ------------------------------------------------------------------------------------

def summarise(prepared: Prepared, base: list[dict], tuned: list[dict]) -> dict:
    """One benchmark's entry of benchmarks.json from both sides' per-item results."""
    if [b["doc_id"] for b in base] != [t["doc_id"] for t in tuned]:
        raise RuntimeError(f"{prepared.name}: the two sides scored different items")
    primary = "acc_norm" if "acc_norm" in prepared.metrics else "acc"
    return {"name": prepared.name, "title": prepared.title, "items": len(base), "primary": primary,
            "source": prepared.source, "fewshot_from": prepared.fewshot_from,
            "metrics": [_metric(m, [b[m] for b in base], [t[m] for t in tuned]) for m in prepared.metrics],
            "flips": flips(prepared, base, tuned, primary)}


def _metric(metric: str, base: list[float], tuned: list[float]) -> dict:
    iv = paired_exact(base, tuned)
    b, t = float(np.mean(base)), float(np.mean(tuned))
    return {"metric": metric, "base": b, "tuned": t, "delta": t - b, "interval": iv.to_dict(),
            "verdict_text": describe(iv, UNIT)}


def flips(prepared: Prepared, base: list[dict], tuned: list[dict], metric: str) -> dict:
    """The items whose 0/1 `metric` score differs between the sides, right→wrong and wrong→right."""
    out: dict[str, list[dict]] = {"right_to_wrong": [], "wrong_to_right": []}
    task = prepared.tasks[False]
    for b, t in zip(base, tuned):
        if b[metric] != t[metric]:
            scored = task.doc_to_choice(b["doc"])  # the strings lm-eval scored (MMLU: the letters)
            question, shown = prepared.view(b["doc"])
            out["right_to_wrong" if b[metric] > t[metric] else "wrong_to_right"].append({
                "doc_id": b["doc_id"], "question": question, "choices": shown, "answer": shown[b["target"]],
                "base_choice": shown[pick(b["lls"], scored, metric)],
                "tuned_choice": shown[pick(t["lls"], scored, metric)]})
    return out


def pick(lls: Sequence[float], choices: Sequence[str], metric: str) -> int:
    """The index of the choice lm-eval 0.4.13's `metric` picks: argmax of the log-likelihoods (acc), or of
    each divided by its choice's length in characters (acc_norm); the first one on a tie, as np.argmax.

    >>> pick([-4.0, -6.0], ["a", "much longer"], "acc"), pick([-4.0, -6.0], ["a", "much longer"], "acc_norm")
    (0, 1)
    """
    scores = np.asarray(lls, dtype=float)
    if metric == "acc_norm":
        scores = scores / np.array([float(len(c)) for c in choices])
    return int(np.argmax(scores))
