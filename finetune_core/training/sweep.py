"""Sweeps: a few settings varied over queued runs, and the table that ranks them.

A sweep takes a base RunConfig and up to MAX_FIELDS sweepable fields, each with a
list of values (typed as text, "1e-4, 2e-4", or given as a list), and makes one
run per combination (``mode="grid"``) or per position (``mode="list"``: the
values zipped, every list the same length), at most MAX_RUNS runs:

    >>> [values_text(v) for _, v in expand(RunConfig(), {"learning_rate": "1e-4, 2e-4", "lora_r": [8, 16]})]
    ['learning_rate=0.0001, lora_r=8', 'learning_rate=0.0001, lora_r=16', 'learning_rate=0.0002, lora_r=8', \
'learning_rate=0.0002, lora_r=16']

Every value goes through the field's own coercion and bounds
(`RunConfig.with_overrides`), so a bad one is refused naming the field and the value.
`queue_sweep` puts the runs on the run queue (finetune_core/training/queue.py), each
tagged in its run.yaml with ``{"sweep": {"id", "name", "values", "metric"}}``;
`sweep_table` ranks a sweep's runs by its metric (held-out loss from training,
the final training loss, or a metric of the run's saved evaluation), the best
marked. The sweep id is made here, never taken from user text.

    python -m finetune_core sweep --config run.yaml --axis learning_rate=1e-4,2e-4 --axis lora_r=8,16

(the command itself: finetune_core/training/sweep_cli.py)
"""
from __future__ import annotations

import itertools
import json
import math
import re
import secrets
import time
from dataclasses import fields
from typing import Any

import pandas as pd

from finetune_core.config import ConfigError, RunConfig
from finetune_core.errors import StudioError
from finetune_core.runs.ownership import Visitor, visible_runs
from finetune_core.runs.store import NAME_MAX, Run, RunError, check_run_name

MAX_FIELDS = 3
MAX_RUNS = 12  # runs one sweep may queue: on a CPU each is minutes, on a shared Space the queue is everyone's
MODES = ("grid", "list")
# What a sweep may vary: the method and schedule knobs that change how a run learns. The model, the data
# (paths, columns, split, seed: the held-out rows must be the same for the runs to be comparable), the
# device and the launch settings stay those of the base run.
SWEEPABLE = ("learning_rate", "lora_r", "lora_alpha", "lora_dropout", "use_dora", "use_rslora", "target_modules",
             "method", "beta", "loss_type", "num_epochs", "max_steps", "lr_scheduler", "warmup_steps",
             "weight_decay", "batch_size", "grad_accum", "max_length", "packing", "completion_only_loss",
             "max_train_rows")
LIST_FIELDS = ("target_modules",)  # a value is a comma list: a sweep's values are split on ";"
# metric -> what it is; eval_loss and train_loss come from training (metrics.jsonl), the rest from the
# run's saved evaluation (runs/<id>/eval/results.json, the tuned side)
METRICS = {
    "eval_loss": "held-out loss at the end of training",
    "train_loss": "training loss at the last logged step",
    "rougeL": "ROUGE-L of the evaluation (generation)",
    "accuracy": "label accuracy of the evaluation (classification)",
    "exact_match": "exact match of the evaluation",
    "reward_accuracy": "reward accuracy of the evaluation (preference pairs)",
    "chrf": "chrF of the evaluation (when asked for)",
    "bleu": "BLEU of the evaluation (when asked for)",
    "perplexity": "held-out perplexity of the evaluation (with loss)",
}
TRAINING_METRICS = ("eval_loss", "train_loss")
LOWER_IS_BETTER = frozenset({"eval_loss", "train_loss", "perplexity", "wer", "cer", "ter", "mae", "mse"})
METRIC_RE = re.compile(r"^[A-Za-z0-9][\w./-]{0,63}$")
SWEEP_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
RESULTS = "results.json"  # the evaluation's summary file in run.eval_dir (evaluation/compare.py)
BEST = "★ best"


class SweepError(StudioError, ValueError):
    """A sweep cannot be made as asked; the message names the field, the value or the limit."""


