"""Several runs side by side: loss curves, the numbers each run has, and the settings that differ.

For the Runs tab's "Compare runs", the `compare` command and the stakeholder
report (`report --compare`), from what each run directory holds:

* `loss_curves(runs)`: every run's training and held-out loss by step, one
  series each ("<run> train", "<run> held-out"), for one overlaid plot;
* `metrics_table(runs)`: one row per number, one column per run, which way is
  better and which run is best: final training loss, best and last held-out
  loss, steps, wall time, tokens/s, then the held-out evaluation's metrics (the
  run's side), the general-skill benchmarks and the judge when they were run;
* `config_diff(runs)`: only the RunConfig fields whose values differ;
* `comparison_section(runs)` / `comparison_markdown(runs)`: both tables as a
  report section (evaluation/report.py renders it in HTML and Markdown).

    python -m finetune_core compare RUN_ID RUN_ID [...] [--json]
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from evaluation.checks import read_check
from evaluation.report_checks import Section, Table
from finetune_core.errors import InputError
from finetune_core.runs.store import Run
from finetune_core.training.sweep import saved_eval, sweep_tag

MIN_RUNS, MAX_RUNS = 2, 8
PATH_FIELDS = ("data_path", "eval_path")  # server paths: a person sees the file name only
DIFF_SKIPPED = ("schema_version",)
TRAIN, HELD = "train", "held-out"


def check_runs(runs: list[Run]) -> list[Run]:
    """The runs in order, each once; InputError unless there are MIN_RUNS..MAX_RUNS of them."""
    unique = list({run.id: run for run in runs}.values())
    if not MIN_RUNS <= len(unique) <= MAX_RUNS:
        raise InputError(f"Compare {MIN_RUNS} to {MAX_RUNS} runs; got {len(unique)}.")
    return unique


def run_labels(runs: list[Run]) -> list[str]:
    """What each run is called in columns and legends: its name, or its name and time when two runs
    share a name (columns must differ)."""
    names = [run.name for run in runs]
    return [run.label() if names.count(run.name) > 1 else run.name for run in runs]


# -- loss curves ----------------------------------------------------------------------------------
def loss_curves(runs: list[Run]) -> pd.DataFrame:
    """(step, loss, series) rows of every run's training and held-out loss; series "<label> train" and
    "<label> held-out"."""
    rows = []
    for run, label in zip(runs, run_labels(runs)):
        for event in run.metrics():
            for key, kind in (("loss", TRAIN), ("eval_loss", HELD)):
                if isinstance(event.get(key), (int, float)) and not isinstance(event.get(key), bool):
                    rows.append({"step": int(event.get("step", 0)), "loss": float(event[key]),
                                 "series": f"{label} {kind}"})
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    # explicit dtypes: an object column would make the plot treat loss values as categories
    return frame.astype({"step": "int64", "loss": "float64", "series": "str"})


# -- numbers ----------------------------------------------------------------------------------------
def training_numbers(run: Run) -> dict[str, tuple[float | None, bool | None]]:
    """name -> (value, higher_is_better or None when neither) of what training logged."""
    train, held, speeds = [], [], []
    for event in run.metrics():
        if isinstance(event.get("loss"), (int, float)):
            train.append(float(event["loss"]))
        if isinstance(event.get("eval_loss"), (int, float)):
            held.append(float(event["eval_loss"]))
        if isinstance(event.get("tokens_per_s"), (int, float)):
            speeds.append(float(event["tokens_per_s"]))
    status = run.status()
    started, finished = status.get("started"), status.get("finished")
    wall = (float(finished) - float(started)) if isinstance(started, (int, float)) and isinstance(
        finished, (int, float)) else None
    return {
        "final train loss": (train[-1] if train else None, False),
        "best held-out loss": (min(held) if held else None, False),
        "last held-out loss": (held[-1] if held else None, False),
        "steps": (int(status.get("step") or 0), None),
        "wall time (s)": (round(wall, 1) if wall is not None else None, False),
        "tokens/s (mean)": (round(sum(speeds) / len(speeds), 1) if speeds else None, True),
    }


def evaluation_numbers(run: Run) -> dict[str, tuple[float | None, bool | None]]:
    """name -> (value, higher_is_better) of the run's saved evaluations: the held-out evaluation's metrics
    (the run's side), each general-skill benchmark metric (the run's side) and the judge's win rate."""
    out: dict[str, tuple[float | None, bool | None]] = {}
    for name, entry in saved_eval(run).items():
        if isinstance(entry.get("tuned"), (int, float)):
            out[f"held-out {name}"] = (float(entry["tuned"]), bool(entry.get("higher_is_better", True)))
    for bench in (read_check(run, "benchmarks") or {}).get("benchmarks") or []:
        if not isinstance(bench, dict):
            continue
        title = bench.get("title") or bench.get("name")
        for m in bench.get("metrics") or []:
            if isinstance(m, dict) and isinstance(m.get("tuned"), (int, float)):
                out[f"{title} {m.get('metric')}"] = (float(m["tuned"]), True)
    rate = (read_check(run, "judge") or {}).get("win_rate")
    if isinstance(rate, (int, float)):
        out["judge win rate"] = (float(rate), True)
    return out