# -- axes -----------------------------------------------------------------------------
def _split(field: str, values: list | tuple | str) -> list:
    """An axis's raw values: a comma-separated text (";"-separated for target_modules, whose values are
    comma lists themselves), or a list as given."""
    if isinstance(values, str):
        sep = ";" if field in LIST_FIELDS else ","
        if field in LIST_FIELDS and "," in values and ";" not in values:
            raise SweepError(f"{field}: each value is itself a comma-separated list of modules; separate the "
                             f"sweep's values with ';' (e.g. all-linear; q_proj,v_proj).")
        items = [v.strip() for v in values.split(sep)]
        if any(not v for v in items) and any(items):
            raise SweepError(f"{field}: an empty value between {'semicolons' if sep == ';' else 'commas'} in "
                             f"{values[:80]!r}.")
        items = [v for v in items if v]
    elif isinstance(values, (list, tuple)):
        items = list(values)
    else:
        raise SweepError(f"{field}: give the values as text (comma separated) or as a list.")
    if not items:
        raise SweepError(f"{field}: no values; give one or more, comma separated (e.g. 1e-4, 2e-4).")
    return items


def parse_axis(base: RunConfig, field: str, values: list | tuple | str) -> list:
    """The values of one axis, each coerced and bounds-checked as the field's own (SweepError names the
    field and the value); a value given twice is refused."""
    out = []
    for raw in _split(field, values):
        try:
            value = getattr(base.with_overrides({field: raw}), field)
        except ConfigError as exc:
            raise SweepError(str(exc)) from None
        if value in out:
            raise SweepError(f"{field}: {raw!r} is given twice.")
        out.append(value)
    return out


def check_fields(names: list[str]) -> None:
    """Refuse no field, more than MAX_FIELDS, an unknown field or one a sweep does not vary."""
    known = {f.name for f in fields(RunConfig)} | set(RunConfig().to_dict())
    if not names:
        raise SweepError("A sweep needs at least one field to vary.")
    if len(names) > MAX_FIELDS:
        raise SweepError(f"A sweep varies at most {MAX_FIELDS} fields; got {len(names)}: {', '.join(names)}.")
    for name in names:
        if name not in known:
            raise SweepError(f"Unknown config field {name!r}.")
        if name not in SWEEPABLE:
            raise SweepError(f"{name}: not a field a sweep varies (the model, the data and the launch settings "
                             f"stay those of the base run). Sweepable: {', '.join(SWEEPABLE)}.")


def expand(base: RunConfig, axes: dict[str, list | str], mode: str = "grid") -> list[tuple[RunConfig, dict]]:
    """One (config, {field: value}) per run of the sweep, in order: every combination (grid, the first
    field varying slowest) or the values zipped (list). SweepError on a bad field, value, mode or count."""
    if mode not in MODES:
        raise SweepError(f"mode: {mode!r} is not one of {', '.join(MODES)}.")
    names = [str(n).strip() for n in axes]
    check_fields(names)
    values = {name: parse_axis(base, name, raw) for name, raw in zip(names, axes.values())}
    lengths = {name: len(v) for name, v in values.items()}
    if mode == "list" and len(set(lengths.values())) > 1:
        said = ", ".join(f"{n} {k}" for n, k in lengths.items())
        raise SweepError(f"A list sweep pairs the values in order, so every field needs as many: got {said}.")
    count = len(values[names[0]]) if mode == "list" else math.prod(lengths.values())
    if count > MAX_RUNS:  # said before the combinations are built
        raise SweepError(f"That sweep makes {count} runs; a sweep may queue at most {MAX_RUNS}. Give fewer values.")
    rows = zip(*values.values()) if mode == "list" else itertools.product(*values.values())
    combos = [dict(zip(names, row)) for row in rows]
    if len(combos) < 2:
        raise SweepError("That is one run, not a sweep: give a field two or more values.")
    out = []
    for i, combo in enumerate(combos, 1):
        try:
            out.append((base.with_overrides(combo), combo))
        except ConfigError as exc:  # values fine alone, not together (e.g. a loss type and the objective)
            raise SweepError(f"run {i} ({values_text(combo)}): {exc}") from None
    return out


def value_text(value: Any) -> str:
    """A swept value as run names and tables show it (floats short: 0.0001 -> 1e-04).

    >>> value_text(0.0001), value_text(8), value_text(True), value_text(0.05)
    ('0.0001', '8', 'true', '0.05')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def values_text(values: dict) -> str:
    """"learning_rate=0.0001, lora_r=8": a run's swept values in a line."""
    return ", ".join(f"{k}={value_text(v)}" for k, v in values.items())