def metrics_table(runs: list[Run]) -> pd.DataFrame:
    """One row per number any of the runs has: metric, better ("lower", "higher" or ""), one column per
    run (empty where a run lacks it), best (the best run's label when the direction is known, two runs
    have it and they are not tied). The state comes first."""
    runs = check_runs(runs)
    labels = run_labels(runs)
    per_run = [{**training_numbers(run), **evaluation_numbers(run)} for run in runs]
    names: list[str] = []
    for numbers in per_run:
        names += [n for n, (value, _) in numbers.items() if value is not None and n not in names]
    rows = [{"metric": "state", "better": "", **{label: str(run.status().get("state", "?"))
                                                 for label, run in zip(labels, runs)}, "best": ""}]
    for name in names:
        values = [numbers.get(name, (None, None)) for numbers in per_run]
        direction = next((up for value, up in values if value is not None and up is not None), None)
        row = {"metric": name, "better": "" if direction is None else ("higher" if direction else "lower")}
        row.update({label: value for label, (value, _) in zip(labels, values)})
        present = [(value, label) for label, (value, _) in zip(labels, values) if value is not None]
        best = ""
        if direction is not None and len(present) >= 2:
            top = (max if direction else min)(value for value, _ in present)
            leaders = [label for value, label in present if value == top]
            best = leaders[0] if len(leaders) == 1 else ""  # a tie names no one
        rows.append({**row, "best": best})
    return pd.DataFrame(rows, columns=["metric", "better", *labels, "best"])


# -- settings ------------------------------------------------------------------------------------
def _settings(run: Run) -> dict:
    try:
        data = run.config().to_dict()
    except (OSError, ValueError):  # a damaged or older run.yaml: what it says, as written
        data = {k: v for k, v in run.run_yaml().items() if not isinstance(v, (dict, list))}
    for key in PATH_FIELDS:
        if data.get(key):
            data[key] = Path(str(data[key])).name
    tag = sweep_tag(run)
    if tag:
        data["sweep"] = str(tag.get("name") or tag["id"])
    return data


def config_diff(runs: list[Run]) -> pd.DataFrame:
    """Only the settings whose values differ between the runs: field, then one column per run ("" where
    a run's run.yaml lacks the field). Paths show their file name only."""
    runs = check_runs(runs)
    labels = run_labels(runs)
    settings = [_settings(run) for run in runs]
    fields: list[str] = []
    for data in settings:
        fields += [k for k in data if k not in fields and k not in DIFF_SKIPPED]
    rows = []
    for name in fields:
        values = [data.get(name, "") for data in settings]
        if len({repr(v) for v in values}) > 1:
            rows.append({"field": name, **{label: _cell(v) for label, v in zip(labels, values)}})
    return pd.DataFrame(rows, columns=["field", *labels])


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- for the report -----------------------------------------------------------------------------
def _number(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def comparison_section(runs: list[Run], title: str = "Compared runs") -> Section:
    """Both tables as a report section (plain text cells; the report escapes them)."""
    metrics, diff = metrics_table(runs), config_diff(runs)
    parts: list = [f"{len(metrics.columns) - 3} runs side by side: what each logged and was evaluated on "
                   "(the run's own side of each evaluation), and the best where it is clear which way is better.",
                   Table([str(c) for c in metrics.columns],
                         [[_number(v) for v in row] for row in metrics.itertuples(index=False)])]
    if diff.empty:
        parts.append("The runs have the same settings.")
    else:
        parts += ["Settings that differ (the others are the same):",
                  Table([str(c) for c in diff.columns], [[str(v) for v in row] for row in diff.itertuples(index=False)])]
    return Section(title, parts)


def comparison_markdown(runs: list[Run]) -> str:
    """The comparison as Markdown for the stakeholder report: a heading, the metrics table and the settings
    that differ, every name and value made inert."""
    from evaluation.report import md_section

    return md_section(comparison_section(runs))


__all__ = ["check_runs", "comparison_markdown", "comparison_section", "config_diff", "loss_curves",
           "metrics_table", "run_labels"]