def run_name(sweep_name: str, values: dict) -> str:
    """"<sweep name> · learning_rate=0.0001, lora_r=8", cut to the run-name limit (the sweep name is
    shortened first: the values tell the runs apart)."""
    tail = values_text(values)
    room = NAME_MAX - len(tail) - 3
    if room < 8:
        return check_run_name((sweep_name[:20] + " · " + tail)[:NAME_MAX - 1] + "…")
    head = sweep_name if len(sweep_name) <= room else sweep_name[:room - 1] + "…"
    return check_run_name(f"{head} · {tail}")


# -- metrics ----------------------------------------------------------------------------
def check_metric(metric: str) -> str:
    """A metric name as typed (eval_loss, rougeL, owner/wer...); SweepError when it cannot be one."""
    metric = (metric or "").strip() if isinstance(metric, str) else ""
    if not METRIC_RE.match(metric):
        raise SweepError(f"metric: {str(metric)[:40]!r} is not a metric name; e.g. {', '.join(METRICS)}.")
    return metric


def saved_eval(run: Run) -> dict[str, dict]:
    """The run's saved held-out evaluation, metric -> its summary entry (tuned value, higher_is_better);
    {} when it was not evaluated or its file cannot be read."""
    try:
        data = json.loads((run.eval_dir / RESULTS).read_text(encoding="utf-8"))
        return {str(e["metric"]): e for e in data.get("summary") or [] if isinstance(e, dict) and "metric" in e}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def training_losses(run: Run) -> tuple[float | None, float | None]:
    """(last training loss, last held-out loss) logged in metrics.jsonl; None for what was not logged."""
    train = held = None
    for event in run.metrics():
        if isinstance(event.get("loss"), (int, float)):
            train = float(event["loss"])
        if isinstance(event.get("eval_loss"), (int, float)):
            held = float(event["eval_loss"])
    return train, held


def metric_value(run: Run, metric: str) -> tuple[float | None, bool | None]:
    """(value, higher_is_better) of `metric` for the run: eval_loss is the last held-out loss of training
    (else the evaluation's), train_loss the last training loss, any other the tuned side of the saved
    evaluation. (None, None) when the run does not have it (yet)."""
    train, held = training_losses(run) if metric in TRAINING_METRICS else (None, None)
    if metric == "train_loss":
        return train, (False if train is not None else None)
    if metric == "eval_loss" and held is not None:
        return held, False
    entry = saved_eval(run).get(metric)
    if not entry or not isinstance(entry.get("tuned"), (int, float)):
        return None, None
    return float(entry["tuned"]), bool(entry.get("higher_is_better", metric not in LOWER_IS_BETTER))


def higher_is_better(metric: str, said: list[bool | None] = ()) -> bool:
    """The metric's direction: what the runs' saved evaluations say, else lower for losses and
    perplexity-like metrics, higher for the rest."""
    known = [s for s in said if s is not None]
    if known:
        return known[0]
    return not any(part in LOWER_IS_BETTER for part in metric.split("/"))


# -- queueing -------------------------------------------------------------------------------
def new_sweep_id() -> str:
    """A server-made sweep id: the time and a random tail (``20260101-101010-a1b2c3``)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_ready(base: RunConfig, metric: str) -> None:
    """Refuse a sweep whose metric its runs cannot produce: held-out loss without held-out rows, an
    evaluation metric without evaluation after training."""
    if metric == "eval_loss" and not base.data.eval_path and base.data.eval_fraction <= 0:
        raise SweepError("metric eval_loss: the runs have no held-out rows (eval_fraction is 0); hold some out "
                         "or rank by train_loss.")
    if metric not in TRAINING_METRICS and not base.evaluate_after:
        raise SweepError(f"metric {metric}: it comes from the evaluation after training; turn on 'Evaluate "
                         "after training' (evaluate_after=true) or rank by eval_loss.")


def queue_sweep(queue, base: RunConfig, axes: dict[str, list | str], mode: str = "grid", metric: str = "eval_loss",
                owner: dict | None = None, name: str = "", who: Visitor | None = None, label: str = "") -> list[Run]:
    """Put every run of the sweep on `queue` (a RunQueue: ``enqueue(cfg, owner=, name=, sweep=, who=)``
    returns (run, position)), each named "<sweep name> · field=value, ..." and tagged with the sweep (`label`:
    the data's name for the run ids, as a Train press gives it);
    returns the runs in queue order. `who` (default: the visitor `owner` names) counts against the
    queue's per-visitor limit. All or none: when the queue refuses one, the runs already queued are
    cancelled and a SweepError says so."""
    metric = check_metric(metric)
    runs = expand(base, axes, mode)
    check_ready(base, metric)
    name = check_run_name(name) if (name or "").strip() else f"sweep {' × '.join(axes)}"
    who = who or Visitor(user=(owner or {}).get("user"), browser=(owner or {}).get("browser"))
    sweep_id = new_sweep_id()
    entries = [{"cfg": cfg, "name": run_name(name, values), "label": label,
                "sweep": {"id": sweep_id, "name": name, "values": values, "metric": metric}} for cfg, values in runs]
    try:  # all or none, under the queue's lock: no run starts before the last is queued
        return [run for run, _position in queue.enqueue_many(entries, owner=owner or {}, who=who)]
    except StudioError as exc:
        raise SweepError(f"The queue refused the sweep's {len(runs)} runs: {exc} None of them is queued.") from None


# -- reading sweeps back ------------------------------------------------------------------
def sweep_tag(run: Run) -> dict | None:
    """The run's sweep tag from run.yaml ({"id", "name", "values", "metric"}), or None."""
    try:
        tag = run.run_yaml().get("sweep")
    except (OSError, ValueError):
        return None
    return tag if isinstance(tag, dict) and isinstance(tag.get("id"), str) else None


def list_sweeps(who: Visitor | None = None) -> list[dict]:
    """The sweeps with a run this visitor may see, newest first: {"id", "name", "metric", "runs": [Run]}
    (the runs in queue order)."""
    found: dict[str, dict] = {}
    for run in visible_runs(who or Visitor()):
        tag = sweep_tag(run)
        if tag is None:
            continue
        entry = found.setdefault(tag["id"], {"id": tag["id"], "name": str(tag.get("name") or tag["id"]),
                                             "metric": str(tag.get("metric") or "eval_loss"), "runs": []})
        entry["runs"].append(run)
    for entry in found.values():
        entry["runs"].sort(key=lambda r: r.id)
    return sorted(found.values(), key=lambda e: e["id"], reverse=True)


def sweep_runs(sweep_id: str, who: Visitor | None = None) -> tuple[dict, list[Run]]:
    """(the sweep's entry, its runs this visitor may see); RunError for an id that is not a sweep's."""
    if not isinstance(sweep_id, str) or not SWEEP_ID_RE.match(sweep_id.strip()):
        raise RunError("That is not a sweep id: pick a sweep from the list.")
    for entry in list_sweeps(who):
        if entry["id"] == sweep_id.strip():
            return entry, entry["runs"]
    raise RunError(f"Sweep {sweep_id.strip()} does not exist.")


def sweep_table(sweep_id: str, metric: str | None = None, who: Visitor | None = None,
                runs: list[Run] | None = None) -> pd.DataFrame:
    """The sweep's runs ranked by `metric` (default: the sweep's own), best first: rank, best (BEST on
    the best row), name, one column per swept field, the metric, state, run id. Runs without the metric
    yet (waiting, running, failed) follow in queue order, unranked. `runs` skips looking them up."""
    if runs is None:
        entry, runs = sweep_runs(sweep_id, who)
        metric = metric or entry["metric"]
    metric = check_metric(metric or "eval_loss")
    rows, said = [], []
    for run in runs:
        tag = sweep_tag(run) or {}
        value, direction = metric_value(run, metric)
        said.append(direction)
        values = tag.get("values") if isinstance(tag.get("values"), dict) else {}
        rows.append({"name": run.name, **{k: value_text(v) for k, v in values.items()}, metric: value,
                     "state": run.status().get("state", "?"), "run": run.id})
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["rank", "best", "name", metric, "state", "run"])
    up = higher_is_better(metric, said)
    scored = table[table[metric].notna()].sort_values(metric, ascending=not up, kind="stable")
    table = pd.concat([scored, table[table[metric].isna()]])
    table.insert(0, "best", [BEST if i == 0 else "" for i in range(len(scored))] + [""] * (len(table) - len(scored)))
    table.insert(0, "rank", [str(i) for i in range(1, len(scored) + 1)] + ["—"] * (len(table) - len(scored)))
    table[metric] = table[metric].astype("float64")
    return table.reset_index(drop=True)


__all__ = ["BEST", "MAX_FIELDS", "MAX_RUNS", "METRICS", "MODES", "SWEEPABLE", "SweepError", "expand", "list_sweeps",
           "metric_value", "queue_sweep", "sweep_table", "sweep_runs", "sweep_tag", "values_text"]
